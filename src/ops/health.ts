import { Elysia } from "elysia";
import { z } from "zod";
import type { Store } from "../store/index";
import { isStoreOutage } from "../store/outage";
import { VERSION } from "../version";
import { routeDoc } from "./openapi";

const Health = z.object({ status: z.enum(["ok", "degraded"]), version: z.string(), db: z.enum(["ok", "unwritable"]) });

/**
 * How long /healthz waits for the ledger: a load balancer's or Docker's probe must get its 503 while PostgreSQL is
 * unreachable, not hang for the pool's connection timeout (10 s) or behind queued writes being retried.
 */
export const HEALTH_TIMEOUT_MS = 2_000;

/**
 * Whether the ledger accepts a write within `timeoutMs`. A store outage (SPEC §13: PostgreSQL down, a full or
 * read-only disk) is "no"; any other error is a bug and is thrown (500 from onError).
 */
export async function ledgerWritable(store: Pick<Store, "checkWritable">, timeoutMs = HEALTH_TIMEOUT_MS): Promise<boolean> {
  let timer: Timer | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  try {
    // Wrapped so that a synchronous throw (SQLite's queued writes are committed first, in the caller's turn) is caught too.
    const check = (async () => store.checkWritable())();
    return await Promise.race([check, late]);
  } catch (error) {
    if (isStoreOutage(error)) return false;
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/** GET /healthz (no auth): 200 when the ledger accepts writes, 503 when it does not (or does not say in time). */
export const healthRoutes = (store: Store) =>
  new Elysia({ name: "health", seed: store }).get(
    "/healthz",
    async ({ set }) => {
      const ok = await ledgerWritable(store);
      set.status = ok ? 200 : 503;
      return { status: ok ? "ok" : "degraded", version: VERSION, db: ok ? "ok" : "unwritable" };
    },
    routeDoc({
      summary: "Liveness and ledger writability",
      tags: ["Operations"],
      ok: [200, Health, "Healthy (503 with db: unwritable otherwise)"],
      access: "public",
    }),
  );

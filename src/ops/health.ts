import { Elysia } from "elysia";
import { z } from "zod";
import type { Store } from "../store/index";
import { VERSION } from "../version";
import { routeDoc } from "./openapi";

const Health = z.object({ status: z.enum(["ok", "degraded"]), version: z.string(), db: z.enum(["ok", "unwritable"]) });

/** GET /healthz (no auth): 200 when the ledger accepts writes, 503 when it does not. */
export const healthRoutes = (store: Store) =>
  new Elysia({ name: "health", seed: store }).get(
    "/healthz",
    async ({ set }) => {
      const ok = await store.checkWritable();
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

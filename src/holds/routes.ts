import { pageLimit } from "../validation";
import { Elysia } from "elysia";
import { z } from "zod";
import { accessGuard, type Authenticator, type Caller } from "../auth/admin-auth";
import { routeDoc } from "../ops/openapi";
import type { Store } from "../store/index";
import { HoldList, HoldSchema } from "./responses";
import { listHolds, resolveHold } from "./service";

const HoldsQuery = z.strictObject({
  state: z
    .enum(["held", "orphaned", "ambiguous"])
    .default("orphaned")
    .meta({
      description:
        "orphaned: a crash left the call unsettled (counted as held); ambiguous: the vendor answered 5xx or timed out (counted as spent at the hold); held: in flight now",
      examples: ["ambiguous"],
    }),
  limit: pageLimit("At most this many holds, oldest first"),
});
// No body, or `{}`, settles at the hold.
const SettleBody = z
  .strictObject({
    cost_usd: z
      .number()
      .nonnegative()
      .max(10_000_000)
      .optional()
      .meta({ description: "What the vendor really charged, in USD (its dashboard); the hold when absent", examples: [12.5] }),
  })
  .optional();
const HoldId = z.object({
  id: z.string().meta({ description: "The hold's id (keybrake holds list)", examples: ["hold_7Gf2kQ9xLm3Pz8Rt1Vb6Nc"] }),
});
const tags = ["Holds"];

const ctx = (store: Store, now: () => number, caller: Caller) => ({ store, now, actor: caller.fingerprint, caller });

/**
 * Holds a crashed process never settled: listed, and settled or released by an operator (audited). Holds are
 * the operators' ledger: issuers do not read them (their keys' records carry `held_usd`), viewers do.
 */
export const holdRoutes = (store: Store, auth: Authenticator, now: () => number) =>
  new Elysia({ name: "holds", prefix: "/vault/holds", seed: store })
    .use(accessGuard(auth))
    .get("", ({ query }) => listHolds({ store }, query.state, query.limit), {
      query: HoldsQuery,
      ...routeDoc({
        summary: "Holds by state (default: orphaned by a crash, still counted as held)",
        tags,
        ok: [200, HoldList, "Holds, oldest first"],
        errors: [400],
        access: ["admin", "viewer"],
      }),
    })
    .post("/:id/settle", ({ params, body, caller }) => resolveHold(ctx(store, now, caller), params.id, "settled", body?.cost_usd), {
      params: HoldId,
      body: SettleBody,
      ...routeDoc({
        summary: "Count an orphaned or ambiguous hold as spent (at the hold, or at cost_usd)",
        tags,
        ok: [200, HoldSchema, "The settled hold"],
        errors: [400, 404, 409],
        access: ["admin"],
      }),
    })
    .post("/:id/release", ({ params, caller }) => resolveHold(ctx(store, now, caller), params.id, "released"), {
      params: HoldId,
      ...routeDoc({
        summary: "Release an orphaned or ambiguous hold (the vendor never charged)",
        tags,
        ok: [200, HoldSchema, "The released hold"],
        errors: [404, 409],
        access: ["admin"],
      }),
    });

import { Elysia } from "elysia";
import { z } from "zod";
import { adminGuard, type AdminAuth } from "../ops/admin-auth";
import { routeDoc } from "../ops/openapi";
import type { Store } from "../store/index";
import { listHolds, resolveHold } from "./service";

const HoldSchema = z.object({
  id: z.string(),
  key_id: z.string(),
  label: z.string().nullable(),
  day: z.string(),
  state: z.enum(["held", "settled", "released", "ambiguous", "orphaned"]),
  hold_usd: z.number(),
  cost_usd: z.number().nullable(),
  created_at: z.string().nullable(),
  settled_at: z.string().nullable(),
});
const HoldsQuery = z.strictObject({
  state: z.enum(["held", "orphaned", "ambiguous"]).default("orphaned"),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});
// No body, or `{}`, settles at the hold.
const SettleBody = z
  .strictObject({ cost_usd: z.number().nonnegative().max(10_000_000).optional().describe("The real cost in USD; the hold when absent") })
  .optional();
const HoldId = z.object({ id: z.string().describe("The hold's id") });
const tags = ["Holds"];

/** Holds a crashed process never settled: listed, and settled or released by an operator (audited). */
export const holdRoutes = (store: Store, auth: AdminAuth, now: () => number) =>
  new Elysia({ name: "holds", prefix: "/vault/holds", seed: store })
    .use(adminGuard(auth))
    .get("", ({ query }) => listHolds({ store }, query.state, query.limit), {
      query: HoldsQuery,
      ...routeDoc({
        summary: "Holds by state (default: orphaned by a crash, still counted as held)",
        tags,
        ok: [200, z.object({ data: z.array(HoldSchema) }), "Holds, oldest first"],
        errors: [400],
      }),
    })
    .post("/:id/settle", ({ params, body, actor }) => resolveHold({ store, now, actor }, params.id, "settled", body?.cost_usd), {
      params: HoldId,
      body: SettleBody,
      ...routeDoc({
        summary: "Count an orphaned hold as spent (at the hold, or at cost_usd)",
        tags,
        ok: [200, HoldSchema, "The settled hold"],
        errors: [400, 404, 409],
      }),
    })
    .post("/:id/release", ({ params, actor }) => resolveHold({ store, now, actor }, params.id, "released"), {
      params: HoldId,
      ...routeDoc({
        summary: "Release an orphaned hold (the vendor never charged)",
        tags,
        ok: [200, HoldSchema, "The released hold"],
        errors: [404, 409],
      }),
    });

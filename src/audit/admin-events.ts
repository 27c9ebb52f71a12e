import { Elysia } from "elysia";
import { z } from "zod";
import { adminGuard, type AdminAuth } from "../ops/admin-auth";
import { routeDoc } from "../ops/openapi";
import type { Store } from "../store/index";

const EventsQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.coerce.number().int().positive().optional(),
});
const AdminEventSchema = z.object({
  seq: z.number(),
  at: z.string(),
  actor: z.string(),
  action: z.string(),
  target: z.string().nullable(),
  details: z.record(z.string(), z.unknown()).nullable(),
});

/** SPEC §3: every admin action (who: token fingerprint, what, when), queryable. */
export const adminEventRoutes = (store: Store, auth: AdminAuth) =>
  new Elysia({ name: "admin-events", prefix: "/admin", seed: store }).use(adminGuard(auth)).get(
    "/events",
    async ({ query }) => {
      const page = await store.listAdminEvents(query.limit, query.cursor);
      return {
        data: page.data.map((e) => ({ ...e, at: new Date(e.at).toISOString() })),
        next_cursor: page.nextCursor === null ? null : String(page.nextCursor),
      };
    },
    {
      query: EventsQuery,
      ...routeDoc({
        summary: "Admin actions (who: token fingerprint, what, when), newest first",
        tags: ["Audit"],
        ok: [200, z.object({ data: z.array(AdminEventSchema), next_cursor: z.string().nullable() }), "A page of admin events"],
        errors: [400],
      }),
    },
  );

import { pageLimit, pageCursor } from "../validation";
import { Elysia } from "elysia";
import { z } from "zod";
import { accessGuard, type Authenticator } from "../auth/admin-auth";
import { routeDoc } from "../ops/openapi";
import type { Store } from "../store/index";

const EventsQuery = z.strictObject({
  token_id: z
    .string()
    .min(1)
    .optional()
    .meta({ description: 'Only the actions of one token: tok_…, or "admin" for the bootstrap token', examples: ["admin"] }),
  limit: pageLimit("Events per page, newest first"),
  cursor: pageCursor(),
});
const AdminEventSchema = z.object({
  seq: z.number(),
  at: z.string(),
  actor: z.string().describe("The token's fingerprint (sha256:…), or cli:<user>"),
  token_id: z.string().nullable().describe('The token that acted: tok_…, "admin" for the bootstrap token; null for the CLI'),
  token_name: z.string().nullable(),
  action: z.string(),
  target: z.string().nullable(),
  details: z.record(z.string(), z.unknown()).nullable(),
});

/** SPEC §3, §10: every admin action (who: token id, name and fingerprint; what; when), queryable. */
export const adminEventRoutes = (store: Store, auth: Authenticator) =>
  new Elysia({ name: "admin-events", prefix: "/admin", seed: store }).use(accessGuard(auth)).get(
    "/events",
    async ({ query }) => {
      const page = await store.listAdminEvents(query.limit, query.cursor, query.token_id);
      return {
        data: page.data.map(({ tokenId, tokenName, ...e }) => ({
          ...e,
          at: new Date(e.at).toISOString(),
          token_id: tokenId,
          token_name: tokenName,
        })),
        next_cursor: page.nextCursor === null ? null : String(page.nextCursor),
      };
    },
    {
      query: EventsQuery,
      ...routeDoc({
        summary: "Admin actions (who: token id, name and fingerprint; what; when), newest first",
        tags: ["Audit"],
        ok: [200, z.object({ data: z.array(AdminEventSchema), next_cursor: z.string().nullable() }), "A page of admin events"],
        errors: [400],
        access: ["admin", "viewer"],
      }),
    },
  );

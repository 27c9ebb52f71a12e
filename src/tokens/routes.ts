import { Elysia } from "elysia";
import { z } from "zod";
import { accessGuard, type Authenticator, type Caller } from "../auth/admin-auth";
import { routeDoc } from "../ops/openapi";
import type { Store } from "../store/index";
import { CreateTokenBody, ListTokensQuery, RevokeTokenQuery } from "./model";
import { IssuedTokenSchema, RevokedTokenSchema, TokenPage, TokenRecordSchema } from "./responses";
import * as service from "./service";

const tags = ["Tokens"];
const TokenId = z.object({ id: z.string().meta({ description: "The token's id", examples: ["tok_3kTq8ZrWb2NcLm5Yd0Hx"] }) });
const ADMIN = ["admin"] as const;

/** SPEC §10: admin, issuer and viewer tokens, managed by admins. */
export function tokenRoutes(store: Store, auth: Authenticator, now: () => number) {
  const ctx = (caller: Caller) => ({ store, now, actor: caller.fingerprint, caller });
  return new Elysia({ name: "tokens", prefix: "/admin/tokens", seed: store })
    .use(accessGuard(auth))
    .post(
      "",
      ({ body, caller, set }) => {
        set.status = 201;
        return service.createToken(ctx(caller), body);
      },
      {
        body: CreateTokenBody,
        parse: "json",
        ...routeDoc({
          summary: "Create a token (admin, issuer with a policy, or viewer)",
          description:
            "The token (kb_adm_…, kb_iss_… or kb_view_…) is in this answer only; Keybrake keeps its SHA-256. An issuer mints vault keys only within its policy and sees only the keys it minted.",
          tags,
          ok: [201, IssuedTokenSchema, "The token record with the token, shown this once"],
          errors: [400],
          access: ADMIN,
        }),
      },
    )
    .get("", ({ query }) => service.listTokens({ store, now }, query), {
      query: ListTokensQuery,
      ...routeDoc({
        summary: "List tokens (never the tokens themselves)",
        tags,
        ok: [200, TokenPage, "A page of tokens, newest first; pass next_cursor as cursor for the next"],
        errors: [400],
        access: ADMIN,
      }),
    })
    .get("/:id", ({ params }) => service.getToken({ store, now }, params.id), {
      params: TokenId,
      ...routeDoc({ summary: "One token", tags, ok: [200, TokenRecordSchema, "The token"], errors: [404], access: ADMIN }),
    })
    .delete("/:id", ({ params, query, caller }) => service.revokeToken(ctx(caller), params.id, query.revoke_keys), {
      params: TokenId,
      query: RevokeTokenQuery,
      ...routeDoc({
        summary: "Revoke a token (effective on its next request); revoke_keys=true also revokes every key it minted",
        tags,
        ok: [200, RevokedTokenSchema, "The revoked token, and how many keys were revoked with it"],
        errors: [400, 404],
        access: ADMIN,
      }),
    });
}

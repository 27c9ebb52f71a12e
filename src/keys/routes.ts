import { Elysia } from "elysia";
import { z } from "zod";
import { accessGuard, type Authenticator, type Caller } from "../auth/admin-auth";
import { routeDoc } from "../ops/openapi";
import type { Store } from "../store/index";
import { BulkRevokeBody, CreateKeyBody, ListKeysQuery, PatchKeyBody } from "./model";
import { IssuedKeySchema, KeyPage, KeyRecordSchema, RevokedCount } from "./responses";
import * as service from "./service";

const tags = ["Vault keys"];
const KeyId = z.object({ id: z.string().meta({ description: "The key's id (vk_…)", examples: ["vk_8mJq2LwXc4Rt6YpN0aZb1Hs3"] }) });

const OWN_KEYS = "only the keys it minted";

/** SPEC §3: issue, list, show, revoke and change vault keys at /vault/keys; the seeds' alias at /v1/keys. */
export function keyRoutes(store: Store, auth: Authenticator, now: () => number) {
  const ctx = (caller: Caller) => ({ store, now, actor: caller.fingerprint, caller });
  // Shared by /vault/keys and its /v1/keys alias. The admin API reads JSON only (`parse: "json"`).
  const create = {
    handler: ({ body, caller, set }: { body: CreateKeyBody; caller: Caller; set: { status?: number | string } }) => {
      set.status = 201;
      return service.issueKey(ctx(caller), body);
    },
    hooks: (summary: string) => ({
      body: CreateKeyBody,
      parse: "json" as const,
      ...routeDoc({
        summary,
        tags,
        ok: [201, IssuedKeySchema, "The key record with its secret, shown this once"],
        errors: [400],
        access: ["admin", "issuer"],
        issuer: "within its policy",
        policy: true,
      }),
    }),
  };
  const revoke = {
    handler: ({ params, caller }: { params: { id: string }; caller: Caller }) => service.revokeKey(ctx(caller), params.id),
    hooks: (summary: string) => ({
      params: KeyId,
      ...routeDoc({
        summary,
        tags,
        ok: [200, KeyRecordSchema, "The revoked key"],
        errors: [404],
        access: ["admin", "issuer"],
        issuer: OWN_KEYS,
      }),
    }),
  };

  const keys = new Elysia({ name: "keys", prefix: "/vault/keys", seed: store })
    .use(accessGuard(auth))
    .post("", create.handler, create.hooks("Issue a vault key"))
    .get("", ({ query, caller }) => service.listKeys(ctx(caller), query), {
      query: ListKeysQuery,
      ...routeDoc({
        summary: "List vault keys with usage",
        tags,
        ok: [200, KeyPage, "A page of keys, newest first; pass next_cursor as cursor for the next"],
        errors: [400],
        access: ["admin", "issuer", "viewer"],
        issuer: OWN_KEYS,
      }),
    })
    .post("/revoke", ({ body, caller }) => service.revokeMany(ctx(caller), body), {
      body: BulkRevokeBody,
      parse: "json",
      ...routeDoc({
        summary: "Revoke every key with a label prefix, or a list of ids",
        tags,
        ok: [200, RevokedCount, "How many active keys were revoked"],
        errors: [400],
        access: ["admin", "issuer"],
        issuer: OWN_KEYS,
      }),
    })
    .get("/:id", ({ params, caller }) => service.getKey(ctx(caller), params.id), {
      params: KeyId,
      ...routeDoc({
        summary: "One vault key with usage",
        tags,
        ok: [200, KeyRecordSchema, "The key"],
        errors: [404],
        access: ["admin", "issuer", "viewer"],
        issuer: OWN_KEYS,
      }),
    })
    .patch("/:id", ({ params, body, caller }) => service.patchKey(ctx(caller), params.id, body), {
      params: KeyId,
      body: PatchKeyBody,
      parse: "json",
      ...routeDoc({
        summary: "Change a key's caps, expiry or rate limit",
        tags,
        ok: [200, KeyRecordSchema, "The changed key"],
        errors: [400, 404, 409],
        access: ["admin", "issuer"],
        issuer: `${OWN_KEYS}, within its policy`,
        policy: true,
      }),
    })
    .delete("/:id", revoke.handler, revoke.hooks("Revoke a vault key (idempotent)"));

  const alias = new Elysia({ name: "keys-alias", prefix: "/v1/keys", seed: store })
    .use(accessGuard(auth))
    .post("", create.handler, create.hooks("Issue a vault key (alias of POST /vault/keys)"))
    .delete("/:id", revoke.handler, revoke.hooks("Revoke a vault key (alias of DELETE /vault/keys/{id})"));

  return new Elysia({ name: "keys-all", seed: store }).use(keys).use(alias);
}

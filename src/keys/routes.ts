import { Elysia } from "elysia";
import { z } from "zod";
import type { AdminAuth } from "../ops/admin-auth";
import { adminGuard } from "../ops/admin-auth";
import { routeDoc } from "../ops/openapi";
import type { Store } from "../store/index";
import { parseInput } from "../validation";
import { BulkRevokeBody, CreateKeyBody, IssuedKeySchema, KeyRecordSchema, ListKeysQuery, PatchKeyBody } from "./model";
import * as service from "./service";

const tags = ["Vault keys"];
const KeyPage = z.object({ data: z.array(KeyRecordSchema), next_cursor: z.string().nullable() });


/** SPEC §3: issue, list, show, revoke and change vault keys at /vault/keys; the seeds' alias at /v1/keys. */
export function keyRoutes(store: Store, auth: AdminAuth, now: () => number) {
  const create = ({ body, actor, set }: { body: unknown; actor: string; set: { status?: number | string } }) => {
    set.status = 201;
    return service.issueKey({ store, now, actor }, parseInput(CreateKeyBody, body));
  };
  const revoke = ({ params, actor }: { params: { id: string }; actor: string }) => service.revokeKey({ store, now, actor }, params.id);
  const createDoc = (summary: string) =>
    routeDoc({ summary, tags, body: CreateKeyBody, ok: [201, IssuedKeySchema, "The key record with its secret, shown this once"], errors: [400] });
  const revokeDoc = (summary: string) => routeDoc({ summary, tags, ok: [200, KeyRecordSchema, "The revoked key"], errors: [404] });

  const keys = new Elysia({ name: "keys", prefix: "/vault/keys", seed: store })
    .use(adminGuard(auth))
    .post("", create, createDoc("Issue a vault key"))
    .get("", ({ query }) => service.listKeys({ store, now }, parseInput(ListKeysQuery, query, "query")), routeDoc({
      summary: "List vault keys with usage",
      tags,
      query: ListKeysQuery,
      ok: [200, KeyPage, "A page of keys, newest first; pass next_cursor as cursor for the next"],
      errors: [400],
    }))
    .post("/revoke", ({ body, actor }) => service.revokeMany({ store, now, actor }, parseInput(BulkRevokeBody, body)), routeDoc({
      summary: "Revoke every key with a label prefix, or a list of ids",
      tags,
      body: BulkRevokeBody,
      ok: [200, z.object({ revoked: z.number() }), "How many active keys were revoked"],
      errors: [400],
    }))
    .get("/:id", ({ params }) => service.getKey({ store, now }, params.id), routeDoc({
      summary: "One vault key with usage",
      tags,
      ok: [200, KeyRecordSchema, "The key"],
      errors: [404],
    }))
    .patch("/:id", ({ params, body, actor }) => service.patchKey({ store, now, actor }, params.id, parseInput(PatchKeyBody, body)), routeDoc({
      summary: "Change a key's caps, expiry or rate limit",
      tags,
      body: PatchKeyBody,
      ok: [200, KeyRecordSchema, "The changed key"],
      errors: [400, 404, 409],
    }))
    .delete("/:id", revoke, revokeDoc("Revoke a vault key (idempotent)"));

  const alias = new Elysia({ name: "keys-alias", prefix: "/v1/keys", seed: store })
    .use(adminGuard(auth))
    .post("", create, createDoc("Issue a vault key (alias of POST /vault/keys)"))
    .delete("/:id", revoke, revokeDoc("Revoke a vault key (alias of DELETE /vault/keys/{id})"));

  return new Elysia({ name: "keys-all", seed: store }).use(keys).use(alias);
}

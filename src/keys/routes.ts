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

/** SPEC §3: issue, list, show, revoke and change vault keys. `/v1/keys` is the seeds' alias. */
export function keyRoutes(store: Store, auth: AdminAuth, now: () => number) {
  const create = async ({ body, actor, set }: { body: unknown; actor: string; set: { status?: number | string } }) => {
    set.status = 201;
    return service.issueKey({ store, now, actor }, parseInput(CreateKeyBody, body));
  };
  const revoke = ({ params, actor }: { params: { id: string }; actor: string }) =>
    service.revokeKey({ store, now, actor }, params.id);

  const createDoc = routeDoc({
    summary: "Issue a vault key",
    tags,
    body: CreateKeyBody,
    ok: [201, IssuedKeySchema, "The key record with its secret, shown this once"],
    errors: [400],
  });
  const revokeDoc = routeDoc({ summary: "Revoke a vault key (idempotent)", tags, ok: [200, KeyRecordSchema, "The revoked key"], errors: [404] });

  return new Elysia({ name: "keys", seed: store })
    .use(adminGuard(auth))
    .post("/vault/keys", create, createDoc)
    .post("/v1/keys", create, routeDoc({ summary: "Issue a vault key (alias of POST /vault/keys)", tags, body: CreateKeyBody, ok: [201, IssuedKeySchema, "The key record with its secret, shown this once"], errors: [400] }))
    .get("/vault/keys", ({ query }) => service.listKeys({ store, now }, parseInput(ListKeysQuery, query, "query")), routeDoc({
      summary: "List vault keys with usage",
      tags,
      query: ListKeysQuery,
      ok: [200, KeyPage, "A page of keys, newest first; pass next_cursor as cursor for the next"],
      errors: [400],
    }))
    .post("/vault/keys/revoke", ({ body, actor }) => service.revokeMany({ store, now, actor }, parseInput(BulkRevokeBody, body)), routeDoc({
      summary: "Revoke every key with a label prefix, or a list of ids",
      tags,
      body: BulkRevokeBody,
      ok: [200, z.object({ revoked: z.number() }), "How many active keys were revoked"],
      errors: [400],
    }))
    .get("/vault/keys/:id", ({ params }) => service.getKey({ store, now }, params.id), routeDoc({
      summary: "One vault key with usage",
      tags,
      ok: [200, KeyRecordSchema, "The key"],
      errors: [404],
    }))
    .patch("/vault/keys/:id", ({ params, body, actor }) => service.patchKey({ store, now, actor }, params.id, parseInput(PatchKeyBody, body)), routeDoc({
      summary: "Change a key's caps, expiry or rate limit",
      tags,
      body: PatchKeyBody,
      ok: [200, KeyRecordSchema, "The changed key"],
      errors: [400, 404, 409],
    }))
    .delete("/vault/keys/:id", revoke, revokeDoc)
    .delete("/v1/keys/:id", revoke, routeDoc({ summary: "Revoke a vault key (alias of DELETE /vault/keys/{id})", tags, ok: [200, KeyRecordSchema, "The revoked key"], errors: [404] }));
}

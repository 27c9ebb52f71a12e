import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { Elysia } from "elysia";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ACCESS_KEY, undeclaredRoutes } from "../src/auth/admin-auth";
import { idempotencyDeriver } from "../src/proxy/idempotency";
import { createApp } from "../src/server";
import { cliInProcess } from "./helpers/cli";
import { testClock } from "./helpers/clock";
import { ADMIN_TOKEN, startKeybrake, withKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, type MockStripe } from "./helpers/mock-stripe";
import { CONFIGURED_SECRETS, rawBytes, secretsIn } from "./helpers/secrets";

// SPEC §3 and §10: admin, issuer and viewer tokens; one guard where every route declares the roles it needs.

type Json = Record<string, any>;
let kb: Harness;
let stripe: MockStripe;
/** Every token and vault key this file was shown: none may ever reach the database. */
const shown: string[] = [];

beforeAll(async () => {
  stripe = await mockStripe().start();
  kb = await startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url });
});
afterAll(async () => {
  await kb.stop();
  await stripe.stop();
});
beforeEach(() => stripe.reset());

/** A request to the admin API with `token` (none: no Authorization header). */
function as(token: string | null, on?: Harness) {
  return (path: string, init: { method?: string; body?: unknown } = {}) =>
    fetch((on ?? kb).url + path, {
      method: init.method ?? (init.body === undefined ? "GET" : "POST"),
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), "content-type": "application/json" },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });
}
const admin = as(ADMIN_TOKEN);

async function newToken(body: Json, on: Harness = kb): Promise<Json & { id: string; token: string }> {
  const res = await as(ADMIN_TOKEN, on)("/admin/tokens", { body });
  if (res.status !== 201) throw new Error(`token create failed: ${res.status} ${await res.text()}`);
  const created = (await res.json()) as Json & { id: string; token: string };
  shown.push(created.token);
  return created;
}

let runs = 0;
const STRIPE_KEY = {
  vendor: "stripe",
  daily_usd_cap: 100,
  allowed_endpoints: ["POST /v1/payment_intents"],
  expires_in: "1h",
};
async function mint(token: string, body: Json = {}, on: Harness = kb): Promise<Json & { id: string; vault_key: string }> {
  const res = await as(token, on)("/vault/keys", { body: { ...STRIPE_KEY, agent_run_label: `tokens/run_${++runs}`, ...body } });
  if (res.status !== 201) throw new Error(`mint failed: ${res.status} ${await res.text()}`);
  const key = (await res.json()) as Json & { id: string; vault_key: string };
  shown.push(key.vault_key);
  return key;
}

const charge = (vaultKey: string, idem?: string, on: Harness = kb) =>
  fetch(`${on.url}/stripe/v1/payment_intents`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${vaultKey}`,
      "content-type": "application/x-www-form-urlencoded",
      ...(idem ? { "idempotency-key": idem } : {}),
    },
    body: "amount=500&currency=usd",
  });

const errorOf = async (res: Response) => ((await res.json()) as Json).error as { code: string; message: string; details?: Json };

describe("tokens: created by an admin, shown once, kept only as a hash", () => {
  test("POST /admin/tokens: tok_ id, a kb_adm_/kb_iss_/kb_view_ token of 32+ random base62, never shown again", async () => {
    for (const [role, prefix] of [
      ["admin", "kb_adm_"],
      ["issuer", "kb_iss_"],
      ["viewer", "kb_view_"],
    ] as const) {
      const created = await newToken({ name: `shown-once-${role}`, role, expires_in: "90d" });
      expect(created.id).toMatch(/^tok_[0-9A-Za-z]+$/);
      expect(created.token.startsWith(prefix)).toBe(true);
      expect(created.token.slice(prefix.length)).toMatch(/^[0-9A-Za-z]{32,}$/);
      expect(created).toMatchObject({ name: `shown-once-${role}`, role, status: "active", revoked_at: null });
      expect(Date.parse(created.expires_at) - Date.parse(created.created_at)).toBe(90 * 86400_000);
      const again = await (await admin(`/admin/tokens/${created.id}`)).text();
      expect(again).not.toContain(created.token);
      expect(JSON.parse(again)).not.toHaveProperty("token");
      const list = await (await admin("/admin/tokens?limit=1000")).text();
      expect(list).not.toContain(created.token);
      expect((JSON.parse(list) as Json).data.map((t: Json) => t.id)).toContain(created.id);
    }
  });

  test("a token without expires_in never expires; a policy belongs to issuers only; bad input names the field", async () => {
    const forever = await newToken({ name: "forever", role: "viewer" });
    expect(forever.expires_at).toBeNull();
    const viewerWithPolicy = await admin("/admin/tokens", { body: { name: "v", role: "viewer", policy: { vendors: ["stripe"] } } });
    expect(viewerWithPolicy.status).toBe(400);
    expect(JSON.stringify(await errorOf(viewerWithPolicy))).toContain("policy");
    const badPolicy = await admin("/admin/tokens", { body: { name: "i", role: "issuer", policy: { max_daily_usd_cap: -1 } } });
    expect(badPolicy.status).toBe(400);
    expect(JSON.stringify(await errorOf(badPolicy))).toContain("policy.max_daily_usd_cap");
    expect((await admin("/admin/tokens", { body: { name: "x", role: "owner" } })).status).toBe(400);
    expect((await admin("/admin/tokens/tok_nope")).status).toBe(404);
  });

  test("an admin token does everything the bootstrap token does, tokens included; a made-up token is 401", async () => {
    const adm = await newToken({ name: "second-admin", role: "admin" });
    const res = await as(adm.token)("/admin/tokens", { body: { name: "made-by-admin-token", role: "viewer" } });
    expect(res.status).toBe(201);
    shown.push(((await res.json()) as Json).token);
    expect((await as(adm.token)("/vault/holds")).status).toBe(200);
    const forged = `kb_adm_${"A".repeat(43)}`;
    const denied = await as(forged)("/vault/keys");
    expect(denied.status).toBe(401);
    expect((await errorOf(denied)).code).toBe("unauthorized");
  });
});

/** The app's own route table: a route added tomorrow is enumerated here without anyone listing it. */
function appRoutes() {
  const app = createApp(kb.config, kb.store);
  return app.routes
    .map((r) => ({
      method: r.method,
      path: r.path,
      access: (r.hooks as { detail?: Record<string, unknown> }).detail?.[ACCESS_KEY] as readonly string[] | "public" | undefined,
    }))
    .filter((r) => r.access !== "public" && !r.path.startsWith("/docs"));
}
const concrete = (path: string) => path.replace(/:[a-z_]+/g, "x_nope");
const WRITES = new Set(["POST", "PUT", "PATCH", "DELETE"]);

describe("one guard, and every route declares what it needs (enumerated from the app)", () => {
  test("the route table is what it should be, and a route without a declaration is caught", () => {
    const app = createApp(kb.config, kb.store);
    expect(undeclaredRoutes(app.routes)).toEqual([]);
    const routes = appRoutes();
    expect(routes.length).toBeGreaterThanOrEqual(19);
    for (const path of ["/admin/tokens", "/admin/tokens/:id", "/vault/keys", "/audit", "/vault/holds", "/metrics"]) {
      expect(routes.map((r) => r.path)).toContain(path);
    }
    // Someone adds a route and forgets to say who may call it: found, and createApp would refuse to build.
    const rogue = new Elysia().use(app).post("/vault/keys/export-everything", () => "oops");
    expect(undeclaredRoutes(rogue.routes)).toEqual(["POST /vault/keys/export-everything"]);
  });

  test("no token: 401 on every route that is not public", async () => {
    for (const r of appRoutes()) {
      const res = await fetch(kb.url + concrete(r.path), {
        method: r.method,
        headers: { "content-type": "application/json" },
        body: WRITES.has(r.method) ? "{}" : undefined,
      });
      expect({ route: `${r.method} ${r.path}`, status: res.status }).toEqual({ route: `${r.method} ${r.path}`, status: 401 });
    }
  });

  test("each role gets exactly the routes that declare it: 403 forbidden elsewhere (a viewer on every write route)", async () => {
    const tokens = {
      admin: (await newToken({ name: "enum-admin", role: "admin" })).token,
      issuer: (await newToken({ name: "enum-issuer", role: "issuer" })).token,
      viewer: (await newToken({ name: "enum-viewer", role: "viewer" })).token,
    };
    const before = (await kb.store.listKeys({ limit: 1000 }, Date.now())).data.length;
    let viewerWrites = 0;
    for (const r of appRoutes()) {
      expect(Array.isArray(r.access)).toBe(true);
      for (const [role, token] of Object.entries(tokens)) {
        // Ids that do not exist and empty bodies: an allowed role meets 400 or 404, never a change.
        const res = await fetch(kb.url + concrete(r.path), {
          method: r.method,
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: WRITES.has(r.method) ? "{}" : undefined,
        });
        const code = res.headers.get("x-keybrake-error");
        const allowed = (r.access as string[]).includes(role);
        expect({ route: `${r.method} ${r.path}`, role, forbidden: code === "forbidden" }).toEqual({
          route: `${r.method} ${r.path}`,
          role,
          forbidden: !allowed,
        });
        expect(code).not.toBe("unauthorized");
        if (role === "viewer" && WRITES.has(r.method)) {
          viewerWrites++;
          expect(res.status).toBe(403);
        }
      }
    }
    expect(viewerWrites).toBeGreaterThanOrEqual(9);
    expect((await kb.store.listKeys({ limit: 1000 }, Date.now())).data.length).toBe(before);
  });

  test("/docs/json documents the token routes and, in each route's description, the roles it needs", async () => {
    const spec = (await (await fetch(`${kb.url}/docs/json`)).json()) as Json;
    for (const [path, method] of [
      ["/admin/tokens", "post"],
      ["/admin/tokens", "get"],
      ["/admin/tokens/{id}", "get"],
      ["/admin/tokens/{id}", "delete"],
    ] as const) {
      const op = spec.paths[path][method];
      expect(op.tags).toEqual(["Tokens"]);
      expect(op.description).toContain("Roles: `admin`.");
      expect(op.security).toEqual([{ adminToken: [] }]);
    }
    expect(spec.paths["/admin/tokens"].post.requestBody.content["application/json"].schema.properties.policy.properties).toHaveProperty(
      "issued_usd_per_day",
    );
    expect(spec.paths["/admin/tokens/{id}"].delete.parameters).toContainEqual(
      expect.objectContaining({ name: "revoke_keys", in: "query" }),
    );
    for (const r of appRoutes()) {
      const op = spec.paths[r.path.replace(/:([a-z_]+)/g, "{$1}")][r.method.toLowerCase()];
      expect(op[ACCESS_KEY]).toEqual(r.access);
      for (const role of r.access as string[]) expect(op.description).toContain(`\`${role}\``);
      // /metrics answers Prometheus text and documents no JSON bodies; every other route its 401 and 403.
      if (r.path !== "/metrics") expect(Object.keys(op.responses)).toEqual(expect.arrayContaining(["401", "403"]));
    }
    expect(spec.paths["/vault/keys"].post.description).toContain("`issuer` (within its policy)");
    // Every input of the token routes, the policy's fields included, has a description and an example.
    const missing: string[] = [];
    const documented = (where: string, field: Json) => {
      if (!field.description || !(field.examples?.length > 0)) missing.push(where);
    };
    for (const [path, ops] of Object.entries(spec.paths as Json).filter(([p]) => p.startsWith("/admin/tokens"))) {
      for (const [method, op] of Object.entries(ops as Json) as [string, Json][]) {
        for (const p of op.parameters ?? []) documented(`${method} ${path} ${p.name}`, { ...p.schema, description: p.description });
        const body = op.requestBody?.content?.["application/json"]?.schema;
        for (const [name, field] of Object.entries((body?.properties ?? {}) as Json)) documented(`${method} ${path} ${name}`, field);
        for (const [name, field] of Object.entries((body?.properties?.policy?.properties ?? {}) as Json))
          documented(`policy.${name}`, field);
      }
    }
    expect(missing).toEqual([]);
    expect(spec.paths["/vault/keys"].post.responses["403"].description).toContain("issuer_policy_violation");
  });
});

describe("revocation and expiry take effect on the next request", () => {
  test("a revoked token: 401 on its very next request (nothing cached); its keys keep working unless revoke_keys", async () => {
    const iss = await newToken({ name: "revoke-me", role: "issuer" });
    const key = await mint(iss.token);
    expect((await as(iss.token)("/vault/keys")).status).toBe(200);
    const revoked = await admin(`/admin/tokens/${iss.id}`, { method: "DELETE" });
    expect(revoked.status).toBe(200);
    expect(await revoked.json()).toMatchObject({ id: iss.id, status: "revoked", revoked_keys: 0 });
    const next = await as(iss.token)("/vault/keys");
    expect(next.status).toBe(401);
    expect((await errorOf(next)).message).toContain("revoked");
    expect((await charge(key.vault_key)).status).toBe(200);
    // Idempotent.
    expect((await admin(`/admin/tokens/${iss.id}`, { method: "DELETE" })).status).toBe(200);
  });

  test("revoke_keys=true also stops the next proxied call of every key the token minted, and only those", async () => {
    const iss = await newToken({ name: "runaway-host", role: "issuer" });
    const other = await newToken({ name: "healthy-host", role: "issuer" });
    const keys = [await mint(iss.token), await mint(iss.token), await mint(iss.token)];
    const bystander = await mint(other.token);
    for (const k of keys) expect((await charge(k.vault_key)).status).toBe(200);
    const res = await admin(`/admin/tokens/${iss.id}?revoke_keys=true`, { method: "DELETE" });
    expect(await res.json()).toMatchObject({ status: "revoked", revoked_keys: 3 });
    for (const k of keys) {
      const denied = await charge(k.vault_key);
      expect(denied.status).toBe(401);
      expect(denied.headers.get("x-keybrake-error")).toBe("key_revoked");
    }
    expect((await charge(bystander.vault_key)).status).toBe(200);
    expect((await admin(`/admin/tokens/${iss.id}?revoke_keys=maybe`, { method: "DELETE" })).status).toBe(400);
  });

  test("an expired token: 401 on the next request after its expiry", async () => {
    const clock = testClock(Date.UTC(2026, 10, 22, 6, 0, 0));
    await withKeybrake({}, { now: clock.now }, async (own) => {
      const viewer = await newToken({ name: "short", role: "viewer", expires_in: "2h" }, own);
      expect((await as(viewer.token, own)("/vault/keys")).status).toBe(200);
      clock.advance(2 * 3600_000 - 1);
      expect((await as(viewer.token, own)("/vault/keys")).status).toBe(200);
      clock.advance(1);
      const expired = await as(viewer.token, own)("/vault/keys");
      expect(expired.status).toBe(401);
      expect((await errorOf(expired)).message).toContain("expired");
      expect(((await (await as(ADMIN_TOKEN, own)(`/admin/tokens/${viewer.id}`)).json()) as Json).status).toBe("expired");
    });
  });
});

describe("scoping: an issuer sees, changes and revokes only the keys it minted; a viewer writes nothing", () => {
  test("issuer A cannot see, patch or revoke issuer B's keys (404, as if they did not exist)", async () => {
    const a = await newToken({ name: "tenant-a", role: "issuer" });
    const b = await newToken({ name: "tenant-b", role: "issuer" });
    const keyA = await mint(a.token, { agent_run_label: "shared-family/a" });
    const keyB = await mint(b.token, { agent_run_label: "shared-family/b" });
    const asA = as(a.token);

    const listed = ((await (await asA("/vault/keys?limit=1000")).json()) as Json).data.map((k: Json) => k.id);
    expect(listed).toContain(keyA.id);
    expect(listed).not.toContain(keyB.id);
    expect((await asA(`/vault/keys/${keyA.id}`)).status).toBe(200);
    expect((await asA(`/vault/keys/${keyB.id}`)).status).toBe(404);
    expect((await asA(`/vault/keys/${keyB.id}`, { method: "PATCH", body: { daily_usd_cap: 1 } })).status).toBe(404);
    expect((await asA(`/vault/keys/${keyB.id}`, { method: "DELETE" })).status).toBe(404);
    expect((await asA(`/v1/keys/${keyB.id}`, { method: "DELETE" })).status).toBe(404);
    expect(await (await asA("/vault/keys/revoke", { body: { ids: [keyB.id] } })).json()).toEqual({ revoked: 0 });
    // The kill switch of A's run family reaches A's keys only, though B's share the prefix.
    expect(await (await asA("/vault/keys/revoke", { body: { label_prefix: "shared-family/" } })).json()).toEqual({ revoked: 1 });
    const bNow = (await (await admin(`/vault/keys/${keyB.id}`)).json()) as Json;
    expect(bNow).toMatchObject({ status: "active", daily_usd_cap: 100 });
    expect((await charge(keyB.vault_key)).status).toBe(200);
    expect((await charge(keyA.vault_key)).status).toBe(401);
    // B still manages its own.
    expect((await as(b.token)(`/vault/keys/${keyB.id}`, { method: "PATCH", body: { daily_usd_cap: 50 } })).status).toBe(200);
    // Admins and viewers see both.
    for (const token of [ADMIN_TOKEN, (await newToken({ name: "scoping-viewer", role: "viewer" })).token]) {
      const all = ((await (await as(token)("/vault/keys?limit=1000")).json()) as Json).data.map((k: Json) => k.id);
      expect(all).toEqual(expect.arrayContaining([keyA.id, keyB.id]));
    }
  });

  test("an issuer reads the audit and spend of its own keys only, in every view (rows, spend, export)", async () => {
    const a = await newToken({ name: "audit-a", role: "issuer" });
    const b = await newToken({ name: "audit-b", role: "issuer" });
    const keyA = await mint(a.token, { agent_run_label: "audit-scope/a" });
    const keyB = await mint(b.token, { agent_run_label: "audit-scope/b" });
    expect((await charge(keyA.vault_key)).status).toBe(200);
    expect((await charge(keyB.vault_key)).status).toBe(200);
    expect((await charge(keyB.vault_key)).status).toBe(200);
    const asA = as(a.token);

    const rows = ((await (await asA("/audit?limit=1000")).json()) as Json).data as Json[];
    expect(rows.length).toBe(1);
    expect(rows[0]!.key_id).toBe(keyA.id);
    expect(((await (await asA(`/audit?key_id=${keyB.id}`)).json()) as Json).data).toEqual([]);
    expect(((await (await asA("/audit?label_prefix=audit-scope/")).json()) as Json).data.map((r: Json) => r.key_id)).toEqual([keyA.id]);
    const spend = ((await (await asA("/audit/spend?group_by=key")).json()) as Json).data as Json[];
    expect(spend).toEqual([expect.objectContaining({ group: keyA.id, calls: 1, spend_usd: 5 })]);
    const exported = await (await asA("/audit/export?format=ndjson")).text();
    expect(
      exported
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l).key_id),
    ).toEqual([keyA.id]);
    // An admin sees B's calls too.
    const all = ((await (await admin("/audit?label_prefix=audit-scope/")).json()) as Json).data as Json[];
    expect(all.filter((r) => r.key_id === keyB.id)).toHaveLength(2);
  });

  test("an issuer reads no holds, admin events or tokens; a viewer reads them all and writes nothing", async () => {
    const iss = await newToken({ name: "nosy-issuer", role: "issuer" });
    for (const path of ["/vault/holds", "/admin/events", "/admin/tokens"]) {
      const res = await as(iss.token)(path);
      expect(res.status).toBe(403);
      expect((await errorOf(res)).code).toBe("forbidden");
    }
    const viewer = await newToken({ name: "reader", role: "viewer" });
    for (const path of ["/vault/keys", "/vault/holds", "/audit", "/audit/spend", "/audit/export", "/admin/events", "/metrics"]) {
      expect({ path, status: (await as(viewer.token)(path)).status }).toEqual({ path, status: 200 });
    }
    expect((await as(viewer.token)("/admin/tokens")).status).toBe(403);
    const mintAttempt = await as(viewer.token)("/vault/keys", { body: { ...STRIPE_KEY, agent_run_label: "viewer/nope" } });
    expect(mintAttempt.status).toBe(403);
    expect((await errorOf(mintAttempt)).message).toContain("viewer");
    expect(((await (await admin("/vault/keys?label=viewer/nope")).json()) as Json).data).toEqual([]);
  });
});

describe("admin events record the token's id and name", () => {
  test("every action carries token_id and token_name; GET /admin/events?token_id= filters by token", async () => {
    const iss = await newToken({ name: "events-issuer", role: "issuer" });
    const key = await mint(iss.token);
    await as(iss.token)(`/vault/keys/${key.id}`, { method: "PATCH", body: { daily_usd_cap: 10 } });
    await as(iss.token)(`/vault/keys/${key.id}`, { method: "DELETE" });
    const mine = ((await (await admin(`/admin/events?token_id=${iss.id}`)).json()) as Json).data as Json[];
    expect(mine.map((e) => e.action)).toEqual(["key.revoke", "key.update", "key.create"]);
    for (const e of mine) {
      expect(e).toMatchObject({ token_id: iss.id, token_name: "events-issuer", target: key.id });
      expect(e.actor).toMatch(/^sha256:[0-9a-f]{12}$/);
    }
    const byBootstrap = ((await (await admin("/admin/events?token_id=admin&limit=1000")).json()) as Json).data as Json[];
    const created = byBootstrap.find((e) => e.action === "token.create" && e.target === iss.id)!;
    expect(created).toMatchObject({ token_id: "admin", token_name: "bootstrap admin token" });
    expect(created.details).toMatchObject({ name: "events-issuer", role: "issuer" });
    expect(JSON.stringify(created)).not.toContain(iss.token);
    const all = ((await (await admin("/admin/events?limit=1000")).json()) as Json).data as Json[];
    expect(all.every((e) => "token_id" in e && "token_name" in e)).toBe(true);
  });
});

describe("tenant isolation at the vendor (SPEC §7)", () => {
  test("two issuers' keys with one Idempotency-Key reach the vendor with two keys; two keys of one issuer with one", async () => {
    const a = await newToken({ name: "tenant-iso-a", role: "issuer" });
    const b = await newToken({ name: "tenant-iso-b", role: "issuer" });
    const [a1, a2, b1] = [await mint(a.token), await mint(a.token), await mint(b.token)];
    const idem = "invoice-2026-11-22-cus_42";
    const answers: Json[] = [];
    for (const k of [a1, b1, a2]) {
      const res = await charge(k.vault_key, idem);
      expect(res.status).toBe(200);
      answers.push((await res.json()) as Json);
    }
    const seen = stripe.received.filter((r) => r.path === "/v1/payment_intents").map((r) => r.headers["idempotency-key"] as string);
    expect(seen).toHaveLength(3);
    const [forA1, forB1, forA2] = seen;
    expect(forA1).not.toBe(forB1); // tenants never share a vendor key: B does not get A's answer replayed
    expect(forA2).toBe(forA1); // a retry under a fresh key of the same minter is de-duplicated by the vendor
    for (const k of seen) expect(k).not.toContain(idem);
    expect(answers[1]!.id).not.toBe(answers[0]!.id);
    expect(answers[2]!.id).toBe(answers[0]!.id);
  });

  test("keys of the bootstrap token keep the minter they always had ('admin'): their vendor keys do not change", async () => {
    const key = await kb.issueKey({ ...STRIPE_KEY, agent_run_label: "bootstrap/stable" });
    shown.push(key.vault_key);
    expect((await charge(key.vault_key, "stable-1")).status).toBe(200);
    const expected = await idempotencyDeriver(kb.store)("admin", "stable-1");
    expect(stripe.received.at(-1)!.headers["idempotency-key"]).toBe(expected);
  });
});

describe("issued_usd_per_day is a hard bound, even under concurrent mints", () => {
  test("50 concurrent mints: the caps minted never add up past it; the rest are refused naming the rule", async () => {
    const iss = await newToken({ name: "burst", role: "issuer", policy: { issued_usd_per_day: 1000 } });
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        as(iss.token)("/vault/keys", {
          body: {
            vendor: "stripe",
            total_usd_cap: 30,
            allowed_endpoints: ["POST /v1/payment_intents"],
            expires_in: "1h",
            label: `burst/${i}`,
          },
        }),
      ),
    );
    const minted: Json[] = [];
    for (const res of results) {
      if (res.status === 201) minted.push((await res.json()) as Json);
      else {
        expect(res.status).toBe(403);
        expect((await errorOf(res)).details).toEqual({ rule: "policy.issued_usd_per_day" });
      }
    }
    for (const k of minted) shown.push(k.vault_key);
    expect(minted.length).toBe(33); // 33 x 30 = 990; a 34th would make 1020
    const inDb = (await kb.store.listKeys({ labelPrefix: "burst/", limit: 1000 }, Date.now())).data;
    expect(inDb.length).toBe(33);
    expect(inDb.reduce((sum, k) => sum + (k.totalCapMicros ?? 0), 0)).toBeLessThanOrEqual(1000 * 1e6);
  });
});

describe("the CLI: keybrake tokens create | list | revoke", () => {
  test("on the same database, with the same validation; the token printed once", async () => {
    const dir = mkdtempSync(join(tmpdir(), "keybrake-tokens-cli-"));
    try {
      const env = { KEYBRAKE_DB: join(dir, "kb.db") };
      const cli = (...args: string[]) => cliInProcess(args, env);
      // No database yet: --help answers, a command names the missing file and creates nothing.
      expect((await cli("tokens", "--help")).code).toBe(0);
      const missing = await cli("tokens", "list");
      expect(missing.code).not.toBe(0);
      expect(missing.stderr).toContain("KEYBRAKE_DB");
      expect(readdirSync(dir)).toEqual([]);
      expect((await cli("migrate")).code).toBe(0);
      const help = await cli("tokens", "create", "--help");
      expect(help.code).toBe(0);
      expect(help.stdout).toContain("--policy");
      const policy = JSON.stringify({ vendors: ["stripe"], max_daily_usd_cap: 500, label_prefix: "airflow-billing/" });
      const created = await cli(
        "tokens",
        "create",
        "--name",
        "airflow-prod",
        "--role",
        "issuer",
        "--expires-in",
        "90d",
        "--policy",
        policy,
        "--json",
      );
      expect(created.stderr).toBe("");
      expect(created.code).toBe(0);
      const token = JSON.parse(created.stdout) as Json;
      expect(token.token).toMatch(/^kb_iss_[0-9A-Za-z]{32,}$/);
      expect(token.policy).toEqual(JSON.parse(policy));
      shown.push(token.token);
      const listed = await cli("tokens", "list");
      expect(listed.stdout).toContain(token.id);
      expect(listed.stdout).toContain("airflow-prod");
      expect(listed.stdout).not.toContain(token.token);
      const bad = await cli("tokens", "create", "--name", "x", "--role", "issuer", "--policy", '{"max_daily_usd_cap":"lots"}');
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain("max_daily_usd_cap");
      const revoked = await cli("tokens", "revoke", token.id, "--revoke-keys");
      expect(revoked.code).toBe(0);
      expect(revoked.stdout).toContain(`revoked ${token.id}`);
      expect((await cli("tokens", "revoke", "tok_nope")).code).not.toBe(0);
      expect(secretsIn(rawBytes(env.KEYBRAKE_DB, `${env.KEYBRAKE_DB}-wal`), [token.token])).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

describe("the database never holds a token", () => {
  test("no token, vault key or configured secret shown in this file is in the database's bytes", async () => {
    // Traffic of its own, so the test holds when run alone.
    const iss = await newToken({ name: "bytes-issuer", role: "issuer", policy: { label_prefix: "bytes/" } });
    const key = await mint(iss.token, { agent_run_label: "bytes/run" });
    expect((await charge(key.vault_key)).status).toBe(200);
    await as(iss.token)("/vault/keys");
    await admin(`/admin/tokens/${iss.id}`, { method: "DELETE" });
    await kb.readDb(() => null); // commits what is queued
    const bytes = rawBytes(kb.dbPath, `${kb.dbPath}-wal`, `${kb.dbPath}-shm`);
    expect(bytes).toContain("bytes-issuer"); // the scan reads the bytes the token's row was written to
    expect(shown.length).toBeGreaterThan(5);
    expect(secretsIn(bytes, [...CONFIGURED_SECRETS, ...shown])).toEqual([]);
    expect(secretsIn(kb.logs.join("\n"), [...CONFIGURED_SECRETS, ...shown])).toEqual([]);
  });
});

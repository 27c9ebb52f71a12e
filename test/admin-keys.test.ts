import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { ADMIN_TOKEN, startKeybrake, type Harness } from "./helpers/harness";

let kb: Harness;
beforeAll(async () => {
  kb = await startKeybrake();
});
afterAll(() => kb.stop());

const valid = {
  vendor: "stripe",
  daily_usd_cap: 500,
  allowed_endpoints: ["POST /v1/payment_intents"],
  expires_in: "6h",
  agent_run_label: "airflow-billing/run_1",
};
type Json = Record<string, any>;

async function expectError(res: Response, status: number, code: string) {
  expect(res.status).toBe(status);
  expect(res.headers.get("x-keybrake-error")).toBe(code);
  const body = (await res.json()) as Json;
  expect(body.code).toBe(code);
  expect(body.error).toMatchObject({ type: "keybrake_error", code });
  expect(body.message).toBeString();
  return body;
}

describe("admin auth", () => {
  const cases: [string, Record<string, string>][] = [
    ["no token", {}],
    ["a wrong token", { authorization: "Bearer nope" }],
    ["a token of the right length that is wrong", { authorization: `Bearer ${ADMIN_TOKEN.slice(0, -1)}X` }],
    ["a vault-key-shaped token", { authorization: "Bearer kb_live_0123456789abcdefghijklmnopqrstuvwxyzAB" }],
    ["the right token under Basic", { authorization: `Basic ${btoa(`${ADMIN_TOKEN}:`)}` }],
  ];
  for (const [name, headers] of cases) {
    test(`${name} -> 401 unauthorized on every admin route`, async () => {
      for (const [method, path] of [
        ["POST", "/vault/keys"],
        ["GET", "/vault/keys"],
        ["POST", "/v1/keys"],
        ["DELETE", "/v1/keys/vk_x"],
        ["GET", "/audit"],
        ["GET", "/admin/events"],
      ]) {
        const res = await fetch(kb.url + path, {
          method,
          headers: { ...headers, "content-type": "application/json" },
          body: method === "POST" ? JSON.stringify(valid) : undefined,
        });
        await expectError(res, 401, "unauthorized");
      }
    });
  }
});

describe("issuing a key", () => {
  test("201 with the record, the secret once, and the seed's fields", async () => {
    const res = await kb.admin("/vault/keys", { body: valid });
    expect(res.status).toBe(201);
    const key = (await res.json()) as Json;
    expect(key.id).toMatch(/^vk_[0-9A-Za-z]{24}$/);
    expect(key.vault_key).toMatch(/^kb_live_[0-9A-Za-z]{40}$/);
    expect(key.token).toBe(key.vault_key);
    expect(key).toMatchObject({
      vendor: "stripe",
      label: "airflow-billing/run_1",
      daily_usd_cap: 500,
      total_usd_cap: null,
      mode: "live",
      status: "active",
      allowed_endpoints: ["POST /v1/payment_intents"],
      spent_today_usd: 0,
      held_usd: 0,
      remaining_today_usd: 500,
      calls: 0,
    });
    expect(Date.parse(key.expires_at) - Date.parse(key.created_at)).toBe(6 * 3600 * 1000);
    const shown = (await (await kb.admin(`/vault/keys/${key.id}`)).json()) as Json;
    expect(shown.vault_key).toBeUndefined();
    expect(JSON.stringify(shown)).not.toContain(key.vault_key);
  });

  test("the Flask seed's form: POST /v1/keys with label, no method in patterns, integer cap; default expiry 24h", async () => {
    const res = await kb.admin("/v1/keys", {
      body: {
        label: "flask-u1-r1",
        vendor: "stripe",
        allowed_endpoints: ["/v1/payment_intents", "/v1/payment_intents/*"],
        daily_usd_cap: 1000,
      },
    });
    expect(res.status).toBe(201);
    const key = (await res.json()) as Json;
    expect(key.token).toStartWith("kb_live_");
    expect(key.label).toBe("flask-u1-r1");
    expect(Date.parse(key.expires_at) - Date.parse(key.created_at)).toBe(24 * 3600 * 1000);
  });

  test("a total cap alone is enough; expires_at is accepted", async () => {
    const at = new Date(Date.now() + 3600_000).toISOString();
    const res = await kb.admin("/vault/keys", {
      body: {
        vendor: "twilio",
        total_usd_cap: 5,
        allowed_endpoints: ["POST /2010-04-01/Accounts/*/Messages.json"],
        expires_at: at,
        mode: "test",
      },
    });
    expect(res.status).toBe(201);
    const key = (await res.json()) as Json;
    expect(key).toMatchObject({ daily_usd_cap: null, total_usd_cap: 5, remaining_today_usd: null, mode: "test" });
    expect(key.vault_key).toStartWith("kb_test_");
  });

  const invalid: [string, Json, string][] = [
    ["unknown vendor", { vendor: "paypal" }, "vendor"],
    ["missing vendor", { vendor: undefined }, "vendor"],
    ["cap 0", { daily_usd_cap: 0 }, "daily_usd_cap"],
    ["negative cap", { daily_usd_cap: -5 }, "daily_usd_cap"],
    ["cap as a string", { daily_usd_cap: "500" }, "daily_usd_cap"],
    ["cap NaN (null in JSON)", { daily_usd_cap: null }, "daily_usd_cap"],
    ["absurdly large cap", { daily_usd_cap: 1e300 }, "daily_usd_cap"],
    ["cap below a micro-dollar", { daily_usd_cap: 1e-9 }, "daily_usd_cap"],
    ["negative total cap", { total_usd_cap: -1 }, "total_usd_cap"],
    ["no cap at all", { daily_usd_cap: undefined }, "daily_usd_cap"],
    ["empty allowlist", { allowed_endpoints: [] }, "allowed_endpoints"],
    ["allowlist not a list", { allowed_endpoints: "POST /v1/payment_intents" }, "allowed_endpoints"],
    ["pattern without a slash", { allowed_endpoints: ["POST v1/payment_intents"] }, "allowed_endpoints.0"],
    ["pattern with an unknown method", { allowed_endpoints: ["FETCH /v1/x"] }, "allowed_endpoints.0"],
    ["pattern with lowercase method", { allowed_endpoints: ["post /v1/x"] }, "allowed_endpoints.0"],
    ["pattern with ..", { allowed_endpoints: ["/v1/../vault"] }, "allowed_endpoints.0"],
    ["pattern with //", { allowed_endpoints: ["/v1//x"] }, "allowed_endpoints.0"],
    ["pattern with a query", { allowed_endpoints: ["/v1/x?y=1"] }, "allowed_endpoints.0"],
    ["pattern not a string", { allowed_endpoints: [42] }, "allowed_endpoints.0"],
    ["duration 0m", { expires_in: "0m" }, "expires_in"],
    ["duration -5m", { expires_in: "-5m" }, "expires_in"],
    ["duration 6x", { expires_in: "6x" }, "expires_in"],
    ["duration 31d", { expires_in: "31d" }, "expires_in"],
    ["duration empty", { expires_in: "" }, "expires_in"],
    ["expires_at in the past", { expires_in: undefined, expires_at: "2020-01-01T00:00:00Z" }, "expires_at"],
    ["expires_at not a time", { expires_in: undefined, expires_at: "tomorrow" }, "expires_at"],
    ["expires_at beyond 30 days", { expires_in: undefined, expires_at: new Date(Date.now() + 40 * 86400_000).toISOString() }, "expires_at"],
    ["both expiries", { expires_at: new Date(Date.now() + 3600_000).toISOString() }, "expires_at"],
    ["label too long", { agent_run_label: "x".repeat(201) }, "agent_run_label"],
    ["unknown mode", { mode: "prod" }, "mode"],
    ["rate limit 0", { max_requests_per_minute: 0 }, "max_requests_per_minute"],
    ["rate limit fractional", { max_requests_per_minute: 1.5 }, "max_requests_per_minute"],
    ["require_idempotency_key not a bool", { require_idempotency_key: "yes" }, "require_idempotency_key"],
    ["metadata too large", { metadata: { blob: "x".repeat(5000) } }, "metadata"],
    ["metadata not flat", { metadata: { nested: { a: "b" } } }, "metadata.nested"],
    ["unknown field", { colour: "red" }, "colour"],
  ];
  for (const [name, change, field] of invalid) {
    test(`${name} -> 400 invalid_request naming ${field}`, async () => {
      const res = await kb.admin("/vault/keys", { body: { ...valid, ...change } });
      const body = await expectError(res, 400, "invalid_request");
      expect(body.error.details.fields.map((f: Json) => f.path)).toContain(field);
    });
  }

  test("malformed JSON and a non-object body -> 400, never 500", async () => {
    for (const raw of ["{bad", "[]", "null", "42", '"x"', ""]) {
      const res = await fetch(`${kb.url}/vault/keys`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: raw,
      });
      await expectError(res, 400, "invalid_request");
    }
  });
});

describe("managing keys", () => {
  test("list filters by label, label_prefix, vendor and status, and pages with a cursor", async () => {
    const run = `list-${Date.now()}`;
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await kb.issueKey({ ...valid, agent_run_label: `${run}/r${i}` })).id);
    await kb.issueKey({ vendor: "resend", daily_usd_cap: 1, allowed_endpoints: ["POST /emails"], agent_run_label: `${run}/r9` });

    const page1 = (await (await kb.admin(`/vault/keys?label_prefix=${run}/&limit=4`)).json()) as Json;
    expect(page1.data).toHaveLength(4);
    expect(page1.next_cursor).toBeString();
    const page2 = (await (await kb.admin(`/vault/keys?label_prefix=${run}/&limit=4&cursor=${page1.next_cursor}`)).json()) as Json;
    expect(page2.data).toHaveLength(2);
    expect(page2.next_cursor).toBeNull();
    const all = [...page1.data, ...page2.data].map((k: Json) => k.id);
    expect(new Set(all).size).toBe(6);

    const exact = (await (await kb.admin(`/vault/keys?label=${encodeURIComponent(`${run}/r2`)}`)).json()) as Json;
    expect(exact.data.map((k: Json) => k.id)).toEqual([ids[2]]);
    const resend = (await (await kb.admin(`/vault/keys?label_prefix=${run}/&vendor=resend`)).json()) as Json;
    expect(resend.data).toHaveLength(1);
    await kb.admin(`/vault/keys/${ids[0]}`, { method: "DELETE" });
    const revoked = (await (await kb.admin(`/vault/keys?label_prefix=${run}/&status=revoked`)).json()) as Json;
    expect(revoked.data.map((k: Json) => k.id)).toEqual([ids[0]]);
    const active = (await (await kb.admin(`/vault/keys?label_prefix=${run}/&status=active`)).json()) as Json;
    expect(active.data).toHaveLength(5);
    await expectError(await kb.admin("/vault/keys?status=dead"), 400, "invalid_request");
    await expectError(await kb.admin("/vault/keys?limit=0"), 400, "invalid_request");
  });

  test("status expired is computed from expires_at", async () => {
    let now = Date.now();
    const clocked = await startKeybrake({}, { now: () => now });
    try {
      const key = await clocked.issueKey({ ...valid, expires_in: "90s" });
      now += 91_000;
      const shown = (await (await clocked.admin(`/vault/keys/${key.id}`)).json()) as Json;
      expect(shown.status).toBe("expired");
      const expired = (await (await clocked.admin("/vault/keys?status=expired")).json()) as Json;
      expect(expired.data.map((k: Json) => k.id)).toEqual([key.id]);
    } finally {
      await clocked.stop();
    }
  });

  test("revoke is idempotent, via both routes; unknown ids are 404", async () => {
    const key = await kb.issueKey(valid);
    const first = await kb.admin(`/vault/keys/${key.id}`, { method: "DELETE" });
    expect(first.status).toBe(200);
    const r1 = (await first.json()) as Json;
    expect(r1.status).toBe("revoked");
    expect(r1.revoked_at).toBeString();
    const again = (await (await kb.admin(`/v1/keys/${key.id}`, { method: "DELETE" })).json()) as Json;
    expect(again.status).toBe("revoked");
    expect(again.revoked_at).toBe(r1.revoked_at);
    await expectError(await kb.admin("/vault/keys/vk_nope", { method: "DELETE" }), 404, "not_found");
    await expectError(await kb.admin("/vault/keys/vk_nope"), 404, "not_found");
  });

  test("bulk revoke by label prefix and by ids counts what it revoked", async () => {
    const run = `bulk-${Date.now()}`;
    const a = await kb.issueKey({ ...valid, agent_run_label: `${run}/a` });
    await kb.issueKey({ ...valid, agent_run_label: `${run}/b` });
    const other = await kb.issueKey({ ...valid, agent_run_label: `other-${run}` });
    await kb.admin(`/vault/keys/${a.id}`, { method: "DELETE" });
    const res = (await (await kb.admin("/vault/keys/revoke", { body: { label_prefix: `${run}/` } })).json()) as Json;
    expect(res).toEqual({ revoked: 1 });
    const again = (await (await kb.admin("/vault/keys/revoke", { body: { label_prefix: `${run}/` } })).json()) as Json;
    expect(again).toEqual({ revoked: 0 });
    expect(((await (await kb.admin(`/vault/keys/${other.id}`)).json()) as Json).status).toBe("active");
    expect(await (await kb.admin("/vault/keys/revoke", { body: { ids: [other.id, "vk_missing"] } })).json()).toEqual({ revoked: 1 });
    await expectError(await kb.admin("/vault/keys/revoke", { body: { label_prefix: "" } }), 400, "invalid_request");
    await expectError(await kb.admin("/vault/keys/revoke", { body: {} }), 400, "invalid_request");
    // `%` and `_` are plain characters, not LIKE wildcards
    await kb.issueKey({ ...valid, agent_run_label: `${run}x` });
    expect(await (await kb.admin("/vault/keys/revoke", { body: { label_prefix: `${run.slice(0, -2)}%` } })).json()).toEqual({ revoked: 0 });
  });

  test("PATCH changes what it says, validates, and is recorded as an admin event", async () => {
    const key = await kb.issueKey(valid);
    const res = await kb.admin(`/vault/keys/${key.id}`, {
      method: "PATCH",
      body: { daily_usd_cap: 750.5, total_usd_cap: 2000, max_requests_per_minute: 60, expires_in: "2h" },
    });
    expect(res.status).toBe(200);
    const patched = (await res.json()) as Json;
    expect(patched).toMatchObject({ daily_usd_cap: 750.5, total_usd_cap: 2000, max_requests_per_minute: 60, remaining_today_usd: 750.5 });
    expect(Math.abs(Date.parse(patched.expires_at) - Date.now() - 2 * 3600_000)).toBeLessThan(5000);
    expect(patched.allowed_endpoints).toEqual(valid.allowed_endpoints);

    await expectError(await kb.admin(`/vault/keys/${key.id}`, { method: "PATCH", body: { vendor: "twilio" } }), 400, "invalid_request");
    await expectError(await kb.admin(`/vault/keys/${key.id}`, { method: "PATCH", body: { daily_usd_cap: 0 } }), 400, "invalid_request");
    await expectError(
      await kb.admin(`/vault/keys/${key.id}`, { method: "PATCH", body: { daily_usd_cap: null, total_usd_cap: null } }),
      400,
      "invalid_request",
    );
    await expectError(await kb.admin(`/vault/keys/${key.id}`, { method: "PATCH", body: {} }), 400, "invalid_request");
    await expectError(await kb.admin("/vault/keys/vk_none", { method: "PATCH", body: { daily_usd_cap: 1 } }), 404, "not_found");
    // One meaning per code: key_revoked (401) is the proxy's; changing a revoked key is a conflict of its own.
    const revoked = await kb.issueKey({ ...valid, expires_in: "1h" });
    await kb.admin(`/vault/keys/${revoked.id}`, { method: "DELETE" });
    await expectError(
      await kb.admin(`/vault/keys/${revoked.id}`, { method: "PATCH", body: { daily_usd_cap: 1 } }),
      409,
      "revoked_key_unchangeable",
    );

    const events = (await (await kb.admin("/admin/events?limit=1000")).json()) as Json;
    const mine = events.data.filter((e: Json) => e.target === key.id);
    expect(mine.map((e: Json) => e.action)).toEqual(["key.update", "key.create"]);
    expect(mine[0].actor).toMatch(/^sha256:[0-9a-f]{12}$/);
    expect(mine[0].details).toMatchObject({ daily_usd_cap: 750.5, total_usd_cap: 2000 });
    expect(JSON.stringify(events)).not.toContain(ADMIN_TOKEN);
  });

  test("the database file never holds a vault key or the admin token in plaintext", async () => {
    const secrets: string[] = [];
    for (let i = 0; i < 5; i++) secrets.push((await kb.issueKey(valid)).vault_key);
    const bytes = readFileSync(kb.dbPath).toString("latin1") + readFileSync(`${kb.dbPath}-wal`).toString("latin1");
    for (const s of [...secrets, ADMIN_TOKEN]) {
      expect(bytes.includes(s)).toBe(false);
      expect(bytes.includes(s.slice(8, 30))).toBe(false);
    }
  });

  test("unknown routes are 404 not_found with the contract's body", async () => {
    await expectError(await fetch(`${kb.url}/nope`), 404, "not_found");
    await expectError(await kb.admin("/vault/nope"), 404, "not_found");
  });
});

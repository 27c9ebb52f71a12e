import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { testClock } from "./helpers/clock";
import { ADMIN_TOKEN, startKeybrake, type Harness } from "./helpers/harness";
import { TWILIO_SID } from "./helpers/mock-twilio";

// SPEC §10: every field of an issuer's policy, each enforced when a key is minted and when it is PATCHed. A
// request outside it: 403 issuer_policy_violation, the rule in the message and in error.details.rule, nothing
// created or changed.

type Json = Record<string, any>;
const START = Date.UTC(2026, 10, 22, 6, 0, 0);
const clock = testClock(START);
let kb: Harness;

beforeAll(async () => {
  kb = await startKeybrake({}, { now: clock.now });
});
afterAll(() => kb.stop());

function call(token: string, path: string, init: { method?: string; body?: unknown } = {}) {
  return fetch(kb.url + path, {
    method: init.method ?? (init.body === undefined ? "GET" : "POST"),
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
}

let issuers = 0;
async function issuer(policy: Json): Promise<{ id: string; token: string }> {
  const res = await call(ADMIN_TOKEN, "/admin/tokens", { body: { name: `policy-${++issuers}`, role: "issuer", policy } });
  if (res.status !== 201) throw new Error(`token create failed: ${res.status} ${await res.text()}`);
  return (await res.json()) as { id: string; token: string };
}

const BASE: Json = {
  vendor: "stripe",
  daily_usd_cap: 100,
  allowed_endpoints: ["POST /v1/payment_intents"],
  expires_in: "1h",
  label: "policy/run",
};
/** BASE with `changes` applied; a change to undefined removes the field. */
const keyBody = (changes: Json) => Object.fromEntries(Object.entries({ ...BASE, ...changes }).filter(([, v]) => v !== undefined)) as Json;

const keysOf = async (tokenId: string) => (await kb.store.listKeys({ mintedBy: tokenId, limit: 1000 }, clock.now())).data;

async function expectRefused(res: Response, rule: string) {
  expect(res.status).toBe(403);
  expect(res.headers.get("x-keybrake-error")).toBe("issuer_policy_violation");
  const body = (await res.json()) as Json;
  expect(body.code).toBe("issuer_policy_violation");
  expect(body.error.details).toEqual({ rule });
  expect(body.message).toStartWith(`${rule}: `);
}

/** One rule: the allowed requests mint, each refused one is refused naming the rule, and creates nothing. */
const MINT_CASES: [rule: string, policy: Json, allowed: Json[], refused: Json[]][] = [
  ["policy.vendors", { vendors: ["stripe", "twilio"] }, [{}], [{ vendor: "resend", allowed_endpoints: ["POST /emails"] }]],
  ["policy.modes", { modes: ["test"] }, [{ mode: "test" }], [{}, { mode: "live" }]],
  [
    "policy.label_prefix",
    { label_prefix: "airflow-billing/" },
    [{ label: "airflow-billing/run_2026_11_22" }, { label: undefined, agent_run_label: "airflow-billing/run_2" }],
    [{ label: "airflow-marketing/run_1" }, { label: "airflow-billing" }, { label: undefined }],
  ],
  [
    "policy.max_daily_usd_cap",
    { max_daily_usd_cap: 500 },
    [{ daily_usd_cap: 500 }, { daily_usd_cap: 0.5, total_usd_cap: 1_000_000 }],
    [{ daily_usd_cap: 500.01 }, { daily_usd_cap: undefined, total_usd_cap: 10 }],
  ],
  [
    "policy.max_total_usd_cap",
    { max_total_usd_cap: 1000 },
    [{ total_usd_cap: 1000 }, { daily_usd_cap: undefined, total_usd_cap: 5 }],
    [{ total_usd_cap: 1000.5 }, {}],
  ],
  [
    "policy.max_expires_in",
    { max_expires_in: "6h" },
    [{ expires_in: "6h" }, { expires_in: undefined, expires_at: new Date(START + 6 * 3600_000).toISOString() }],
    [
      { expires_in: "6h1m" },
      { expires_in: undefined },
      { expires_in: undefined, expires_at: new Date(START + 7 * 3600_000).toISOString() },
    ],
  ],
  [
    "policy.allowed_endpoints",
    {
      allowed_endpoints: ["POST /v1/payment_intents", "POST /v1/payment_intents/*", "POST /2010-04-01/Accounts/*/Messages.json"],
    },
    [
      { allowed_endpoints: ["POST /v1/payment_intents", "POST /v1/payment_intents/*/confirm"] },
      { allowed_endpoints: ["POST /v1/payment_intents/pi_*/capture"] },
      // Twilio's account segment is compared as {AccountSid} on both sides, whichever SID the key names.
      { vendor: "twilio", allowed_endpoints: [`POST /2010-04-01/Accounts/${TWILIO_SID}/Messages.json`] },
    ],
    [
      { allowed_endpoints: ["POST /v1/*"] }, // wider than POST /v1/payment_intents/*
      { allowed_endpoints: ["/v1/payment_intents"] }, // any method
      { allowed_endpoints: ["POST /v1/payment_intents", "POST /v1/refunds"] }, // one pattern outside is enough
      { allowed_endpoints: ["POST /v1/payment_*"] }, // also matches /v1/payment_links
      { vendor: "twilio", allowed_endpoints: [`POST /2010-04-01/Accounts/${TWILIO_SID}/Calls.json`] },
    ],
  ],
  [
    "policy.max_requests_per_minute",
    { max_requests_per_minute: 60 },
    [{ max_requests_per_minute: 60 }, { max_requests_per_minute: 1 }],
    [{ max_requests_per_minute: 61 }, {}],
  ],
  [
    "policy.require_idempotency_key",
    { require_idempotency_key: true },
    [{ require_idempotency_key: true }],
    [{}, { require_idempotency_key: false }],
  ],
];

describe("minting: each rule allows what is inside it and refuses what is not, creating nothing", () => {
  for (const [rule, policy, allowed, refused] of MINT_CASES) {
    test(rule, async () => {
      const iss = await issuer(policy);
      for (const changes of allowed) {
        const res = await call(iss.token, "/vault/keys", { body: keyBody(changes) });
        expect({ changes, status: res.status }).toEqual({ changes, status: 201 });
      }
      expect(await keysOf(iss.id)).toHaveLength(allowed.length);
      for (const changes of refused) {
        const res = await call(iss.token, "/vault/keys", { body: keyBody(changes) });
        await expectRefused(res, rule);
      }
      expect(await keysOf(iss.id)).toHaveLength(allowed.length);
      // The /v1/keys alias is the same route behind the same policy.
      await expectRefused(await call(iss.token, "/v1/keys", { body: keyBody(refused[0]!) }), rule);
    });
  }

  test("an admin token is bound by no policy, and an issuer with an empty policy by none of these rules", async () => {
    const wide = keyBody({ allowed_endpoints: ["/v1/*"], expires_in: "30d", daily_usd_cap: 10_000_000, label: undefined });
    expect((await call(ADMIN_TOKEN, "/vault/keys", { body: wide })).status).toBe(201);
    expect((await call((await issuer({})).token, "/vault/keys", { body: wide })).status).toBe(201);
  });

  test("the message says what to change", async () => {
    const iss = await issuer({ max_daily_usd_cap: 500, label_prefix: "airflow-billing/" });
    const res = await call(iss.token, "/vault/keys", { body: keyBody({ label: "airflow-billing/x", daily_usd_cap: 10_000_000 }) });
    expect(((await res.json()) as Json).message).toBe("policy.max_daily_usd_cap: daily_usd_cap must be at most 500, not 10000000.");
  });
});

describe("the limits on what a token minted before", () => {
  test("policy.max_keys_per_hour: the limit in any 60 minutes, then room again as the oldest leave the window", async () => {
    const iss = await issuer({ max_keys_per_hour: 2 });
    expect((await call(iss.token, "/vault/keys", { body: keyBody({}) })).status).toBe(201);
    clock.advance(30 * 60_000);
    expect((await call(iss.token, "/vault/keys", { body: keyBody({}) })).status).toBe(201);
    await expectRefused(await call(iss.token, "/vault/keys", { body: keyBody({}) }), "policy.max_keys_per_hour");
    expect(await keysOf(iss.id)).toHaveLength(2);
    clock.advance(30 * 60_000 + 1);
    expect((await call(iss.token, "/vault/keys", { body: keyBody({}) })).status).toBe(201);
    await expectRefused(await call(iss.token, "/vault/keys", { body: keyBody({}) }), "policy.max_keys_per_hour");
  });

  test("policy.issued_usd_per_day: what the day's keys can spend over their lives, the UTC day", async () => {
    clock.set(START);
    const iss = await issuer({ issued_usd_per_day: 100 });
    expect((await call(iss.token, "/vault/keys", { body: keyBody({ daily_usd_cap: 60 }) })).status).toBe(201);
    const over = await call(iss.token, "/vault/keys", { body: keyBody({ daily_usd_cap: 60 }) });
    await expectRefused(over, "policy.issued_usd_per_day");
    expect((await call(iss.token, "/vault/keys", { body: keyBody({ daily_usd_cap: 40 }) })).status).toBe(201);
    await expectRefused(await call(iss.token, "/vault/keys", { body: keyBody({ daily_usd_cap: 0.01 }) }), "policy.issued_usd_per_day");
    expect(await keysOf(iss.id)).toHaveLength(2);
    // A new UTC day, a new allowance. A key living across midnight can spend its daily cap on both days: it
    // counts twice, unless a lifetime cap says less.
    clock.set(Date.UTC(2026, 10, 23, 22, 0, 0));
    await expectRefused(
      await call(iss.token, "/vault/keys", { body: keyBody({ daily_usd_cap: 60, expires_in: "6h" }) }),
      "policy.issued_usd_per_day",
    );
    expect(
      (await call(iss.token, "/vault/keys", { body: keyBody({ daily_usd_cap: 60, total_usd_cap: 60, expires_in: "6h" }) })).status,
    ).toBe(201);
    expect((await call(iss.token, "/vault/keys", { body: keyBody({ daily_usd_cap: 40, expires_in: "1h" }) })).status).toBe(201);
    await expectRefused(await call(iss.token, "/vault/keys", { body: keyBody({ daily_usd_cap: 1 }) }), "policy.issued_usd_per_day");
    clock.set(START);
  });
});

describe("PATCH: the key as it would be must still fit the policy; nothing changes when it does not", () => {
  async function keyUnder(policy: Json, changes: Json = {}) {
    const iss = await issuer(policy);
    const res = await call(iss.token, "/vault/keys", { body: keyBody(changes) });
    expect(res.status).toBe(201);
    return { iss, key: (await res.json()) as Json };
  }
  const patch = (token: string, id: string, body: Json) => call(token, `/vault/keys/${id}`, { method: "PATCH", body });
  const unchanged = async (key: Json) => {
    const now = (await (await call(ADMIN_TOKEN, `/vault/keys/${key.id}`)).json()) as Json;
    for (const f of ["daily_usd_cap", "total_usd_cap", "expires_at", "max_requests_per_minute"]) expect(now[f]).toEqual(key[f]);
  };

  test("policy.max_daily_usd_cap and policy.max_total_usd_cap", async () => {
    const { iss, key } = await keyUnder({ max_daily_usd_cap: 500, max_total_usd_cap: 1000 }, { daily_usd_cap: 100, total_usd_cap: 200 });
    await expectRefused(await patch(iss.token, key.id, { daily_usd_cap: 501 }), "policy.max_daily_usd_cap");
    await expectRefused(await patch(iss.token, key.id, { daily_usd_cap: null }), "policy.max_daily_usd_cap");
    await expectRefused(await patch(iss.token, key.id, { total_usd_cap: 1001 }), "policy.max_total_usd_cap");
    await expectRefused(await patch(iss.token, key.id, { total_usd_cap: null }), "policy.max_total_usd_cap");
    await unchanged(key);
    const ok = await patch(iss.token, key.id, { daily_usd_cap: 500, total_usd_cap: 1000 });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ daily_usd_cap: 500, total_usd_cap: 1000 });
  });

  test("policy.max_expires_in counts from the key's creation: a PATCH cannot keep a key alive past it", async () => {
    clock.set(START);
    const { iss, key } = await keyUnder({ max_expires_in: "6h" }, { expires_in: "2h" });
    clock.advance(3600_000);
    expect((await patch(iss.token, key.id, { expires_in: "5h" })).status).toBe(200); // creation + 6h
    const before = (await (await call(ADMIN_TOKEN, `/vault/keys/${key.id}`)).json()) as Json;
    await expectRefused(await patch(iss.token, key.id, { expires_in: "5h1m" }), "policy.max_expires_in");
    await unchanged(before);
    clock.set(START);
  });

  test("policy.max_requests_per_minute", async () => {
    const { iss, key } = await keyUnder({ max_requests_per_minute: 60 }, { max_requests_per_minute: 10 });
    await expectRefused(await patch(iss.token, key.id, { max_requests_per_minute: 61 }), "policy.max_requests_per_minute");
    await expectRefused(await patch(iss.token, key.id, { max_requests_per_minute: null }), "policy.max_requests_per_minute");
    await unchanged(key);
    expect((await patch(iss.token, key.id, { max_requests_per_minute: 60 })).status).toBe(200);
  });

  test("policy.issued_usd_per_day: raising what a key can spend issues the difference today", async () => {
    clock.set(START);
    const { iss, key } = await keyUnder({ issued_usd_per_day: 100 }, { daily_usd_cap: 50 });
    await expectRefused(await patch(iss.token, key.id, { daily_usd_cap: 101 }), "policy.issued_usd_per_day");
    await unchanged(key);
    expect((await patch(iss.token, key.id, { daily_usd_cap: 80 })).status).toBe(200); // 30 more: 80 of 100
    expect((await patch(iss.token, key.id, { daily_usd_cap: 10 })).status).toBe(200); // lowering issues nothing
    expect((await patch(iss.token, key.id, { daily_usd_cap: 80 })).status).toBe(200); // back within what it counted
    await expectRefused(await call(iss.token, "/vault/keys", { body: keyBody({ daily_usd_cap: 21 }) }), "policy.issued_usd_per_day");
    expect((await call(iss.token, "/vault/keys", { body: keyBody({ daily_usd_cap: 20 }) })).status).toBe(201);
  });

  test("an admin PATCH of an issuer's key is bound by no policy", async () => {
    const { key } = await keyUnder({ max_daily_usd_cap: 100 }, { daily_usd_cap: 100 });
    expect((await patch(ADMIN_TOKEN, key.id, { daily_usd_cap: 5000 })).status).toBe(200);
  });
});

describe("the README's policies fit the seeds they are written for", () => {
  const readme = readFileSync(join(import.meta.dir, "../README.md"), "utf8");
  const policies = new Map(
    [...readme.matchAll(/--name (\S+) --role issuer --expires-in 90d --policy '(\{[^']*\})'/g)].flatMap(([, name, json]) => {
      try {
        return [[name!, JSON.parse(json!) as Json] as const];
      } catch {
        return []; // the placeholder `{ … }`
      }
    }),
  );

  test("Airflow: the DAG's setup task mints under it, twice a day at most; anything wider is refused", async () => {
    clock.set(START);
    const iss = await issuer(policies.get("airflow-prod")!);
    const dagKey = (runId: string) => ({
      vendor: "stripe",
      daily_usd_cap: 500.0,
      allowed_endpoints: ["POST /v1/payment_intents"],
      expires_in: "6h",
      agent_run_label: `airflow-billing/${runId}`,
      require_idempotency_key: true,
    });
    expect((await call(iss.token, "/vault/keys", { body: dagKey("scheduled__2026-11-22") })).status).toBe(201);
    expect((await call(iss.token, "/vault/keys", { body: dagKey("manual__2026-11-22") })).status).toBe(201);
    await expectRefused(await call(iss.token, "/vault/keys", { body: dagKey("manual__again") }), "policy.issued_usd_per_day");
    await expectRefused(
      await call(iss.token, "/vault/keys", { body: { ...dagKey("x"), allowed_endpoints: ["POST /v1/*"] } }),
      "policy.allowed_endpoints",
    );
  });

  test("Flask: before_request mints under it with the seed's body, teardown_request revokes with the same token", async () => {
    const iss = await issuer(policies.get("flask-tools")!);
    const res = await call(iss.token, "/v1/keys", {
      body: {
        label: "flask-u1-r1",
        vendor: "stripe",
        allowed_endpoints: ["/v1/payment_intents", "/v1/payment_intents/*"],
        daily_usd_cap: 1000,
        expires_in: "5m",
      },
    });
    expect(res.status).toBe(201);
    const key = (await res.json()) as Json;
    expect((await call(iss.token, `/v1/keys/${key.id}`, { method: "DELETE" })).status).toBe(200);
    await expectRefused(
      await call(iss.token, "/v1/keys", { body: { ...keyBody({ label: "celery-billing-1" }), expires_in: "5m" } }),
      "policy.label_prefix",
    );
  });
});

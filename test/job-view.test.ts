import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { CreateBudgetBody, PatchBudgetBody } from "../src/budgets/model";
import { BulkRevokeBody, CREATE_KEY_EXAMPLES, CreateKeyBody } from "../src/keys/model";
import { loadConfig } from "../src/config";
import { keybrakeCommand } from "./helpers/binary";
import { cliInProcess } from "./helpers/cli";
import { startKeybrake, withKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, STRIPE_500, type MockStripe } from "./helpers/mock-stripe";

// What a job sees when Keybrake stops it, what the operator's log says, and holds resolved by hand.

type Json = Record<string, any>;
let stripe: MockStripe;
let kb: Harness;
beforeAll(async () => {
  stripe = await mockStripe().start();
  kb = await startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url });
});
afterAll(async () => {
  await kb.stop();
  await stripe.stop();
});

const charge = (h: Harness, vaultKey: string, cents: number, idempotencyKey?: string) =>
  fetch(`${h.url}/v1/payment_intents`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${vaultKey}`,
      "content-type": "application/x-www-form-urlencoded",
      ...(idempotencyKey ? { "idempotency-key": idempotencyKey } : {}),
    },
    body: `amount=${cents}&currency=usd`,
  });
const stripeKey = (h: Harness, extra: Json) =>
  h.issueKey({ vendor: "stripe", allowed_endpoints: ["POST /v1/payment_intents"], ...extra }) as Promise<
    Json & { id: string; vault_key: string }
  >;
const nextUtcMidnight = () => {
  const d = new Date();
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1)).toISOString();
};

describe("a cap hit tells the job everything, with the numbers in error.details and the spend headers", () => {
  test("daily cap: the cap, today's spend, held, this call's price, when it resets; logged once per key and day", async () => {
    const key = await stripeKey(kb, { daily_usd_cap: 5, agent_run_label: "job-view/daily" });
    const ok = await charge(kb, key.vault_key, 420);
    expect(ok.status).toBe(200);
    expect(ok.headers.get("x-keybrake-spent-usd")).toBe("4.2");
    const res = await charge(kb, key.vault_key, 100);
    expect(res.status).toBe(429);
    const body = (await res.json()) as Json;
    const resetsAt = nextUtcMidnight();
    expect(body.code).toBe("cap_exhausted");
    expect(body.message).toStartWith(
      "This call would exceed the key's daily USD cap: cap 5.00 USD, spent today 4.20, held by calls not yet settled 0.00, this call 1.00. ",
    );
    expect(body.message).toContain(`The cap resets at ${resetsAt}`);
    expect(body.message).toContain("retrying before then will not help");
    expect(body.error.details).toEqual({
      cap: "daily",
      cap_usd: 5,
      spent_usd: 4.2,
      held_usd: 0,
      price_usd: 1,
      remaining_usd: 0.8,
      resets_at: resetsAt,
    });
    expect(
      Object.fromEntries(
        ["x-keybrake-spent-usd", "x-keybrake-remaining-usd", "x-keybrake-cap-hit", "x-keybrake-key-id"].map((h) => [h, res.headers.get(h)]),
      ),
    ).toEqual({
      "x-keybrake-spent-usd": "4.2",
      "x-keybrake-remaining-usd": "0.8",
      "x-keybrake-cap-hit": "true",
      "x-keybrake-key-id": key.id,
    });
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
    expect((await charge(kb, key.vault_key, 100)).status).toBe(429);
    const lines = kb.logs.filter((l) => l.includes("cap_hit") && l.includes(key.id));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("job-view/daily");
    expect(lines[0]).toContain("cap 5.00 USD");
  });

  test("lifetime cap: the same numbers, and that it never resets", async () => {
    const key = await stripeKey(kb, { total_usd_cap: 1 });
    const res = await charge(kb, key.vault_key, 250);
    expect(res.status).toBe(429);
    const body = (await res.json()) as Json;
    expect(body.message).toBe(
      "This call would exceed the key's lifetime USD cap: cap 1.00 USD, spent 0.00, held by calls not yet settled 0.00, this call 2.50. A lifetime cap never resets, so retrying will not help: raise total_usd_cap or issue a new key.",
    );
    expect(body.error.details).toMatchObject({ cap: "total", cap_usd: 1, price_usd: 2.5, remaining_usd: 1, resets_at: null });
    expect(res.headers.get("x-keybrake-remaining-usd")).toBe("1");
    expect(res.headers.get("retry-after")).toBeNull();
  });

  test("a replayed answer carries the spend headers too", async () => {
    const key = await stripeKey(kb, { daily_usd_cap: 100 });
    const first = await charge(kb, key.vault_key, 1000, "job-view/replay-1");
    expect(first.status).toBe(200);
    const again = await charge(kb, key.vault_key, 1000, "job-view/replay-1");
    expect(again.headers.get("x-keybrake-replayed")).toBe("true");
    expect(again.headers.get("x-keybrake-spent-usd")).toBe("10");
    expect(again.headers.get("x-keybrake-remaining-usd")).toBe("90");
  });
});

describe("the log: notable events only", () => {
  test("no line per allowed call; revocations say who and how many; a vendor 5xx says the hold is ambiguous", async () => {
    const key = await stripeKey(kb, { daily_usd_cap: 100, agent_run_label: "job-view/log-1" });
    const ok = await charge(kb, key.vault_key, 100);
    const requestId = ok.headers.get("x-keybrake-request-id")!;
    expect(kb.logs.filter((l) => l.includes(requestId))).toEqual([]);

    stripe.failNext(STRIPE_500);
    const failed = await charge(kb, key.vault_key, 700, "job-view/log-500");
    expect(failed.status).toBe(500);
    const vendorLine = kb.logs.find((l) => l.includes(failed.headers.get("x-keybrake-request-id")!));
    expect(vendorLine).toStartWith("keybrake: warning: vendor_error: stripe answered 500 to POST /v1/payment_intents");
    expect(vendorLine).toContain("ambiguous: 7.00 USD stays counted");

    await kb.admin(`/vault/keys/${key.id}`, { method: "DELETE" });
    expect(kb.logs.some((l) => /^keybrake: key vk_\w+ revoked by sha256:[0-9a-f]{12}/.test(l) && l.includes(key.id))).toBe(true);
    await stripeKey(kb, { daily_usd_cap: 1, agent_run_label: "job-view/bulk/1" });
    await stripeKey(kb, { daily_usd_cap: 1, agent_run_label: "job-view/bulk/2" });
    await kb.admin("/vault/keys/revoke", { body: { label_prefix: "job-view/bulk/" } });
    expect(kb.logs.some((l) => /^keybrake: 2 key\(s\) revoked by sha256:\w+ \(label prefix job-view\/bulk\/\)$/.test(l))).toBe(true);
  });

  test("KEYBRAKE_LOG_FORMAT=json: one JSON object per line, with the event's fields", async () => {
    await withKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url, KEYBRAKE_LOG_FORMAT: "json" }, {}, async (h) => {
      const key = await stripeKey(h, { daily_usd_cap: 1 });
      expect((await charge(h, key.vault_key, 500)).status).toBe(429);
      await h.admin(`/vault/keys/${key.id}`, { method: "DELETE" });
      const events = h.logs.map((l) => JSON.parse(l) as Json);
      expect(events.map((e) => e.event)).toEqual(["cap_hit", "key_revoked"]);
      expect(events[0]).toMatchObject({ level: "info", key_id: key.id, cap: "daily", cap_usd: 1, price_usd: 5 });
      expect(events[1]).toMatchObject({ key_id: key.id, count: 1, actor: expect.stringMatching(/^sha256:/) });
      for (const e of events) expect(Date.parse(e.time)).toBeGreaterThan(0);
    });
  });

  test("KEYBRAKE_LOG_FORMAT takes text or json, nothing else", () => {
    expect(() => loadConfig({ KEYBRAKE_LOG_FORMAT: "xml" })).toThrow("KEYBRAKE_LOG_FORMAT: must be text or json");
  });

  test("the start line names the configured vendors and modes (json)", async () => {
    const { startProcess } = await import("./helpers/process");
    const { mkdtempSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const dir = mkdtempSync(join(tmpdir(), "keybrake-start-"));
    const server = await startProcess(await keybrakeCommand(), {
      cwd: dir,
      env: {
        KEYBRAKE_PORT: "0",
        KEYBRAKE_HOST: "127.0.0.1",
        KEYBRAKE_LOG_FORMAT: "json",
        KEYBRAKE_ADMIN_TOKEN: "test-admin-token-0123456789abcdefghijklmnop",
        KEYBRAKE_STRIPE_SECRET_KEY: "sk_live_x",
        KEYBRAKE_STRIPE_TEST_SECRET_KEY: "sk_test_x",
        KEYBRAKE_RESEND_TEST_API_KEY: "re_test_x",
      },
    });
    try {
      const start = server
        .stderr()
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as Json)
        .find((e) => e.event === "start")!;
      expect(start.vendors).toEqual(["stripe:live", "stripe:test", "resend:test"]);
      expect(start.msg).toContain("vendors: stripe live+test, twilio not configured, resend test");
      expect(start.db).toBe(join(dir, "keybrake.db"));
    } finally {
      server.proc.kill("SIGTERM");
      await server.proc.exited;
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});

describe("issuing a key for a vendor and mode with no secret", () => {
  test("answers 201 with a warnings field naming the variable; a configured one has none", async () => {
    await withKeybrake({ KEYBRAKE_RESEND_TEST_API_KEY: "" }, {}, async (h) => {
      for (const path of ["/vault/keys", "/v1/keys"]) {
        const res = await h.admin(path, {
          body: { vendor: "resend", mode: "test", daily_usd_cap: 1, allowed_endpoints: ["POST /emails"] },
        });
        expect(res.status).toBe(201);
        const body = (await res.json()) as Json;
        expect(body.warnings).toEqual([
          "No test secret is configured for resend (KEYBRAKE_RESEND_TEST_API_KEY): this key's calls get 503 vendor_not_configured until one is set and Keybrake restarted.",
        ]);
        expect(body.vault_key).toStartWith("kb_test_");
      }
      const fine = (await (
        await h.admin("/vault/keys", { body: { vendor: "resend", daily_usd_cap: 1, allowed_endpoints: ["POST /emails"] } })
      ).json()) as Json;
      expect("warnings" in fine).toBe(false);
    });
  });
});

describe("ambiguous holds are resolved by hand like orphaned ones", () => {
  test("a vendor 500 leaves an ambiguous hold: listed, marked in audit and spend, settled at a stated cost or released", async () => {
    const key = await stripeKey(kb, { daily_usd_cap: 100, agent_run_label: "job-view/ambiguous" });
    const spend = async () => ((await (await kb.admin(`/audit/spend?group_by=key&key_id=${key.id}`)).json()) as Json).data[0] as Json;
    const record = async () => (await (await kb.admin(`/vault/keys/${key.id}`)).json()) as Json;

    stripe.failNext(STRIPE_500);
    const first = await charge(kb, key.vault_key, 2900, "job-view/amb-1");
    stripe.failNext(STRIPE_500);
    await charge(kb, key.vault_key, 1500, "job-view/amb-2");
    const audit = (await (await kb.admin(`/audit?request_id=${first.headers.get("x-keybrake-request-id")}`)).json()) as Json;
    expect(audit.data).toEqual([expect.objectContaining({ status: 500, cost_usd: 29, cost_source: "hold" })]);
    expect(await spend()).toMatchObject({ spend_usd: 44, ambiguous_usd: 44 });

    const listed = ((await (await kb.admin("/vault/holds?state=ambiguous")).json()) as Json).data.filter((h: Json) => h.key_id === key.id);
    expect(listed.map((h: Json) => h.hold_usd).sort()).toEqual([15, 29]);
    const big = listed.find((h: Json) => h.hold_usd === 29);
    const small = listed.find((h: Json) => h.hold_usd === 15);

    const settled = await kb.admin(`/vault/holds/${big.id}/settle`, { body: { cost_usd: 10 } });
    expect(settled.status).toBe(200);
    expect(await settled.json()).toMatchObject({ state: "settled", cost_usd: 10 });
    expect(await spend()).toMatchObject({ spend_usd: 25, ambiguous_usd: 15 });
    expect(await record()).toMatchObject({ spent_today_usd: 25, held_usd: 0 });

    // The CLI on the server's database: the same decision, from the shell.
    const released = await cliInProcess(["holds", "release", small.id, "--json"], { KEYBRAKE_DB: kb.dbPath });
    expect(released.code).toBe(0);
    expect(JSON.parse(released.stdout)[0]).toMatchObject({ state: "released", cost_usd: 0 });
    expect(await spend()).toMatchObject({ spend_usd: 10, ambiguous_usd: 0 });
    expect(await record()).toMatchObject({ spent_today_usd: 10, remaining_today_usd: 90 });

    const again = await kb.admin(`/vault/holds/${big.id}/release`, { method: "POST" });
    expect(again.status).toBe(409);
    expect(kb.logs.some((l) => l.includes(`hold ${big.id} settled by sha256:`))).toBe(true);
  });

  test("a revoked key shows no remaining budget", async () => {
    const key = await stripeKey(kb, { daily_usd_cap: 50 });
    expect((await (await kb.admin(`/vault/keys/${key.id}`, { method: "DELETE" })).json()) as Json).toMatchObject({
      status: "revoked",
      remaining_today_usd: 0,
    });
  });
});

describe("GET /audit?request_id=", () => {
  test("finds the one row of the call a job saw, and nothing for an unknown id", async () => {
    const key = await stripeKey(kb, { daily_usd_cap: 100 });
    const ids: string[] = [];
    for (const cents of [100, 200, 300]) ids.push((await charge(kb, key.vault_key, cents)).headers.get("x-keybrake-request-id")!);
    const one = (await (await kb.admin(`/audit?request_id=${ids[1]}`)).json()) as Json;
    expect(one.data).toHaveLength(1);
    expect(one.data[0]).toMatchObject({ id: ids[1], cost_usd: 2, key_id: key.id });
    expect(((await (await kb.admin("/audit?request_id=kbr_missing")).json()) as Json).data).toEqual([]);
  });
});

describe("GET /audit/spend?limit=", () => {
  test("the biggest spenders first, a page at a time; without limit every group and no cursor", async () => {
    const prefix = `top-${Date.now()}/`;
    for (const [run, cents] of [
      ["a", 300],
      ["b", 900],
      ["c", 500],
    ] as const) {
      const key = await stripeKey(kb, { daily_usd_cap: 50, agent_run_label: prefix + run });
      expect((await charge(kb, key.vault_key, cents)).status).toBe(200);
    }
    const spend = async (q: string) =>
      (await (await kb.admin(`/audit/spend?group_by=label&label_prefix=${encodeURIComponent(prefix)}${q}`)).json()) as Json;
    const first = await spend("&limit=2");
    expect(first.data.map((r: Json) => [r.group, r.spend_usd])).toEqual([
      [`${prefix}b`, 9],
      [`${prefix}c`, 5],
    ]);
    expect(first.next_cursor).toBe("2");
    expect(await spend(`&limit=2&cursor=${first.next_cursor}`)).toMatchObject({
      data: [{ group: `${prefix}a`, spend_usd: 3 }],
      next_cursor: null,
    });
    const all = await spend("");
    expect(all.data.map((r: Json) => r.group)).toEqual([`${prefix}b`, `${prefix}c`, `${prefix}a`]);
    expect(Object.keys(all)).toEqual(["data"]);
    expect((await kb.admin("/audit/spend?limit=0")).status).toBe(400);
  });
});

describe("/docs", () => {
  let spec: Json;
  beforeAll(async () => {
    spec = (await (await fetch(`${kb.url}/docs/json`)).json()) as Json;
  });

  // The routes of this issue's scope (the token routes document themselves).
  const ROUTES: [string, string][] = [
    ["post", "/vault/keys"],
    ["get", "/vault/keys"],
    ["post", "/vault/keys/revoke"],
    ["get", "/vault/keys/{id}"],
    ["patch", "/vault/keys/{id}"],
    ["delete", "/vault/keys/{id}"],
    ["post", "/v1/keys"],
    ["delete", "/v1/keys/{id}"],
    ["get", "/vault/holds"],
    ["post", "/vault/holds/{id}/settle"],
    ["post", "/vault/holds/{id}/release"],
    ["get", "/audit"],
    ["get", "/audit/spend"],
    ["get", "/audit/export"],
    ["get", "/admin/events"],
    ["post", "/budgets"],
    ["get", "/budgets/{id}"],
    ["patch", "/budgets/{id}"],
    ["delete", "/budgets/{id}"],
  ];
  /** Every property of a body schema, unions' branches included. */
  const properties = (schema: Json): [string, Json][] =>
    [schema, ...(schema.anyOf ?? []), ...(schema.oneOf ?? [])].flatMap((s: Json) => Object.entries((s.properties ?? {}) as Json));

  test("every request field and parameter has a description and an example", () => {
    const missing: string[] = [];
    for (const [method, path] of ROUTES) {
      const op = spec.paths[path][method];
      for (const p of op.parameters ?? []) {
        if (!p.description || !(p.schema?.examples?.length > 0)) missing.push(`${method} ${path} ${p.in} ${p.name}`);
      }
      const body = op.requestBody?.content?.["application/json"]?.schema;
      for (const [name, field] of body ? properties(body) : []) {
        if (!field.description || !(field.examples?.length > 0)) missing.push(`${method} ${path} body ${name}`);
      }
    }
    expect(missing).toEqual([]);
  });

  test("POST /vault/keys and the bulk revoke carry the seeds' bodies as named examples, each valid", () => {
    const examples = spec.paths["/vault/keys"].post.requestBody.content["application/json"].examples;
    expect(Object.keys(examples)).toEqual(["airflow", "flask"]);
    expect(examples.airflow.value).toEqual(CREATE_KEY_EXAMPLES.airflow.value);
    expect(examples.airflow.value.agent_run_label).toBe("airflow-billing/run_2026_11_22");
    expect(examples.flask.value.label).toBe("flask-u1-r1");
    for (const { value } of Object.values(examples) as Json[]) expect(CreateKeyBody.safeParse(value).success).toBe(true);
    expect(Object.keys(spec.paths["/v1/keys"].post.requestBody.content["application/json"].examples)).toEqual(["flask", "airflow"]);
    const revoke = spec.paths["/vault/keys/revoke"].post.requestBody.content["application/json"].examples;
    for (const { value } of Object.values(revoke) as Json[]) expect(BulkRevokeBody.safeParse(value).success).toBe(true);
  });

  test("POST and PATCH /budgets carry named examples, each valid", () => {
    for (const [path, method, schema] of [
      ["/budgets", "post", CreateBudgetBody],
      ["/budgets/{id}", "patch", PatchBudgetBody],
    ] as const) {
      const examples = spec.paths[path][method].requestBody.content["application/json"].examples as Json;
      expect(Object.keys(examples).length).toBeGreaterThanOrEqual(2);
      for (const { value } of Object.values(examples) as Json[]) expect(schema.safeParse(value).success).toBe(true);
    }
  });

  test("the first example issues a key on the first click of Try it out", async () => {
    const example = spec.paths["/vault/keys"].post.requestBody.content["application/json"].examples.airflow.value;
    expect((await kb.admin("/vault/keys", { body: example })).status).toBe(201);
  });

  test("the token pasted into Authorize is not kept in the browser's localStorage", async () => {
    const page = await (await fetch(`${kb.url}/docs`)).text();
    // Swagger UI writes the authorization to localStorage only with persistAuthorization on.
    const options = JSON.parse(/SwaggerUIBundle\((\{.*?\})\);/s.exec(page)![1]!) as Json;
    expect(options.persistAuthorization).toBe(false);
  });

  test("/docs/ leads to /docs (its document's relative URL would break under /docs/); /metrics is documented as text", async () => {
    const res = await fetch(`${kb.url}/docs/`, { redirect: "manual" });
    expect(res.status).toBe(308);
    expect(new URL(res.headers.get("location")!, `${kb.url}/docs/`).pathname).toBe("/docs");
    expect((await fetch(`${kb.url}/docs/`)).status).toBe(200);
    // Only /docs/ itself: a vendor path ending in docs/ is still proxied (here: refused for want of a key).
    expect((await fetch(`${kb.url}/stripe/v1/docs/`, { redirect: "manual" })).status).toBe(401);
    const metrics = spec.paths["/metrics"].get.responses["200"].content;
    expect(Object.keys(metrics)).toEqual(["text/plain; version=0.0.4"]);
    expect(metrics["text/plain; version=0.0.4"].example).toContain("# TYPE keybrake_requests_total counter");
  });
});

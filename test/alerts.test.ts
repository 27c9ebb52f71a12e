import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { slackText, verifySignature } from "../src/alerts/payload";
import { retryDelay } from "../src/alerts/worker";
import { type AuditRow, auditRow, type NewKey, openStore, type SqliteStore } from "../src/store/index";
import { startKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, type MockStripe } from "./helpers/mock-stripe";
import { Receiver, waitFor } from "./helpers/receiver";

// SPEC §12: alerts before the cap, at it and on revocation; signed, de-duplicable, delivered at least once, and
// never in the proxy's way. Receivers here are real HTTP servers on free ports.

type Json = Record<string, any>;
let stripe: MockStripe;
beforeAll(async () => {
  stripe = await mockStripe().start();
});
afterAll(() => stripe.stop());

/** A Keybrake with its delivery worker polling every 20 ms and retrying within 25–50 ms (then doubling, at most 300 ms). */
const start = (env: Record<string, string> = {}, alerts: Json = {}) =>
  startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url, ...env }, { alerts: { everyMs: 20, retryBaseMs: 50, maxRetryMs: 300, ...alerts } });

async function addWebhook(kb: Harness, body: Json) {
  const res = await kb.admin("/alerts/webhooks", { body });
  expect(res.status).toBe(201);
  return (await res.json()) as Json;
}

const stripeKey = (kb: Harness, body: Json = {}) =>
  kb.issueKey({ vendor: "stripe", daily_usd_cap: 100, allowed_endpoints: ["POST /v1/payment_intents"], ...body });

/** A $`usd` PaymentIntent through Keybrake; its status. */
async function spend(kb: Harness, vaultKey: string, usd: number) {
  const res = await fetch(`${kb.url}/v1/payment_intents`, {
    method: "POST",
    headers: { authorization: `Bearer ${vaultKey}`, "content-type": "application/x-www-form-urlencoded" },
    body: `amount=${Math.round(usd * 100)}&currency=usd`,
  });
  await res.arrayBuffer();
  return res.status;
}

const deliveries = async (kb: Harness, query = "") =>
  ((await (await kb.admin(`/alerts/deliveries?limit=1000${query}`)).json()) as Json).data as Json[];
const metric = async (kb: Harness, series: string) =>
  Number(new RegExp(`^${series.replace(/[{}"]/g, "\\$&")} (\\S+)$`, "m").exec(await (await kb.admin("/metrics")).text())?.[1] ?? 0);

describe("thresholds, cap hits and revocations reach a receiver over HTTP", () => {
  let kb: Harness;
  let receiver: Receiver;
  let hook: Json;
  beforeAll(async () => {
    kb = await start();
    receiver = await new Receiver().up();
    hook = await addWebhook(kb, { url: receiver.url });
  });
  afterAll(async () => {
    await kb.stop();
    await receiver.down();
  });

  test("spend crossing 50/80/100 %: exactly one event per threshold; the first refusal: cap_exhausted; revoke: key_revoked", async () => {
    const key = await stripeKey(kb, { agent_run_label: "alerts/run_1" });
    for (let i = 0; i < 10; i++) expect(await spend(kb, key.vault_key, 10)).toBe(200);
    expect(await spend(kb, key.vault_key, 10)).toBe(429);
    expect(await spend(kb, key.vault_key, 1)).toBe(429);
    expect((await kb.admin(`/vault/keys/${key.id}`, { method: "DELETE" })).status).toBe(200);
    expect((await kb.admin(`/vault/keys/${key.id}`, { method: "DELETE" })).status).toBe(200); // idempotent: no second event

    const mine = () => receiver.received.filter((r) => r.json.key?.id === key.id);
    await waitFor(() => mine().length >= 5, 10_000, "five events");
    await Bun.sleep(200);
    await kb.alerts!.tick();
    // Events due together are sent concurrently, so they may arrive in any order: sorted here.
    const order = ["cap_threshold", "cap_exhausted", "key_revoked"];
    const events = mine()
      .map((r) => r.json)
      .sort((a, b) => order.indexOf(a.type) - order.indexOf(b.type) || (a.data.threshold ?? 0) - (b.data.threshold ?? 0));
    expect(events.map((e) => e.type)).toEqual(["cap_threshold", "cap_threshold", "cap_threshold", "cap_exhausted", "key_revoked"]);
    expect(new Set(events.map((e) => e.id)).size).toBe(5);
    const thresholds = events.filter((e) => e.type === "cap_threshold");
    expect(thresholds.map((e) => e.data)).toEqual([
      { cap: "daily", window: expect.any(String), threshold: 0.5, cap_usd: 100, spent_usd: 50, percent: 50 },
      { cap: "daily", window: expect.any(String), threshold: 0.8, cap_usd: 100, spent_usd: 80, percent: 80 },
      { cap: "daily", window: expect.any(String), threshold: 1, cap_usd: 100, spent_usd: 100, percent: 100 },
    ]);
    expect(events[0]!.key).toEqual({ id: key.id, label: "alerts/run_1", vendor: "stripe", mode: "live" });
    expect(events[0]!.dashboard_url).toBeNull();
    expect(events[3]!.data).toMatchObject({ cap: "daily", cap_usd: 100, spent_usd: 100, held_usd: 0, price_usd: 10, percent: 100 });
    expect(events[4]!.data).toMatchObject({ by: "admin (bootstrap admin token)", spent_total_usd: 100 });

    const rows = (await deliveries(kb, `&webhook_id=${hook.id}`)).filter((d) => d.key_id === key.id);
    expect(rows).toHaveLength(5);
    for (const d of rows) expect(d).toMatchObject({ status: "delivered", attempts: 1, last_status: 200, last_error: null });
    expect(await metric(kb, 'keybrake_alert_deliveries_total{event="cap_threshold",status="delivered"}')).toBeGreaterThanOrEqual(3);
    expect(await metric(kb, "keybrake_alert_deliveries_pending")).toBe(0);
  });

  test("one large call crossing two thresholds: two events, both with the spend after it", async () => {
    const key = await stripeKey(kb, { agent_run_label: "alerts/run_2" });
    expect(await spend(kb, key.vault_key, 30)).toBe(200);
    expect(await spend(kb, key.vault_key, 55)).toBe(200);
    const mine = () => receiver.ofType("cap_threshold").filter((r) => r.json.key.id === key.id);
    await waitFor(() => mine().length >= 2, 10_000, "two thresholds");
    await Bun.sleep(100);
    const got = mine().map((r) => [r.json.data.threshold, r.json.data.spent_usd, r.json.data.percent]);
    expect(got.sort((a, b) => a[0]! - b[0]!)).toEqual([
      [0.5, 85, 85],
      [0.8, 85, 85],
    ]);
  });

  test("a key's own alert_thresholds, and a lifetime cap's: each fires once, named by its cap", async () => {
    const key = await stripeKey(kb, {
      agent_run_label: "alerts/run_3",
      daily_usd_cap: 1000,
      total_usd_cap: 40,
      alert_thresholds: [0.9, 0.25, 0.25],
    });
    expect(((await (await kb.admin(`/vault/keys/${key.id}`)).json()) as Json).alert_thresholds).toEqual([0.25, 0.9]);
    for (let i = 0; i < 4; i++) expect(await spend(kb, key.vault_key, 10)).toBe(200);
    const mine = () => receiver.ofType("cap_threshold").filter((r) => r.json.key.id === key.id);
    await waitFor(() => mine().length >= 2, 10_000, "two thresholds");
    await Bun.sleep(100);
    const got = mine().map((r) => [r.json.data.cap, r.json.data.threshold, r.json.data.spent_usd, r.json.data.window]);
    expect(got.sort((a, b) => a[1] - b[1])).toEqual([
      ["total", 0.25, 10, null],
      ["total", 0.9, 40, null],
    ]);
    const refused = await kb
      .issueKey({ vendor: "stripe", daily_usd_cap: 1, allowed_endpoints: ["POST /v1/x"], alert_thresholds: [1.5] })
      .catch((e) => e);
    expect(String(refused)).toContain("alert_thresholds.0");
  });

  test("the signature verifies with the webhook's secret and fails with another; its timestamp is current", async () => {
    const got = receiver.received.at(-1)!;
    const header = got.headers["keybrake-signature"]!;
    expect(header).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
    const t = Number(/t=(\d+)/.exec(header)![1]);
    expect(Math.abs(t - got.at / 1000)).toBeLessThan(5);
    expect(verifySignature(hook.secret, got.body, header, Math.floor(Date.now() / 1000))).toBe(true);
    expect(verifySignature(`whsec_${"x".repeat(40)}`, got.body, header, Math.floor(Date.now() / 1000))).toBe(false);
    expect(verifySignature(hook.secret, got.body.replace("}", " }"), header, Math.floor(Date.now() / 1000))).toBe(false);
    expect(verifySignature(hook.secret, got.body, header, t + 3600)).toBe(false); // a replay an hour later
    expect(got.headers["keybrake-event-id"]).toBe(got.json.id);
    expect(got.json.id).toMatch(/^evt_/);
    expect(got.headers["content-type"]).toBe("application/json");
  });
});

describe("delivery: at least once, with the same id, through a receiver's outages", () => {
  test("receiver answers 500, then refuses connections, then is up: delivered with the same id; attempts and last error shown", async () => {
    const kb = await start();
    const receiver = await new Receiver().up();
    try {
      receiver.mode = "fail";
      const hook = await addWebhook(kb, { url: receiver.url, events: ["key_revoked"] });
      const key = await stripeKey(kb, { agent_run_label: "outage/run" });
      await kb.admin(`/vault/keys/${key.id}`, { method: "DELETE" });
      await waitFor(() => receiver.received.length >= 2, 10_000, "two failed attempts");
      await receiver.down();
      await waitFor(
        async () => {
          const [d] = await deliveries(kb, `&webhook_id=${hook.id}`);
          return d !== undefined && d.attempts >= 3 && d.last_status === null;
        },
        10_000,
        "a refused attempt",
      );
      const [down] = await deliveries(kb, `&webhook_id=${hook.id}`);
      expect(down).toMatchObject({ status: "pending", last_status: null, event: "key_revoked", key_id: key.id });
      expect(down!.last_error).not.toContain("HTTP 500");
      expect(down!.attempts).toBeGreaterThanOrEqual(3);
      expect(down!.next_attempt_at).not.toBeNull();
      receiver.mode = "ok";
      await receiver.up();
      await waitFor(async () => (await deliveries(kb, `&webhook_id=${hook.id}`))[0]?.status === "delivered", 10_000, "delivered");
      const [done] = await deliveries(kb, `&webhook_id=${hook.id}`);
      expect(done).toMatchObject({ status: "delivered", last_status: 200, last_error: null, next_attempt_at: null });
      expect(done!.attempts).toBeGreaterThan(receiver.received.length); // refused attempts reached no one
      expect(new Set(receiver.received.map((r) => r.json.id)).size).toBe(1);
      expect(receiver.received.map((r) => r.headers["keybrake-event-id"])).toEqual(receiver.received.map(() => done!.event_id));
      // Every attempt's body is the same bytes: only the signature's timestamp may change.
      expect(new Set(receiver.received.map((r) => r.body)).size).toBe(1);
      expect(await metric(kb, 'keybrake_alert_delivery_attempts_total{event="key_revoked",result="error"}')).toBe(done!.attempts - 1);
      expect(await metric(kb, 'keybrake_alert_delivery_attempts_total{event="key_revoked",result="ok"}')).toBe(1);
    } finally {
      await kb.stop();
      await receiver.down();
    }
  }, 30_000);

  test("retries back off exponentially with jitter, the first within 10 s; after 24 h the delivery fails, logged once", async () => {
    for (let i = 0; i < 100; i++) {
      const first = retryDelay(1, 5_000, 3_600_000);
      expect(first).toBeGreaterThanOrEqual(2_500);
      expect(first).toBeLessThanOrEqual(5_000);
    }
    expect(retryDelay(3, 5_000, 3_600_000, () => 1)).toBe(20_000);
    expect(retryDelay(30, 5_000, 3_600_000, () => 1)).toBe(3_600_000);

    // 24 h, compressed to 400 ms.
    const kb = await start({}, { giveUpAfterMs: 400 });
    const receiver = await new Receiver().up();
    try {
      receiver.mode = "fail";
      const hook = await addWebhook(kb, { url: `${receiver.url}/secret-path-part`, events: ["key_revoked"] });
      const key = await stripeKey(kb);
      await kb.admin(`/vault/keys/${key.id}`, { method: "DELETE" });
      await waitFor(async () => (await deliveries(kb, `&webhook_id=${hook.id}`))[0]?.status === "failed", 10_000, "failed");
      const [failed] = await deliveries(kb, `&webhook_id=${hook.id}`);
      expect(failed).toMatchObject({ status: "failed", last_status: 500, next_attempt_at: null });
      expect(failed!.last_error).toContain("HTTP 500");
      expect(failed!.destination).toBe(`http://127.0.0.1:${receiver.port}`);
      const lines = kb.logs.filter((l) => l.includes("alert_delivery_failed"));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(failed!.event_id);
      expect(lines[0]).not.toContain("secret-path-part");
      expect(await metric(kb, 'keybrake_alert_deliveries_total{event="key_revoked",status="failed"}')).toBe(1);
      const attempts = receiver.received.length;
      await Bun.sleep(300);
      expect(receiver.received.length).toBe(attempts);
    } finally {
      await kb.stop();
      await receiver.down();
    }
  }, 30_000);
});

describe("a slow or dead receiver never slows the proxy", () => {
  test("while the receiver hangs, calls answer as fast as before; the worker holds at most its own 4 connections", async () => {
    // How long an attempt may go unanswered (the worker's `timeoutMs`): longer than the 2 s the 30 timed calls below
    // may take (~0.2 s when the machine is quiet), so no attempt times out before they end.
    const HANG_MS = 2_500;
    const kb = await start({}, { timeoutMs: HANG_MS });
    const receiver = await new Receiver().up();
    receiver.mode = "hang";
    try {
      await addWebhook(kb, { url: receiver.url });
      const key = await stripeKey(kb, { daily_usd_cap: 1_000_000, alert_thresholds: [] });
      const timeCalls = async (n: number) => {
        const ms: number[] = [];
        for (let i = 0; i < n; i++) {
          const t0 = performance.now();
          expect(await spend(kb, key.vault_key, 1)).toBe(200);
          ms.push(performance.now() - t0);
        }
        return ms.sort((a, b) => a - b);
      };
      const before = await timeCalls(30);

      // Ten revocations: ten events for a receiver that never answers.
      for (let i = 0; i < 10; i++) await stripeKey(kb, { agent_run_label: `hang/run_${i}` });
      expect(((await (await kb.admin("/vault/keys/revoke", { body: { label_prefix: "hang/" } })).json()) as Json).revoked).toBe(10);
      await waitFor(() => receiver.received.length >= 4, 5_000, "four hanging POSTs");
      const hangStarted = Date.now();
      const during = await timeCalls(30);
      const elapsed = Date.now() - hangStarted;

      expect(elapsed).toBeLessThan(2_000); // 30 calls, well within the time the receiver hangs
      expect(receiver.received.length).toBe(4); // the worker's own limit: the rest wait their turn
      expect(receiver.maxConcurrent).toBe(4);
      expect(kb.alerts!.inFlight()).toBe(4);
      const median = (ms: number[]) => ms[Math.floor(ms.length / 2)]!;
      expect(median(during)).toBeLessThan(Math.max(50, median(before) * 3));
      expect(during.at(-1)!).toBeLessThan(500);

      // The hanging attempts end at the timeout, as failures to retry; the rest then go.
      await waitFor(async () => (await deliveries(kb, "&status=pending")).some((d) => d.attempts > 0), 6_000, "timed-out attempts");
      const timedOut = (await deliveries(kb, "&status=pending")).find((d) => d.attempts > 0)!;
      expect(timedOut.last_error).toBe(`no answer within ${HANG_MS} ms`);
    } finally {
      receiver.release();
      await kb.stop();
      await receiver.down();
    }
  }, 30_000);
});

describe("the alerts API", () => {
  let kb: Harness;
  let receiver: Receiver;
  beforeAll(async () => {
    kb = await start({ KEYBRAKE_PUBLIC_URL: "https://keybrake.example.com/" });
    receiver = await new Receiver().up();
  });
  afterAll(async () => {
    await kb.stop();
    await receiver.down();
  });

  test("POST /alerts/webhooks: the secret is in the 201 only; http and loopback are allowed; bad input names the field", async () => {
    const created = await addWebhook(kb, { url: "http://127.0.0.1:9/x", label_prefix: "p/", format: "slack", events: ["cap_exhausted"] });
    // (Bun's toMatchObject would leave its matchers in `created`: the id is checked on its own.)
    expect(created.id).toMatch(/^wh_[0-9A-Za-z]{20}$/);
    expect(created).toMatchObject({ url: "http://127.0.0.1:9/x", format: "slack", label_prefix: "p/" });
    expect(created.secret).toMatch(/^whsec_[0-9A-Za-z]{40}$/);
    const defaults = await addWebhook(kb, { url: "http://10.0.0.7/hook" });
    expect(defaults.events).toEqual([
      "cap_threshold",
      "cap_exhausted",
      "key_revoked",
      "holds_need_attention",
      "price_differential",
      "budget_threshold",
      "budget_exhausted",
      "approval_requested",
      "approval_decided",
    ]);
    expect(defaults.format).toBe("json");
    const listed = (await (await kb.admin("/alerts/webhooks")).json()) as Json;
    expect(listed.data.map((w: Json) => w.id)).toEqual(expect.arrayContaining([created.id, defaults.id]));
    expect(JSON.stringify(listed)).not.toContain(created.secret);
    expect(JSON.stringify(await (await kb.admin("/admin/events?limit=5")).json())).not.toContain(created.secret);
    expect(kb.logs.join("\n")).not.toContain(created.secret);

    for (const [body, field] of [
      [{ url: "ftp://example.com/x" }, "url"],
      [{ url: "not a url" }, "url"],
      [{ url: "https://x.example", events: ["cap_hit"] }, "events.0"],
      [{ url: "https://x.example", events: [] }, "events"],
      [{ url: "https://x.example", format: "xml" }, "format"],
      [{ url: "https://x.example", label_prefix: "" }, "label_prefix"],
      [{ url: "https://x.example", secret: "mine" }, "secret"],
    ] as const) {
      const res = await kb.admin("/alerts/webhooks", { body });
      expect(res.status).toBe(400);
      expect(((await res.json()) as Json).error.details.fields.map((f: Json) => f.path)).toContain(field);
    }
    for (const id of [created.id, defaults.id]) expect((await kb.admin(`/alerts/webhooks/${id}`, { method: "DELETE" })).status).toBe(200);
  });

  test("/docs/json documents every alerts route: its fields and parameters with descriptions and examples, admin only", async () => {
    const spec = (await (await fetch(`${kb.url}/docs/json`)).json()) as Json;
    const routes = Object.entries(spec.paths as Json).filter(([path]) => path.startsWith("/alerts/"));
    expect(routes.flatMap(([path, item]) => Object.keys(item).map((m) => `${m} ${path}`)).sort()).toEqual([
      "delete /alerts/webhooks/{id}",
      "get /alerts/deliveries",
      "get /alerts/events",
      "get /alerts/webhooks",
      "post /alerts/webhooks",
      "post /alerts/webhooks/{id}/test",
    ]);
    const missing: string[] = [];
    for (const [path, item] of routes) {
      for (const [method, op] of Object.entries(item as Json)) {
        expect(op.description).toContain("Roles: `admin`.");
        for (const p of op.parameters ?? [])
          if (!p.description || !(p.schema?.examples?.length > 0)) missing.push(`${method} ${path} ${p.name}`);
        const body = op.requestBody?.content?.["application/json"]?.schema;
        for (const [name, field] of Object.entries((body?.properties ?? {}) as Json)) {
          if (!field.description || !(field.examples?.length > 0)) missing.push(`${method} ${path} body ${name}`);
        }
      }
    }
    expect(missing).toEqual([]);
    expect(Object.keys(spec.paths["/alerts/webhooks"].post.requestBody.content["application/json"].examples)).toEqual(["json", "slack"]);
    expect(spec.paths["/vault/keys"].post.requestBody.content["application/json"].schema.properties.alert_thresholds.examples).toEqual([
      [0.5, 0.8, 1],
    ]);
  });

  test("admin only: issuer and viewer tokens get 403 on every alerts route", async () => {
    for (const role of ["issuer", "viewer"]) {
      const token = ((await (await kb.admin("/admin/tokens", { body: { name: `alerts-${role}`, role } })).json()) as Json).token;
      for (const [method, path] of [
        ["POST", "/alerts/webhooks"],
        ["GET", "/alerts/webhooks"],
        ["DELETE", "/alerts/webhooks/wh_x"],
        ["POST", "/alerts/webhooks/wh_x/test"],
        ["GET", "/alerts/deliveries"],
        ["GET", "/alerts/events"],
      ]) {
        const res = await fetch(kb.url + path!, {
          method,
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: method === "POST" ? JSON.stringify({ url: "http://127.0.0.1/x" }) : undefined,
        });
        expect(res.status).toBe(403);
      }
    }
    expect((await fetch(`${kb.url}/alerts/deliveries`)).status).toBe(401);
  });

  test("format slack: { text } with the run's label, spend, cap, percentage and a dashboard link; label_prefix filters", async () => {
    receiver.received.length = 0;
    const slack = await addWebhook(kb, { url: receiver.url, format: "slack", label_prefix: "airflow-billing/", events: ["cap_threshold"] });
    const key = await stripeKey(kb, { agent_run_label: "airflow-billing/run_<7>" });
    const other = await stripeKey(kb, { agent_run_label: "dagster/run_1" });
    expect(await spend(kb, other.vault_key, 85)).toBe(200);
    expect(await spend(kb, key.vault_key, 85)).toBe(200);
    await waitFor(() => receiver.received.length >= 2, 10_000, "two Slack posts");
    await Bun.sleep(100);
    expect(receiver.received).toHaveLength(2);
    const texts = receiver.received.map((r) => r.json.text as string).sort();
    expect(Object.keys(receiver.received[0]!.json)).toEqual(["text"]);
    expect(texts[0]).toContain("*airflow-billing/run_&lt;7&gt;*");
    expect(texts[0]).toContain("has spent 85% of its daily cap");
    expect(texts[0]).toContain("(alert at 50%)");
    expect(texts[1]).toContain("(alert at 80%)");
    expect(texts[1]).toContain("85.00 USD of 100.00 USD");
    expect(texts[1]).toContain(`<https://keybrake.example.com/ui#/keys/${key.id}|Open in Keybrake>`);
    expect(texts.join()).not.toContain("dagster");
    await kb.admin(`/alerts/webhooks/${slack.id}`, { method: "DELETE" });
  });

  test("GET /alerts/events shows recent alerts as a webhook receives them, with the dashboard link", async () => {
    const events = ((await (await kb.admin("/alerts/events?type=cap_threshold&label_prefix=airflow-billing/")).json()) as Json)
      .data as Json[];
    expect(events.length).toBe(2);
    expect(events[0]).toMatchObject({
      type: "cap_threshold",
      key: { label: "airflow-billing/run_<7>", vendor: "stripe", mode: "live" },
      data: { threshold: 0.8, spent_usd: 85 },
      dashboard_url: expect.stringMatching(/^https:\/\/keybrake\.example\.com\/ui#\/keys\/vk_/),
    });
  });

  test("test sends a signed test event now; DELETE stops deliveries and cancels what is pending; a second DELETE is 404", async () => {
    receiver.received.length = 0;
    const hook = await addWebhook(kb, { url: receiver.url, events: ["key_revoked"] });
    const result = (await (await kb.admin(`/alerts/webhooks/${hook.id}/test`, { method: "POST" })).json()) as Json;
    expect(result).toMatchObject({ webhook_id: hook.id, delivered: true, status: 200, error: null });
    expect(receiver.received).toHaveLength(1);
    expect(receiver.received[0]!.json).toMatchObject({ id: result.event_id, type: "test", key: null });
    expect(
      verifySignature(hook.secret, receiver.received[0]!.body, receiver.received[0]!.headers["keybrake-signature"]!, Date.now() / 1000),
    ).toBe(true);

    receiver.mode = "fail";
    const failed = (await (await kb.admin(`/alerts/webhooks/${hook.id}/test`, { method: "POST" })).json()) as Json;
    expect(failed).toMatchObject({ delivered: false, status: 500, error: expect.stringContaining("HTTP 500") });
    const key = await stripeKey(kb);
    await kb.admin(`/vault/keys/${key.id}`, { method: "DELETE" });
    await waitFor(async () => (await deliveries(kb, `&webhook_id=${hook.id}`))[0]?.attempts >= 1, 5_000, "an attempt");
    expect((await kb.admin(`/alerts/webhooks/${hook.id}`, { method: "DELETE" })).status).toBe(200);
    const [cancelled] = await deliveries(kb, `&webhook_id=${hook.id}`);
    expect(cancelled).toMatchObject({ status: "cancelled", next_attempt_at: null });
    const seen = receiver.received.length;
    await Bun.sleep(300);
    expect(receiver.received.length).toBe(seen);
    expect((await kb.admin(`/alerts/webhooks/${hook.id}`, { method: "DELETE" })).status).toBe(404);
    expect((await kb.admin(`/alerts/webhooks/${hook.id}/test`, { method: "POST" })).status).toBe(404);
    receiver.mode = "ok";
  });
});

describe("the outbox, in the ledger's own transactions (store level)", () => {
  let dir: string;
  let store: SqliteStore;
  const now = Date.UTC(2026, 10, 27, 12);
  const day = "2026-11-27";
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "keybrake-alerts-store-"));
    store = openStore(join(dir, "kb.db"));
  });
  afterAll(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const newStoreKey = (id: string, caps: { daily?: number; total?: number }): NewKey => ({
    id,
    keyHash: `hash_${id}`,
    keyHint: "kb_live_…",
    vendor: "stripe",
    mode: "live",
    mintedBy: "admin",
    label: `store/${id}`,
    dailyCapMicros: caps.daily ?? null,
    totalCapMicros: caps.total ?? null,
    allowedEndpoints: ["POST /v1/payment_intents"],
    maxRequestsPerMinute: null,
    requireIdempotencyKey: false,
    metadata: {},
    createdAt: now,
    expiresAt: now + 86_400_000 * 3,
  });
  const insertKey = (id: string, caps: { daily?: number; total?: number }) => store.insertKey(newStoreKey(id, caps));
  const audit = (id: string, keyId: string): AuditRow =>
    auditRow({
      id,
      at: now,
      keyId,
      vendor: "stripe",
      mode: "live",
      method: "POST",
      path: "/v1/payment_intents",
      status: 200,
      decision: "allowed",
      costSource: "request",
      currency: "usd",
      amountMinor: 0,
    });
  let n = 0;
  const hold = (keyId: string, micros: number, at = now, idem?: string) =>
    store.holdSpend({
      holdId: `hold_${++n}`,
      keyId,
      day: new Date(at).toISOString().slice(0, 10),
      micros,
      ledger: true,
      reuseAmbiguous: true,
      now: at,
      call: { requestId: `kbr_${n}`, method: "POST", path: "/v1/payment_intents" },
      idempotency: idem ? { key: idem, fingerprint: "fp", ttlMs: 86_400_000 } : undefined,
    });
  const settle = (keyId: string, holdId: string, outcome: "settled" | "ambiguous", cost: number, idem?: string) =>
    store.settleCall({
      keyId,
      day,
      holdId,
      outcome,
      costMicros: cost,
      now,
      audit: audit(`kbr_s${holdId}`, keyId),
      idempotency: idem ? { key: idem, result: outcome === "ambiguous" ? { kind: "ambiguous" } : { kind: "forget" } } : undefined,
    });
  const events = async (keyId: string) => (await store.listAlertEvents({ keyId, limit: 100 })).data.reverse();

  test("spend that dips (an ambiguous call re-forwarded) and rises again does not fire twice; nor does a restart", async () => {
    await insertKey("vk_dip", { daily: 100_000_000 });
    const first = await hold("vk_dip", 60_000_000, now, "idem-1");
    if (first.kind !== "admitted") throw new Error(first.kind);
    await settle("vk_dip", first.holdId!, "ambiguous", 60_000_000, "idem-1");
    expect((await events("vk_dip")).map((e) => [e.type, e.data.threshold ?? e.data.reason])).toEqual([
      ["cap_threshold", 0.5],
      ["holds_need_attention", "ambiguous"],
    ]);
    // The retry moves the entry's 60 back to held (settled dips to 0), then settles it: 0 -> 60 again.
    const retry = await hold("vk_dip", 60_000_000, now, "idem-1");
    expect(retry).toMatchObject({ kind: "admitted", holdId: first.holdId });
    await settle("vk_dip", first.holdId!, "settled", 60_000_000, "idem-1");
    expect(await events("vk_dip")).toHaveLength(2);

    await store.close();
    store = openStore(join(dir, "kb.db"));
    const more = await hold("vk_dip", 25_000_000);
    if (more.kind !== "admitted") throw new Error(more.kind);
    await settle("vk_dip", more.holdId!, "settled", 25_000_000);
    expect((await events("vk_dip")).map((e) => e.data.threshold ?? e.data.reason)).toEqual([0.5, "ambiguous", 0.8]);
  });

  test("cap_exhausted fires at the first refusal of each cap window: once a day for a daily cap, once for a lifetime cap", async () => {
    await insertKey("vk_cap", { daily: 10_000_000 });
    await insertKey("vk_life", { total: 10_000_000 });
    for (const keyId of ["vk_cap", "vk_life"]) {
      expect((await hold(keyId, 11_000_000)).kind).toBe("denied");
      expect((await hold(keyId, 12_000_000)).kind).toBe("denied");
    }
    const tomorrow = now + 86_400_000;
    expect((await hold("vk_cap", 11_000_000, tomorrow)).kind).toBe("denied");
    expect((await hold("vk_life", 11_000_000, tomorrow)).kind).toBe("denied");
    const daily = (await events("vk_cap")).map((e) => [e.type, e.data.cap, e.data.window, e.data.price_usd]);
    expect(daily).toEqual([
      ["cap_exhausted", "daily", day, 11],
      ["cap_exhausted", "daily", "2026-11-28", 11],
    ]);
    expect((await events("vk_life")).map((e) => [e.type, e.data.cap, e.data.window])).toEqual([["cap_exhausted", "total", null]]);
  });

  test("budget_threshold as a budget's settled spend crosses its thresholds; budget_exhausted at its first refusal in a window", async () => {
    await store.insertBudget({
      id: "bud_alerts",
      name: "alerts-family",
      parentId: null,
      dailyCapMicros: 10_000_000,
      totalCapMicros: null,
      alertThresholds: [0.5, 1],
      createdAt: now,
      createdBy: "admin",
    });
    for (const id of ["vk_b1", "vk_b2"]) await store.insertKey({ ...newStoreKey(id, { daily: 100_000_000 }), budgetId: "bud_alerts" });
    const a = await hold("vk_b1", 6_000_000);
    await settle("vk_b1", (a as Json).holdId, "settled", 6_000_000);
    const b = await hold("vk_b2", 4_000_000);
    await settle("vk_b2", (b as Json).holdId, "settled", 4_000_000);
    expect((await hold("vk_b1", 1_000_000)).kind).toBe("denied");
    expect((await hold("vk_b2", 2_000_000)).kind).toBe("denied");
    const fired = (await events("bud_alerts")).map((e) => [e.type, e.label, e.data.threshold ?? e.data.price_usd]);
    expect(fired).toEqual([
      ["budget_threshold", "alerts-family", 0.5],
      ["budget_threshold", "alerts-family", 1],
      ["budget_exhausted", "alerts-family", 1],
    ]);
    // The keys' own caps are far: they fire nothing of their own.
    expect(await events("vk_b1")).toEqual([]);
  });

  test("price_differential when a settlement exceeds its hold; holds_need_attention for orphaned holds at start-up, one per key", async () => {
    await insertKey("vk_price", { daily: 100_000_000 });
    const h = await hold("vk_price", 5_000_000);
    if (h.kind !== "admitted") throw new Error(h.kind);
    await settle("vk_price", h.holdId!, "settled", 7_500_000);
    expect((await events("vk_price")).map((e) => [e.type, e.data])).toEqual([
      ["price_differential", { hold_id: h.holdId, request_id: `kbr_s${h.holdId}`, hold_usd: 5, cost_usd: 7.5, over_usd: 2.5 }],
    ]);

    await insertKey("vk_orphan", { daily: 100_000_000 });
    const a = await hold("vk_orphan", 1_000_000);
    const b = await hold("vk_orphan", 2_000_000);
    const orphaned = await store.recoverOrphanedHolds(now);
    expect(orphaned.map((o) => o.id)).toEqual(expect.arrayContaining([(a as Json).holdId, (b as Json).holdId]));
    const [attention] = await events("vk_orphan");
    expect(attention).toMatchObject({ type: "holds_need_attention", data: { reason: "orphaned", count: 2, amount_usd: 3 } });
    expect(await events("vk_orphan")).toHaveLength(1);
  });

  test("an event written with no webhook is kept (recent alerts) and delivers to no one", async () => {
    const { data } = await store.listDeliveries({ limit: 10 });
    expect(data).toEqual([]);
    expect((await store.listAlertEvents({ limit: 100 })).data.length).toBeGreaterThan(0);
  });

  test("retention prunes old events whose deliveries are finished, and past days' marks; lifetime marks stay", async () => {
    const before = (await store.listAlertEvents({ limit: 1000 })).data.length;
    expect(before).toBeGreaterThan(0);
    expect(await store.pruneAlerts(now - 1, 500)).toBe(0);
    expect(await store.pruneAlerts(now + 86_400_000 * 2, 500)).toBe(before);
    expect((await store.listAlertEvents({ limit: 1000 })).data).toEqual([]);
    // vk_life's lifetime cap was refused before: its mark stays, so the next refusal fires nothing.
    expect((await hold("vk_life", 11_000_000)).kind).toBe("denied");
    expect(await events("vk_life")).toEqual([]);
    // Daily marks go with retention (pruned here as if two days had passed, so today's refusal fires again): a day's
    // mark is never older than the retention (at least a day) while its day is current.
    expect((await hold("vk_cap", 11_000_000)).kind).toBe("denied");
    expect((await events("vk_cap")).map((e) => e.type)).toEqual(["cap_exhausted"]);
  });

  test("the Slack text of each event names the run and its numbers", () => {
    const base = { id: "evt_1", at: now, keyId: "vk_1", label: "run/1", vendor: "stripe", mode: "live" };
    const text = (type: string, data: Json) => slackText({ ...base, type, data }, null);
    expect(text("cap_exhausted", { cap: "total", cap_usd: 10, spent_usd: 9.5, held_usd: 0, price_usd: 1, percent: 95 })).toContain(
      "hit its lifetime cap: a 1.00 USD call was refused with 9.50 USD spent",
    );
    expect(text("key_revoked", { by: "cli:ops", spent_total_usd: 12 })).toContain(
      "*run/1* (vk_1) was revoked by cli:ops; it had spent 12.00 USD",
    );
    expect(text("holds_need_attention", { reason: "orphaned", count: 2, amount_usd: 3, resolve: "keybrake holds list" })).toContain(
      "2 orphaned hold(s) of *run/1* (vk_1) need an operator: 3.00 USD",
    );
    expect(text("price_differential", { hold_usd: 5, cost_usd: 7.5, over_usd: 2.5, request_id: "kbr_1" })).toContain(
      "settled at 7.50 USD, 2.50 USD above its 5.00 USD hold",
    );
  });
});

// Debian's python3-flask (.ci/run installs it), else a python3 on the PATH with Flask; without one, skipped.
const FLASK_PYTHON = ["/usr/bin/python3", "python3"].find(
  (python) => Bun.spawnSync([python, "-c", "import flask"], { stdout: "ignore", stderr: "ignore" }).exitCode === 0,
);
if (!FLASK_PYTHON && process.env.CI) throw new Error("CI needs python3-flask");

describe("the README's Flask receiver", () => {
  test.skipIf(!FLASK_PYTHON)(
    "verifies a real delivery's signature, takes it once, and refuses a forged one",
    async () => {
      const readme = readFileSync(join(import.meta.dir, "../README.md"), "utf8");
      const section = readme.slice(readme.indexOf("\n## Alerts\n"), readme.indexOf("\n## Logs\n"));
      const handler = /```python\n([\s\S]*?)```/.exec(section)![1]!;
      const dir = mkdtempSync(join(tmpdir(), "keybrake-flask-"));
      const probe = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response() });
      const port = probe.port!;
      probe.stop(true);
      writeFileSync(join(dir, "receiver.py"), `${handler}\napp.run(host="127.0.0.1", port=${port})\n`);
      const kb = await start();
      const hook = await addWebhook(kb, { url: `http://127.0.0.1:${port}/keybrake`, events: ["key_revoked"] });
      const python = Bun.spawn([FLASK_PYTHON!, "-u", join(dir, "receiver.py")], {
        env: { ...process.env, KEYBRAKE_WEBHOOK_SECRET: hook.secret },
        stdout: "pipe",
        stderr: "pipe",
      });
      let out = "";
      void (async () => {
        for await (const chunk of python.stdout) out += new TextDecoder().decode(chunk);
      })();
      try {
        await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/`).catch(() => null)) !== null, 15_000, "Flask");
        const forged = await fetch(`http://127.0.0.1:${port}/keybrake`, {
          method: "POST",
          headers: { "keybrake-signature": `t=${Math.floor(Date.now() / 1000)},v1=${"0".repeat(64)}`, "content-type": "application/json" },
          body: '{"id":"evt_forged","type":"key_revoked","key":null,"data":{}}',
        });
        expect(forged.status).toBe(400);
        const key = await stripeKey(kb, { agent_run_label: "flask/run_1" });
        await kb.admin(`/vault/keys/${key.id}`, { method: "DELETE" });
        await waitFor(
          async () => (await deliveries(kb, `&webhook_id=${hook.id}`))[0]?.status === "delivered",
          10_000,
          "delivered to Flask",
        );
        expect((await deliveries(kb, `&webhook_id=${hook.id}`))[0]).toMatchObject({ last_status: 204, attempts: 1 });
        await waitFor(() => out.includes("key_revoked"), 5_000, "Flask's line");
        expect(out).toContain("key_revoked flask/run_1");
        expect(out).not.toContain("evt_forged");
      } finally {
        python.kill();
        await kb.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    },
    30_000,
  );
});

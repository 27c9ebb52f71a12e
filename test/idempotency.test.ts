import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import Stripe from "stripe";
import { testClock } from "./helpers/clock";
import { startKeybrake, withKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, STRIPE_500, type MockStripe } from "./helpers/mock-stripe";
import { ANSWER_AFTER_SHORT_TIMEOUT, REFUSING_URL, SHORT_UPSTREAM_TIMEOUT_MS } from "./helpers/upstream";

type Json = Record<string, any>;
let kb: Harness;
let stripe: MockStripe;

beforeAll(async () => {
  stripe = await mockStripe().start();
  kb = await startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url, KEYBRAKE_UPSTREAM_TIMEOUT_MS: "2000" });
});
afterAll(async () => {
  await kb.stop();
  await stripe.stop();
});
beforeEach(() => stripe.reset());

// Each helper works on the file's Keybrake unless a test passes one of its own (`on`).
const PI_2900 = "amount=2900&currency=usd";
const key = (on: Harness = kb) =>
  on.issueKey({
    vendor: "stripe",
    daily_usd_cap: 500,
    allowed_endpoints: ["POST /v1/payment_intents", "POST /v1/payment_intents/*"],
    expires_in: "30d",
  });
const post = (vaultKey: string, idem: string | null, body = PI_2900, on: Harness = kb) =>
  fetch(`${on.url}/v1/payment_intents`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${vaultKey}`,
      "content-type": "application/x-www-form-urlencoded",
      ...(idem ? { "idempotency-key": idem } : {}),
    },
    body,
  });
const ledger = (keyId: string, on: Harness = kb) =>
  on.readDb((db) =>
    db
      .query<{ state: string; cost_micros: number | null }, [string]>("SELECT state, cost_micros FROM ledger_entries WHERE key_id = ?")
      .all(keyId),
  );
const record = async (id: string, on: Harness = kb) => (await (await on.admin(`/vault/keys/${id}`)).json()) as Json;
const audit = async (id: string) => ((await (await kb.admin(`/audit?key_id=${id}&limit=1000`)).json()) as Json).data as Json[];

describe("retries never double-charge", () => {
  test("stripe-node with maxNetworkRetries 2: the dropped first attempt is retried with the same key; one charge", async () => {
    const k = await key();
    stripe.failNext({ kind: "drop" });
    const client = new Stripe(k.vault_key, {
      host: "127.0.0.1",
      port: Number(new URL(kb.url).port),
      protocol: "http",
      maxNetworkRetries: 2,
    });
    const intent = await client.paymentIntents.create({ amount: 2900, currency: "usd" });
    expect(intent.id).toStartWith("pi_");
    expect(stripe.received).toHaveLength(2);
    expect(stripe.received[0]!.headers["idempotency-key"]).toBe(stripe.received[1]!.headers["idempotency-key"]);
    expect(await ledger(k.id)).toEqual([{ state: "settled", cost_micros: 29_000_000 }]);
    expect(await record(k.id)).toMatchObject({ spent_today_usd: 29, held_usd: 0 });
  });

  test("same key and body after success is replayed: nothing forwarded, nothing charged, audited as replay", async () => {
    const k = await key();
    const first = await post(k.vault_key, "run-1/cus-1");
    expect(first.status).toBe(200);
    const firstBody = await first.text();
    const again = await post(k.vault_key, "run-1/cus-1");
    expect(again.status).toBe(200);
    expect(again.headers.get("x-keybrake-replayed")).toBe("true");
    expect(await again.text()).toBe(firstBody);
    expect(again.headers.get("request-id")).toBe(first.headers.get("request-id"));
    expect(stripe.received).toHaveLength(1);
    expect((await record(k.id)).spent_today_usd).toBe(29);
    const [replayRow] = await audit(k.id);
    expect(replayRow).toMatchObject({
      cost_source: "replay",
      cost_usd: 0,
      status: 200,
      idempotency_key: "run-1/cus-1",
      vendor_request_id: first.headers.get("request-id"),
    });
  });

  test("same key with a different body is 409 idempotency_conflict and nothing is forwarded", async () => {
    const k = await key();
    expect((await post(k.vault_key, "run-2/cus-1")).status).toBe(200);
    const res = await post(k.vault_key, "run-2/cus-1", "amount=9900&currency=usd");
    expect(res.status).toBe(409);
    expect(res.headers.get("x-keybrake-error")).toBe("idempotency_conflict");
    expect(stripe.received).toHaveLength(1);
    expect((await record(k.id)).spent_today_usd).toBe(29);
  });

  test("another call under a remembered key is 409 before pricing: no pre-flight read reaches Stripe, a pricing refusal never answers first", async () => {
    const k = await kb.issueKey({ vendor: "stripe", daily_usd_cap: 500, allowed_endpoints: ["POST /v1/refunds"], expires_in: "30d" });
    const refund = (body: string) =>
      fetch(`${kb.url}/v1/refunds`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${k.vault_key}`,
          "content-type": "application/x-www-form-urlencoded",
          "idempotency-key": "refund/1",
        },
        body,
      });
    const first = stripe.seedCharge(5_000);
    expect((await refund(`charge=${first.id}`)).status).toBe(200);
    const sent = stripe.received.length; // the pre-flight read of the charge, and the refund
    const other = stripe.seedCharge(7_000);
    const conflict = await refund(`charge=${other.id}`);
    expect(conflict.status).toBe(409);
    expect(conflict.headers.get("x-keybrake-error")).toBe("idempotency_conflict");
    // An amount Keybrake cannot read would be refused while pricing (400): the conflict answers first.
    expect((await refund(`charge=${first.id}&amount=abc`)).headers.get("x-keybrake-error")).toBe("idempotency_conflict");
    expect(stripe.received).toHaveLength(sent);
    expect((await record(k.id)).spent_today_usd).toBe(50);
  });

  test("50 concurrent requests with one key: exactly one reaches Stripe, the rest are 409 in flight or replays", async () => {
    const k = await key();
    stripe.failNext({ kind: "delay", ms: 300 });
    const responses = await Promise.all(Array.from({ length: 50 }, () => post(k.vault_key, "run-3/cus-1")));
    expect(stripe.received).toHaveLength(1);
    const ok = responses.filter((r) => r.status === 200 && r.headers.get("x-keybrake-replayed") !== "true");
    const inFlight = responses.filter((r) => r.status === 409 && r.headers.get("x-keybrake-error") === "idempotency_in_flight");
    const replays = responses.filter((r) => r.headers.get("x-keybrake-replayed") === "true");
    expect(ok).toHaveLength(1);
    expect(inFlight.length + replays.length).toBe(49);
    for (const r of inFlight) expect(r.headers.get("retry-after")).toBe("1");
    expect(await ledger(k.id)).toEqual([{ state: "settled", cost_micros: 29_000_000 }]);
  });

  test("a 500, then a retry with the same key that succeeds: one hold, settled once", async () => {
    const k = await key();
    stripe.failNext(STRIPE_500);
    expect((await post(k.vault_key, "run-4/cus-1")).status).toBe(500);
    expect(await ledger(k.id)).toEqual([{ state: "ambiguous", cost_micros: 29_000_000 }]);
    expect((await record(k.id)).spent_today_usd).toBe(29);
    const retry = await post(k.vault_key, "run-4/cus-1");
    expect(retry.status).toBe(200);
    expect(stripe.received).toHaveLength(2);
    expect(await ledger(k.id)).toEqual([{ state: "settled", cost_micros: 29_000_000 }]);
    expect(await record(k.id)).toMatchObject({ spent_today_usd: 29, held_usd: 0 });
  });

  test("an ambiguous call retried into a decline releases the hold", async () => {
    await withKeybrake(
      { KEYBRAKE_STRIPE_BASE_URL: stripe.url, KEYBRAKE_UPSTREAM_TIMEOUT_MS: String(SHORT_UPSTREAM_TIMEOUT_MS) },
      {},
      async (fast) => {
        const k = await key(fast);
        stripe.failNext(ANSWER_AFTER_SHORT_TIMEOUT);
        expect((await post(k.vault_key, "run-5/cus-1", PI_2900, fast)).status).toBe(504);
        expect(await ledger(k.id, fast)).toEqual([{ state: "ambiguous", cost_micros: 29_000_000 }]);
        stripe.failNext({
          kind: "status",
          status: 402,
          body: { error: { type: "card_error", code: "card_declined", message: "declined" } },
        });
        expect((await post(k.vault_key, "run-5/cus-1", PI_2900, fast)).status).toBe(402);
        expect(await ledger(k.id, fast)).toEqual([{ state: "released", cost_micros: 0 }]);
        expect((await record(k.id, fast)).spent_today_usd).toBe(0);
      },
    );
  });

  test("connection refused is forgotten: nothing is counted, and the Idempotency-Key is free again, even for another body", async () => {
    await withKeybrake({ KEYBRAKE_STRIPE_BASE_URL: REFUSING_URL }, {}, async (down) => {
      const k = await key(down);
      // The same call twice, then another body under the same key: had the first been remembered (as lost, or
      // as ambiguous), the third would be 409 idempotency_conflict; had it been counted, the ledger would say so.
      for (const body of [PI_2900, PI_2900, "amount=700&currency=usd"]) {
        const res = await post(k.vault_key, "refused-1", body, down);
        expect(res.status).toBe(502);
        expect(res.headers.get("x-keybrake-error")).toBe("upstream_unreachable");
        expect(res.headers.get("x-keybrake-replayed")).toBeNull();
      }
      expect(await ledger(k.id, down)).toEqual(Array.from({ length: 3 }, () => ({ state: "released", cost_micros: 0 })));
      expect(await record(k.id, down)).toMatchObject({ spent_today_usd: 0, held_usd: 0 });
    });
  });

  test("require_idempotency_key: a priced call without the header is 400; a free call is not affected", async () => {
    const k = await kb.issueKey({ vendor: "stripe", daily_usd_cap: 50, allowed_endpoints: ["/v1/*"], require_idempotency_key: true });
    const res = await post(k.vault_key, null);
    expect(res.status).toBe(400);
    expect(res.headers.get("x-keybrake-error")).toBe("idempotency_key_required");
    expect((await fetch(`${kb.url}/v1/customers`, { headers: { authorization: `Bearer ${k.vault_key}` } })).status).toBe(200);
    expect((await post(k.vault_key, "k-1")).status).toBe(200);
    expect(stripe.count("POST", "/v1/payment_intents")).toBe(1);
  });

  test("require_idempotency_key wants a key the job chose: the SDKs' random keys are refused", async () => {
    const k = await kb.issueKey({ vendor: "stripe", daily_usd_cap: 100, allowed_endpoints: ["/v1/*"], require_idempotency_key: true });
    // stripe-python's uuid4 on every POST, stripe-node's and the OpenAI/Anthropic SDKs' retry keys.
    for (const generated of [
      crypto.randomUUID(),
      crypto.randomUUID().toUpperCase(),
      `stripe-node-retry-${crypto.randomUUID()}`,
      `stainless-python-retry-${crypto.randomUUID()}`,
    ]) {
      const res = await post(k.vault_key, generated);
      expect(res.status).toBe(400);
      expect(res.headers.get("x-keybrake-error")).toBe("idempotency_key_required");
      expect(((await res.json()) as { message: string }).message).toContain("stable across its retries");
    }
    expect(stripe.count("POST", "/v1/payment_intents")).toBe(0);
    // A key the job chose (a run id and what it charges), UUID-like parts included, goes through.
    expect((await post(k.vault_key, "scheduled__2026-11-22T06:00:00+00:00-cus_1")).status).toBe(200);
    expect((await post(k.vault_key, `order-${crypto.randomUUID()}`)).status).toBe(200);
    // A key that does not require one takes any key.
    const loose = await kb.issueKey({ vendor: "stripe", daily_usd_cap: 50, allowed_endpoints: ["/v1/*"] });
    expect((await post(loose.vault_key, crypto.randomUUID())).status).toBe(200);
  });

  test("expired idempotency entries are pruned; a key older than 24h is a fresh call", async () => {
    const clock = testClock(Date.now());
    await withKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url }, { now: clock.now }, async (clocked) => {
      const k = await key(clocked);
      expect((await post(k.vault_key, "old", PI_2900, clocked)).status).toBe(200);
      clock.advance(24 * 3600 * 1000 + 1);
      expect(await clocked.store.pruneIdempotency(clock.now(), 500)).toBe(1);
      const again = await post(k.vault_key, "old", PI_2900, clocked);
      expect(again.headers.get("x-keybrake-replayed")).toBeNull();
      expect(stripe.count("POST", "/v1/payment_intents")).toBe(2);
    });
  });
});

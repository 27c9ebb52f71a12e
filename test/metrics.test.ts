import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Metrics } from "../src/ops/metrics";
import { type AuditRow, auditRow } from "../src/store/index";
import { startKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, STRIPE_500, type MockStripe } from "./helpers/mock-stripe";

// SPEC §9: /metrics counters only ever go up; a re-settled call's correction has a counter of its own.
const sample = (text: string, name: string) => Number(new RegExp(`^${name}\\{vendor="stripe"\\} (\\S+)$`, "m").exec(text)?.[1] ?? 0);

describe("keybrake_spend_usd_total is monotonic", () => {
  const row = (costMicros: number): AuditRow =>
    auditRow({
      id: "kbr_x",
      at: 0,
      keyId: "key_x",
      vendor: "stripe",
      mode: "live",
      method: "POST",
      path: "/v1/payment_intents",
      status: 200,
      decision: "allowed",
      costMicros,
      costSource: "request",
      currency: "usd",
      amountMinor: 2900,
    });

  test("a negative difference goes to keybrake_spend_corrected_usd_total, never down the spend counter", () => {
    const metrics = new Metrics();
    metrics.record(row(29_000_000));
    metrics.record(row(-29_000_000));
    metrics.record(row(1_500_000));
    const text = metrics.render(0);
    expect(sample(text, "keybrake_spend_usd_total")).toBe(30.5);
    expect(sample(text, "keybrake_spend_corrected_usd_total")).toBe(29);
    expect(text).toContain("# TYPE keybrake_spend_corrected_usd_total counter");
  });
});

describe("through HTTP", () => {
  let kb: Harness;
  let stripe: MockStripe;
  beforeAll(async () => {
    stripe = await mockStripe().start();
    kb = await startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url });
  });
  afterAll(async () => {
    await kb.stop();
    await stripe.stop();
  });

  test("a 500, then a same-key retry that Stripe refuses: spend stays 29, the correction is counted", async () => {
    const key = await kb.issueKey({ vendor: "stripe", daily_usd_cap: 500, allowed_endpoints: ["POST /v1/payment_intents"] });
    const post = () =>
      fetch(`${kb.url}/v1/payment_intents`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${key.vault_key}`,
          "content-type": "application/x-www-form-urlencoded",
          "idempotency-key": "run-1/cus-1",
        },
        body: "amount=2900&currency=usd",
      });
    const scrape = async () => await (await kb.admin("/metrics")).text();

    stripe.failNext(STRIPE_500);
    expect((await post()).status).toBe(500);
    const before = await scrape();
    expect(sample(before, "keybrake_spend_usd_total")).toBe(29);

    stripe.failNext({ kind: "status", status: 402, body: { error: { type: "card_error", code: "card_declined", message: "declined" } } });
    expect((await post()).status).toBe(402);
    expect(((await (await kb.admin(`/vault/keys/${key.id}`)).json()) as { spent_today_usd: number }).spent_today_usd).toBe(0);
    const after = await scrape();
    expect(sample(after, "keybrake_spend_usd_total")).toBe(29);
    expect(sample(after, "keybrake_spend_corrected_usd_total")).toBe(29);
  });
});

import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import Stripe from "stripe";
import { startKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, STRIPE_LIVE_SECRET, STRIPE_TEST_SECRET, type MockStripe } from "./helpers/mock-stripe";

let kb: Harness;
let stripeMock: MockStripe;

beforeAll(async () => {
  stripeMock = await mockStripe().start();
  kb = await startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripeMock.url });
});
afterAll(async () => {
  await kb.stop();
  await stripeMock.stop();
});
beforeEach(() => stripeMock.reset());

const port = () => Number(new URL(kb.url).port);

/** stripe-node can only change host/port/protocol; a path prefix needs an HttpClient that prefixes the path. */
function prefixedHttpClient(prefix: string) {
  const inner = Stripe.createFetchHttpClient();
  const client = Object.create(inner) as typeof inner;
  client.makeRequest = (host, p, path, ...rest) => inner.makeRequest(host, p, prefix + path, ...rest);
  return client;
}

describe("the official stripe SDK through Keybrake", () => {
  test("host/port routing: creates a PaymentIntent; the vendor sees the real secret, never the vault key", async () => {
    const key = await kb.issueKey({
      vendor: "stripe",
      daily_usd_cap: 500,
      allowed_endpoints: ["POST /v1/payment_intents"],
      agent_run_label: "sdk/host-port",
    });
    const stripe = new Stripe(key.vault_key, { host: "127.0.0.1", port: port(), protocol: "http", maxNetworkRetries: 0 });
    const intent = await stripe.paymentIntents.create({ amount: 2900, currency: "usd", customer: "cus_123" });

    expect(intent.id).toStartWith("pi_");
    expect(intent.amount).toBe(2900);
    expect(stripeMock.received).toHaveLength(1);
    const seen = stripeMock.received[0]!;
    expect(seen.path).toBe("/v1/payment_intents");
    expect(seen.headers.authorization).toBe(`Bearer ${STRIPE_LIVE_SECRET}`);
    expect(JSON.stringify(seen)).not.toContain(key.vault_key);
    expect(seen.headers["idempotency-key"]).toBeString(); // the SDK's own key passes unchanged
    expect(JSON.stringify(intent)).not.toContain(STRIPE_LIVE_SECRET);

    const record = (await (await kb.admin(`/vault/keys/${key.id}`)).json()) as Record<string, unknown>;
    expect(record.spent_today_usd).toBe(29);
    expect(record.held_usd).toBe(0);
    expect(record.remaining_today_usd).toBe(471);
    expect(record.calls).toBe(1);
  });

  test("a /stripe prefix through a custom httpClient, and a test-mode key uses the test secret", async () => {
    const key = await kb.issueKey({
      vendor: "stripe",
      mode: "test",
      daily_usd_cap: 100,
      allowed_endpoints: ["/v1/payment_intents", "/v1/payment_intents/*"],
    });
    expect(key.vault_key).toStartWith("kb_test_");
    const stripe = new Stripe(key.vault_key, {
      host: "127.0.0.1",
      port: port(),
      protocol: "http",
      httpClient: prefixedHttpClient("/stripe"),
      maxNetworkRetries: 0,
    });
    const intent = await stripe.paymentIntents.create({ amount: 1500, currency: "usd" });
    const confirmed = await stripe.paymentIntents.confirm(intent.id);
    expect(confirmed.status).toBe("succeeded");
    expect(stripeMock.received.map((r) => r.path)).toEqual(["/v1/payment_intents", `/v1/payment_intents/${intent.id}/confirm`]);
    expect(stripeMock.received.every((r) => r.headers.authorization === `Bearer ${STRIPE_TEST_SECRET}`)).toBe(true);
    const record = (await (await kb.admin(`/vault/keys/${key.id}`)).json()) as Record<string, unknown>;
    expect(record.spent_today_usd).toBe(15); // the confirm of an intent created through Keybrake costs 0
  });

  test("a cap hit raises the SDK's RateLimitError with Keybrake's code", async () => {
    const key = await kb.issueKey({ vendor: "stripe", daily_usd_cap: 10, allowed_endpoints: ["POST /v1/payment_intents"] });
    const stripe = new Stripe(key.vault_key, { host: "127.0.0.1", port: port(), protocol: "http", maxNetworkRetries: 0 });
    const err = await stripe.paymentIntents.create({ amount: 2900, currency: "usd" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Stripe.errors.StripeRateLimitError);
    expect((err as InstanceType<typeof Stripe.errors.StripeError>).code).toBe("cap_exhausted");
    expect((err as InstanceType<typeof Stripe.errors.StripeError>).headers?.["x-keybrake-cap-hit"]).toBe("true");
    expect(stripeMock.received).toHaveLength(0);
  });
});

import { afterAll, beforeAll, expect, test } from "bun:test";
import { httpUrl, secret, unitPrice } from "../src/env";
import { parseStrictJson, unpriceable } from "../src/vendors/body";
import { unitPriceMicros } from "../src/vendors/currency";
import { registerVendor } from "../src/vendors/index";
import { Catalogue, free, priced } from "../src/vendors/catalogue";
import { bearerCredentials, type PriceFn, type Vendor } from "../src/vendors/types";
import { startKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, type MockStripe } from "./helpers/mock-stripe";
import { MockVendor, mockId } from "./helpers/mock-vendor";

// A fourth vendor, defined here and nowhere else (issue 18: a vendor is one module). It claims the bare `/v1/*`
// that Stripe claims too: bare paths go to the presented key's vendor, so neither shadows the other.
const FAKEMAIL_KEY = "fm_live_secret_0123456789";

const fakemail: Vendor<{ emailUsd: number }> = {
  name: "fakemail",
  env: {
    KEYBRAKE_FAKEMAIL_API_KEY: secret,
    KEYBRAKE_FAKEMAIL_TEST_API_KEY: secret,
    KEYBRAKE_FAKEMAIL_BASE_URL: httpUrl("https://api.fakemail.invalid"),
    KEYBRAKE_FAKEMAIL_EMAIL_USD: unitPrice(0.001),
  },
  secretVariables: ["KEYBRAKE_FAKEMAIL_API_KEY", "KEYBRAKE_FAKEMAIL_TEST_API_KEY"],
  configure: (env) => ({
    baseUrl: env.KEYBRAKE_FAKEMAIL_BASE_URL as string,
    credentials: {
      live: bearerCredentials(env.KEYBRAKE_FAKEMAIL_API_KEY as string | undefined),
      test: bearerCredentials(env.KEYBRAKE_FAKEMAIL_TEST_API_KEY as string | undefined),
    },
    prices: { emailUsd: env.KEYBRAKE_FAKEMAIL_EMAIL_USD as number },
  }),
  bareRoutes: ["/v1/*"],
  publicPath: (path) => path,
  catalogue: new Catalogue<PriceFn<{ emailUsd: number }>>([
    ...priced<PriceFn<{ emailUsd: number }>>(
      "one email per recipient",
      async (input, ctx) => {
        const mail = parseStrictJson(new TextDecoder().decode(input.body)) as { to?: unknown };
        if (!Array.isArray(mail.to)) throw unpriceable('"to" must be a list');
        return { micros: unitPriceMicros(ctx.prices.emailUsd, mail.to.length), source: "request", currency: "usd", amountMinor: null };
      },
      "/v1/mail/send",
    ),
    ...free(["GET"], "a read", "/v1/mail/{id}"),
  ]),
  requestId: (headers) => headers.get("x-message-id"),
  contextHeaders: [],
  honoursIdempotencyKey: false,
  doNotRetryHeaders: {},
};
registerVendor(fakemail);

let kb: Harness;
let mock: MockVendor;
let stripe: MockStripe;

beforeAll(async () => {
  mock = await new MockVendor(
    () => ({ status: 202, body: { id: mockId("msg_") } }),
    "X-Message-Id",
    () => mockId("fm_"),
  ).start();
  stripe = await mockStripe().start();
  kb = await startKeybrake({
    KEYBRAKE_FAKEMAIL_API_KEY: FAKEMAIL_KEY,
    KEYBRAKE_FAKEMAIL_BASE_URL: mock.url,
    KEYBRAKE_FAKEMAIL_EMAIL_USD: "0.25",
    KEYBRAKE_STRIPE_BASE_URL: stripe.url,
  });
});
afterAll(async () => {
  await kb.stop();
  await mock.stop();
  await stripe.stop();
});

const send = (vaultKey: string, path: string, to: string[]) =>
  fetch(`${kb.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${vaultKey}`, "content-type": "application/json" },
    body: JSON.stringify({ to }),
  });

test("a vendor registered from a test module is routed, priced, held and audited; bare /v1 goes to the key's vendor", async () => {
  const key = await kb.issueKey({ vendor: "fakemail", daily_usd_cap: 1, allowed_endpoints: ["POST /v1/mail/send"] });
  const viaPrefix = await send(key.vault_key, "/fakemail/v1/mail/send", ["a@x.test", "b@x.test"]);
  expect(viaPrefix.status).toBe(202);
  const viaBare = await send(key.vault_key, "/v1/mail/send", ["c@x.test"]);
  expect(viaBare.status).toBe(202);
  // $0.25 a recipient: 3 are spent, the next 2 would pass the $1 cap.
  const refused = await send(key.vault_key, "/v1/mail/send", ["d@x.test", "e@x.test"]);
  expect(refused.status).toBe(429);
  expect(refused.headers.get("x-keybrake-error")).toBe("cap_exhausted");

  expect(mock.received).toHaveLength(2);
  expect(mock.received.every((r) => r.path === "/v1/mail/send" && r.headers.authorization === `Bearer ${FAKEMAIL_KEY}`)).toBe(true);
  const rows = ((await (await kb.admin(`/audit?key_id=${key.id}`)).json()) as { data: Record<string, unknown>[] }).data.reverse();
  expect(rows.map((r) => [r.vendor, r.decision, r.hold_usd, r.cost_usd])).toEqual([
    ["fakemail", "allowed", 0.5, 0.5],
    ["fakemail", "allowed", 0.25, 0.25],
    ["fakemail", "cap_exhausted", 0, 0],
  ]);
  expect(rows[0]!.vendor_request_id).toStartWith("fm_");

  // The same bare path with a Stripe key is Stripe's; a fakemail key on a Stripe-only route is a mismatch.
  const stripeKey = await kb.issueKey({ vendor: "stripe", daily_usd_cap: 100, allowed_endpoints: ["POST /v1/payment_intents"] });
  const intent = await fetch(`${kb.url}/v1/payment_intents`, {
    method: "POST",
    headers: { authorization: `Bearer ${stripeKey.vault_key}`, "content-type": "application/x-www-form-urlencoded" },
    body: "amount=100&currency=usd",
  });
  expect(intent.status).toBe(200);
  expect(stripe.received).toHaveLength(1);
  const mismatch = await send(key.vault_key, "/stripe/v1/mail/send", ["f@x.test"]);
  expect(mismatch.status).toBe(403);
  expect(mismatch.headers.get("x-keybrake-error")).toBe("vendor_mismatch");
  expect(mock.received).toHaveLength(2);
});

test("its variables are configuration like any other: a bad value stops start-up naming it", async () => {
  const { loadConfig } = await import("../src/config");
  expect(() => loadConfig({ KEYBRAKE_FAKEMAIL_EMAIL_USD: "-1" })).toThrow(/^KEYBRAKE_FAKEMAIL_EMAIL_USD: /);
  expect(loadConfig({ KEYBRAKE_FAKEMAIL_API_KEY: FAKEMAIL_KEY }).vendors.fakemail!.credentials.live).not.toBeNull();
});

/**
 * SPEC §6, the closed catalogue: every endpoint Keybrake forwards is in its vendor's catalogue as priced, free,
 * refused money mover (422 unpriceable_request) or credential endpoint (403 credential_endpoint_refused);
 * anything else is 422 endpoint_not_catalogued, whatever the key's allowlist says, unless the operator's
 * KEYBRAKE_<VENDOR>_FREE_ENDPOINTS names it. Real HTTP against the real server and the vendor mocks.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { ConfigError, loadConfig } from "../src/config";
import { Catalogue, type CatalogueEntry, catalogueMarkdown, credential, free, priced, refused } from "../src/vendors/catalogue";
import { RESEND_CATALOGUE } from "../src/vendors/resend";
import { STRIPE_CATALOGUE } from "../src/vendors/stripe";
import { TWILIO_CATALOGUE, twilio } from "../src/vendors/twilio";
import type { PriceFn } from "../src/vendors/types";
import { catalogueSection, README_PATH, readmeSection, REGENERATE } from "./helpers/catalogue-doc";
import { startKeybrake, type Harness } from "./helpers/harness";
import { mockResend, RESEND_KEY } from "./helpers/mock-resend";
import { mockStripe, STRIPE_LIVE_SECRET, type MockStripe } from "./helpers/mock-stripe";
import { mockTwilio, TWILIO_SID, TWILIO_TOKEN, type MockTwilio } from "./helpers/mock-twilio";
import type { MockVendor } from "./helpers/mock-vendor";

type Json = Record<string, any>;
type VendorName = "stripe" | "twilio" | "resend";
type AnyCatalogue = Catalogue<PriceFn<any>>;

const CATALOGUES: Record<VendorName, AnyCatalogue> = { stripe: STRIPE_CATALOGUE, twilio: TWILIO_CATALOGUE, resend: RESEND_CATALOGUE };
/** What a job writes as its account: any SID stands for the configured one (SPEC §4). */
const JOB_SID = "AC0123456789abcdef0123456789abcdef";
const ACCOUNT = `/2010-04-01/Accounts/${JOB_SID}`;
const RESEND_ID = "4ef9a417-02e9-4d39-ad75-9611e0fcc33c";

let kb: Harness;
let stripe: MockStripe;
let tw: MockTwilio;
let rs: MockVendor;
const mocks = (): Record<VendorName, MockVendor> => ({ stripe, twilio: tw, resend: rs });

/** Per vendor: a key that only ever meets denials (its ledger must stay empty) and one for forwarded calls. */
const keys = {} as Record<VendorName, { deny: { id: string; vault_key: string }; pass: { id: string; vault_key: string } }>;

beforeAll(async () => {
  stripe = await mockStripe().start();
  tw = await mockTwilio().start();
  rs = await mockResend().start();
  kb = await startKeybrake({
    KEYBRAKE_STRIPE_BASE_URL: stripe.url,
    KEYBRAKE_TWILIO_BASE_URL: tw.url,
    KEYBRAKE_RESEND_BASE_URL: rs.url,
    KEYBRAKE_UPSTREAM_TIMEOUT_MS: "5000",
  });
  for (const vendor of ["stripe", "twilio", "resend"] as const) {
    const issue = (role: string) =>
      kb.issueKey({ vendor, daily_usd_cap: 100_000, allowed_endpoints: ["/*"], agent_run_label: `catalogue/${vendor}/${role}` });
    keys[vendor] = { deny: await issue("deny"), pass: await issue("pass") };
  }
});
afterAll(async () => {
  await kb?.stop();
  await Promise.all([stripe?.stop(), tw?.stop(), rs?.stop()]);
});
beforeEach(() => {
  stripe.reset();
  tw.reset();
  rs.reset();
});

// ---------------------------------------------------------------------------------------------------------------
// Calls and what they must leave behind

const DEFAULT_BODY: Record<VendorName, string> = {
  stripe: "description=catalogue",
  twilio: "FriendlyName=catalogue",
  resend: JSON.stringify({ name: "catalogue" }),
};

interface CallInit {
  body?: string | null;
  query?: string;
  on?: Harness;
  contentType?: string;
}

/** A call through `/{vendor}/…` as the vendor's SDK sends it: Bearer for Stripe and Resend, Basic `AC…:<vault key>` for Twilio. */
function send(vendor: VendorName, vaultKey: string, method: string, path: string, init: CallInit = {}): Promise<Response> {
  const authorization = vendor === "twilio" ? `Basic ${btoa(`${JOB_SID}:${vaultKey}`)}` : `Bearer ${vaultKey}`;
  const contentType = init.contentType ?? (vendor === "resend" ? "application/json" : "application/x-www-form-urlencoded");
  const bodyless = method === "GET" || method === "HEAD";
  return fetch(`${(init.on ?? kb).url}/${vendor}${path}${init.query ?? ""}`, {
    method,
    headers: { authorization, "content-type": contentType },
    body: bodyless ? undefined : init.body === undefined ? DEFAULT_BODY[vendor] : init.body,
  });
}

/** The real credential the vendor must see. */
const REAL_AUTHORIZATION: Record<VendorName, string> = {
  stripe: `Bearer ${STRIPE_LIVE_SECRET}`,
  twilio: `Basic ${btoa(`${TWILIO_SID}:${TWILIO_TOKEN}`)}`,
  resend: `Bearer ${RESEND_KEY}`,
};

/** The path the vendor receives: Twilio's account segment (any SID, any case of `Accounts`) becomes the real SID. */
function upstreamPath(vendor: VendorName, path: string): string {
  if (vendor !== "twilio") return path;
  const pub = twilio.publicPath(path);
  const placeholder = "/2010-04-01/Accounts/{AccountSid}";
  return pub.startsWith(placeholder) ? `/2010-04-01/Accounts/${TWILIO_SID}${pub.slice(placeholder.length)}` : pub;
}

const auditRow = async (requestId: string, on: Harness = kb): Promise<Json> => {
  const res = await on.admin(`/audit?request_id=${encodeURIComponent(requestId)}`);
  const rows = ((await res.json()) as Json).data as Json[];
  expect(rows).toHaveLength(1);
  return rows[0]!;
};
const keyRecord = async (id: string, on: Harness = kb) => (await (await on.admin(`/vault/keys/${id}`)).json()) as Json;
const ledgerRows = (keyId: string, on: Harness = kb) =>
  on.readDb((db) => db.query<{ n: number }, [string]>("SELECT count(*) AS n FROM ledger_entries WHERE key_id = ?").get(keyId)!.n);

const totalReceived = () => stripe.received.length + tw.received.length + rs.received.length;

/** A Keybrake refusal: its status, code in all three places, an audit row with the code as decision and nothing held. */
async function expectDenied(res: Response, status: number, code: string, what: string, on: Harness = kb) {
  const text = await res.text();
  if (res.status !== status || res.headers.get("x-keybrake-error") !== code)
    throw new Error(`${what}: expected ${status} ${code}, got ${res.status} ${res.headers.get("x-keybrake-error")}: ${text.slice(0, 300)}`);
  const body = JSON.parse(text) as Json;
  expect(body.code).toBe(code);
  expect(body.error.code).toBe(code);
  expect(body.error.type).toBe("keybrake_error");
  const row = await auditRow(res.headers.get("x-keybrake-request-id")!, on);
  expect(row).toMatchObject({ decision: code, status, hold_usd: 0, cost_usd: 0 });
}

/** No vendor saw anything, and the denial key's ledger is untouched. */
async function expectNothingForwarded(vendor: VendorName, what: string, keyId = keys[vendor].deny.id, on: Harness = kb) {
  if (totalReceived() !== 0)
    throw new Error(
      `${what}: a vendor received ${JSON.stringify([...stripe.received, ...tw.received, ...rs.received].map((r) => `${r.method} ${r.path}`))}`,
    );
  expect(await ledgerRows(keyId, on)).toBe(0);
  expect(await keyRecord(keyId, on)).toMatchObject({ spent_today_usd: 0, spent_total_usd: 0, held_usd: 0 });
}

/**
 * Forwarded with the real secret, never the vault key: the vendor received exactly this call (after any pre-flight
 * reads), and the audit row says `allowed` with the expected hold. Mocks answer 404 to routes they do not know.
 */
async function expectForwarded(vendor: VendorName, res: Response, method: string, path: string, holdUsd: number, what: string) {
  const text = await res.text();
  if (res.headers.get("x-keybrake-error") !== null)
    throw new Error(`${what}: refused by Keybrake: ${res.status} ${res.headers.get("x-keybrake-error")}: ${text.slice(0, 300)}`);
  const mock = mocks()[vendor];
  const upstream = upstreamPath(vendor, path);
  const calls = mock.received.filter((r) => r.method !== "GET" || method === "GET");
  if (calls.length !== 1 || calls[0]!.method !== method || calls[0]!.path !== upstream)
    throw new Error(`${what}: ${vendor} received ${JSON.stringify(mock.received.map((r) => `${r.method} ${r.path}`))}`);
  for (const r of mock.received) {
    expect(r.headers.authorization).toBe(REAL_AUTHORIZATION[vendor]);
    expect(JSON.stringify(r)).not.toContain(keys[vendor].pass.vault_key);
    expect(JSON.stringify(r)).not.toContain(keys[vendor].deny.vault_key);
  }
  expect(totalReceived()).toBe(mock.received.length);
  const row = await auditRow(res.headers.get("x-keybrake-request-id")!);
  expect(row.decision).toBe("allowed");
  expect(row.hold_usd).toBe(holdUsd);
}

// ---------------------------------------------------------------------------------------------------------------
// Concrete paths from shapes

const STRIPE_IDS: Record<string, string> = {
  intent: "pi_1",
  charge: "ch_1",
  customer: "cus_1",
  refund: "re_1",
  dispute: "dp_1",
  transfer: "tr_1",
  payout: "po_1",
  topup: "tu_1",
  invoice: "in_1",
  subscription: "sub_1",
  item: "si_1",
  schedule: "sub_sched_1",
  credit_note: "cn_1",
  quote: "qt_1",
  reader: "tmr_1",
  key: "ephkey_1",
  endpoint: "we_1",
  payment_method: "pm_1",
  setup_intent: "seti_1",
  product: "prod_1",
  price: "price_1",
  session: "cs_1",
  event: "evt_1",
  file: "file_1",
  source: "card_1",
  line: "il_1",
  fee: "fee_1",
  txn: "cbtxn_1",
};
const TWILIO_IDS: Record<string, string> = {
  message: "SM0123456789abcdef0123456789abcdef",
  call: "CA0123456789abcdef0123456789abcdef",
  conference: "CF0123456789abcdef0123456789abcdef",
  recording: "RE0123456789abcdef0123456789abcdef",
  media: "ME0123456789abcdef0123456789abcdef",
  number: "PN0123456789abcdef0123456789abcdef",
  key: "SK0123456789abcdef0123456789abcdef",
  app: "CN0123456789abcdef0123456789abcdef",
};

/** The shape with its ids filled in; a trailing `/*` becomes `rest` (one or more segments). */
function concrete(vendor: VendorName, shape: string, rest = "/x_1"): string {
  const filled = shape.replace(/\{(\w+)\}/g, (_, name: string) => {
    if (name === "AccountSid") return JOB_SID;
    if (vendor === "stripe") return STRIPE_IDS[name] ?? `${name}_1`;
    if (vendor === "twilio") return TWILIO_IDS[name] ?? `XX${name}1`;
    return RESEND_ID;
  });
  return filled.endsWith("/*") ? filled.slice(0, -2) + rest : filled;
}

/** The concrete paths a shape is swept with: a `/*` shape with one and with two further segments. */
const pathsOf = (vendor: VendorName, shape: string) =>
  shape.endsWith("/*") ? [concrete(vendor, shape, "/x_1"), concrete(vendor, shape, "/x_1/y_2")] : [concrete(vendor, shape)];

/**
 * A naive, test-side reading of a shape (ids are one segment, `/*` one or more, Twilio's extensions): whether
 * another entry answers for a method on a priced path, so that 405 is expected only where none does.
 */
function naiveMatch(vendor: VendorName, shape: string, path: string): boolean {
  const pub = vendor === "twilio" ? twilio.publicPath(path) : path;
  const rest = shape.endsWith("/*");
  const body = (rest ? shape.slice(0, -2) : shape)
    .split("/")
    .map((seg) => (seg === "{AccountSid}" ? "\\{AccountSid\\}" : /^\{\w+\}$/.test(seg) ? "[A-Za-z0-9_-]+" : seg.replace(/[.]/g, "\\.")))
    .join("/");
  const tail = rest ? "(?:/[^/]+)+" : vendor === "twilio" ? "(?:\\.(?:json|xml))?" : "";
  return new RegExp(`^${body}${tail}$`).test(pub);
}
const coversMethod = (e: CatalogueEntry, method: string) => e.methods === "*" || e.methods.includes(method);

// ---------------------------------------------------------------------------------------------------------------
// Priced entries: a request that prices, and its exact hold

interface PricedCall {
  path: string;
  body: string;
  hold: number;
}

const form = (fields: Record<string, string | number>) =>
  new URLSearchParams(Object.entries(fields).map(([k, v]): [string, string] => [k, String(v)])).toString();
const SMS = form({ To: "+15551230000", From: "+15559870000", Body: "Your order shipped" });
const ONE_MINUTE_DIAL = '<Response><Dial timeLimit="60"><Number>+15551230000</Number></Dial></Response>';
const EMAIL = (to: string | string[], extra: Json = {}) => ({ from: "ops@example.com", to, subject: "s", text: "t", ...extra });

/** Every priced entry, by shape: how the sweep prices it (ids of objects the mock holds for class 2). */
const PRICED: Record<VendorName, Record<string, () => PricedCall>> = {
  stripe: {
    "/v1/payment_intents": () => ({ path: "/v1/payment_intents", body: form({ amount: 2900, currency: "usd" }), hold: 29 }),
    "/v1/charges": () => ({ path: "/v1/charges", body: form({ amount: 1000, currency: "usd", source: "tok_visa" }), hold: 10 }),
    "/v1/transfers": () => ({ path: "/v1/transfers", body: form({ amount: 500, currency: "usd", destination: "acct_1" }), hold: 5 }),
    "/v1/payouts": () => ({ path: "/v1/payouts", body: form({ amount: 600, currency: "usd" }), hold: 6 }),
    "/v1/topups": () => ({ path: "/v1/topups", body: form({ amount: 700, currency: "usd" }), hold: 7 }),
    "/v1/payment_intents/{intent}/confirm": () => ({
      path: `/v1/payment_intents/${stripe.seedIntent(4000).id}/confirm`,
      body: "",
      hold: 40,
    }),
    "/v1/payment_intents/{intent}/capture": () => ({
      path: `/v1/payment_intents/${stripe.seedIntent(5000, "usd", { status: "requires_capture", amount_capturable: 4500 }).id}/capture`,
      body: "",
      hold: 45,
    }),
    "/v1/payment_intents/{intent}/verify_microdeposits": () => ({
      path: `/v1/payment_intents/${stripe.seedIntent(4200).id}/verify_microdeposits`,
      body: form({ "amounts[0]": 32, "amounts[1]": 45 }),
      hold: 42,
    }),
    "/v1/payment_intents/{intent}": () => ({
      path: `/v1/payment_intents/${stripe.seedIntent(1000).id}`,
      body: form({ amount: 1500 }),
      hold: 15,
    }),
    "/v1/payment_intents/{intent}/increment_authorization": () => ({
      path: `/v1/payment_intents/${stripe.seedIntent(1000).id}/increment_authorization`,
      body: form({ amount: 2500 }),
      hold: 25,
    }),
    "/v1/refunds": () => ({ path: "/v1/refunds", body: form({ charge: stripe.seedCharge(3000).id, amount: 1200 }), hold: 12 }),
    "/v1/charges/{charge}/refunds": () => ({ path: `/v1/charges/${stripe.seedCharge(3100).id}/refunds`, body: "", hold: 31 }),
    "/v1/charges/{charge}/refund": () => ({ path: `/v1/charges/${stripe.seedCharge(3200).id}/refund`, body: "", hold: 32 }),
    "/v1/charges/{charge}/capture": () => ({ path: `/v1/charges/${stripe.seedCharge(3300, "usd", false).id}/capture`, body: "", hold: 33 }),
    "/v1/invoices/{invoice}/pay": () => ({ path: `/v1/invoices/${stripe.seedInvoice(3400).id}/pay`, body: "", hold: 34 }),
    "/v1/customers": () => ({ path: "/v1/customers", body: form({ email: "jo@example.com" }), hold: 0 }),
    "/v1/customers/{customer}": () => ({ path: "/v1/customers/cus_1", body: form({ name: "Jo" }), hold: 0 }),
  },
  twilio: {
    "/2010-04-01/Accounts/{AccountSid}/Messages": () => ({ path: `${ACCOUNT}/Messages.json`, body: SMS, hold: 0.0083 }),
    "/2010-04-01/Accounts/{AccountSid}/Calls": () => ({
      path: `${ACCOUNT}/Calls.json`,
      body: form({ To: "+15551230000", From: "+15559870000", Twiml: "<Response><Say>hi</Say></Response>", TimeLimit: 60 }),
      hold: 0.014,
    }),
    "/2010-04-01/Accounts/{AccountSid}/Calls/{call}": () => ({
      path: `${ACCOUNT}/Calls/${TWILIO_IDS.call}.json`,
      body: form({ Twiml: ONE_MINUTE_DIAL }),
      hold: 0.014,
    }),
    "/2010-04-01/Accounts/{AccountSid}/Conferences/{conference}/Participants": () => ({
      path: `${ACCOUNT}/Conferences/${TWILIO_IDS.conference}/Participants.json`,
      body: form({ To: "+15551230000", From: "+15559870000", TimeLimit: 60 }),
      hold: 0.014,
    }),
    "/2010-04-01/Accounts/{AccountSid}/Conferences/{conference}": () => ({
      path: `${ACCOUNT}/Conferences/${TWILIO_IDS.conference}.json`,
      body: form({ Status: "completed" }),
      hold: 0,
    }),
    "/2010-04-01/Accounts/{AccountSid}/Conferences/{conference}/Participants/{call}": () => ({
      path: `${ACCOUNT}/Conferences/${TWILIO_IDS.conference}/Participants/${TWILIO_IDS.call}.json`,
      body: form({ Muted: "true" }),
      hold: 0,
    }),
  },
  resend: {
    "/broadcasts": () => ({
      path: "/broadcasts",
      body: JSON.stringify({ audience_id: RESEND_ID, from: "ops@example.com", subject: "s", html: "<p>hi</p>" }),
      hold: 0,
    }),
    "/emails": () => ({ path: "/emails", body: JSON.stringify(EMAIL(["a@example.com", "b@example.com"])), hold: 0.0018 }),
    "/emails/batch": () => ({
      path: "/emails/batch",
      body: JSON.stringify([EMAIL("a@example.com"), EMAIL(["b@example.com"], { cc: "c@example.com" })]),
      hold: 0.0027,
    }),
  },
};

// ---------------------------------------------------------------------------------------------------------------

describe("the sweep: every entry of every catalogue, over HTTP", () => {
  for (const vendor of ["stripe", "twilio", "resend"] as const) {
    const catalogue = CATALOGUES[vendor];

    test(`${vendor}: every priced entry has a pricing fixture here, and none is left over`, () => {
      const pricedShapes = catalogue.entries.filter((e) => e.class === "priced").map((e) => e.shape);
      expect(Object.keys(PRICED[vendor]).sort()).toEqual([...pricedShapes].sort());
    });

    for (const [index, entry] of catalogue.entries.entries()) {
      const methods = entry.methods === "*" ? ["POST", "DELETE", "GET"] : [...entry.methods];
      test(`${vendor} #${index} ${entry.class} ${methods.join(",")} ${entry.shape}`, async () => {
        const { deny, pass } = keys[vendor];
        for (const path of pathsOf(vendor, entry.shape)) {
          for (const method of methods) {
            const what = `${method} ${path} (${entry.class} ${entry.shape})`;
            stripe.reset();
            tw.reset();
            rs.reset();
            if (entry.class === "credential") {
              await expectDenied(await send(vendor, deny.vault_key, method, path), 403, "credential_endpoint_refused", what);
              await expectNothingForwarded(vendor, what);
            } else if (method === "GET") {
              // A read of any catalogued resource is free, refused money movers included.
              await expectForwarded(vendor, await send(vendor, pass.vault_key, "GET", path), "GET", path, 0, what);
            } else if (entry.class === "refused") {
              await expectDenied(await send(vendor, deny.vault_key, method, path), 422, "unpriceable_request", what);
              await expectNothingForwarded(vendor, what);
            } else if (entry.class === "free") {
              await expectForwarded(vendor, await send(vendor, pass.vault_key, method, path), method, path, 0, what);
            } else {
              const call = PRICED[vendor][entry.shape]!();
              const res = await send(vendor, pass.vault_key, "POST", call.path, { body: call.body });
              await expectForwarded(vendor, res, "POST", call.path, call.hold, `POST ${call.path} (priced ${entry.shape})`);
            }
          }
          if (entry.class !== "priced") continue;
          // Another method on a priced path is 405, unless another entry answers for it (DELETE a customer is free).
          for (const method of ["PUT", "PATCH", "DELETE"]) {
            const other = catalogue.entries.some((e) => e !== entry && coversMethod(e, method) && naiveMatch(vendor, e.shape, path));
            if (other) continue;
            const what = `${method} ${path} (priced ${entry.shape})`;
            stripe.reset();
            tw.reset();
            rs.reset();
            await expectDenied(await send(vendor, deny.vault_key, method, path), 405, "method_not_priced", what);
            await expectNothingForwarded(vendor, what);
          }
        }
      });
    }
  }

  test("HEAD is a read: free on a catalogued path, refused on a credential one", async () => {
    const pi = await send("stripe", keys.stripe.pass.vault_key, "HEAD", "/v1/payment_intents/pi_1");
    expect(pi.headers.get("x-keybrake-error")).toBeNull();
    expect(stripe.received.map((r) => `${r.method} ${r.path}`)).toEqual(["HEAD /v1/payment_intents/pi_1"]);
    stripe.reset();
    const secret = await send("stripe", keys.stripe.deny.vault_key, "HEAD", "/v1/webhook_endpoints");
    expect(secret.status).toBe(403);
    expect(secret.headers.get("x-keybrake-error")).toBe("credential_endpoint_refused");
    await expectNothingForwarded("stripe", "HEAD /v1/webhook_endpoints");
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe("random uncatalogued paths: 422 endpoint_not_catalogued, nothing forwarded", () => {
  const literalWords = (catalogue: AnyCatalogue) => [
    ...new Set(catalogue.entries.flatMap((e) => e.shape.split("/").filter((s) => s !== "" && s !== "*" && !s.startsWith("{")))),
  ];
  const segment = (vendor: VendorName) =>
    fc.oneof(
      fc.constantFrom(...literalWords(CATALOGUES[vendor])),
      fc.constantFrom(...literalWords(CATALOGUES[vendor])).map((w) => w.toUpperCase()),
      fc.stringMatching(/^[a-z][a-z_]{0,11}$/),
      fc.stringMatching(/^[A-Za-z0-9_-]{1,16}$/),
    );
  const method = fc.constantFrom("GET", "POST", "DELETE", "PUT", "PATCH");
  const paths: Record<VendorName, fc.Arbitrary<string>> = {
    stripe: fc.array(segment("stripe"), { minLength: 1, maxLength: 4 }).map((s) => `/v1/${s.join("/")}`),
    twilio: fc
      .tuple(
        fc.array(segment("twilio"), { minLength: 1, maxLength: 4 }),
        fc.constantFrom("", ".json", ".xml", ".JSON"),
        fc.constantFrom(ACCOUNT, "/2010-04-01/Accounts/AC9999", "/2010-04-01/accounts/{AccountSid}", "/2010-04-01"),
      )
      .map(([s, ext, base]) => `${base}/${s.join("/")}${ext}`),
    resend: fc.array(segment("resend"), { minLength: 1, maxLength: 4 }).map((s) => `/${s.join("/")}`),
  };
  const SEEDS: Record<VendorName, number> = { stripe: 20_251_122, twilio: 20_251_123, resend: 20_251_124 };

  for (const vendor of ["stripe", "twilio", "resend"] as const) {
    test(`${vendor}: 200 random method and path pairs the catalogue does not know`, async () => {
      const catalogue = CATALOGUES[vendor];
      const publicPath = vendor === "twilio" ? twilio.publicPath : (p: string) => p;
      const uncatalogued = fc
        .tuple(method, paths[vendor])
        .filter(([m, p]) => catalogue.classify(m, publicPath(p)).class === "not_catalogued");
      const seen = new Set<string>();
      await fc.assert(
        fc.asyncProperty(uncatalogued, async ([m, path]) => {
          seen.add(`${m} ${path}`);
          const res = await send(vendor, keys[vendor].deny.vault_key, m, path);
          await expectDenied(res, 422, "endpoint_not_catalogued", `${m} ${path}`);
          await expectNothingForwarded(vendor, `${m} ${path}`);
        }),
        { seed: SEEDS[vendor], numRuns: 200 },
      );
      // The generator really explores: mostly distinct calls, not one repeated.
      expect(seen.size).toBeGreaterThan(150);
    });
  }
});

// ---------------------------------------------------------------------------------------------------------------

describe("aliases reach the entry they reach at the vendor, or are not catalogued", () => {
  /** A priced call through the pass key: its hold (from its audit row); the vendor received it at `upstream`. */
  async function holdOf(vendor: VendorName, path: string, body: string) {
    stripe.reset();
    tw.reset();
    rs.reset();
    const res = await send(vendor, keys[vendor].pass.vault_key, "POST", path, { body });
    expect(res.headers.get("x-keybrake-error")).toBeNull();
    await res.arrayBuffer();
    const posts = mocks()[vendor].received.filter((r) => r.method === "POST");
    expect(posts).toHaveLength(1);
    const row = await auditRow(res.headers.get("x-keybrake-request-id")!);
    expect(row.decision).toBe("allowed");
    return { hold: row.hold_usd as number, upstream: posts[0]!.path };
  }

  test("case: /v1/PAYMENT_INTENTS, /2010-04-01/accounts/AC…/messages.JSON and /EMAILS are held as their canonical forms", async () => {
    const pi = form({ amount: 2900, currency: "usd" });
    const canonical = await holdOf("stripe", "/v1/payment_intents", pi);
    expect(canonical.hold).toBe(29);
    for (const alias of ["/v1/PAYMENT_INTENTS", "/v1/Payment_Intents", "/V1/payment_intents", "/v1/payment_%69ntents"])
      expect((await holdOf("stripe", alias, pi)).hold).toBe(29);

    const sms = await holdOf("twilio", `${ACCOUNT}/Messages.json`, SMS);
    expect(sms.hold).toBe(0.0083);
    for (const alias of [
      `/2010-04-01/accounts/${JOB_SID}/messages.JSON`,
      `/2010-04-01/ACCOUNTS/${JOB_SID.toLowerCase()}/MESSAGES.XML`,
      `${ACCOUNT}/Messages`,
      `${ACCOUNT}/Messages.xml`,
      `${ACCOUNT}/%4Dessages.json`,
    ]) {
      const aliased = await holdOf("twilio", alias, SMS);
      expect(aliased.hold).toBe(0.0083);
      // Whatever SID the job wrote, the real one goes upstream.
      expect(aliased.upstream.startsWith(`/2010-04-01/Accounts/${TWILIO_SID}/`)).toBe(true);
    }

    const mail = JSON.stringify(EMAIL(["a@example.com", "b@example.com"]));
    expect((await holdOf("resend", "/emails", mail)).hold).toBe(0.0018);
    expect((await holdOf("resend", "/EMAILS", mail)).hold).toBe(0.0018);
    expect((await holdOf("resend", "/Emails/BATCH", JSON.stringify([EMAIL("a@example.com")]))).hold).toBe(0.0009);
  });

  test("case and percent-escapes never make a credential or refused endpoint forwardable", async () => {
    const cases: [VendorName, string, string, number, string][] = [
      ["stripe", "POST", "/v1/EPHEMERAL_KEYS", 403, "credential_endpoint_refused"],
      ["stripe", "GET", "/v1/Webhook_Endpoints", 403, "credential_endpoint_refused"],
      ["stripe", "POST", "/v1/ephemeral_%6Beys", 403, "credential_endpoint_refused"],
      ["stripe", "POST", "/v1/Subscriptions", 422, "unpriceable_request"],
      ["stripe", "POST", "/v1/subscription%73", 422, "unpriceable_request"],
      ["stripe", "DELETE", "/v1/SUBSCRIPTIONS/sub_1", 422, "unpriceable_request"],
      ["stripe", "POST", "/V2/Money_Management/outbound_payments", 422, "unpriceable_request"],
      ["stripe", "PUT", "/v1/PAYMENT_INTENTS/pi_1", 405, "method_not_priced"],
      ["twilio", "POST", `/2010-04-01/ACCOUNTS/${JOB_SID}/KEYS.JSON`, 403, "credential_endpoint_refused"],
      ["twilio", "POST", `${ACCOUNT}/%4Beys.json`, 403, "credential_endpoint_refused"],
      ["twilio", "GET", `/2010-04-01/accounts/${JOB_SID}.XML`, 403, "credential_endpoint_refused"],
      ["twilio", "POST", `${ACCOUNT}/incomingphonenumbers.xml`, 422, "unpriceable_request"],
      ["twilio", "DELETE", `${ACCOUNT}/MESSAGES.json`, 405, "method_not_priced"],
      ["resend", "POST", "/API-KEYS", 403, "credential_endpoint_refused"],
      ["resend", "GET", "/Webhooks/wh_1", 403, "credential_endpoint_refused"],
      ["resend", "POST", "/Broadcasts/b_1/SEND", 422, "unpriceable_request"],
      ["resend", "DELETE", "/EMAILS", 405, "method_not_priced"],
    ];
    for (const [vendor, method, path, status, code] of cases) {
      await expectDenied(await send(vendor, keys[vendor].deny.vault_key, method, path), status, code, `${method} ${path}`);
      await expectNothingForwarded(vendor, `${method} ${path}`);
    }
  });

  test("a free endpoint in another case is the same free endpoint", async () => {
    const res = await send("stripe", keys.stripe.pass.vault_key, "POST", "/v1/SETUP_INTENTS");
    await expectForwarded("stripe", res, "POST", "/v1/SETUP_INTENTS", 0, "POST /v1/SETUP_INTENTS");
  });

  test("trailing slash: the same class as without; over HTTP no allowlist pattern can name it, so it is never forwarded", async () => {
    for (const [vendor, method, path] of [
      ["stripe", "POST", "/v1/payment_intents/"],
      ["stripe", "POST", "/v1/ephemeral_keys/"],
      ["stripe", "POST", "/v1/subscriptions/"],
      ["twilio", "POST", `${ACCOUNT}/Messages.json/`],
      ["resend", "POST", "/emails/"],
    ] as const) {
      const pub = vendor === "twilio" ? twilio.publicPath(path) : path;
      const bare = CATALOGUES[vendor].classify(method, pub.slice(0, -1));
      const slashed = CATALOGUES[vendor].classify(method, pub);
      expect(slashed.class).toBe(bare.class);
      expect("entry" in slashed && slashed.entry).toBe("entry" in bare && bare.entry);
      // SPEC §5 patterns have no trailing slash and `/*` needs a non-empty segment: the allowlist stops it first.
      await expectDenied(await send(vendor, keys[vendor].deny.vault_key, method, path), 403, "endpoint_not_allowed", `${method} ${path}`);
      await expectNothingForwarded(vendor, `${method} ${path}`);
    }
  });

  test("extensions: .json on a Stripe or Resend path is not catalogued; Twilio takes .json, .xml or none, nothing else", async () => {
    const cases: [VendorName, string, string][] = [
      ["stripe", "POST", "/v1/payment_intents.json"],
      ["stripe", "GET", "/v1/customers/cus_1.json"],
      ["stripe", "POST", "/v1/ephemeral_keys.json"],
      ["resend", "POST", "/emails.json"],
      ["resend", "POST", "/emails/batch.json"],
      ["twilio", "POST", `${ACCOUNT}/Messages.csv`],
      ["twilio", "POST", `${ACCOUNT}/Messages.json.json`],
      ["twilio", "POST", `${ACCOUNT}/Messages.json/x`],
    ];
    for (const [vendor, method, path] of cases) {
      await expectDenied(
        await send(vendor, keys[vendor].deny.vault_key, method, path),
        422,
        "endpoint_not_catalogued",
        `${method} ${path}`,
      );
      await expectNothingForwarded(vendor, `${method} ${path}`);
    }
  });

  test(";params and escaped separators in an id are not catalogued, never forwarded", async () => {
    const cases: [VendorName, string, string][] = [
      ["stripe", "POST", "/v1/subscriptions;x"],
      ["stripe", "POST", "/v1/payment_intents;foo"],
      ["stripe", "POST", "/v1/customers/cus_1;x"],
      ["stripe", "GET", "/v1/customers/cus_1;x"],
      ["stripe", "POST", "/v1/customers/cus_1%3Bx"],
      ["stripe", "POST", "/v1/ephemeral_keys;x"],
      ["twilio", "POST", `${ACCOUNT}/Messages.json;x`],
      ["twilio", "POST", `${ACCOUNT}/Messages;x.json`],
      ["resend", "POST", "/emails;batch"],
    ];
    for (const [vendor, method, path] of cases) {
      await expectDenied(
        await send(vendor, keys[vendor].deny.vault_key, method, path),
        422,
        "endpoint_not_catalogued",
        `${method} ${path}`,
      );
      await expectNothingForwarded(vendor, `${method} ${path}`);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe("the red-team list: refused, never forwarded at $0", () => {
  const A = ACCOUNT;
  const cases: { vendor: VendorName; method: string; path: string; body?: string; query?: string; status: number; code: string }[] = [
    { vendor: "stripe", method: "POST", path: "/v1/terminal/readers/tmr_1/refund_payment", status: 422, code: "unpriceable_request" },
    { vendor: "stripe", method: "POST", path: "/v1/charges/ch_1/dispute/close", status: 422, code: "unpriceable_request" },
    { vendor: "stripe", method: "POST", path: "/v1/disputes/dp_1/close", status: 422, code: "unpriceable_request" },
    {
      vendor: "stripe",
      method: "DELETE",
      path: "/v1/subscriptions/sub_1",
      body: "invoice_now=true&prorate=true",
      status: 422,
      code: "unpriceable_request",
    },
    {
      vendor: "stripe",
      method: "DELETE",
      path: "/v1/subscriptions/sub_1",
      query: "?invoice_now=true",
      body: "",
      status: 422,
      code: "unpriceable_request",
    },
    {
      vendor: "stripe",
      method: "DELETE",
      path: "/v1/subscription_items/si_1",
      body: "proration_behavior=always_invoice",
      status: 422,
      code: "unpriceable_request",
    },
    {
      vendor: "stripe",
      method: "POST",
      path: "/v1/billing/meter_events",
      body: "event_name=api&payload[value]=1",
      status: 422,
      code: "unpriceable_request",
    },
    {
      vendor: "stripe",
      method: "POST",
      path: "/v1/invoiceitems",
      body: "customer=cus_1&amount=5000&currency=usd",
      status: 422,
      code: "unpriceable_request",
    },
    { vendor: "stripe", method: "POST", path: "/v1/subscriptions;x", status: 422, code: "endpoint_not_catalogued" },
    { vendor: "stripe", method: "POST", path: "/v2/money_management/outbound_payments", status: 422, code: "unpriceable_request" },
    { vendor: "stripe", method: "POST", path: "/v1/treasury/outbound_transfers", status: 422, code: "unpriceable_request" },
    { vendor: "stripe", method: "POST", path: "/v1/customers", body: "balance=-5000", status: 422, code: "unpriceable_request" },
    { vendor: "stripe", method: "POST", path: "/v1/customers/cus_1", body: "balance=-5000", status: 422, code: "unpriceable_request" },
    {
      vendor: "stripe",
      method: "POST",
      path: "/v1/customers",
      query: "?balance=-5000",
      body: "",
      status: 422,
      code: "unpriceable_request",
    },
    { vendor: "stripe", method: "POST", path: "/v1/identity/verification_sessions", status: 422, code: "endpoint_not_catalogued" },
    {
      vendor: "stripe",
      method: "POST",
      path: "/v1/ephemeral_keys",
      body: "customer=cus_1",
      status: 403,
      code: "credential_endpoint_refused",
    },
    { vendor: "stripe", method: "POST", path: "/v1/webhook_endpoints", status: 403, code: "credential_endpoint_refused" },
    { vendor: "stripe", method: "GET", path: "/v1/webhook_endpoints", status: 403, code: "credential_endpoint_refused" },
    { vendor: "stripe", method: "POST", path: "/v1/accounts", status: 403, code: "credential_endpoint_refused" },
    { vendor: "stripe", method: "POST", path: "/v1/account_links", status: 403, code: "credential_endpoint_refused" },
    { vendor: "stripe", method: "POST", path: "/v1/accounts/acct_1/login_links", status: 403, code: "credential_endpoint_refused" },
    { vendor: "stripe", method: "GET", path: "/v1/issuing/cards/ic_1", status: 403, code: "credential_endpoint_refused" },
    { vendor: "stripe", method: "GET", path: "/v1/apps/secrets/find", status: 403, code: "credential_endpoint_refused" },
    { vendor: "twilio", method: "POST", path: `${A}/Keys.json`, status: 403, code: "credential_endpoint_refused" },
    { vendor: "twilio", method: "POST", path: `${A}/SigningKeys.json`, status: 403, code: "credential_endpoint_refused" },
    { vendor: "twilio", method: "POST", path: "/2010-04-01/Accounts.json", status: 403, code: "credential_endpoint_refused" },
    { vendor: "twilio", method: "GET", path: `${A}.json`, status: 403, code: "credential_endpoint_refused" },
    { vendor: "twilio", method: "GET", path: "/2010-04-01/Accounts.json", status: 403, code: "credential_endpoint_refused" },
    { vendor: "twilio", method: "POST", path: `${A}/IncomingPhoneNumbers.json`, status: 422, code: "unpriceable_request" },
    { vendor: "twilio", method: "POST", path: `${A}/IncomingPhoneNumbers/Local.json`, status: 422, code: "unpriceable_request" },
    { vendor: "twilio", method: "POST", path: `${A}/Calls/${TWILIO_IDS.call}/Recordings.json`, status: 422, code: "unpriceable_request" },
    {
      vendor: "resend",
      method: "POST",
      path: "/api-keys",
      body: JSON.stringify({ name: "x" }),
      status: 403,
      code: "credential_endpoint_refused",
    },
    { vendor: "resend", method: "GET", path: "/api-keys", status: 403, code: "credential_endpoint_refused" },
    { vendor: "resend", method: "POST", path: "/webhooks", status: 403, code: "credential_endpoint_refused" },
    { vendor: "resend", method: "POST", path: "/broadcasts/b_1/send", body: "{}", status: 422, code: "unpriceable_request" },
  ];
  for (const c of cases) {
    test(`${c.vendor} ${c.method} ${c.path}${c.query ?? ""}${c.body ? ` (${c.body})` : ""}: ${c.status} ${c.code}`, async () => {
      const res = await send(c.vendor, keys[c.vendor].deny.vault_key, c.method, c.path, { body: c.body, query: c.query });
      await expectDenied(res, c.status, c.code, `${c.method} ${c.path}`);
      await expectNothingForwarded(c.vendor, `${c.method} ${c.path}`);
    });
  }

  test("POST /broadcasts that sends (send: true) emails a whole audience: refused, where a draft is free", async () => {
    const key = await kb.issueKey({ vendor: "resend", daily_usd_cap: 10, allowed_endpoints: ["/*"] });
    const body = JSON.stringify({ audience_id: RESEND_ID, from: "ops@example.com", subject: "s", html: "<p>hi</p>", send: true });
    const res = await send("resend", key.vault_key, "POST", "/broadcasts", { body });
    await res.arrayBuffer();
    expect(rs.received).toHaveLength(0);
    expect(res.headers.get("x-keybrake-error")).not.toBeNull();
  });

  test("a customer's form-encoded cash_balance[settings][…] is refused, as its balance is", async () => {
    const key = await kb.issueKey({ vendor: "stripe", daily_usd_cap: 10, allowed_endpoints: ["/*"] });
    const res = await send("stripe", key.vault_key, "POST", "/v1/customers/cus_1", {
      body: "cash_balance[settings][reconciliation_mode]=manual",
    });
    await res.arrayBuffer();
    expect(stripe.received).toHaveLength(0);
    expect(res.headers.get("x-keybrake-error")).toBe("unpriceable_request");
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe("the allowlist narrows the catalogue, never widens it", () => {
  test("a key allowing POST /v1/ephemeral_keys explicitly still gets 403 credential_endpoint_refused", async () => {
    const key = await kb.issueKey({ vendor: "stripe", daily_usd_cap: 10, allowed_endpoints: ["POST /v1/ephemeral_keys"] });
    await expectDenied(await send("stripe", key.vault_key, "POST", "/v1/ephemeral_keys"), 403, "credential_endpoint_refused", "ephemeral");
    await expectNothingForwarded("stripe", "ephemeral", key.id);
  });

  test("a key allowing POST /v1/identity/verification_sessions gets 422 endpoint_not_catalogued", async () => {
    const key = await kb.issueKey({ vendor: "stripe", daily_usd_cap: 10, allowed_endpoints: ["POST /v1/identity/verification_sessions"] });
    const res = await send("stripe", key.vault_key, "POST", "/v1/identity/verification_sessions");
    await expectDenied(res, 422, "endpoint_not_catalogued", "identity");
    await expectNothingForwarded("stripe", "identity", key.id);
  });

  test("a key allowing a Twilio credential path by SID or by * still gets 403", async () => {
    const key = await kb.issueKey({
      vendor: "twilio",
      daily_usd_cap: 10,
      allowed_endpoints: [`POST /2010-04-01/Accounts/${JOB_SID}/Keys.json`, "GET /2010-04-01/Accounts/*"],
    });
    await expectDenied(await send("twilio", key.vault_key, "POST", `${ACCOUNT}/Keys.json`), 403, "credential_endpoint_refused", "keys");
    await expectDenied(await send("twilio", key.vault_key, "GET", `${ACCOUNT}.json`), 403, "credential_endpoint_refused", "account");
    await expectNothingForwarded("twilio", "twilio credentials", key.id);
  });

  test("a key not allowing a credential path gets 403 endpoint_not_allowed: the allowlist is checked first", async () => {
    const key = await kb.issueKey({ vendor: "stripe", daily_usd_cap: 10, allowed_endpoints: ["POST /v1/payment_intents"] });
    await expectDenied(await send("stripe", key.vault_key, "POST", "/v1/ephemeral_keys"), 403, "endpoint_not_allowed", "ephemeral");
    await expectDenied(
      await send("stripe", key.vault_key, "POST", "/v1/identity/verification_sessions"),
      403,
      "endpoint_not_allowed",
      "idv",
    );
    await expectDenied(await send("stripe", key.vault_key, "POST", "/v1/subscriptions"), 403, "endpoint_not_allowed", "subscriptions");
    await expectNothingForwarded("stripe", "not allowed", key.id);
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe("the operator's KEYBRAKE_<VENDOR>_FREE_ENDPOINTS", () => {
  let wide: Harness;
  beforeAll(async () => {
    wide = await startKeybrake({
      KEYBRAKE_STRIPE_BASE_URL: stripe.url,
      KEYBRAKE_TWILIO_BASE_URL: tw.url,
      KEYBRAKE_RESEND_BASE_URL: rs.url,
      // Two that widen, and three that try to un-refuse a credential, a refused and a priced endpoint.
      KEYBRAKE_STRIPE_FREE_ENDPOINTS:
        "POST /v1/identity/verification_sessions, GET /v1/radar/*, POST /v1/ephemeral_keys, /v1/invoiceitems, DELETE /v1/payment_intents/*",
      KEYBRAKE_TWILIO_FREE_ENDPOINTS: "POST /2010-04-01/Accounts/*/Queues.json, POST /2010-04-01/Accounts/*/Keys.json",
      KEYBRAKE_RESEND_FREE_ENDPOINTS: "POST /segments, POST /api-keys",
    });
  });
  afterAll(async () => {
    await wide?.stop();
  });
  const wideKey = (vendor: VendorName) => wide.issueKey({ vendor, daily_usd_cap: 10, allowed_endpoints: ["/*"] });

  async function expectFreeForward(vendor: VendorName, key: { id: string; vault_key: string }, method: string, path: string) {
    stripe.reset();
    tw.reset();
    rs.reset();
    const res = await send(vendor, key.vault_key, method, path, { on: wide });
    expect(res.headers.get("x-keybrake-error")).toBeNull();
    await res.arrayBuffer();
    const received = mocks()[vendor].received;
    expect(received.map((r) => `${r.method} ${r.path}`)).toEqual([`${method} ${upstreamPath(vendor, path)}`]);
    expect(received[0]!.headers.authorization).toBe(REAL_AUTHORIZATION[vendor]);
    const row = await auditRow(res.headers.get("x-keybrake-request-id")!, wide);
    expect(row).toMatchObject({ decision: "allowed", hold_usd: 0, cost_usd: 0 });
  }

  test("they are forwarded at $0: the vendor received them, the audit row costs nothing, the ledger holds nothing", async () => {
    const key = await wideKey("stripe");
    await expectFreeForward("stripe", key, "POST", "/v1/identity/verification_sessions");
    await expectFreeForward("stripe", key, "GET", "/v1/radar/value_lists");
    await expectFreeForward("stripe", key, "GET", "/v1/radar/early_fraud_warnings/issfr_1");
    const tk = await wideKey("twilio");
    await expectFreeForward("twilio", tk, "POST", `${ACCOUNT}/Queues.json`);
    const rk = await wideKey("resend");
    await expectFreeForward("resend", rk, "POST", "/segments");
    for (const k of [key, tk, rk]) expect(await keyRecord(k.id, wide)).toMatchObject({ spent_today_usd: 0, held_usd: 0 });
  });

  test("only what they name: another method or path is still not catalogued", async () => {
    const key = await wideKey("stripe");
    stripe.reset();
    for (const [method, path] of [
      ["POST", "/v1/radar/value_lists"],
      ["GET", "/v1/identity/verification_sessions"],
      ["POST", "/v1/identity/verification_reports"],
    ] as const) {
      await expectDenied(await send("stripe", key.vault_key, method, path, { on: wide }), 422, "endpoint_not_catalogued", path, wide);
    }
    await expectNothingForwarded("stripe", "not named", key.id, wide);
  });

  test("they never un-refuse a credential, a refused money mover, or another method on a priced path", async () => {
    const key = await wideKey("stripe");
    const tk = await wideKey("twilio");
    const rk = await wideKey("resend");
    stripe.reset();
    tw.reset();
    rs.reset();
    const cases: [VendorName, { vault_key: string }, string, string, number, string][] = [
      ["stripe", key, "POST", "/v1/ephemeral_keys", 403, "credential_endpoint_refused"],
      ["stripe", key, "POST", "/v1/invoiceitems", 422, "unpriceable_request"],
      ["stripe", key, "DELETE", "/v1/payment_intents/pi_1", 405, "method_not_priced"],
      ["twilio", tk, "POST", `${ACCOUNT}/Keys.json`, 403, "credential_endpoint_refused"],
      ["resend", rk, "POST", "/api-keys", 403, "credential_endpoint_refused"],
    ];
    for (const [vendor, k, method, path, status, code] of cases) {
      await expectDenied(await send(vendor, k.vault_key, method, path, { on: wide }), status, code, `${method} ${path}`, wide);
    }
    await expectNothingForwarded("stripe", "un-refuse", key.id, wide);
  });

  test("a bad pattern in the variable stops start-up with a ConfigError naming it", () => {
    for (const [variable, value] of [
      ["KEYBRAKE_STRIPE_FREE_ENDPOINTS", "POST v1/identity/verification_sessions"],
      ["KEYBRAKE_STRIPE_FREE_ENDPOINTS", "GET /v1/radar/, POST /v1/x"],
      ["KEYBRAKE_TWILIO_FREE_ENDPOINTS", "FETCH /2010-04-01/Accounts/*/Queues.json"],
      ["KEYBRAKE_RESEND_FREE_ENDPOINTS", "POST /segments/../api-keys"],
    ] as const) {
      let thrown: unknown;
      try {
        loadConfig({ [variable]: value });
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(ConfigError);
      expect((thrown as Error).message).toStartWith(`${variable}:`);
    }
    // Well-formed lists load, trimmed and split on commas.
    expect(
      loadConfig({ KEYBRAKE_STRIPE_FREE_ENDPOINTS: " POST /v1/identity/verification_sessions , GET /v1/radar/* " }).freeEndpoints.stripe!
        .patterns,
    ).toEqual(["POST /v1/identity/verification_sessions", "GET /v1/radar/*"]);
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe("Catalogue.classify (no server)", () => {
  const shapeOf = (c: ReturnType<AnyCatalogue["classify"]>) => ("entry" in c && c.entry ? c.entry.shape : null);

  test("the most specific entry wins: a literal segment before an id, as the vendors route", () => {
    expect(STRIPE_CATALOGUE.classify("POST", "/v1/invoices/create_preview")).toMatchObject({ class: "free" });
    expect(shapeOf(STRIPE_CATALOGUE.classify("POST", "/v1/invoices/create_preview"))).toBe("/v1/invoices/create_preview");
    expect(STRIPE_CATALOGUE.classify("POST", "/v1/invoices/in_1")).toMatchObject({ class: "refused" });
    expect(STRIPE_CATALOGUE.classify("DELETE", "/v1/invoices/in_1")).toMatchObject({ class: "free" });
    expect(shapeOf(RESEND_CATALOGUE.classify("POST", "/emails/batch"))).toBe("/emails/batch");
    expect(RESEND_CATALOGUE.classify("POST", `/emails/${RESEND_ID}/cancel`)).toMatchObject({ class: "free" });
    expect(TWILIO_CATALOGUE.classify("POST", "/2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers/Local.json")).toMatchObject({
      class: "refused",
    });
    const custom = new Catalogue([...free(["POST"], "by id", "/a/{id}"), ...refused("literal", "/a/b")]);
    expect(custom.classify("POST", "/a/b").class).toBe("refused");
    expect(custom.classify("POST", "/a/c").class).toBe("free");
    const reversed = new Catalogue([...refused("by id", "/a/{id}"), ...free(["POST"], "literal", "/a/b")]);
    expect(reversed.classify("POST", "/a/b").class).toBe("free");
    expect(reversed.classify("POST", "/a/c").class).toBe("refused");
  });

  test("at the same depth the stricter class wins: refused > priced > free", () => {
    const price = async () => ({ micros: 1, source: "request" as const, currency: null, amountMinor: null });
    const all = new Catalogue<typeof price>([
      ...free(["POST"], "f", "/a/{id}"),
      ...priced("p", price, "/a/{x}"),
      ...refused("r", "/a/{y}"),
    ]);
    expect(all.classify("POST", "/a/1").class).toBe("refused");
    const pricedFree = new Catalogue<typeof price>([...free(["POST"], "f", "/a/{id}"), ...priced("p", price, "/a/{x}")]);
    expect(pricedFree.classify("POST", "/a/1")).toMatchObject({ class: "priced", ids: ["1"] });
  });

  test("credential entries win for every method, over any more specific entry", () => {
    const custom = new Catalogue([...credential("c", "/a/*"), ...free("*", "f", "/a/b/c")]);
    for (const method of ["GET", "HEAD", "POST", "DELETE", "PATCH", "OPTIONS"])
      expect(custom.classify(method, "/a/b/c").class).toBe("credential");
    for (const method of ["GET", "HEAD", "POST", "DELETE"]) {
      expect(TWILIO_CATALOGUE.classify(method, "/2010-04-01/Accounts/{AccountSid}.json").class).toBe("credential");
      expect(TWILIO_CATALOGUE.classify(method, "/2010-04-01/Accounts").class).toBe("credential");
      expect(STRIPE_CATALOGUE.classify(method, "/v1/accounts/acct_1/persons/person_1").class).toBe("credential");
      expect(RESEND_CATALOGUE.classify(method, `/api-keys/${RESEND_ID}`).class).toBe("credential");
    }
  });

  test("GET and HEAD of any catalogued path are free; of an uncatalogued one, not catalogued", () => {
    for (const method of ["GET", "HEAD"]) {
      expect(STRIPE_CATALOGUE.classify(method, "/v1/subscriptions/sub_1").class).toBe("free");
      expect(STRIPE_CATALOGUE.classify(method, "/v1/payment_intents").class).toBe("free");
      expect(STRIPE_CATALOGUE.classify(method, "/v2/billing/meter_events/evt_1").class).toBe("free");
      // v2 accounts, links and event destinations are credential resources: reads too.
      expect(STRIPE_CATALOGUE.classify(method, "/v2/core/accounts/acct_1").class).toBe("credential");
      expect(STRIPE_CATALOGUE.classify(method, "/v1/identity/verification_sessions").class).toBe("not_catalogued");
    }
  });

  test("a priced path with another method is method_not_priced, unless an entry covers that method", () => {
    for (const method of ["PUT", "PATCH", "DELETE", "OPTIONS"])
      expect(STRIPE_CATALOGUE.classify(method, "/v1/payment_intents").class).toBe("method_not_priced");
    expect(STRIPE_CATALOGUE.classify("DELETE", "/v1/customers/cus_1").class).toBe("free");
    expect(STRIPE_CATALOGUE.classify("PATCH", "/v1/customers/cus_1").class).toBe("method_not_priced");
    expect(TWILIO_CATALOGUE.classify("DELETE", "/2010-04-01/Accounts/{AccountSid}/Calls/CA1.json").class).toBe("free");
    expect(TWILIO_CATALOGUE.classify("PUT", "/2010-04-01/Accounts/{AccountSid}/Calls/CA1.json").class).toBe("method_not_priced");
    // A lower-case method is no method any entry covers: fail closed.
    expect(STRIPE_CATALOGUE.classify("post", "/v1/payment_intents").class).toBe("method_not_priced");
    expect(STRIPE_CATALOGUE.classify("post", "/v1/setup_intents").class).toBe("not_catalogued");
  });

  test("a write on a read-only entry is not catalogued", () => {
    expect(STRIPE_CATALOGUE.classify("POST", "/v1/balance").class).toBe("not_catalogued");
    expect(STRIPE_CATALOGUE.classify("DELETE", "/v1/events/evt_1").class).toBe("not_catalogued");
    expect(TWILIO_CATALOGUE.classify("POST", "/2010-04-01/Accounts/{AccountSid}/Balance.json").class).toBe("not_catalogued");
  });

  test("ids: one segment of [A-Za-z0-9_-]; dots, ;, %, spaces and extra segments are not ids", () => {
    expect(STRIPE_CATALOGUE.classify("POST", "/v1/charges/ch_9-A/refunds")).toMatchObject({ class: "priced", ids: ["ch_9-A"] });
    expect(STRIPE_CATALOGUE.classify("POST", "/v1/payment_intents/pi_1/confirm")).toMatchObject({ class: "priced", ids: ["pi_1"] });
    for (const id of ["cus.1", "cus;1", "cus%3B1", "cus 1", "cus_1/extra", "cus~1"])
      expect(STRIPE_CATALOGUE.classify("POST", `/v1/customers/${id}`).class).toBe("not_catalogued");
  });

  test("a trailing /* is one or more segments, never zero", () => {
    expect(STRIPE_CATALOGUE.classify("POST", "/v2").class).toBe("not_catalogued");
    expect(STRIPE_CATALOGUE.classify("POST", "/v2/").class).toBe("not_catalogued");
    expect(STRIPE_CATALOGUE.classify("POST", "/v2/x").class).toBe("refused");
    expect(STRIPE_CATALOGUE.classify("POST", "/v2/x/y/z.json").class).toBe("refused");
    expect(STRIPE_CATALOGUE.classify("POST", "/v1/treasury").class).toBe("not_catalogued");
    expect(STRIPE_CATALOGUE.classify("POST", "/v1/issuing").class).toBe("not_catalogued");
    expect(STRIPE_CATALOGUE.classify("POST", "/v1/issuing/cards").class).toBe("credential");
  });

  test("extensions: only the vendor's, only on the last segment; case and a trailing slash are aliases", () => {
    const msgs = "/2010-04-01/Accounts/{AccountSid}/Messages";
    for (const p of [
      msgs,
      `${msgs}.json`,
      `${msgs}.xml`,
      `${msgs}.JSON`,
      `${msgs}/`,
      `${msgs}.json/`,
      msgs.toLowerCase().replace("{accountsid}", "{AccountSid}"),
    ])
      expect(shapeOf(TWILIO_CATALOGUE.classify("POST", p))).toBe(msgs);
    for (const p of [`${msgs}.csv`, `${msgs}.json.json`, `${msgs}json`, `${msgs}.`, `${msgs}.json/SM1`])
      expect(TWILIO_CATALOGUE.classify("POST", p).class).toBe("not_catalogued");
    expect(TWILIO_CATALOGUE.classify("POST", `${msgs}/SM1.json`).class).toBe("free");
    for (const p of ["/v1/payment_intents.json", "/v1/payment_intents.xml", "/v1/customers/cus_1.json"])
      expect(STRIPE_CATALOGUE.classify("POST", p).class).toBe("not_catalogued");
    expect(RESEND_CATALOGUE.classify("POST", "/emails.json").class).toBe("not_catalogued");
    expect(shapeOf(STRIPE_CATALOGUE.classify("POST", "/V1/Payment_Intents/"))).toBe("/v1/payment_intents");
  });

  test("literals: {AccountSid} is matched as written, so only the placeholder publicPath writes reaches Twilio entries", () => {
    const raw = `${ACCOUNT}/Messages.json`;
    expect(TWILIO_CATALOGUE.classify("POST", raw).class).toBe("not_catalogued");
    expect(TWILIO_CATALOGUE.classify("POST", twilio.publicPath(raw)).class).toBe("priced");
    for (const sid of [JOB_SID, TWILIO_SID, "AC1", "anything", "{AccountSid}"]) {
      for (const accounts of ["Accounts", "accounts", "ACCOUNTS"]) {
        expect(twilio.publicPath(`/2010-04-01/${accounts}/${sid}/Keys.json`)).toBe("/2010-04-01/Accounts/{AccountSid}/Keys.json");
        expect(TWILIO_CATALOGUE.classify("GET", twilio.publicPath(`/2010-04-01/${accounts}/${sid}.json`)).class).toBe("credential");
      }
    }
    // The placeholder is literal: its specificity beats an id, as any literal segment does.
    const custom = new Catalogue([...free(["POST"], "id", "/a/{id}/b"), ...refused("literal", "/a/{Lit}/b")], { literals: ["{Lit}"] });
    expect(custom.classify("POST", "/a/{Lit}/b").class).toBe("refused");
    expect(custom.classify("POST", "/a/x/b").class).toBe("free");
  });

  test("every entry's own path classifies as that entry for every method it covers (no entry is shadowed)", () => {
    for (const vendor of ["stripe", "twilio", "resend"] as const) {
      for (const entry of CATALOGUES[vendor].entries) {
        const methods = entry.methods === "*" ? ["POST", "DELETE", "PUT", "PATCH", "GET"] : entry.methods;
        for (const path of pathsOf(vendor, entry.shape)) {
          const pub = vendor === "twilio" ? twilio.publicPath(path) : path;
          for (const method of methods) {
            const c = CATALOGUES[vendor].classify(method, pub);
            if (method === "GET" && entry.class !== "credential") expect(c.class).toBe("free");
            else expect(`${method} ${pub} -> ${c.class} ${shapeOf(c)}`).toBe(`${method} ${pub} -> ${entry.class} ${entry.shape}`);
          }
        }
      }
    }
  });

  test("a catalogue refuses entries that do not say why, and priced entries without a price", () => {
    expect(() => new Catalogue([{ methods: ["POST"], shape: "/a", class: "priced", why: "p" }])).toThrow("has no price");
    expect(() => new Catalogue(free(["POST"], "  ", "/a"))).toThrow("says nothing of why");
    for (const vendor of ["stripe", "twilio", "resend"] as const)
      for (const e of CATALOGUES[vendor].entries) expect(e.why.trim().length).toBeGreaterThan(3);
  });

  test("catalogueMarkdown: one row per entry, pipes escaped", () => {
    const md = catalogueMarkdown("x", new Catalogue([...free(["GET", "POST"], "a | b", "/a/{id}"), ...credential("c", "/k")]));
    expect(md.split("\n")).toEqual([
      "| vendor | methods | path | class | why |",
      "|---|---|---|---|---|",
      "| x | GET, POST | `/a/{id}` | free | a \\| b |",
      "| x | any | `/k` | credential | c |",
    ]);
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe("the README lists the catalogue", () => {
  test("README.md's catalogue section is what the catalogues generate", () => {
    const readme = readFileSync(README_PATH, "utf8");
    const section = readmeSection(readme);
    if (section === null) throw new Error("README.md has no <!-- catalogue:start --> … <!-- catalogue:end --> section");
    if (section !== catalogueSection())
      throw new Error(`README.md's catalogue section differs from the vendor modules' catalogues; regenerate it with: ${REGENERATE}`);
    expect(readme).toContain("## The catalogue: what Keybrake forwards");
  });

  test("every entry appears in the generated section, under its vendor's heading", () => {
    const section = catalogueSection();
    for (const [heading, vendor] of [
      ["### Stripe", "stripe"],
      ["### Twilio", "twilio"],
      ["### Resend", "resend"],
    ] as const) {
      expect(section).toContain(heading);
      for (const e of CATALOGUES[vendor].entries)
        expect(section).toContain(`| ${vendor} | ${e.methods === "*" ? "any" : e.methods.join(", ")} | \`${e.shape}\` | ${e.class} |`);
    }
  });
});

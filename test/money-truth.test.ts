import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { sha256Hex } from "../src/util";
import { startKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, type MockStripe } from "./helpers/mock-stripe";

// The cap holds for every call (SPEC §6, §7): each test tries to make a call cost less than the vendor charges.

type Json = Record<string, any>;
let kb: Harness;
let stripe: MockStripe;

beforeAll(async () => {
  stripe = await mockStripe().start();
  kb = await startKeybrake({
    KEYBRAKE_STRIPE_BASE_URL: stripe.url,
    KEYBRAKE_FX: "KWD=3.25,JPY=0.0067",
    KEYBRAKE_UPSTREAM_TIMEOUT_MS: "3000",
  });
});
afterAll(async () => {
  await kb.stop();
  await stripe.stop();
});
beforeEach(() => {
  stripe.reset();
  stripe.moved.length = 0;
});

const key = (cap: number, extra: Json = {}) => kb.issueKey({ vendor: "stripe", daily_usd_cap: cap, allowed_endpoints: ["/*"], ...extra });
const post = (vaultKey: string, path: string, body: string, headers: Record<string, string> = {}) =>
  fetch(`${kb.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${vaultKey}`, "content-type": "application/x-www-form-urlencoded", ...headers },
    body,
  });
const record = async (id: string) => (await (await kb.admin(`/vault/keys/${id}`)).json()) as Json;
const audit = async (id: string) => ((await (await kb.admin(`/audit?key_id=${id}&limit=1000`)).json()) as Json).data as Json[];
const ledger = (keyId: string) =>
  kb.readDb((db) =>
    db
      .query<{ state: string; hold_micros: number; cost_micros: number | null }, [string]>(
        "SELECT state, hold_micros, cost_micros FROM ledger_entries WHERE key_id = ? ORDER BY created_at",
      )
      .all(keyId),
  );
/** Settled + held micro-dollars of a key, from the ledger itself. */
const committed = async (keyId: string) =>
  (await ledger(keyId)).reduce((sum, e) => sum + (e.state === "held" || e.state === "orphaned" ? e.hold_micros : (e.cost_micros ?? 0)), 0);
const auditMicros = async (keyId: string) => (await audit(keyId)).reduce((sum, r) => sum + Math.round(r.cost_usd * 1e6), 0);
const posts = (path: RegExp) => stripe.received.filter((r) => r.method === "POST" && path.test(r.path));

describe("calls priced from the object hold what the object can move, before the call", () => {
  const kinds = [
    {
      name: "full refunds",
      seed: () => stripe.seedCharge(100_000),
      call: (id: string) => ["/v1/refunds", `charge=${id}`],
      path: /^\/v1\/refunds$/,
    },
    {
      name: "captures of charges made elsewhere",
      seed: () => stripe.seedCharge(100_000, "usd", false),
      call: (id: string) => [`/v1/charges/${id}/capture`, ""],
      path: /\/capture$/,
    },
    { name: "invoice pays", seed: () => stripe.seedInvoice(100_000), call: (id: string) => [`/v1/invoices/${id}/pay`, ""], path: /\/pay$/ },
  ];
  for (const kind of kinds) {
    test(`100 concurrent ${kind.name} of $1,000 against a $2,500 cap: 2 reach Stripe, settled + held never above the cap`, async () => {
      const k = await key(2_500);
      const objects: { id: string }[] = Array.from({ length: 100 }, () => kind.seed());
      stripe.failAlways({ kind: "delay", ms: 200 });
      const responses = await Promise.all(objects.map((o) => post(k.vault_key, ...(kind.call(o.id) as [string, string]))));
      stripe.failAlways(null);
      expect(responses.filter((r) => r.status === 200)).toHaveLength(2);
      expect(responses.filter((r) => r.status === 429 && r.headers.get("x-keybrake-error") === "cap_exhausted")).toHaveLength(98);
      expect(posts(kind.path)).toHaveLength(2);
      expect(await committed(k.id)).toBe(2_000_000_000);
      expect(await auditMicros(k.id)).toBe(2_000_000_000);
      expect(await record(k.id)).toMatchObject({ spent_today_usd: 2_000, held_usd: 0 });
      const allowed = (await audit(k.id)).filter((r) => r.decision === "allowed");
      expect(allowed.map((r) => [r.hold_usd, r.cost_usd, r.cost_source])).toEqual([
        [1_000, 1_000, "response"],
        [1_000, 1_000, "response"],
      ]);
    });
  }

  test("a partial refund holds its amount in the charge's currency, read from the charge", async () => {
    const k = await key(1_000);
    const charge = stripe.seedCharge(50_000, "kwd"); // 50.000 KWD = $162.50
    const res = await post(k.vault_key, "/v1/refunds", `charge=${charge.id}&amount=10000`); // 10.000 KWD = $32.50
    expect(res.status).toBe(200);
    expect((await audit(k.id))[0]).toMatchObject({ hold_usd: 32.5, cost_usd: 32.5, currency: "kwd", amount_minor: 10_000 });
    expect(stripe.received.map((r) => `${r.method} ${r.path}`)).toEqual([`GET /v1/charges/${charge.id}`, "POST /v1/refunds"]);
  });

  test("a pre-flight that fails is 502 preflight_failed; an object in a currency without a rate is 422; nothing forwarded", async () => {
    const k = await key(1_000);
    const missing = await post(k.vault_key, "/v1/refunds", "charge=ch_nowhere");
    expect(missing.status).toBe(502);
    expect(missing.headers.get("x-keybrake-error")).toBe("preflight_failed");
    const eur = stripe.seedCharge(1_000, "eur");
    const unpriced = await post(k.vault_key, "/v1/refunds", `charge=${eur.id}`);
    expect(unpriced.status).toBe(422);
    expect(unpriced.headers.get("x-keybrake-error")).toBe("currency_not_priced");
    // An object without the amount the hold depends on is a failed pre-flight, never a $0 hold.
    const invoice = stripe.seedInvoice(5_000) as unknown as Json;
    delete invoice.amount_remaining;
    const unreadable = await post(k.vault_key, `/v1/invoices/${invoice.id}/pay`, "");
    expect(unreadable.status).toBe(502);
    expect(unreadable.headers.get("x-keybrake-error")).toBe("preflight_failed");
    expect(posts(/./)).toHaveLength(0);
    expect(await committed(k.id)).toBe(0);
  });
});

describe("settlement is never below what might have been charged", () => {
  test("an answer in a currency without a rate, or with an unreadable amount, settles at the hold", async () => {
    const k = await key(1_000);
    stripe.failNext({ kind: "status", status: 200, body: { id: "pi_eur", object: "payment_intent", amount: 2_900, currency: "eur" } });
    expect((await post(k.vault_key, "/v1/payment_intents", "amount=2900&currency=usd")).status).toBe(200);
    stripe.failNext({ kind: "status", status: 200, body: { id: "pi_odd", object: "payment_intent", amount: "lots", currency: "usd" } });
    expect((await post(k.vault_key, "/v1/payment_intents", "amount=4100&currency=usd")).status).toBe(200);
    const rows = (await audit(k.id)).reverse();
    expect(rows.map((r) => [r.cost_usd, r.cost_source])).toEqual([
      [29, "hold"],
      [41, "hold"],
    ]);
    expect(await committed(k.id)).toBe(70_000_000);
    expect(kb.logs.filter((l) => l.includes("settled at its hold"))).toHaveLength(2);
  });

  test("a stated amount above the hold is the cost, logged as a price differential, and blocks further calls", async () => {
    const k = await key(30);
    stripe.failNext({ kind: "status", status: 200, body: { id: "pi_more", object: "payment_intent", amount: 3_500, currency: "usd" } });
    expect((await post(k.vault_key, "/v1/payment_intents", "amount=2900&currency=usd")).status).toBe(200);
    expect(await committed(k.id)).toBe(35_000_000);
    expect(kb.logs.some((l) => l.includes("price_differential") && l.includes(k.id))).toBe(true);
    const next = await fetch(`${kb.url}/v1/customers`, { headers: { authorization: `Bearer ${k.vault_key}` } });
    expect(next.status).toBe(429);
    expect(stripe.received).toHaveLength(1);
  });
});

describe("retries of ambiguous calls", () => {
  test("the same key with another content type or Stripe-Account is 409 idempotency_conflict: nothing forwarded, the first stays counted", async () => {
    const k = await key(100);
    stripe.failNext({ kind: "status", status: 500, body: { error: { type: "api_error", message: "boom" } } });
    expect((await post(k.vault_key, "/v1/payment_intents", "amount=2900&currency=usd", { "idempotency-key": "amb-1" })).status).toBe(500);
    const json = await fetch(`${kb.url}/v1/payment_intents`, {
      method: "POST",
      headers: { authorization: `Bearer ${k.vault_key}`, "content-type": "application/json", "idempotency-key": "amb-1" },
      body: "amount=2900&currency=usd",
    });
    expect(json.status).toBe(409);
    expect(json.headers.get("x-keybrake-error")).toBe("idempotency_conflict");
    const account = await post(k.vault_key, "/v1/payment_intents", "amount=2900&currency=usd", {
      "idempotency-key": "amb-1",
      "stripe-account": "acct_other",
    });
    expect(account.status).toBe(409);
    expect(stripe.received).toHaveLength(1);
    expect(await ledger(k.id)).toEqual([{ state: "ambiguous", hold_micros: 29_000_000, cost_micros: 29_000_000 }]);
  });

  test("a retry whose price grew needs headroom for the difference; when it fits, it settles on the same entry", async () => {
    const k = await key(250);
    const invoice = stripe.seedInvoice(10_000); // $100.00 due
    stripe.failNext({ kind: "status", status: 500, body: { error: { type: "api_error", message: "boom" } } }, 1, "POST");
    expect((await post(k.vault_key, `/v1/invoices/${invoice.id}/pay`, "", { "idempotency-key": "pay-1" })).status).toBe(500);
    invoice.amount_remaining = 30_000; // more was added to the invoice meanwhile: $300 due
    const refused = await post(k.vault_key, `/v1/invoices/${invoice.id}/pay`, "", { "idempotency-key": "pay-1" });
    expect(refused.status).toBe(429);
    expect(refused.headers.get("x-keybrake-error")).toBe("cap_exhausted");
    expect(await ledger(k.id)).toEqual([{ state: "ambiguous", hold_micros: 100_000_000, cost_micros: 100_000_000 }]);
    await kb.admin(`/vault/keys/${k.id}`, { method: "PATCH", body: { daily_usd_cap: 400 } });
    const paid = await post(k.vault_key, `/v1/invoices/${invoice.id}/pay`, "", { "idempotency-key": "pay-1" });
    expect(paid.status).toBe(200);
    expect(await ledger(k.id)).toEqual([{ state: "settled", hold_micros: 300_000_000, cost_micros: 300_000_000 }]);
    expect(await auditMicros(k.id)).toBe(300_000_000);
    expect(posts(/\/pay$/)).toHaveLength(2);
  });

  test("Stripe honours the forwarded key: a 4xx on the retry speaks for the first attempt and releases the entry", async () => {
    const k = await key(100);
    stripe.failNext({ kind: "status", status: 500, body: { error: { type: "api_error", message: "boom" } } });
    await post(k.vault_key, "/v1/payment_intents", "amount=2900&currency=usd", { "idempotency-key": "amb-4xx" });
    stripe.failNext({ kind: "status", status: 402, body: { error: { type: "card_error", code: "card_declined", message: "declined" } } });
    expect((await post(k.vault_key, "/v1/payment_intents", "amount=2900&currency=usd", { "idempotency-key": "amb-4xx" })).status).toBe(402);
    expect(await ledger(k.id)).toEqual([{ state: "released", hold_micros: 29_000_000, cost_micros: 0 }]);
    expect(await auditMicros(k.id)).toBe(0);
  });

  test("a call Stripe acted on but whose answer was lost: the retry gets Stripe's replay and settles the one entry", async () => {
    const k = await key(100);
    stripe.failNext({ kind: "drop_after" });
    expect((await post(k.vault_key, "/v1/payment_intents", "amount=2900&currency=usd", { "idempotency-key": "amb-gone" })).status).toBe(
      502,
    );
    expect(await ledger(k.id)).toEqual([{ state: "ambiguous", hold_micros: 29_000_000, cost_micros: 29_000_000 }]);
    const retry = await post(k.vault_key, "/v1/payment_intents", "amount=2900&currency=usd", { "idempotency-key": "amb-gone" });
    expect(retry.status).toBe(200);
    expect(retry.headers.get("idempotent-replayed")).toBe("true");
    expect(await ledger(k.id)).toEqual([{ state: "settled", hold_micros: 29_000_000, cost_micros: 29_000_000 }]);
    expect(stripe.moved.filter((m) => m.kind === "/v1/payment_intents")).toHaveLength(1);
  });

  test("a full refund whose first attempt failed before Stripe acted, retried after another refund took most of the charge: settled at what the retry refunded, not its hold", async () => {
    // Found by the money property (seed -1364485048): the retry's 2xx states its own total, so no floor applies.
    const k = await key(100);
    const charge = stripe.seedCharge(101);
    stripe.failNext(
      { kind: "status", status: 500, body: { error: { type: "api_error", message: "An unknown error occurred." } } },
      1,
      "POST",
    );
    const first = await post(k.vault_key, "/v1/refunds", `charge=${charge.id}`, { "idempotency-key": "full-refund" });
    expect(first.status).toBe(500);
    expect(await ledger(k.id)).toEqual([{ state: "ambiguous", hold_micros: 1_010_000, cost_micros: 1_010_000 }]);
    expect((await post(k.vault_key, "/v1/refunds", `charge=${charge.id}&amount=100`, { "idempotency-key": "partial" })).status).toBe(200);
    const retry = await post(k.vault_key, "/v1/refunds", `charge=${charge.id}`, { "idempotency-key": "full-refund" });
    expect(retry.status).toBe(200);
    expect(((await retry.json()) as Json).amount).toBe(1);
    const entries = await ledger(k.id);
    expect(entries.map((e) => [e.state, e.cost_micros]).sort()).toEqual([
      ["settled", 10_000],
      ["settled", 1_000_000],
    ]);
    const moved = stripe.moved.reduce((sum, m) => sum + m.amount * 10_000, 0);
    expect(moved).toBe(1_010_000);
    expect(entries.reduce((sum, e) => sum + (e.cost_micros ?? 0), 0)).toBe(moved);
    expect(await auditMicros(k.id)).toBe(moved);
  });

  test("a capture Stripe acted on but whose answer was lost: the retry's replay, priced against the charge read after it, settles at what the first attempt counted", async () => {
    const k = await key(100);
    const charge = stripe.seedCharge(2900, "usd", false);
    stripe.failNext({ kind: "drop_after" }, 1, "POST");
    expect((await post(k.vault_key, `/v1/charges/${charge.id}/capture`, "", { "idempotency-key": "cap-gone" })).status).toBe(502);
    expect(await ledger(k.id)).toEqual([{ state: "ambiguous", hold_micros: 29_000_000, cost_micros: 29_000_000 }]);
    const retry = await post(k.vault_key, `/v1/charges/${charge.id}/capture`, "", { "idempotency-key": "cap-gone" });
    expect(retry.status).toBe(200);
    expect(retry.headers.get("idempotent-replayed")).toBe("true");
    // The retry read the charge already captured: the answer's new money is 0, but the first attempt moved $29.
    expect(await ledger(k.id)).toEqual([{ state: "settled", hold_micros: 29_000_000, cost_micros: 29_000_000 }]);
    expect(stripe.moved.reduce((sum, m) => sum + m.amount * 10_000, 0)).toBe(29_000_000);
  });

  test("empty, blank and over-long Idempotency-Keys are 400 invalid_idempotency_key; an empty one never satisfies require_idempotency_key", async () => {
    const k = await key(100, { require_idempotency_key: true });
    for (const bad of ["", "   ", "x".repeat(256)]) {
      const res = await post(k.vault_key, "/v1/payment_intents", "amount=100&currency=usd", { "idempotency-key": bad });
      expect(res.status).toBe(400);
      expect(res.headers.get("x-keybrake-error")).toBe("invalid_idempotency_key");
    }
    expect((await post(k.vault_key, "/v1/payment_intents", "amount=100&currency=usd", { "idempotency-key": "x".repeat(255) })).status).toBe(
      200,
    );
    expect(stripe.received).toHaveLength(1);
  });
});

describe("the vendor sees a derived Idempotency-Key", () => {
  test("two keys of one minter send the same derived key; another minter's key another; the job's key never", async () => {
    const a = await key(100);
    const b = await key(100);
    const secret = `kb_live_${"T".repeat(40)}`;
    const foreign = await kb.store.insertKey({
      id: "vk_other_tenant",
      keyHash: sha256Hex(secret),
      keyHint: "kb_live_…TTTT",
      vendor: "stripe",
      mode: "live",
      mintedBy: "tok_tenant_b",
      label: "tenant-b/run",
      dailyCapMicros: 100_000_000,
      totalCapMicros: null,
      allowedEndpoints: ["/*"],
      maxRequestsPerMinute: null,
      requireIdempotencyKey: false,
      metadata: {},
      createdAt: Date.now(),
      expiresAt: Date.now() + 3_600_000,
    });
    expect(foreign.id).toBe("vk_other_tenant");
    stripe.failNext({ kind: "drop" }); // a's first attempt never reaches Stripe's logic; its retry must carry the same vendor key
    expect(
      (await post(a.vault_key, "/v1/payment_intents", "amount=500&currency=usd", { "idempotency-key": "celery-task-42" })).status,
    ).toBe(502);
    expect(
      (await post(b.vault_key, "/v1/payment_intents", "amount=500&currency=usd", { "idempotency-key": "celery-task-42" })).status,
    ).toBe(200);
    expect((await post(secret, "/v1/payment_intents", "amount=500&currency=usd", { "idempotency-key": "celery-task-42" })).status).toBe(
      200,
    );
    const [first, second, other] = stripe.received.map((r) => r.headers["idempotency-key"] as string);
    expect(first).toBe(second!);
    expect(other).not.toBe(first!);
    for (const k of [first, second, other]) expect(k).not.toContain("celery-task-42");
    // One execution for the minter's two keys (Stripe de-duplicated), one for the other tenant.
    expect(stripe.moved.filter((m) => m.kind === "/v1/payment_intents")).toHaveLength(2);
    expect((await audit(b.id))[0]).toMatchObject({ idempotency_key: "celery-task-42" });
  });
});

describe("intent updates and aliases are never free", () => {
  test("a KWD intent updated to USD is priced at the new total minus what was counted; an unknown currency is 422", async () => {
    const k = await key(2_000);
    const created = await post(k.vault_key, "/v1/payment_intents", "amount=100000&currency=kwd"); // 100.000 KWD = $325
    const intent = (await created.json()) as Json;
    expect(await committed(k.id)).toBe(325_000_000);
    const eur = await post(k.vault_key, `/v1/payment_intents/${intent.id}`, "currency=eur");
    expect(eur.status).toBe(422);
    expect(eur.headers.get("x-keybrake-error")).toBe("currency_not_priced");
    const usd = await post(k.vault_key, `/v1/payment_intents/${intent.id}`, "currency=usd"); // now 100000 cents = $1,000
    expect(usd.status).toBe(200);
    expect(await committed(k.id)).toBe(1_000_000_000);
    expect((await audit(k.id))[0]).toMatchObject({ hold_usd: 675, cost_usd: 675, currency: "usd", amount_minor: 100_000 });
  });

  test("a currency change that does not fit the cap is refused before it reaches Stripe", async () => {
    const k = await key(500);
    const intent = (await (await post(k.vault_key, "/v1/payment_intents", "amount=100000&currency=kwd")).json()) as Json;
    const res = await post(k.vault_key, `/v1/payment_intents/${intent.id}`, "currency=usd");
    expect(res.status).toBe(429);
    expect(stripe.intents.get(intent.id)!.currency).toBe("kwd");
  });

  test("refund aliases and case variants are priced like /v1/refunds", async () => {
    const k = await key(1_000);
    const forms = [
      (id: string) => [`/v1/charges/${id}/refunds`, ""],
      (id: string) => [`/v1/charges/${id}/refund`, ""],
      (id: string) => ["/stripe/V1/Refunds", `charge=${id}`],
    ];
    for (const form of forms) {
      const charge = stripe.seedCharge(2_500);
      const [path, body] = form(charge.id) as [string, string];
      const res = await post(k.vault_key, path, body);
      expect((await audit(k.id))[0]).toMatchObject({ path: path.replace("/stripe", ""), hold_usd: 25 });
      expect([200, 404]).toContain(res.status); // Stripe itself may not route the variant; either way it was held
    }
    // This mock, like Stripe, routes paths case-sensitively: /V1/Refunds was held, then released on its 404.
    expect(await committed(k.id)).toBe(50_000_000);
  });

  test("PUT or PATCH on a priced path is 405 method_not_priced; unpriced money movers are 422; nothing forwarded", async () => {
    const k = await key(1_000);
    for (const method of ["PUT", "PATCH", "DELETE"]) {
      const res = await fetch(`${kb.url}/v1/payment_intents`, {
        method,
        headers: { authorization: `Bearer ${k.vault_key}`, "content-type": "application/x-www-form-urlencoded" },
        body: "amount=100000&currency=usd",
      });
      expect(res.status).toBe(405);
      expect(res.headers.get("x-keybrake-error")).toBe("method_not_priced");
    }
    for (const path of [
      "/v1/subscriptions",
      "/v1/subscription_items",
      "/v1/credit_notes",
      "/v1/customers/cus_1/balance_transactions",
      "/v2/money_management/outbound_payments",
      "/v1/invoices",
    ]) {
      const res = await post(k.vault_key, `/stripe${path}`, "customer=cus_1&items[0][price]=price_1");
      expect(res.status).toBe(422);
      expect(res.headers.get("x-keybrake-error")).toBe("unpriceable_request");
    }
    const gzip = await post(k.vault_key, "/v1/payment_intents", "amount=100&currency=usd", { "content-encoding": "gzip" });
    expect(gzip.status).toBe(422);
    expect(stripe.received).toHaveLength(0);
  });
});

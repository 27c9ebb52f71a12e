import { MockVendor, mockId, type Received, type Reply } from "./mock-vendor";

export const STRIPE_LIVE_SECRET = "sk_live_mockLiveSecret0000000000000000000000000000";
export const STRIPE_TEST_SECRET = "sk_test_mockTestSecret0000000000000000000000000000";

const stripeError = (status: number, type: string, message: string, extra: Record<string, unknown> = {}): Reply => ({
  status,
  body: { error: { type, message, ...extra } },
});

export const STRIPE_DECLINE = {
  kind: "status" as const,
  status: 402,
  body: { error: { type: "card_error", code: "card_declined", decline_code: "generic_decline", message: "Your card was declined." } },
};
export const STRIPE_500 = {
  kind: "status" as const,
  status: 500,
  body: { error: { type: "api_error", message: "An unknown error occurred." } },
};

interface Intent {
  id: string;
  object: "payment_intent";
  amount: number;
  currency: string;
  status: string;
  amount_received: number;
  amount_capturable: number;
  amount_refunded: number;
  customer: string | null;
  metadata: Record<string, string>;
}

interface Charge {
  id: string;
  object: "charge";
  amount: number;
  currency: string;
  captured: boolean;
  customer: string | null;
  amount_captured: number;
  amount_refunded: number;
  paid: boolean;
}

interface Invoice {
  id: string;
  object: "invoice";
  currency: string;
  amount_due: number;
  amount_paid: number;
  amount_remaining: number;
  status: string;
}

/** Reads a Stripe-style body: form (bracket notation flattened as keys) or JSON. */
function params(req: Received): Record<string, string> {
  const type = String(req.headers["content-type"] ?? "");
  if (type.startsWith("application/json")) {
    try {
      return Object.fromEntries(Object.entries(JSON.parse(req.body) as Record<string, unknown>).map(([k, v]) => [k, String(v)]));
    } catch {
      return {};
    }
  }
  return Object.fromEntries(new URLSearchParams(req.body));
}

const missing = (kind: string, id: string) =>
  stripeError(404, "invalid_request_error", `No such ${kind}: '${id}'`, { code: "resource_missing" });

/**
 * A mock Stripe: the endpoints Keybrake prices, Stripe-shaped objects (intents, charges, refunds, invoices) whose
 * money fields move as Stripe moves them, errors and `Request-Id` headers. Objects "created outside Keybrake"
 * are seeded with `seedCharge`, `seedIntent` and `seedInvoice`.
 */
export function mockStripe() {
  const intents = new Map<string, Intent>();
  /** Objects made outside Keybrake (seeded), whose captures move money Keybrake has not counted yet. */
  const seeded = new Set<string>();
  const charges = new Map<string, Charge>();
  const invoices = new Map<string, Invoice>();
  const accepted = [STRIPE_LIVE_SECRET, STRIPE_TEST_SECRET];

  const newIntent = (amount: number, currency: string, extra: Partial<Intent> = {}): Intent => {
    const intent: Intent = {
      id: mockId("pi_"),
      object: "payment_intent",
      amount,
      currency,
      status: "requires_payment_method",
      amount_received: 0,
      amount_capturable: 0,
      amount_refunded: 0,
      customer: null,
      metadata: {},
      ...extra,
    };
    intents.set(intent.id, intent);
    return intent;
  };
  const newCharge = (amount: number, currency: string, captured = true, customer: string | null = null): Charge => {
    const charge: Charge = {
      id: mockId("ch_"),
      object: "charge",
      amount,
      currency,
      captured,
      customer,
      amount_captured: captured ? amount : 0,
      amount_refunded: 0,
      paid: true,
    };
    charges.set(charge.id, charge);
    return charge;
  };

  /** A refund of a charge or an intent: `amount` or whatever remains refundable; more than that is a 400, as at Stripe. */
  const refund = (target: Charge | Intent, requested: number | undefined): Reply => {
    const refundable = (target.object === "charge" ? target.amount_captured : target.amount_received) - target.amount_refunded;
    const amount = requested ?? refundable;
    if (amount <= 0 || amount > refundable) {
      return stripeError(
        400,
        "invalid_request_error",
        `Refund amount (${amount}) is greater than unrefunded amount on charge (${refundable})`,
        { code: "amount_too_large", param: "amount" },
      );
    }
    target.amount_refunded += amount;
    const ref = target.object === "charge" ? { charge: target.id, payment_intent: null } : { charge: null, payment_intent: target.id };
    return { status: 200, body: { id: mockId("re_"), object: "refund", amount, currency: target.currency, status: "succeeded", ...ref } };
  };

  /** Stripe's own idempotency: a POST's result is saved under its Idempotency-Key and replayed for 24 h. */
  const saved = new Map<string, Reply>();
  /** Money the mock actually moved, in the order it moved it (creates, refunds, captures of objects made elsewhere, pays). */
  const moved: { kind: string; amount: number; currency: string }[] = [];

  const answer = (req: Received): Reply => {
    const idem = req.method === "POST" ? (req.headers["idempotency-key"] as string | undefined) : undefined;
    const prior = idem ? saved.get(idem) : undefined;
    if (prior) return { ...prior, headers: { ...prior.headers, "Idempotent-Replayed": "true" } };
    const reply = execute(req);
    if (idem) saved.set(idem, reply);
    if (reply.status === 200 && req.method === "POST") {
      const body = reply.body as { object?: string; amount?: number; currency?: string; amount_captured?: number; amount_paid?: number };
      const kind = req.path.replace(/\/(ch|pi|in)_[^/]+/, "/{id}");
      const amount = movedBy(kind, body, req);
      if (amount > 0) moved.push({ kind, amount, currency: body.currency ?? "usd" });
    }
    return reply;
  };

  /** What a successful POST moved, as Keybrake counts it: creates and refunds their amount; a capture or pay what it newly took. */
  const captureBefore = new Map<Received, number>();
  const movedBy = (kind: string, body: { amount?: number; amount_captured?: number; amount_paid?: number }, req: Received): number => {
    if (kind === "/v1/charges" || kind === "/v1/payment_intents" || kind === "/v1/refunds" || kind === "/v1/charges/{id}/refunds")
      return body.amount ?? 0;
    if (kind === "/v1/charges/{id}/capture" || kind === "/v1/invoices/{id}/pay") return captureBefore.get(req) ?? 0;
    return 0;
  };

  const execute = (req: Received): Reply => {
    const auth = String(req.headers.authorization ?? "");
    if (!accepted.some((s) => auth === `Bearer ${s}`)) {
      return stripeError(401, "invalid_request_error", "Invalid API Key provided.");
    }
    const p = params(req);
    const amount = (name = "amount") => (p[name] === undefined ? undefined : Number(p[name]));
    let m: RegExpExecArray | null;
    if (req.method === "POST" && req.path === "/v1/payment_intents") {
      if (amount() === undefined)
        return stripeError(400, "invalid_request_error", "Missing required param: amount.", { code: "parameter_missing", param: "amount" });
      if (!p.currency)
        return stripeError(400, "invalid_request_error", "Missing required param: currency.", {
          code: "parameter_missing",
          param: "currency",
        });
      return { status: 200, body: newIntent(amount()!, p.currency, { customer: p.customer ?? null }) };
    }
    if ((m = /^\/v1\/payment_intents\/([^/]+)(?:\/(confirm|capture|increment_authorization))?$/.exec(req.path))) {
      const intent = intents.get(m[1]!);
      if (!intent) return missing("payment_intent", m[1]!);
      if (req.method === "GET") return { status: 200, body: intent };
      if (m[2] === "confirm") Object.assign(intent, { status: "succeeded", amount_received: intent.amount });
      if (m[2] === "capture")
        Object.assign(intent, {
          status: "succeeded",
          amount_received: amount("amount_to_capture") ?? (intent.amount_capturable || intent.amount),
          amount_capturable: 0,
        });
      if ((m[2] === undefined || m[2] === "increment_authorization") && amount() !== undefined) intent.amount = amount()!;
      if (m[2] === undefined && p.currency) intent.currency = p.currency;
      return { status: 200, body: intent };
    }
    if (req.method === "POST" && req.path === "/v1/charges") {
      return { status: 200, body: newCharge(amount()!, p.currency!, p.capture !== "false", p.customer ?? null) };
    }
    if ((m = /^\/v1\/charges\/([^/]+)(?:\/(capture|refunds|refund))?$/.exec(req.path))) {
      const charge = charges.get(m[1]!);
      if (!charge) return missing("charge", m[1]!);
      if (req.method === "GET") return { status: 200, body: charge };
      if (m[2] === "capture") {
        if (charge.captured)
          return stripeError(400, "invalid_request_error", `Charge ${charge.id} has already been captured.`, {
            code: "charge_already_captured",
          });
        Object.assign(charge, { captured: true, amount_captured: amount() ?? charge.amount });
        // Captures of charges created through this API were counted when created.
        if (seeded.has(charge.id)) captureBefore.set(req, charge.amount_captured);
        return { status: 200, body: charge };
      }
      if (m[2] === "refunds") return refund(charge, amount());
      // The legacy `/refund` answers with the charge, not the refund.
      const r = refund(charge, amount());
      return r.status === 200 ? { status: 200, body: charge } : r;
    }
    if (req.method === "POST" && (m = /^\/v1\/(transfers|payouts|topups)$/.exec(req.path))) {
      return {
        status: 200,
        body: { id: mockId(`${m[1]!.slice(0, 2)}_`), object: m[1]!.slice(0, -1), amount: amount(), currency: p.currency },
      };
    }
    if (req.method === "POST" && req.path === "/v1/refunds") {
      const target = p.charge ? charges.get(p.charge) : p.payment_intent ? intents.get(p.payment_intent) : undefined;
      if (!target) return missing(p.charge ? "charge" : "payment_intent", p.charge ?? p.payment_intent ?? "");
      return refund(target, amount());
    }
    if ((m = /^\/v1\/invoices\/([^/]+)(?:\/(pay))?$/.exec(req.path))) {
      const invoice = invoices.get(m[1]!);
      if (!invoice) return missing("invoice", m[1]!);
      if (m[2] === "pay") {
        if (invoice.amount_remaining === 0)
          return stripeError(400, "invalid_request_error", "Invoice is already paid", { code: "invoice_already_paid" });
        captureBefore.set(req, invoice.amount_remaining);
        Object.assign(invoice, { amount_paid: invoice.amount_paid + invoice.amount_remaining, amount_remaining: 0, status: "paid" });
      }
      return { status: 200, body: invoice };
    }
    if (req.method === "GET" && req.path === "/v1/customers") return { status: 200, body: { object: "list", data: [], has_more: false } };
    return stripeError(404, "invalid_request_error", `Unrecognized request URL (${req.method}: ${req.path}).`);
  };

  const isReplay = (req: Received) => req.method === "POST" && saved.has(req.headers["idempotency-key"] as string);
  const mock = new MockVendor(answer, "Request-Id", () => mockId("req_"), isReplay);
  return Object.assign(mock, {
    moved,
    saved,
    intents,
    charges,
    invoices,
    /** A captured (or, with `captured: false`, authorized) charge made outside Keybrake. */
    seedCharge: (amount: number, currency = "usd", captured = true, customer: string | null = null) => {
      const charge = newCharge(amount, currency, captured, customer);
      seeded.add(charge.id);
      return charge;
    },
    /** An intent made outside Keybrake, e.g. confirmed with manual capture: `{ amount_capturable: 5000 }`. */
    seedIntent: (amount: number, currency = "usd", extra: Partial<Intent> = {}) => newIntent(amount, currency, extra),
    seedInvoice: (amountDue: number, currency = "usd"): Invoice => {
      const invoice: Invoice = {
        id: mockId("in_"),
        object: "invoice",
        currency,
        amount_due: amountDue,
        amount_paid: 0,
        amount_remaining: amountDue,
        status: "open",
      };
      invoices.set(invoice.id, invoice);
      return invoice;
    },
  });
}
export type MockStripe = ReturnType<typeof mockStripe>;

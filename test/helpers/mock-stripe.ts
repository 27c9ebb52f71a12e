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
export const STRIPE_500 = { kind: "status" as const, status: 500, body: { error: { type: "api_error", message: "An unknown error occurred." } } };

interface Intent {
  id: string;
  object: "payment_intent";
  amount: number;
  currency: string;
  status: string;
  amount_received: number;
  amount_capturable: number;
  customer: string | null;
  metadata: Record<string, string>;
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

/** A mock Stripe: the endpoints Keybrake prices, Stripe-shaped objects, errors and `Request-Id` headers. */
export function mockStripe() {
  const intents = new Map<string, Intent>();
  const accepted = [STRIPE_LIVE_SECRET, STRIPE_TEST_SECRET];

  const answer = (req: Received): Reply => {
    const auth = String(req.headers.authorization ?? "");
    if (!accepted.some((s) => auth === `Bearer ${s}`)) {
      return stripeError(401, "invalid_request_error", "Invalid API Key provided.");
    }
    const p = params(req);
    const amount = (name = "amount") => (p[name] === undefined ? undefined : Number(p[name]));
    let m: RegExpExecArray | null;
    if (req.method === "POST" && req.path === "/v1/payment_intents") {
      if (amount() === undefined) return stripeError(400, "invalid_request_error", "Missing required param: amount.", { code: "parameter_missing", param: "amount" });
      if (!p.currency) return stripeError(400, "invalid_request_error", "Missing required param: currency.", { code: "parameter_missing", param: "currency" });
      const intent: Intent = {
        id: mockId("pi_"),
        object: "payment_intent",
        amount: amount()!,
        currency: p.currency,
        status: "requires_payment_method",
        amount_received: 0,
        amount_capturable: 0,
        customer: p.customer ?? null,
        metadata: {},
      };
      intents.set(intent.id, intent);
      return { status: 200, body: intent };
    }
    if ((m = /^\/v1\/payment_intents\/([^/]+)(?:\/(confirm|capture|increment_authorization))?$/.exec(req.path))) {
      const intent = intents.get(m[1]!);
      if (!intent) return stripeError(404, "invalid_request_error", `No such payment_intent: '${m[1]}'`, { code: "resource_missing" });
      if (req.method === "GET") return { status: 200, body: intent };
      if (m[2] === "confirm") Object.assign(intent, { status: "succeeded", amount_received: intent.amount });
      if (m[2] === "capture") Object.assign(intent, { status: "succeeded", amount_received: amount("amount_to_capture") ?? intent.amount });
      if ((m[2] === undefined || m[2] === "increment_authorization") && amount() !== undefined) intent.amount = amount()!;
      return { status: 200, body: intent };
    }
    if (req.method === "POST" && (m = /^\/v1\/(charges|transfers|payouts|topups)$/.exec(req.path))) {
      return { status: 200, body: { id: mockId(`${m[1]!.slice(0, 2)}_`), object: m[1]!.slice(0, -1), amount: amount(), currency: p.currency } };
    }
    if (req.method === "POST" && req.path === "/v1/refunds") {
      return { status: 200, body: { id: mockId("re_"), object: "refund", amount: amount() ?? 2900, currency: "usd", status: "succeeded" } };
    }
    if (req.method === "GET" && req.path === "/v1/customers") return { status: 200, body: { object: "list", data: [], has_more: false } };
    return stripeError(404, "invalid_request_error", `Unrecognized request URL (${req.method}: ${req.path}).`);
  };

  const mock = new MockVendor(answer, "Request-Id", () => mockId("req_"));
  return Object.assign(mock, { intents });
}
export type MockStripe = ReturnType<typeof mockStripe>;

import { KeybrakeError } from "../errors";
import type { TrackedObject } from "../store/types";
import { readAmount, readCurrency, readPricedBody, unpriceable, type PricedBody } from "./body";
import { minorToMicros } from "./currency";
import { httpUrl, secret } from "../env";
import {
  unreadableAnswer,
  bearerCredentialsByMode,
  type PathClass,
  type PricingContext,
  type PricingInput,
  type Quote,
  type Settlement,
  type Vendor,
} from "./types";

/** Fields that decide a price: refused in the query string, where Stripe could read them instead of the body's. */
const PRICED_FIELDS = ["amount", "currency", "amount_to_capture", "charge", "payment_intent"];

interface Call {
  input: PricingInput;
  ctx: PricingContext;
  body: PricedBody;
  /** The object id in the path, when the endpoint acts on one. */
  objectId: string;
}

interface Rule {
  path: RegExp;
  price(call: Call): Promise<Quote>;
}

// Paths are matched case-insensitively and with an optional trailing slash: every form Stripe might route to a
// priced endpoint is priced (SPEC §6, "never free"). Ids keep their case for the pre-flight.
const ID = "([^/]+)";
const route = (p: string) => new RegExp(`^/v1/${p}/?$`, "i");

/** SPEC §6, the Stripe rows: every priced endpoint and its class. */
const RULES: Rule[] = [
  { path: route("payment_intents"), price: (c) => created(c, "payment_intent") },
  { path: route("charges"), price: (c) => created(c, "charge") },
  { path: route("(?:transfers|payouts|topups)"), price: (c) => created(c, null) },
  { path: route(`payment_intents/${ID}/(?:confirm|capture)`), price: intentMovesMoney },
  { path: route(`payment_intents/${ID}(?:/increment_authorization)?`), price: intentNewTotal },
  { path: route("refunds"), price: (c) => refund(c, "amount") },
  { path: route(`charges/${ID}/refunds`), price: (c) => refund(c, "amount") },
  // The legacy form answers with the charge, whose `amount` is not what was refunded: the hold is the cost.
  { path: route(`charges/${ID}/refund`), price: (c) => refund(c, null) },
  { path: route(`charges/${ID}/capture`), price: chargeCapture },
  { path: route(`invoices/${ID}/pay`), price: invoicePay },
];

/**
 * POSTs that can move money and that Keybrake does not price: refused (422 unpriceable_request) rather than
 * forwarded at $0. Listed in the README.
 */
export const REFUSED_MONEY_MOVERS: { path: RegExp; what: string }[] = [
  { path: /^\/v1\/subscriptions(?:\/|$)/i, what: "subscriptions (create, update, resume)" },
  { path: /^\/v1\/subscription_items(?:\/|$)/i, what: "subscription items" },
  { path: /^\/v1\/subscription_schedules(?:\/|$)/i, what: "subscription schedules" },
  { path: /^\/v1\/credit_notes(?:\/|$)/i, what: "credit notes (can refund)" },
  { path: /^\/v1\/invoices\/?$/i, what: "invoice creation (auto-advances to a charge)" },
  { path: /^\/v1\/invoices\/[^/]+\/finalize\/?$/i, what: "invoice finalization (auto-advances to a charge)" },
  { path: /^\/v1\/quotes\/[^/]+\/accept\/?$/i, what: "quote acceptance (creates a subscription or invoice)" },
  {
    path: /^\/v1\/customers\/[^/]+\/(?:balance_transactions|cash_balance|funding_instructions)(?:\/|$)/i,
    what: "customer balance changes",
  },
  { path: /^\/v1\/payment_intents\/[^/]+\/apply_customer_balance\/?$/i, what: "customer balance application" },
  { path: /^\/v1\/application_fees\/[^/]+\/refunds?(?:\/|$)/i, what: "application fee refunds" },
  { path: /^\/v1\/disputes\/[^/]+\/close\/?$/i, what: "conceding a dispute" },
  { path: /^\/v1\/(?:treasury|issuing|climate)\//i, what: "Treasury, Issuing and Climate money movement" },
  { path: /^\/v2\//i, what: "the v2 API (money management)" },
];

const ruleFor = (path: string) => RULES.find((r) => r.path.test(path));

/**
 * A Stripe secret: a publishable key (`pk_…`) can create nothing and would fail every call with a 401 that
 * looks like Keybrake's fault, so it stops the start instead.
 */
const stripeSecret = secret.refine(
  (key) => key === undefined || !/^pk_/.test(key.trim()),
  "is a publishable key (pk_…); Keybrake needs a secret key (sk_…) or a restricted key (rk_…) from the Stripe dashboard",
);

export const stripe: Vendor = {
  name: "stripe",
  env: {
    KEYBRAKE_STRIPE_SECRET_KEY: stripeSecret,
    KEYBRAKE_STRIPE_TEST_SECRET_KEY: stripeSecret,
    KEYBRAKE_STRIPE_BASE_URL: httpUrl("https://api.stripe.com"),
  },
  secretVariables: ["KEYBRAKE_STRIPE_SECRET_KEY", "KEYBRAKE_STRIPE_TEST_SECRET_KEY"],
  configure: (env) => ({
    baseUrl: env.KEYBRAKE_STRIPE_BASE_URL as string,
    credentials: bearerCredentialsByMode(env, "KEYBRAKE_STRIPE_SECRET_KEY", "KEYBRAKE_STRIPE_TEST_SECRET_KEY"),
    prices: null,
  }),
  bareRoutes: ["/v1/*"],
  publicPath: (path) => path,
  classify(_method, path): PathClass {
    if (ruleFor(path)) return "priced";
    return REFUSED_MONEY_MOVERS.some((r) => r.path.test(path)) ? "refused" : "free";
  },
  requestId: (headers) => headers.get("request-id"),
  contextHeaders: ["stripe-account", "stripe-context", "stripe-version"],
  honoursIdempotencyKey: true,
  doNotRetryHeaders: { "stripe-should-retry": "false" },

  async price(input, ctx) {
    const rule = ruleFor(input.path)!;
    const body = readPricedBody(input.contentType, input.body, input.query, PRICED_FIELDS);
    return rule.price({ input, ctx, body, objectId: rule.path.exec(input.path)?.[1] ?? "" });
  },
};

/** An object Stripe answered with: the amount it states in `field`, in micro-dollars (null when unreadable). */
function stated(
  object: unknown,
  field: string,
  fx: Record<string, string>,
): { micros: number; currency: string; amountMinor: number } | null {
  const o = (object ?? {}) as Record<string, unknown>;
  const amount = o[field];
  const currency = o.currency;
  if (typeof amount !== "number" || !Number.isSafeInteger(amount) || amount < 0) return null;
  if (typeof currency !== "string" || !/^[A-Za-z]{3}$/.test(currency)) return null;
  try {
    return { micros: minorToMicros(amount, currency, fx), currency: currency.toLowerCase(), amountMinor: amount };
  } catch {
    return null; // no FX rate for the answer's currency
  }
}

/**
 * Settles at what the answer states in `field` (minus what was already counted), else at the hold. A stated
 * amount above the hold is kept as the cost: the pipeline records it as a price differential.
 */
function settleFromAnswer(
  quote: Quote,
  field: string,
  fx: Record<string, string>,
  counted = 0,
  track?: (total: { micros: number; currency: string; amountMinor: number }, id: string) => TrackedObject,
) {
  return (response: unknown): Settlement => {
    const s = stated(response, field, fx);
    if (!s) return unreadableAnswer(quote, `the answer's "${field}" or "currency" is missing, unreadable or has no KEYBRAKE_FX rate`);
    const settlement: Settlement = {
      costMicros: Math.max(0, s.micros - counted),
      source: "response",
      currency: s.currency,
      amountMinor: s.amountMinor,
    };
    const id = (response as { id?: unknown }).id;
    if (track && typeof id === "string" && id !== "") settlement.track = track(s, id);
    return settlement;
  };
}

/** What a tracked object (created or last priced through Keybrake) has been counted, from its stated total. */
const trackedAs =
  (keyId: string, counted: number) =>
  (total: { micros: number; currency: string; amountMinor: number }, objectId: string): TrackedObject => ({
    objectId,
    keyId,
    currency: total.currency,
    amountMinor: total.amountMinor,
    countedMicros: Math.max(total.micros, counted),
  });

/** Class 1: a create that carries its amount and currency. Intents and charges are tracked so that confirming or capturing them later costs nothing more. */
async function created({ input, ctx, body }: Call, tracks: "payment_intent" | "charge" | null): Promise<Quote> {
  const amount = readAmount(body, "amount", true)!;
  const currency = readCurrency(body, true)!;
  const quote: Quote = { micros: minorToMicros(amount, currency, ctx.fx), source: "request", currency, amountMinor: amount };
  quote.settle = settleFromAnswer(quote, "amount", ctx.fx, 0, tracks ? trackedAs(input.keyId, 0) : undefined);
  return quote;
}

/** The object's currency, as Stripe states it; an object without one cannot be priced. */
function objectCurrency(object: Record<string, unknown>): string {
  const currency = object.currency;
  if (typeof currency !== "string" || !/^[A-Za-z]{3}$/.test(currency)) throw unreadableObject("currency");
  return currency.toLowerCase();
}

/**
 * Class 1 or 2 for calls whose request has no currency (refunds, captures, invoice pays): the object is read
 * first for its currency and for what the call can move. With `requestField` in the request, that amount is
 * held; else `movable(object)` (what remains refundable, capturable or due). `paid(object)` is what the answer's
 * `answerField` already counted before this call.
 */
async function fromObject(
  { ctx, body }: Call,
  objectPath: string,
  requestField: string | null,
  movable: (o: Record<string, unknown>) => number,
  answerField: string | null,
  paid: (o: Record<string, unknown>) => number = () => 0,
): Promise<Quote> {
  const requested = requestField ? readAmount(body, requestField, false) : undefined;
  const object = await ctx.preflight(objectPath);
  const currency = objectCurrency(object);
  const amountMinor = requested ?? movable(object);
  // minorToMicros throws 422 currency_not_priced when the object's currency has no rate: nothing is forwarded.
  const quote: Quote = {
    micros: minorToMicros(amountMinor, currency, ctx.fx),
    source: requested === undefined ? "object" : "request",
    currency,
    amountMinor,
  };
  if (answerField) quote.settle = settleFromAnswer(quote, answerField, ctx.fx, minorToMicros(paid(object), currency, ctx.fx));
  return quote;
}

/**
 * An amount field of the object read before the call. `whenAbsent` is for fields Stripe omits when nothing has
 * moved yet (refunded, captured, paid); a missing amount the hold depends on fails the pre-flight rather than
 * holding $0.
 */
const int = (o: Record<string, unknown>, field: string, whenAbsent?: number): number => {
  const v = o[field];
  if ((v === undefined || v === null) && whenAbsent !== undefined) return whenAbsent;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw unreadableObject(field);
  return v;
};

/** SPEC §6: an object that cannot be read is a failed pre-flight (502), nothing forwarded. */
const unreadableObject = (field: string) =>
  new KeybrakeError("preflight_failed", `The object read to price this call has no readable "${field}"; nothing was forwarded.`);

/** A refund (`/v1/refunds` with `charge` or `payment_intent`, or a charge's legacy refund paths): at most what is still refundable. */
async function refund(call: Call, answerField: string | null): Promise<Quote> {
  let objectPath: string;
  if (call.objectId !== "") {
    objectPath = `/v1/charges/${call.objectId}`;
  } else {
    const charge = call.body.scalar("charge");
    const intent = call.body.scalar("payment_intent");
    if ((charge === undefined) === (intent === undefined)) throw unpriceable('a refund names exactly one of "charge" or "payment_intent"');
    const id = String(charge ?? intent);
    if (!/^[A-Za-z0-9_]+$/.test(id)) throw unpriceable("the refunded object's id is not a plain id");
    objectPath = charge !== undefined ? `/v1/charges/${id}` : `/v1/payment_intents/${id}`;
  }
  const refundable = (o: Record<string, unknown>) =>
    o.object === "payment_intent"
      ? Math.max(int(o, "amount_received", 0), int(o, "amount"))
      : Math.max(0, int(o, "amount") - int(o, "amount_refunded", 0));
  return fromObject(call, objectPath, "amount", refundable, answerField);
}

/** A charge created through Keybrake was counted at creation; any other is read for what it can capture. */
async function chargeCapture(call: Call): Promise<Quote> {
  const tracked = await call.ctx.findTracked(call.objectId);
  if (tracked) return { micros: 0, source: "request", currency: tracked.currency, amountMinor: 0 };
  const capturable = (o: Record<string, unknown>) => Math.max(0, int(o, "amount") - int(o, "amount_captured", 0));
  return fromObject(call, `/v1/charges/${call.objectId}`, "amount", capturable, "amount_captured", (o) => int(o, "amount_captured", 0));
}

/** An invoice pay charges what remains due. */
function invoicePay(call: Call): Promise<Quote> {
  return fromObject(
    call,
    `/v1/invoices/${call.objectId}`,
    null,
    (o) => int(o, "amount_remaining"),
    "amount_paid",
    (o) => int(o, "amount_paid", 0),
  );
}

/**
 * Confirm or capture: free for an intent created through Keybrake (its creation counted it); any other intent is
 * read first and its amount (capture: `amount_to_capture`, else what is capturable) is held.
 */
async function intentMovesMoney(call: Call): Promise<Quote> {
  const { ctx, input, objectId } = call;
  const tracked = await ctx.findTracked(objectId);
  if (tracked) return { micros: 0, source: "request", currency: tracked.currency, amountMinor: 0 };
  const capture = /\/capture\/?$/i.test(input.path);
  // Capturing an intent that is not yet confirmed fails at Stripe; holding its amount is the safe bound then.
  const movable = (o: Record<string, unknown>) => (capture ? int(o, "amount_capturable", 0) || int(o, "amount") : int(o, "amount"));
  const quote = await fromObject(call, `/v1/payment_intents/${objectId}`, capture ? "amount_to_capture" : null, movable, "amount");
  // Tracked from now on: a later capture or update of the same intent is priced against what this call counted.
  quote.settle = settleFromAnswer(quote, capture ? "amount_received" : "amount", ctx.fx, 0, trackedAs(input.keyId, 0));
  return quote;
}

/**
 * An update or increment sets the intent's new total, possibly in a new currency: the hold is that total minus
 * what was already counted for the intent, never below 0. An intent Keybrake has not seen is read first.
 */
async function intentNewTotal({ input, ctx, body, objectId }: Call): Promise<Quote> {
  const amount = readAmount(body, "amount", false);
  const currency = readCurrency(body, false);
  if (amount === undefined && currency === undefined) return { micros: 0, source: "request", currency: null, amountMinor: null };
  const tracked = await ctx.findTracked(objectId);
  const current = tracked ? { amount: tracked.amountMinor, currency: tracked.currency } : await currentIntent(ctx, objectId);
  const counted = tracked?.countedMicros ?? 0;
  const newAmount = amount ?? current.amount;
  const newCurrency = currency ?? current.currency;
  const total = minorToMicros(newAmount, newCurrency, ctx.fx);
  const quote: Quote = { micros: Math.max(0, total - counted), source: "request", currency: newCurrency, amountMinor: newAmount };
  quote.settle = settleFromAnswer(quote, "amount", ctx.fx, counted, trackedAs(tracked?.keyId ?? input.keyId, counted));
  return quote;
}

async function currentIntent(ctx: PricingContext, objectId: string): Promise<{ amount: number; currency: string }> {
  const o = await ctx.preflight(`/v1/payment_intents/${objectId}`);
  return { amount: int(o, "amount"), currency: objectCurrency(o) };
}

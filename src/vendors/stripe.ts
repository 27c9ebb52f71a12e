import { KeybrakeError } from "../errors";
import type { TrackedObject } from "../ledger/types";
import { readAmount, readCurrency, readPricedBody, unpriceable, type PricedBody } from "./body";
import { minorToMicros } from "./currency";
import { httpUrl, secret } from "../env";
import { Catalogue, credential, free, priced, refused, refusedFor } from "./catalogue";
import {
  FREE,
  unreadableAnswer,
  bearerCredentialsByMode,
  type PriceFn,
  type PricingContext,
  type PricingInput,
  type Quote,
  type Settlement,
  type Vendor,
} from "./types";

/** Fields that decide a price: refused in the query string, where Stripe could read them instead of the body's. */
const PRICED_FIELDS = ["amount", "currency", "amount_to_capture", "charge", "payment_intent", "customer"];

interface Call {
  input: PricingInput;
  ctx: PricingContext;
  body: PricedBody;
  /** The object id in the path, when the endpoint acts on one. */
  objectId: string;
}

/** A Stripe pricing rule: the request's body read for the fields prices come from, then priced. */
const rule =
  (price: (call: Call) => Promise<Quote>): PriceFn =>
  (input, ctx) =>
    price({ input, ctx, body: readPricedBody(input.contentType, input.body, input.query, PRICED_FIELDS), objectId: input.ids[0] ?? "" });

/**
 * Customers and their updates hold no money, except a `balance` (a credit Stripe applies to the customer's next
 * invoices: money given away as a refund is) or a cash balance's settings: those are refused, never free.
 */
const customerWrite: PriceFn = async (input) => {
  const body = readPricedBody(input.contentType, input.body, input.query, ["balance", "cash_balance"]);
  // `scalar` refuses a nested field (`cash_balance[settings][…]`) itself: either way, never free.
  if (body.scalar("balance") !== undefined || body.scalar("cash_balance") !== undefined)
    throw unpriceable("setting a customer's balance credits money Keybrake does not price");
  return FREE;
};

const MONEY = "money Keybrake does not price";

/**
 * SPEC §6, Stripe: every endpoint Keybrake forwards. Reads (GET, HEAD) of any resource listed here are free;
 * writes are as listed; every other path or write is refused (422 endpoint_not_catalogued).
 */
export const STRIPE_CATALOGUE = new Catalogue<PriceFn>([
  // Class 1: the amount is in the request.
  ...priced(
    "class 1: `amount` (creating the intent commits the spend)",
    rule((c) => created(c, "payment_intent")),
    "/v1/payment_intents",
  ),
  ...priced(
    "class 1: `amount`",
    rule((c) => created(c, "charge")),
    "/v1/charges",
  ),
  ...priced(
    "class 1: `amount`",
    rule((c) => created(c, null)),
    "/v1/transfers",
    "/v1/payouts",
    "/v1/topups",
  ),
  // Class 1 or 2: the amount in the request, else what the object says the call can move.
  ...priced(
    "0 for an intent created through Keybrake; else `amount_to_capture` or the intent's amount (class 2)",
    rule(intentMovesMoney),
    "/v1/payment_intents/{intent}/confirm",
    "/v1/payment_intents/{intent}/capture",
    // Verifying a bank debit's microdeposits completes its payment, as a confirm does.
    "/v1/payment_intents/{intent}/verify_microdeposits",
  ),
  ...priced(
    "the new total minus what was already counted for the intent",
    rule(intentNewTotal),
    "/v1/payment_intents/{intent}",
    "/v1/payment_intents/{intent}/increment_authorization",
  ),
  ...priced(
    "`amount`, else what remains refundable (class 2)",
    rule((c) => refund(c, "amount")),
    "/v1/refunds",
    "/v1/charges/{charge}/refunds",
  ),
  // The legacy form answers with the charge, whose `amount` is not what was refunded: the hold is the cost.
  ...priced(
    "`amount`, else what remains refundable (class 2); legacy form",
    rule((c) => refund(c, null)),
    "/v1/charges/{charge}/refund",
  ),
  ...priced("`amount`, else what remains capturable (class 2)", rule(chargeCapture), "/v1/charges/{charge}/capture"),
  ...priced("what remains due (class 2)", rule(invoicePay), "/v1/invoices/{invoice}/pay"),
  ...priced("free, but refused when it sets a `balance` (a customer credit)", customerWrite, "/v1/customers", "/v1/customers/{customer}"),

  // Free: moves no money and mints no credential.
  ...free(["GET"], "a read", "/v1/balance", "/v1/balance/history", "/v1/balance_transactions", "/v1/balance_transactions/{txn}"),
  ...free(["GET"], "a read", "/v1/events", "/v1/events/{event}", "/v1/payment_intents/search", "/v1/charges/search"),
  ...free(["GET"], "a read", "/v1/customers/search", "/v1/invoices/search", "/v1/invoices/upcoming", "/v1/mandates/{mandate}"),
  ...free(
    ["GET"],
    "a read",
    "/v1/disputes",
    "/v1/invoices/{invoice}/lines",
    "/v1/subscriptions/search",
    "/v1/customers/{customer}/payment_methods",
    "/v1/checkout/sessions/{session}",
    "/v1/checkout/sessions/{session}/line_items",
    "/v1/payment_links/{payment_link}/line_items",
    "/v1/files",
    "/v1/files/{file}",
  ),
  ...free(["DELETE"], "deleting a customer moves no money", "/v1/customers/{customer}"),
  ...free(
    ["POST", "DELETE"],
    "a saved payment method or tax id is no payment",
    "/v1/customers/{customer}/sources",
    "/v1/customers/{customer}/sources/{source}",
    "/v1/customers/{customer}/sources/{source}/verify",
    "/v1/customers/{customer}/tax_ids",
    "/v1/customers/{customer}/tax_ids/{tax_id}",
  ),
  ...free(["DELETE"], "removing a discount makes the customer pay more, never Keybrake's owner", "/v1/customers/{customer}/discount"),
  ...free(
    ["POST"],
    "a payment method is saved, attached or detached; no payment is made",
    "/v1/payment_methods",
    "/v1/payment_methods/{payment_method}",
    "/v1/payment_methods/{payment_method}/attach",
    "/v1/payment_methods/{payment_method}/detach",
    "/v1/tokens",
  ),
  ...free(
    ["POST"],
    "a setup intent saves a payment method for later; a later payment is a priced intent",
    "/v1/setup_intents",
    "/v1/setup_intents/{setup_intent}",
    "/v1/setup_intents/{setup_intent}/confirm",
    "/v1/setup_intents/{setup_intent}/cancel",
    "/v1/setup_intents/{setup_intent}/verify_microdeposits",
  ),
  ...free(
    ["POST", "DELETE"],
    "a catalogue object: a price list charges nobody",
    "/v1/products",
    "/v1/products/{product}",
    "/v1/prices",
    "/v1/prices/{price}",
    "/v1/coupons",
    "/v1/coupons/{coupon}",
    "/v1/promotion_codes",
    "/v1/promotion_codes/{promotion_code}",
    "/v1/tax_rates",
    "/v1/tax_rates/{tax_rate}",
  ),
  ...free(
    ["POST"],
    "the customer pays on Stripe's page; the job commits no money",
    "/v1/checkout/sessions",
    "/v1/checkout/sessions/{session}/expire",
    "/v1/payment_links",
    "/v1/payment_links/{payment_link}",
  ),
  ...free(
    ["POST"],
    "cancels, verifies or annotates; moves no money out",
    "/v1/payment_intents/{intent}/cancel",
    "/v1/charges/{charge}",
    "/v1/charges/{charge}/refunds/{refund}",
    "/v1/refunds/{refund}",
    "/v1/refunds/{refund}/cancel",
    "/v1/disputes/{dispute}",
    "/v1/charges/{charge}/dispute",
    "/v1/transfers/{transfer}",
    "/v1/payouts/{payout}",
    "/v1/payouts/{payout}/cancel",
    "/v1/topups/{topup}",
    "/v1/topups/{topup}/cancel",
  ),
  ...free(
    ["POST"],
    "an invoice voided or written off, or a preview; Keybrake's owner pays nothing",
    "/v1/invoices/{invoice}/void",
    "/v1/invoices/{invoice}/mark_uncollectible",
    "/v1/invoices/create_preview",
  ),
  ...free(["DELETE"], "deletes a draft invoice", "/v1/invoices/{invoice}"),

  // Refused money movers (422 unpriceable_request); their reads stay free.
  ...refused(
    `subscriptions bill on their own schedule (create, update, resume, cancel with invoice_now): ${MONEY}`,
    "/v1/subscriptions",
    "/v1/subscriptions/{subscription}",
    "/v1/subscriptions/{subscription}/resume",
    "/v1/subscriptions/{subscription}/discount",
    "/v1/customers/{customer}/subscriptions",
    "/v1/customers/{customer}/subscriptions/{subscription}",
    "/v1/subscription_items",
    "/v1/subscription_items/{item}",
    "/v1/subscription_items/{item}/usage_records",
    "/v1/subscription_schedules",
    "/v1/subscription_schedules/{schedule}",
    "/v1/subscription_schedules/{schedule}/cancel",
    "/v1/subscription_schedules/{schedule}/release",
  ),
  ...refused(
    `invoice items, invoice creation, finalization and sending (a draft is finalized, and may auto-advance to a charge): ${MONEY}`,
    "/v1/invoiceitems",
    "/v1/invoiceitems/{item}",
    "/v1/invoices",
    "/v1/invoices/{invoice}/finalize",
    "/v1/invoices/{invoice}/send",
    "/v1/invoices/{invoice}/lines/{line}",
    "/v1/invoices/{invoice}/add_lines",
    "/v1/invoices/{invoice}/remove_lines",
    "/v1/invoices/{invoice}/update_lines",
  ),
  ...refusedFor(["POST"], `invoice updates (amounts, auto-advance): ${MONEY}`, "/v1/invoices/{invoice}"),
  ...refused(
    `usage-based billing: ${MONEY}`,
    "/v1/billing/meter_events",
    "/v1/billing/meter_event_adjustments",
    "/v1/billing/credit_grants",
  ),
  ...refused(
    `credit notes can refund: ${MONEY}`,
    "/v1/credit_notes",
    "/v1/credit_notes/{credit_note}",
    "/v1/credit_notes/{credit_note}/void",
  ),
  ...refused(`quote acceptance creates a subscription or invoice: ${MONEY}`, "/v1/quotes/{quote}/accept"),
  ...refused(
    `customer balance changes: ${MONEY}`,
    "/v1/customers/{customer}/balance_transactions",
    "/v1/customers/{customer}/balance_transactions/{txn}",
    "/v1/customers/{customer}/cash_balance",
    "/v1/customers/{customer}/funding_instructions",
    "/v1/payment_intents/{intent}/apply_customer_balance",
  ),
  ...refused(
    `refunds and reversals Keybrake does not price: ${MONEY}`,
    "/v1/application_fees/{fee}/refunds",
    "/v1/application_fees/{fee}/refunds/{refund}",
    "/v1/application_fees/{fee}/refund",
    "/v1/transfers/{transfer}/reversals",
    "/v1/transfers/{transfer}/reversals/{reversal}",
    "/v1/payouts/{payout}/reverse",
  ),
  ...refused(`conceding a dispute (every form): ${MONEY}`, "/v1/disputes/{dispute}/close", "/v1/charges/{charge}/dispute/close"),
  ...refused(
    `in-person payments and refunds at a reader: ${MONEY}`,
    "/v1/terminal/readers/{reader}/refund_payment",
    "/v1/terminal/readers/{reader}/process_payment_intent",
  ),
  ...refused(`Treasury, Climate and the v2 API (money management): ${MONEY}`, "/v1/treasury/*", "/v1/climate/*", "/v2/*"),

  // Credential endpoints (403 credential_endpoint_refused), every method.
  ...credential("ephemeral keys are usable API keys", "/v1/ephemeral_keys", "/v1/ephemeral_keys/{key}"),
  ...credential("webhook endpoints carry their signing secret", "/v1/webhook_endpoints", "/v1/webhook_endpoints/{endpoint}"),
  ...credential(
    "connected accounts, their links and sessions act as other accounts",
    "/v1/accounts",
    "/v1/accounts/*",
    "/v1/account_links",
    "/v1/account_sessions",
    "/v1/login_links",
  ),
  ...credential("client secrets for browser and reader sessions", "/v1/customer_sessions", "/v1/terminal/connection_tokens"),
  ...credential("Stripe Apps secrets", "/v1/apps/secrets", "/v1/apps/secrets/*"),
  ...credential("Issuing cards carry their numbers and spend on their own", "/v1/issuing/*"),
  ...credential("v2 accounts, account links and event destinations (their signing secrets), every method", "/v2/core/*"),
]);

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
  catalogue: STRIPE_CATALOGUE,
  requestId: (headers) => headers.get("request-id"),
  contextHeaders: ["stripe-account", "stripe-context", "stripe-version"],
  honoursIdempotencyKey: true,
  // Stripe saves a result once the endpoint starts executing and replays it (errors included) to a retry with the
  // same key; a request that fails validation saves nothing. So a replayed error, or a fresh validation or card
  // error, means no attempt under the key ran. 409 (still running), 429 (not run yet), 401/403 (a rolled secret)
  // and 404 say nothing of the first attempt; an `idempotency_error` says another request ran under the key.
  speaksForFirstAttempt(status, _headers, body) {
    if (status === 402) return true;
    if (status !== 400) return false;
    const type = (body as { error?: { type?: unknown } } | null)?.error?.type;
    return type !== "idempotency_error";
  },
  doNotRetryHeaders: { "stripe-should-retry": "false" },
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
      ...(counted > 0 && { deductedMicros: counted }),
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
  const quote: Quote = {
    micros: minorToMicros(amount, currency, ctx.fx),
    source: "request",
    currency,
    amountMinor: amount,
    counterparty: { kind: "customer", id: idOf(body.scalar("customer")) },
  };
  quote.settle = settleFromAnswer(quote, "amount", ctx.fx, 0, tracks ? trackedAs(input.keyId, 0) : undefined);
  return quote;
}

/**
 * The customer a call moves money to or from: an id as the request gives it or an object states it (a string,
 * or an expanded object's `id`); null when there is none (SPEC §14: one "no customer" bucket).
 */
function idOf(customer: unknown): string | null {
  const id = typeof customer === "object" && customer !== null ? (customer as { id?: unknown }).id : customer;
  return typeof id === "string" && id !== "" ? id : null;
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
    counterparty: { kind: "customer", id: idOf(object.customer) },
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
  // A tracked intent's customer is not kept: its increase counts under the request's customer, or none.
  const current = tracked
    ? { amount: tracked.amountMinor, currency: tracked.currency, customer: idOf(body.scalar("customer")) }
    : await currentIntent(ctx, objectId);
  const counted = tracked?.countedMicros ?? 0;
  const newAmount = amount ?? current.amount;
  const newCurrency = currency ?? current.currency;
  const total = minorToMicros(newAmount, newCurrency, ctx.fx);
  const quote: Quote = {
    micros: Math.max(0, total - counted),
    source: "request",
    currency: newCurrency,
    amountMinor: newAmount,
    counterparty: { kind: "customer", id: current.customer },
  };
  quote.settle = settleFromAnswer(quote, "amount", ctx.fx, counted, trackedAs(tracked?.keyId ?? input.keyId, counted));
  return quote;
}

async function currentIntent(
  ctx: PricingContext,
  objectId: string,
): Promise<{ amount: number; currency: string; customer: string | null }> {
  const o = await ctx.preflight(`/v1/payment_intents/${objectId}`);
  return { amount: int(o, "amount"), currency: objectCurrency(o), customer: idOf(o.customer) };
}

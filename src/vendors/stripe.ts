import { readAmount, readCurrency, readPricedBody, type PricedBody } from "./body";
import { minorToMicros } from "./currency";
import { FREE, type PricingContext, type PricingInput, type Quote, type Settlement, type Vendor } from "./types";

const PRICED_FIELDS = ["amount", "currency", "amount_to_capture"];

type Rule =
  | { kind: "amount"; path: RegExp; trackIntent?: boolean }
  | { kind: "intent_followup"; path: RegExp; responseField: string }
  | { kind: "intent_increase"; path: RegExp }
  | { kind: "amount_or_response"; path: RegExp; responseField: string };

/** SPEC §6, the Stripe rows. Every other call is free. */
const RULES: Rule[] = [
  { kind: "amount", path: /^\/v1\/payment_intents$/, trackIntent: true },
  { kind: "amount", path: /^\/v1\/(?:charges|transfers|payouts|topups)$/ },
  { kind: "intent_followup", path: /^\/v1\/payment_intents\/([^/]+)\/confirm$/, responseField: "amount" },
  { kind: "intent_followup", path: /^\/v1\/payment_intents\/([^/]+)\/capture$/, responseField: "amount_received" },
  { kind: "intent_increase", path: /^\/v1\/payment_intents\/([^/]+)(?:\/increment_authorization)?$/ },
  { kind: "amount_or_response", path: /^\/v1\/refunds$/, responseField: "amount" },
  { kind: "amount_or_response", path: /^\/v1\/charges\/[^/]+\/capture$/, responseField: "amount_captured" },
  { kind: "amount_or_response", path: /^\/v1\/invoices\/[^/]+\/pay$/, responseField: "amount_paid" },
];

const ruleFor = (method: string, path: string) => (method === "POST" ? RULES.find((r) => r.path.test(path)) : undefined);

export const stripe: Vendor = {
  name: "stripe",
  bareRoutes: ["/v1/*"],
  baseUrl: (config) => config.baseUrls.stripe,
  credentials(config, mode) {
    const secret = config.secrets.stripe[mode];
    return secret ? { authorization: `Bearer ${secret}` } : null;
  },
  upstreamPath: (path) => path,
  isPriced: (method, path) => ruleFor(method, path) !== undefined,
  requestId: (headers) => headers.get("request-id"),

  async price(input: PricingInput, ctx: PricingContext): Promise<Quote> {
    const rule = ruleFor(input.method, input.path);
    if (!rule) return FREE;
    const body = readPricedBody(input.contentType, input.body, input.query, PRICED_FIELDS);
    const objectId = rule.path.exec(input.path)?.[1];

    switch (rule.kind) {
      case "amount": {
        const amount = readAmount(body, "amount", true)!;
        const currency = readCurrency(body, true)!;
        const micros = minorToMicros(amount, currency, ctx.fx);
        const quote: Quote = { micros, needsHeadroom: false, source: "request", currency, amountMinor: amount };
        if (rule.trackIntent) quote.settle = (response) => trackCreatedIntent(quote, response, input.keyId);
        return quote;
      }
      case "intent_followup": {
        const tracked = await ctx.findTracked(objectId!);
        // Creating the intent through Keybrake already charged the cap: moving its money costs nothing more.
        if (tracked) return { ...FREE, currency: tracked.currency, amountMinor: 0 };
        return fromResponse(body, "amount_to_capture", rule.responseField, 0, ctx);
      }
      case "intent_increase": {
        const amount = readAmount(body, "amount", false);
        if (amount === undefined) return FREE;
        const tracked = await ctx.findTracked(objectId!);
        const counted = tracked?.countedMicros ?? 0;
        const currency = readCurrency(body, false) ?? tracked?.currency;
        if (!currency) return fromResponse(body, "amount", "amount", counted, ctx);
        const total = minorToMicros(amount, currency, ctx.fx);
        const quote: Quote = {
          micros: Math.max(0, total - counted),
          needsHeadroom: false,
          source: "request",
          currency,
          amountMinor: amount,
        };
        quote.settle = () => ({
          ...settledAtHold(quote),
          track: { objectId: objectId!, keyId: tracked?.keyId ?? input.keyId, currency, amountMinor: amount, countedMicros: Math.max(total, counted) },
        });
        return quote;
      }
      case "amount_or_response":
        return fromResponse(body, "amount", rule.responseField, 0, ctx);
    }
  },
};

const settledAtHold = (q: Quote): Settlement => ({
  costMicros: q.micros,
  source: q.source,
  currency: q.currency,
  amountMinor: q.amountMinor,
});

function trackCreatedIntent(quote: Quote, response: unknown, keyId: string): Settlement {
  const id = (response as { id?: unknown } | null)?.id;
  const settlement = settledAtHold(quote);
  if (typeof id === "string" && id.length > 0) {
    settlement.track = { objectId: id, keyId, currency: quote.currency!, amountMinor: quote.amountMinor!, countedMicros: quote.micros };
  }
  return settlement;
}

/**
 * The amount is stated by the vendor's answer (a refund's default is the whole charge; a capture's is what was
 * authorized). The request's amount, when given, is held meanwhile, read as USD cents because the currency
 * is the charge's and not in the request; the response's amount and currency are what settles.
 */
function fromResponse(body: PricedBody, requestField: string, responseField: string, alreadyCounted: number, ctx: PricingContext): Quote {
  const requested = readAmount(body, requestField, false);
  const currency = readCurrency(body, false);
  const micros = requested === undefined ? 0 : minorToMicros(requested, currency ?? "usd", ctx.fx);
  const quote: Quote = {
    micros: Math.max(0, micros - alreadyCounted),
    needsHeadroom: true,
    source: "request",
    currency: currency ?? null,
    amountMinor: requested ?? null,
  };
  quote.settle = (response) => {
    const r = (response ?? {}) as Record<string, unknown>;
    const amount = r[responseField];
    const cur = r.currency;
    if (typeof amount !== "number" || !Number.isSafeInteger(amount) || amount < 0 || typeof cur !== "string") {
      return settledAtHold(quote);
    }
    try {
      const cost = Math.max(0, minorToMicros(amount, cur, ctx.fx) - alreadyCounted);
      return { costMicros: cost, source: "response", currency: cur.toLowerCase(), amountMinor: amount };
    } catch {
      return settledAtHold(quote); // the answer's currency has no FX rate: keep what was held
    }
  };
  return quote;
}

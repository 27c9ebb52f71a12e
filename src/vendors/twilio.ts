import { readPricedBody, unpriceable } from "./body";
import { decimalToMicros, unitPriceMicros } from "./currency";
import { smsSegments } from "./sms";
import type { PathClass, Quote, Settlement, Vendor } from "./types";

const ACCOUNT_IN_PATH = /^\/2010-04-01\/Accounts\/[^/]+?(?=\/|\.json$|\.xml$|$)/i;
/** How allowlists and audit rows show the account segment: the real SID never reaches a job. */
export const ACCOUNT_PLACEHOLDER = "{AccountSid}";
const MESSAGES = /^\/2010-04-01\/Accounts\/[^/]+\/Messages(?:\.json|\.xml)?\/?$/i;
const CALLS = /^\/2010-04-01\/Accounts\/[^/]+\/Calls(?:\.json|\.xml)?\/?$/i;

export const twilio: Vendor = {
  name: "twilio",
  bareRoutes: ["/2010-04-01/*"],
  baseUrl: (config) => config.baseUrls.twilio,
  credentials(config, mode) {
    const account = config.secrets.twilio[mode];
    if (!account) return null;
    return {
      headers: { authorization: `Basic ${Buffer.from(`${account.sid}:${account.token}`).toString("base64")}` },
      upstreamPath: (path) => path.replace(ACCOUNT_PLACEHOLDER, account.sid),
    };
  },
  // The job needs no real identifier: whatever SID it put in the path stands for the configured account.
  publicPath: (path) => path.replace(ACCOUNT_IN_PATH, `/2010-04-01/Accounts/${ACCOUNT_PLACEHOLDER}`),
  classify: (_method, path): PathClass => (MESSAGES.test(path) || CALLS.test(path) ? "priced" : "free"),
  requestId: (headers) => headers.get("twilio-request-id"),
  contextHeaders: [],
  honoursIdempotencyKey: false,

  async price(input, ctx) {
    const body = readPricedBody(input.contentType, input.body, input.query, ["Body", "MediaUrl"]);
    let micros: number;
    if (CALLS.test(input.path)) {
      micros = unitPriceMicros(ctx.prices.twilioCallUsd, 1);
    } else if (body.list("MediaUrl").length > 0) {
      micros = unitPriceMicros(ctx.prices.twilioMmsUsd, 1);
    } else {
      const text = body.scalar("Body") ?? "";
      if (typeof text !== "string") throw unpriceable('"Body" is not text');
      micros = unitPriceMicros(ctx.prices.twilioSmsUsd, smsSegments(text));
    }
    const quote: Quote = { micros, source: "estimate", currency: "usd", amountMinor: null };
    quote.settle = (response) => priceFromResponse(response, ctx.fx) ?? { costMicros: micros, source: "estimate", currency: "usd", amountMinor: null };
    return quote;
  },
};

/** Twilio states `price` (a negative decimal string, e.g. "-0.00750") once it knows it; usually null at creation. */
function priceFromResponse(response: unknown, fx: Record<string, string>): Settlement | null {
  const r = (response ?? {}) as { price?: unknown; price_unit?: unknown };
  if (typeof r.price !== "string" || !/^-?\d+(\.\d+)?$/.test(r.price)) return null;
  const unit = typeof r.price_unit === "string" ? r.price_unit.toUpperCase() : "USD";
  const [whole, frac = ""] = r.price.replace("-", "").split(".");
  try {
    const costMicros = decimalToMicros(BigInt(whole! + frac), frac.length, unit, fx);
    return { costMicros, source: "response", currency: unit.toLowerCase(), amountMinor: null };
  } catch {
    return null; // no FX rate for the stated unit: keep the estimate
  }
}

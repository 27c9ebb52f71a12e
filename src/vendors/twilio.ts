import { ConfigError, decimalTable, httpUrl, int, secret, unitPrice } from "../env";
import { readPricedBody, unpriceable, type PricedBody } from "./body";
import { decimalToMicros, unitPriceMicros } from "./currency";
import { MAX_SMS_SEGMENTS, SMS_COUNTRIES, destinationCountries, smsSegments } from "./sms";
import {
  atHold,
  unreadableAnswer,
  type CostSource,
  type Credentials,
  type PathClass,
  type Quote,
  type Settlement,
  type Vendor,
} from "./types";

/** USD per SMS segment by destination country; `*` for any other destination. */
export type SmsPrices = Record<string, number> & { "*": number };

interface TwilioPrices {
  /** Per SMS segment, by destination. */
  smsUsdTo: SmsPrices;
  mmsUsd: number;
  /** Per started minute of an outbound call. */
  callUsd: number;
}

/** `GB=0.0524,*=0.5`: USD per SMS segment by destination country (ISO 3166 alpha-2), `*` for any other. */
const smsPriceTable = decimalTable(/[A-Za-z]{2}|\*/, "COUNTRY=USD (e.g. GB=0.0524 or *=0.5)", (country, usd, part) => {
  if (Number(usd) > 100) return `"${part}": a price must be a USD amount <= 100`;
  if (country !== "*" && !SMS_COUNTRIES.has(country))
    return `${country}: Keybrake cannot tell its phone numbers apart, so they are priced at *`;
  return null;
});

/**
 * SMS prices when KEYBRAKE_TWILIO_SMS_PRICES does not name the destination (it adds to and overrides these). The
 * US and Canada default to KEYBRAKE_TWILIO_SMS_USD; GB is Twilio's UK list price. `*` is any other destination,
 * held high on purpose: Twilio's dearest list prices reach about $0.30 a segment (Nepal, Trinidad and Tobago).
 */
export const DEFAULT_SMS_PRICES = { GB: 0.0524, "*": 0.5 };

function smsPrices(usUsd: number, configured: Record<string, string>): SmsPrices {
  const table: SmsPrices = { US: usUsd, CA: usUsd, ...DEFAULT_SMS_PRICES };
  for (const [country, usd] of Object.entries(configured)) table[country] = Number(usd);
  return table;
}

/** An account SID and auth token, set together or not at all. */
function account(env: Record<string, unknown>, mode: "" | "TEST_"): { sid: string; token: string } | undefined {
  const sid = env[`KEYBRAKE_TWILIO_${mode}ACCOUNT_SID`] as string | undefined;
  const token = env[`KEYBRAKE_TWILIO_${mode}AUTH_TOKEN`] as string | undefined;
  if (!sid && !token) return undefined;
  if (!sid || !token) throw new ConfigError(`KEYBRAKE_TWILIO_${mode}ACCOUNT_SID: set together with KEYBRAKE_TWILIO_${mode}AUTH_TOKEN`);
  return { sid, token };
}

/** How allowlists and audit rows show the account segment: the real SID never reaches a job. */
export const ACCOUNT_PLACEHOLDER = "{AccountSid}";
const PUBLIC_ACCOUNT = `/2010-04-01/Accounts/${ACCOUNT_PLACEHOLDER}`;
/**
 * The account segment, whatever the job wrote there (a lone trailing `*` excepted: in a pattern it means "any
 * further segments", not an account). Ends before a `/` or a format extension (`/Accounts/AC….json`).
 */
const ACCOUNT_IN_PATH = /^\/2010-04-01\/Accounts\/(?!\*$)[^/]+?(?=\/|\.[A-Za-z]+$|$)/i;

/** Twilio routes `Messages`, `Messages.json`, `Messages.xml` to the same create: any extension, any case is priced. */
const PRICED = /^\/2010-04-01\/Accounts\/[^/]+\/(Messages|Calls)(?:\.[A-Za-z]+)?\/?$/i;

/** POSTs that spend money Keybrake does not price: refused (422 unpriceable_request), never forwarded at $0. */
export const REFUSED_MONEY_MOVERS: { path: RegExp; what: string }[] = [
  {
    path: /^\/2010-04-01\/Accounts\/[^/]+\/Conferences\/[^/]+\/Participants(?:\.[A-Za-z]+)?\/?$/i,
    what: "conference participants (each dials an outbound call)",
  },
  {
    path: /^\/2010-04-01\/Accounts\/[^/]+\/IncomingPhoneNumbers(?:\/(?:Local|Mobile|TollFree))?(?:\.[A-Za-z]+)?\/?$/i,
    what: "phone number purchases (a monthly fee)",
  },
];

/** Fields a price is read from: refused in the query string, where Twilio could read them instead of the body's. */
const PRICED_FIELDS = ["To", "Body", "MediaUrl", "SendAsMms", "ContentSid", "TimeLimit"];

/** What Twilio ends a call at when the request sets no TimeLimit: 4 hours. */
const DEFAULT_TIME_LIMIT_S = 14_400;

/** Statuses in which a message's or call's price is not final yet (it may still be null, or change). */
const PENDING = new Set(["queued", "accepted", "scheduled", "sending", "receiving", "initiated", "ringing", "in-progress"]);

type Resource = "Messages" | "Calls";

export const twilio: Vendor<TwilioPrices> = {
  name: "twilio",
  env: {
    KEYBRAKE_TWILIO_ACCOUNT_SID: secret,
    KEYBRAKE_TWILIO_AUTH_TOKEN: secret,
    KEYBRAKE_TWILIO_TEST_ACCOUNT_SID: secret,
    KEYBRAKE_TWILIO_TEST_AUTH_TOKEN: secret,
    KEYBRAKE_TWILIO_BASE_URL: httpUrl("https://api.twilio.com"),
    // Twilio US list prices (twilio.com/en-us/sms/pricing/us, /voice/pricing/us): outbound SMS per segment,
    // outbound MMS per message, outbound call per minute (a call holds TimeLimit's minutes).
    KEYBRAKE_TWILIO_SMS_USD: unitPrice(0.0083),
    KEYBRAKE_TWILIO_MMS_USD: unitPrice(0.022),
    KEYBRAKE_TWILIO_CALL_USD: unitPrice(0.014),
    KEYBRAKE_TWILIO_SMS_PRICES: smsPriceTable,
    KEYBRAKE_TWILIO_RECONCILE_AFTER_S: int(0, 7 * 86_400, 300),
  },
  secretVariables: [
    "KEYBRAKE_TWILIO_ACCOUNT_SID",
    "KEYBRAKE_TWILIO_AUTH_TOKEN",
    "KEYBRAKE_TWILIO_TEST_ACCOUNT_SID",
    "KEYBRAKE_TWILIO_TEST_AUTH_TOKEN",
  ],
  configure(env) {
    const smsUsd = env.KEYBRAKE_TWILIO_SMS_USD as number;
    return {
      baseUrl: env.KEYBRAKE_TWILIO_BASE_URL as string,
      credentials: { live: accountCredentials(account(env, "")), test: accountCredentials(account(env, "TEST_")) },
      prices: {
        smsUsdTo: smsPrices(smsUsd, env.KEYBRAKE_TWILIO_SMS_PRICES as Record<string, string>),
        mmsUsd: env.KEYBRAKE_TWILIO_MMS_USD as number,
        callUsd: env.KEYBRAKE_TWILIO_CALL_USD as number,
      },
      reconcileAfterMs: (env.KEYBRAKE_TWILIO_RECONCILE_AFTER_S as number) * 1000,
    };
  },
  bareRoutes: ["/2010-04-01/*"],
  // The job needs no real identifier: whatever SID it put in the path stands for the configured account.
  publicPath: (path) => path.replace(ACCOUNT_IN_PATH, PUBLIC_ACCOUNT),
  classify(_method, path): PathClass {
    if (PRICED.test(path)) return "priced";
    return REFUSED_MONEY_MOVERS.some((r) => r.path.test(path)) ? "refused" : "free";
  },
  requestId: (headers) => headers.get("twilio-request-id"),
  contextHeaders: [],
  honoursIdempotencyKey: false,
  doNotRetryHeaders: {},

  // Class 3 (SPEC §6): the final price is known only after the call, so the hold is a stated maximum.
  async price(input, ctx) {
    const body = readPricedBody(input.contentType, input.body, input.query, PRICED_FIELDS);
    const resource = resourceOf(input.path);
    const micros = resource === "Calls" ? callHold(body, ctx.prices) : messageHold(body, ctx.prices);
    const quote: Quote = { micros, source: "estimate", currency: "usd", amountMinor: null };
    quote.settle = (answer) => settleAnswer(quote, answer, resource, ctx.fx);
    return quote;
  },

  // Null while Twilio has no final price; throws when it states one that can never be read (no FX rate).
  finalPrice(object, fx) {
    const status = field(object, "status");
    if (typeof status === "string" && PENDING.has(status.toLowerCase())) return null;
    const stated = statedPrice(object, fx, "reconciled");
    if (typeof stated === "string") throw new Error(stated);
    return stated;
  },
};

function accountCredentials(account: { sid: string; token: string } | undefined): Credentials | null {
  if (!account) return null;
  return {
    headers: { authorization: `Basic ${Buffer.from(`${account.sid}:${account.token}`).toString("base64")}` },
    // Only in the account segment (publicPath has written it as the placeholder), never anywhere else.
    upstreamPath: (path) =>
      path.startsWith(PUBLIC_ACCOUNT) ? `/2010-04-01/Accounts/${account.sid}${path.slice(PUBLIC_ACCOUNT.length)}` : path,
    // `account_sid`, `uri` and `subresource_uris` name the real account (SPEC §2: never in a response). Latin-1
    // keeps every byte of the body as it was but the SID.
    publicAnswer(body) {
      const text = Buffer.from(body).toString("latin1");
      if (!text.includes(account.sid)) return body;
      const bytes = Buffer.from(text.replaceAll(account.sid, ACCOUNT_PLACEHOLDER), "latin1");
      return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
    },
  };
}

const resourceOf = (path: string): Resource => (PRICED.exec(path)![1]!.toLowerCase() === "calls" ? "Calls" : "Messages");

/** Twilio ends the call at TimeLimit and bills every started minute. */
function callHold(body: PricedBody, prices: TwilioPrices): number {
  const limit = body.scalar("TimeLimit");
  let seconds = DEFAULT_TIME_LIMIT_S;
  if (limit !== undefined && limit !== null && limit !== "") {
    seconds = typeof limit === "number" ? limit : typeof limit === "string" && /^\d{1,9}$/.test(limit) ? Number(limit) : NaN;
    if (!Number.isSafeInteger(seconds) || seconds <= 0) throw unpriceable('"TimeLimit" must be a positive whole number of seconds');
  }
  return unitPriceMicros(prices.callUsd, Math.ceil(seconds / 60));
}

/**
 * Segments times the destination's price per segment. A message with media (or sent as MMS, or a template,
 * which may carry media) costs the MMS price; where MMS is not carried Twilio sends the text plus a short link
 * to the media as SMS instead, one segment more: the dearer of the two is held.
 */
function messageHold(body: PricedBody, prices: TwilioPrices): number {
  const perSegment = smsPrice(body.scalar("To"), prices.smsUsdTo);
  const segments = countedSegments(body) ?? MAX_SMS_SEGMENTS;
  if (!mayCarryMedia(body)) return unitPriceMicros(perSegment, segments);
  return Math.max(unitPriceMicros(prices.mmsUsd, 1), unitPriceMicros(perSegment, segments + 1));
}

/** The Body's segments, or null when Keybrake cannot count what Twilio will send: a template, or not plain text. */
function countedSegments(body: PricedBody): number | null {
  if (given(body.scalar("ContentSid"))) return null;
  const text = body.scalar("Body") ?? "";
  // U+FFFD stands for bytes that are not UTF-8: how Twilio would count them is unknown.
  if (typeof text !== "string" || text.includes("\uFFFD")) return null;
  return smsSegments(text);
}

function mayCarryMedia(body: PricedBody): boolean {
  const asMms = body.scalar("SendAsMms");
  return body.list("MediaUrl").length > 0 || given(body.scalar("ContentSid")) || (given(asMms) && String(asMms).toLowerCase() !== "false");
}

const given = (v: unknown) => v !== undefined && v !== null && v !== "";

/** Per segment to `To`: its country's price, the dearest where the number does not tell (US or Canada), else `*`. */
function smsPrice(to: unknown, table: SmsPrices): number {
  const countries = typeof to === "string" ? destinationCountries(to) : [];
  if (countries.length === 0) return table["*"];
  return Math.max(...countries.map((c) => table[c] ?? table["*"]));
}

/**
 * The answer's `price` when Twilio states it; else the hold, with where the reconciler reads the final price
 * later (Twilio states it once the message is sent or the call has ended). An XML answer names no resource the
 * reconciler could read, so its call stays at the hold: a stated maximum.
 */
function settleAnswer(quote: Quote, answer: unknown, resource: Resource, fx: Record<string, string>): Settlement {
  const stated = statedPrice(answer, fx, "response");
  if (typeof stated === "string") return unreadableAnswer(quote, stated);
  if (stated) return stated;
  const sid = field(answer, "sid");
  const known = typeof sid === "string" && /^[A-Za-z0-9]{2,64}$/.test(sid);
  return { ...atHold(quote, "estimate"), ...(known ? { reconcilePath: `${PUBLIC_ACCOUNT}/${resource}/${sid}.json` } : {}) };
}

/**
 * Twilio's `price` of a message or call: a negative decimal string ("-0.00750") in `price_unit`, null until
 * Twilio knows it. Null when absent; a string saying why when it is there but cannot be read or converted.
 */
function statedPrice(resource: unknown, fx: Record<string, string>, source: CostSource): Settlement | null | string {
  const price = field(resource, "price");
  if (price === undefined || price === null) return null;
  const unit = field(resource, "price_unit");
  if (typeof price !== "string" || !/^-?\d+(\.\d+)?$/.test(price)) return `Twilio's price ${JSON.stringify(price)} is not a decimal`;
  if (typeof unit !== "string" || !/^[A-Za-z]{3}$/.test(unit)) return `Twilio's price_unit ${JSON.stringify(unit)} is not a currency`;
  const [whole, frac = ""] = price.replace("-", "").split(".");
  const currency = unit.toUpperCase();
  if (currency !== "USD" && fx[currency] === undefined) return `no KEYBRAKE_FX rate for Twilio's price_unit ${currency}`;
  return {
    costMicros: decimalToMicros(BigInt(whole! + frac), frac.length, currency, fx),
    source,
    currency: currency.toLowerCase(),
    amountMinor: null,
  };
}

const field = (object: unknown, name: string): unknown =>
  typeof object === "object" && object !== null && !Array.isArray(object) ? (object as Record<string, unknown>)[name] : undefined;

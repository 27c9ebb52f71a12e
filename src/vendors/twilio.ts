import { z } from "zod";
import { ConfigError, httpUrl, int, secret, unitPrice } from "../env";
import { readPricedBody, type PricedBody } from "./body";
import { decimalToMicros, unitPriceMicros } from "./currency";
import { MAX_SMS_SEGMENTS, type DestinationPrices, destinationPrice, destinationPrices, destinationPriceTable, smsSegments } from "./sms";
import {
  type CallPrices,
  type VoiceOptions,
  VOICE_PRICED_FIELDS,
  callCreateHold,
  callPriceTable,
  callPrices,
  callUpdateHold,
  inlineTwimlLegs,
  participantHold,
  participantUpdateHold,
} from "./twilio-voice";
import { Catalogue, credential, free, priced, refused } from "./catalogue";
import {
  atHold,
  unreadableAnswer,
  type CostSource,
  type Credentials,
  type PriceFn,
  type Quote,
  type Settlement,
  type Vendor,
} from "./types";

interface TwilioPrices {
  /** Per SMS segment, by destination. */
  smsUsdTo: DestinationPrices;
  mmsUsd: number;
  /** Per started minute of an outbound call, by destination. */
  callUsdTo: CallPrices;
  /** KEYBRAKE_TWILIO_CALL_URL=allow: calls whose TwiML Twilio fetches later are accepted, only what is seen held. */
  voice: VoiceOptions;
}

/**
 * SMS prices when KEYBRAKE_TWILIO_SMS_PRICES does not name the destination (it adds to and overrides these). The
 * US and Canada default to KEYBRAKE_TWILIO_SMS_USD; GB is Twilio's UK list price. `*` is any other destination,
 * held high on purpose: Twilio's dearest list prices reach about $0.30 a segment (Nepal, Trinidad and Tobago).
 */
export const DEFAULT_SMS_PRICES = { GB: 0.0524, "*": 0.5 };

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

/** Fields a message's price is read from: refused in the query string, where Twilio could read them instead of the body's. */
const MESSAGE_FIELDS = ["To", "Body", "MediaUrl", "SendAsMms", "ContentSid"];

/** Statuses in which a message's or call's price is not final yet (it may still be null, or change). */
const PENDING = new Set(["queued", "accepted", "scheduled", "sending", "receiving", "initiated", "ringing", "in-progress"]);

type Resource = "Messages" | "Calls";

/** Where the reconciler reads a call's or message's final price: the answer's field naming its sid. */
interface Reconciled {
  resource: Resource;
  sidField: string;
}

/**
 * Class 3 (SPEC §6): the final price is known only after the call, so the hold is a stated maximum. `reconciled`
 * names the message or call whose final price the reconciler reads later; where it is null the hold is the cost.
 */
const classThree =
  (fields: string[], hold: (body: PricedBody, prices: TwilioPrices) => number, reconciled: (body: PricedBody) => Reconciled | null) =>
  (): PriceFn<TwilioPrices> =>
  async (input, ctx) => {
    const body = readPricedBody(input.contentType, input.body, input.query, fields);
    const to = body.scalar("To");
    const quote: Quote = {
      micros: hold(body, ctx.prices),
      source: "estimate",
      currency: "usd",
      amountMinor: null,
      // A live call's update names no destination: its legs are counted under none.
      counterparty: { kind: "destination", id: typeof to === "string" && to !== "" ? to : null },
    };
    const later = reconciled(body);
    if (later) quote.settle = (answer) => settleAnswer(quote, answer, later, ctx.fx);
    return quote;
  };

const never = () => null;
const message = classThree(MESSAGE_FIELDS, messageHold, () => ({ resource: "Messages", sidField: "sid" }));
// The legs a call's TwiML dials are calls of their own, which the parent's final price leaves out: such a call
// stays at its hold rather than be re-settled below what its legs cost. A live call's update is the same.
const callCreate = classThree(
  VOICE_PRICED_FIELDS,
  (b, p) => callCreateHold(b, p.callUsdTo, p.voice),
  (b) => (dialsLegs(b) ? null : { resource: "Calls", sidField: "sid" }),
);
const callUpdate = classThree(VOICE_PRICED_FIELDS, (b, p) => callUpdateHold(b, p.callUsdTo, p.voice), never);
const participant = classThree(
  VOICE_PRICED_FIELDS,
  (b, p) => participantHold(b, p.callUsdTo, p.voice),
  () => ({
    resource: "Calls",
    sidField: "call_sid",
  }),
);
const participantUpdate = classThree(VOICE_PRICED_FIELDS, (b, p) => participantUpdateHold(b, p.voice), never);

/** Whether the call's inline TwiML dials any leg (read after the hold, which has already refused what it cannot see). */
function dialsLegs(body: PricedBody): boolean {
  const twiml = body.scalar("Twiml");
  return typeof twiml === "string" && twiml !== "" && inlineTwimlLegs(twiml, { allowUrl: true }).legs.length > 0;
}

/**
 * SPEC §6, Twilio: every endpoint Keybrake forwards, under the account placeholder (any SID the job writes stands
 * for the configured account). Twilio routes `Messages`, `Messages.json` and `Messages.xml` to one endpoint: every
 * shape takes either extension or none, in any case. Reads of any of them are free.
 */
export const TWILIO_CATALOGUE = new Catalogue<PriceFn<TwilioPrices>>(
  [
    ...priced("class 3: segments × the destination's SMS price (MMS with media)", message(), `${PUBLIC_ACCOUNT}/Messages`),
    ...priced(
      "class 3: TimeLimit minutes × the destination's per-minute price, plus each leg its inline Twiml dials; a Url call is refused",
      callCreate(),
      `${PUBLIC_ACCOUNT}/Calls`,
    ),
    ...priced(
      "a live call's new Twiml, priced as its legs; hanging up is free; a Url is refused",
      callUpdate(),
      `${PUBLIC_ACCOUNT}/Calls/{call}`,
    ),
    ...priced(
      "class 3: a participant is an outbound call, TimeLimit minutes × the destination's price",
      participant(),
      `${PUBLIC_ACCOUNT}/Conferences/{conference}/Participants`,
    ),
    ...priced(
      "free (mute, hold, end), but refused when it names TwiML to fetch (AnnounceUrl, HoldUrl, WaitUrl)",
      participantUpdate(),
      `${PUBLIC_ACCOUNT}/Conferences/{conference}`,
      `${PUBLIC_ACCOUNT}/Conferences/{conference}/Participants/{call}`,
    ),
    ...free(
      ["POST", "DELETE"],
      "redacts, cancels or deletes a message already counted when it was sent",
      `${PUBLIC_ACCOUNT}/Messages/{message}`,
      `${PUBLIC_ACCOUNT}/Messages/{message}/Media/{media}`,
    ),
    ...free(["POST"], "delivery feedback", `${PUBLIC_ACCOUNT}/Messages/{message}/Feedback`),
    ...free(["DELETE"], "deletes a call's record", `${PUBLIC_ACCOUNT}/Calls/{call}`),
    ...free(["DELETE"], "removes a participant from a conference", `${PUBLIC_ACCOUNT}/Conferences/{conference}/Participants/{call}`),
    ...free(
      ["DELETE"],
      "deletes a recording",
      `${PUBLIC_ACCOUNT}/Recordings/{recording}`,
      `${PUBLIC_ACCOUNT}/Calls/{call}/Recordings/{recording}`,
    ),
    ...free(
      ["GET"],
      "a read",
      `${PUBLIC_ACCOUNT}/Messages/{message}/Media`,
      `${PUBLIC_ACCOUNT}/Calls/{call}/Recordings`,
      `${PUBLIC_ACCOUNT}/Recordings`,
      `${PUBLIC_ACCOUNT}/Conferences`,
      `${PUBLIC_ACCOUNT}/Balance`,
      `${PUBLIC_ACCOUNT}/Usage/Records`,
      `${PUBLIC_ACCOUNT}/Usage/Records/*`,
      `${PUBLIC_ACCOUNT}/AvailablePhoneNumbers/*`,
    ),
    ...refused("recording a call is billed per minute: money Keybrake does not price", `${PUBLIC_ACCOUNT}/Calls/{call}/Recordings`),
    ...refused(
      "phone numbers bill monthly, and their voice and SMS URLs run TwiML Keybrake never sees",
      `${PUBLIC_ACCOUNT}/IncomingPhoneNumbers`,
      `${PUBLIC_ACCOUNT}/IncomingPhoneNumbers/{number}`,
      `${PUBLIC_ACCOUNT}/IncomingPhoneNumbers/Local`,
      `${PUBLIC_ACCOUNT}/IncomingPhoneNumbers/Mobile`,
      `${PUBLIC_ACCOUNT}/IncomingPhoneNumbers/TollFree`,
    ),
    ...credential("the account resource and its subaccounts carry their auth tokens", "/2010-04-01/Accounts", PUBLIC_ACCOUNT),
    ...credential(
      "API keys and signing keys are credentials",
      `${PUBLIC_ACCOUNT}/Keys`,
      `${PUBLIC_ACCOUNT}/Keys/{key}`,
      `${PUBLIC_ACCOUNT}/SigningKeys`,
      `${PUBLIC_ACCOUNT}/SigningKeys/{key}`,
    ),
    ...credential(
      "Connect apps act on the account; network traversal tokens are credentials",
      `${PUBLIC_ACCOUNT}/ConnectApps`,
      `${PUBLIC_ACCOUNT}/ConnectApps/{app}`,
      `${PUBLIC_ACCOUNT}/AuthorizedConnectApps`,
      `${PUBLIC_ACCOUNT}/AuthorizedConnectApps/{app}`,
      `${PUBLIC_ACCOUNT}/Tokens`,
    ),
  ],
  { extensions: ["json", "xml"], literals: [ACCOUNT_PLACEHOLDER] },
);

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
    KEYBRAKE_TWILIO_SMS_PRICES: destinationPriceTable("GB=0.0524 or *=0.5"),
    KEYBRAKE_TWILIO_CALL_PRICES: callPriceTable,
    KEYBRAKE_TWILIO_CALL_URL: z.enum(["refuse", "allow"], { error: "must be refuse or allow" }).default("refuse"),
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
    const allowUrl = env.KEYBRAKE_TWILIO_CALL_URL === "allow";
    return {
      baseUrl: env.KEYBRAKE_TWILIO_BASE_URL as string,
      credentials: { live: accountCredentials(account(env, "")), test: accountCredentials(account(env, "TEST_")) },
      prices: {
        smsUsdTo: destinationPrices(smsUsd, DEFAULT_SMS_PRICES, env.KEYBRAKE_TWILIO_SMS_PRICES as Record<string, string>),
        mmsUsd: env.KEYBRAKE_TWILIO_MMS_USD as number,
        callUsdTo: callPrices(env.KEYBRAKE_TWILIO_CALL_USD as number, env.KEYBRAKE_TWILIO_CALL_PRICES as Record<string, string>),
        voice: { allowUrl },
      },
      reconcileAfterMs: (env.KEYBRAKE_TWILIO_RECONCILE_AFTER_S as number) * 1000,
      startNotices: allowUrl
        ? [
            "calls whose TwiML Twilio fetches from a Url are forwarded (KEYBRAKE_TWILIO_CALL_URL=allow): the legs that TwiML dials are not held",
          ]
        : [],
    };
  },
  bareRoutes: ["/2010-04-01/*"],
  // The job needs no real identifier: whatever SID it put in the path stands for the configured account.
  publicPath: (path) => path.replace(ACCOUNT_IN_PATH, PUBLIC_ACCOUNT),
  catalogue: TWILIO_CATALOGUE,
  scrubAs: { KEYBRAKE_TWILIO_ACCOUNT_SID: ACCOUNT_PLACEHOLDER, KEYBRAKE_TWILIO_TEST_ACCOUNT_SID: ACCOUNT_PLACEHOLDER },
  requestId: (headers) => headers.get("twilio-request-id"),
  contextHeaders: [],
  honoursIdempotencyKey: false,
  doNotRetryHeaders: {},

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
  };
}

/**
 * Segments times the destination's price per segment. A message with media (or sent as MMS, or a template,
 * which may carry media) costs the MMS price; where MMS is not carried Twilio sends the text plus a short link
 * to the media as SMS instead, one segment more: the dearer of the two is held.
 */
function messageHold(body: PricedBody, prices: TwilioPrices): number {
  const perSegment = destinationPrice(body.scalar("To"), prices.smsUsdTo);
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

/**
 * The answer's `price` when Twilio states it; else the hold, with where the reconciler reads the final price
 * later (Twilio states it once the message is sent or the call has ended). An XML answer names no resource the
 * reconciler could read, so its call stays at the hold: a stated maximum.
 */
function settleAnswer(quote: Quote, answer: unknown, { resource, sidField }: Reconciled, fx: Record<string, string>): Settlement {
  const stated = statedPrice(answer, fx, "response");
  if (typeof stated === "string") return unreadableAnswer(quote, stated);
  if (stated) return stated;
  const sid = field(answer, sidField);
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

import { unpriceable, type PricedBody } from "./body";
import { unitPriceMicros } from "./currency";
import { type DestinationPrices, destinationPrice, destinationPriceTable, destinationPrices } from "./sms";

/**
 * Voice holds (SPEC §6, class 3): the most a call can cost, read from the request alone. Twilio bills every call
 * leg on its own, per started minute, at the price of its destination, so a call is held for its own leg plus
 * every leg its inline TwiML dials. Pure: no I/O, so it can be tested and reasoned about in isolation.
 */

/** USD per started minute of an outbound call, by destination country; `*` for any other destination. */
export type CallPrices = DestinationPrices;

/**
 * One outbound call that a TwiML `<Dial>` places. `to` is the destination as priced (null when the noun names
 * none); `timeLimitS` is the Dial's `timeLimit`, null when it sets none (Twilio then ends the leg at 4 hours).
 */
export interface Leg {
  to: string | null;
  timeLimitS: number | null;
}

/** `allowUrl`: KEYBRAKE_TWILIO_CALL_URL=allow, the operator accepting TwiML that Twilio fetches later, unseen. */
export interface VoiceOptions {
  allowUrl: boolean;
}

/** `GB=0.04,*=5`: USD per minute by destination country, `*` for any other. */
export const callPriceTable = destinationPriceTable("GB=0.04 or *=5");

/**
 * Per-minute prices when KEYBRAKE_TWILIO_CALL_PRICES does not name the destination (it adds to and overrides
 * these); the US and Canada default to KEYBRAKE_TWILIO_CALL_USD. These are upper bounds taken from Twilio's public
 * price list (twilio.com/en-us/voice/pricing/<country>): for each country the dearer of its outbound landline and
 * mobile prices, from a caller ID abroad where Twilio prices by origin, rounded up to the next cent. Discounts,
 * contracts and price changes make an account's real prices differ: operators should set theirs.
 *
 * - GB: landline $0.0158, mobile $0.0305.
 * - FR: landline $0.0187, mobile $0.0404 from an EEA caller ID but $0.1603 from any other (origin-based pricing).
 * - MX: landline $0.016, mobile $0.0473. BR: landline $0.031, mobile $0.0663.
 * - IN: landline $0.0699, mobile $0.0496. JP: landline $0.0746, mobile $0.185.
 * - AU: landline $0.0252, mobile $0.075. SG: landline $0.0423, mobile $0.0578.
 *
 * Other EU countries are left at `*` on purpose: Twilio prices calls to them by the caller ID's origin, and from
 * outside the EEA a mobile minute costs several times the intra-EEA price (France: 4x); only the account's own
 * price list says which applies. `*` is any other destination, `client:`/`sip:` endpoints and anything that is
 * not an E.164 number included. It is held at $5 a minute: ordinary destinations reach about $0.90 (South Sudan,
 * Zimbabwe mobile), but satellite networks (+870, +881, +882) and premium-rate ranges cost several dollars a minute.
 * Premium-rate numbers inside a listed country are held at that country's price; Twilio's Voice Geographic
 * Permissions keep those high-risk ranges blocked unless the account enables them.
 */
export const DEFAULT_CALL_PRICES = {
  GB: 0.04,
  FR: 0.17,
  MX: 0.05,
  BR: 0.07,
  IN: 0.07,
  JP: 0.19,
  AU: 0.08,
  SG: 0.06,
  "*": 5,
};

export const callPrices = (usUsd: number, configured: Record<string, string>): CallPrices =>
  destinationPrices(usUsd, DEFAULT_CALL_PRICES, configured);

/** The form fields the holds read: refused in the query string, where Twilio could read them instead of the body's. */
export const VOICE_PRICED_FIELDS = [
  "To",
  "TimeLimit",
  "Twiml",
  "Url",
  "ApplicationSid",
  // Twilio fetches it when the call's TwiML fails, inline TwiML included: as unseen as `Url`.
  "FallbackUrl",
  "Status",
  "AnnounceUrl",
  "WaitUrl",
  "HoldUrl",
];

/** Twilio ends a call, and a Dial's leg, at 4 hours when nothing sets a shorter limit. */
const MAX_CALL_S = 14_400;

/** Per started minute to `to` (see destinationPrice). */
export const callMinutePrice = destinationPrice;

const legMicros = (usdPerMinute: number, seconds: number) => unitPriceMicros(usdPerMinute, Math.ceil(seconds / 60));

const given = (v: unknown) => v !== undefined && v !== null && v !== "";

/** Read as twilio.ts's callHold reads it: positive whole seconds, else the call is not priced. */
function timeLimit(body: PricedBody, fallback: number): number {
  const limit = body.scalar("TimeLimit");
  if (!given(limit)) return fallback;
  const seconds = typeof limit === "number" ? limit : typeof limit === "string" && /^\d{1,9}$/.test(limit) ? Number(limit) : NaN;
  if (!Number.isSafeInteger(seconds) || seconds <= 0) throw unpriceable('"TimeLimit" must be a positive whole number of seconds');
  return seconds;
}

function twimlText(body: PricedBody): string | null {
  const twiml = body.scalar("Twiml");
  if (!given(twiml)) return null;
  if (typeof twiml !== "string") throw unpriceable('"Twiml" is not text');
  return twiml;
}

/** Fields naming TwiML that Twilio fetches later: refused unless the operator accepts calls Keybrake cannot see. */
function refuseUnseen(body: PricedBody, fields: string[], opts: VoiceOptions) {
  if (opts.allowUrl) return;
  const named = fields.find((f) => given(body.scalar(f)));
  if (named !== undefined)
    throw unpriceable(`"${named}" makes Twilio fetch TwiML that Keybrake cannot see (KEYBRAKE_TWILIO_CALL_URL=allow accepts that)`);
}

const legsMicros = (legs: Leg[], boundS: number, prices: CallPrices) =>
  legs.reduce((sum, leg) => sum + legMicros(callMinutePrice(leg.to, prices), Math.min(leg.timeLimitS ?? MAX_CALL_S, boundS)), 0);

/**
 * `POST …/Calls`: TimeLimit's minutes at the price of `To`, plus every leg the inline `Twiml` dials, each bounded
 * by its Dial's timeLimit and by the call's (a bridged leg ends with its parent). A `Url` or `ApplicationSid`
 * call runs TwiML Keybrake never sees: refused unless allowed, and then only what is visible is held.
 */
export function callCreateHold(body: PricedBody, prices: CallPrices, opts: VoiceOptions): number {
  const seconds = timeLimit(body, MAX_CALL_S);
  const twiml = twimlText(body);
  if (twiml === null && !given(body.scalar("Url")) && !given(body.scalar("ApplicationSid")))
    throw unpriceable('a call needs "Twiml", "Url" or "ApplicationSid"');
  refuseUnseen(body, ["Url", "ApplicationSid", "FallbackUrl"], opts);
  const main = legMicros(callMinutePrice(body.scalar("To"), prices), seconds);
  return main + (twiml === null ? 0 : legsMicros(inlineTwimlLegs(twiml, opts).legs, seconds, prices));
}

/**
 * `POST …/Calls/{sid}`, a live call: hanging up is free; new `Twiml` is held for the legs it dials; a new
 * TimeLimit may lengthen a call whose destination the update does not name, so its minutes are held at the
 * dearest price in the table. Without a TimeLimit each leg is bounded by its own Dial's timeLimit (4 hours by
 * default) rather than by 4 hours flat: the call may have been created with a TimeLimit above 4 hours.
 * With `Url` allowed, the TwiML it fetches is accepted unseen (held at 0, like a `Url` call's legs).
 */
export function callUpdateHold(body: PricedBody, prices: CallPrices, opts: VoiceOptions): number {
  const seconds = given(body.scalar("TimeLimit")) ? timeLimit(body, MAX_CALL_S) : null;
  const twiml = twimlText(body);
  refuseUnseen(body, ["Url", "FallbackUrl"], opts);
  const longer = seconds === null ? 0 : legMicros(Math.max(...Object.values(prices)), seconds);
  return longer + (twiml === null ? 0 : legsMicros(inlineTwimlLegs(twiml, opts).legs, seconds ?? Number.POSITIVE_INFINITY, prices));
}

/**
 * `POST …/Conferences/{sid}/Participants`: Twilio dials `To` as a new outbound call, held like one. The new leg
 * runs no TwiML of its own, but the conference plays `WaitUrl`'s TwiML to it (and `AnnounceUrl`'s, `HoldUrl`'s).
 */
export function participantHold(body: PricedBody, prices: CallPrices, opts: VoiceOptions): number {
  const seconds = timeLimit(body, MAX_CALL_S);
  refuseUnseen(body, ["WaitUrl", "AnnounceUrl", "HoldUrl"], opts);
  return legMicros(callMinutePrice(body.scalar("To"), prices), seconds);
}

/** `POST …/Conferences/{sid}/Participants/{sid}`: mutes, holds and announcements dial nothing, but their URLs return TwiML. */
export function participantUpdateHold(body: PricedBody, opts: VoiceOptions): number {
  refuseUnseen(body, ["AnnounceUrl", "HoldUrl", "WaitUrl"], opts);
  return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// TwiML

/**
 * What each element may contain. Anything not listed (`<Connect>`, `<Pay>`, `<Refer>`, `<Start>`, `<Sms>`, …,
 * or any verb Twilio adds later) is refused: Keybrake cannot tell what it costs or dials.
 */
interface Rule {
  children: readonly string[];
  text: boolean;
}
const VERBS = ["Say", "Play", "Pause", "Dial", "Gather", "Hangup", "Record", "Redirect", "Reject", "Enqueue", "Leave"];
// Amazon Polly and Google voices read these inside <Say>; none fetches anything.
const SSML = ["break", "emphasis", "lang", "p", "phoneme", "prosody", "s", "say-as", "sub", "w", "amazon:domain", "amazon:effect"];
const LEAF: Rule = { children: [], text: true };
const EMPTY: Rule = { children: [], text: false };
const RULES: Record<string, Rule> = {
  Response: { children: VERBS, text: false },
  Say: { children: SSML, text: true },
  ...Object.fromEntries(SSML.map((name) => [name, { children: SSML, text: true }])),
  Play: LEAF,
  Pause: EMPTY,
  Hangup: EMPTY,
  Reject: EMPTY,
  Leave: EMPTY,
  Record: EMPTY,
  Gather: { children: ["Say", "Play", "Pause"], text: false },
  Redirect: LEAF,
  Enqueue: { children: ["Task"], text: true },
  Task: LEAF,
  Dial: { children: ["Number", "Sip", "Client", "Sim", "Application", "WhatsApp", "Conference", "Queue"], text: true },
  Number: LEAF,
  Sip: LEAF,
  Sim: LEAF,
  WhatsApp: LEAF,
  Conference: LEAF,
  Queue: LEAF,
  Client: { children: ["Identity", "Parameter"], text: true },
  Identity: LEAF,
  Application: { children: ["ApplicationSid", "Parameter"], text: false },
  ApplicationSid: LEAF,
  Parameter: EMPTY,
};

/**
 * Every outbound leg an inline TwiML document dials. Refuses (unpriceable) what Keybrake cannot see through:
 * TwiML that Twilio fetches later (unless `allowUrl`; `unseen` then says what was accepted), a verb it does not
 * know, and anything that is not plainly well-formed XML, which another parser might read differently.
 */
export function inlineTwimlLegs(twiml: string, opts: VoiceOptions): { legs: Leg[]; unseen: string[] } {
  const root = parseXml(twiml);
  if (root.name !== "Response") throw unpriceable(`the Twiml's root element is <${root.name}>, not <Response>`);
  const walk: Walk = { legs: [], unseen: [], allowUrl: opts.allowUrl };
  visit(root, walk);
  return { legs: walk.legs, unseen: walk.unseen };
}

interface Walk {
  legs: Leg[];
  unseen: string[];
  allowUrl: boolean;
}

function fetchesTwiml(walk: Walk, what: string) {
  if (!walk.allowUrl)
    throw unpriceable(
      `the Twiml's ${what} makes Twilio fetch TwiML that Keybrake cannot see (KEYBRAKE_TWILIO_CALL_URL=allow accepts that)`,
    );
  walk.unseen.push(what);
}

/** Depth is bounded by the parser (MAX_DEPTH), so this recursion is too. */
function visit(el: XmlElement, walk: Walk) {
  const rule = RULES[el.name]!;
  for (const [name, value] of el.attrs) {
    // `action` and every `…Url` attribute (url, waitUrl, referUrl, …) name a document Twilio fetches for further
    // TwiML; callbacks (`statusCallback`, `recordingStatusCallback`, …) only receive events and return none.
    if (name === "action" || name.endsWith("url")) fetchesTwiml(walk, `<${el.name} ${name}="${value.slice(0, 100)}">`);
  }
  for (const child of el.children) {
    if (typeof child === "string") {
      if (!rule.text && !isBlank(child)) throw unpriceable(`the Twiml's <${el.name}> contains text`);
    } else {
      if (!rule.children.includes(child.name))
        throw unpriceable(`the Twiml has <${child.name}> inside <${el.name}>, which Keybrake cannot price`);
      visit(child, walk);
    }
  }
  switch (el.name) {
    // Without an action both request "the current document's URL" again: for a call that began with a Url (an
    // update of an inbound call, say), that is TwiML Keybrake never saw.
    case "Gather":
    case "Record":
      if (!el.attrs.has("action")) fetchesTwiml(walk, `<${el.name}> without an action`);
      break;
    case "Redirect":
      fetchesTwiml(walk, "<Redirect>");
      break;
    case "Enqueue":
      // TaskRouter's assignment callback (a URL set on the workspace) can dequeue the call to a worker's phone.
      if (el.attrs.has("workflowsid")) fetchesTwiml(walk, "<Enqueue workflowSid>");
      break;
    case "Dial":
      walk.legs.push(...dialLegs(el, walk));
      break;
  }
}

function dialLegs(dial: XmlElement, walk: Walk): Leg[] {
  const timeLimitS = dialTimeLimit(dial);
  const nouns = dial.children.filter((c): c is XmlElement => typeof c !== "string");
  const number = soleText(dial);
  if (number !== "") {
    if (nouns.length > 0) throw unpriceable("the Twiml's <Dial> has both a number and nouns");
    return [{ to: number, timeLimitS }];
  }
  const legs: Leg[] = [];
  for (const noun of nouns) {
    const leg = (to: string) => legs.push({ to: to === "" ? null : to, timeLimitS });
    switch (noun.name) {
      case "Number":
      case "Sip":
        leg(soleText(noun));
        break;
      // The prefixes keep these off the country table (`*`): a client's or SIM's name is not a phone number, and
      // a WhatsApp call is priced by Meta on top of Twilio's minute.
      case "Client": {
        const identity = noun.children.find((c): c is XmlElement => typeof c !== "string" && c.name === "Identity");
        leg(`client:${identity ? soleText(identity) : soleText(noun)}`);
        break;
      }
      case "Sim":
        leg(`sim:${soleText(noun)}`);
        break;
      case "WhatsApp":
        leg(`whatsapp:${soleText(noun)}`);
        break;
      case "Application":
        // The application's Voice URL returns the TwiML that the new leg runs, which can dial further.
        fetchesTwiml(walk, "<Application>");
        leg(`application:${soleText(noun)}`);
        break;
      // <Conference> joins a room and <Queue> bridges a caller already waiting in one: no new call is placed, so
      // no leg is billed here. Everyone else in the room or queue is there through a call of their own, held
      // when it was placed. (Twilio's per-participant conference fee is not a call price and is not held.)
      case "Conference":
      case "Queue":
        break;
    }
  }
  return legs;
}

/** A Dial's `timeLimit`: whole positive seconds, or null when absent (Twilio's 4 hours). */
function dialTimeLimit(dial: XmlElement): number | null {
  const raw = dial.attrs.get("timelimit");
  if (raw === undefined) return null;
  const seconds = /^\d{1,9}$/.test(raw) ? Number(raw) : NaN;
  // Twilio ignores an invalid one with a warning (13216); which limit it then applies is not documented.
  if (!(seconds > 0)) throw unpriceable(`the Twiml's <Dial timeLimit="${raw.slice(0, 20)}"> is not a positive whole number of seconds`);
  return seconds;
}

/**
 * An element's text, trimmed. Text split by a comment (`+44<!-- -->20…`) is refused: whether Twilio joins the
 * pieces or reads one of them decides the destination, and so the price.
 */
function soleText(el: XmlElement): string {
  const pieces = el.children.filter((c): c is string => typeof c === "string" && !isBlank(c));
  if (pieces.length > 1) throw unpriceable(`the Twiml's <${el.name}> text is split`);
  return (pieces[0] ?? "").replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, "");
}

const isBlank = (text: string) => /^[ \t\r\n]*$/.test(text);

// ---------------------------------------------------------------------------------------------------------------
// A strict XML reader for TwiML. Anything beyond plain elements, attributes, text, comments, the five predefined
// entities and character references is refused rather than interpreted: a DOCTYPE can declare entities that expand
// into a <Dial>, and a construct two parsers read differently is exactly where a leg would hide.

interface XmlElement {
  name: string;
  /** Attribute names lower-cased: Keybrake looks attributes up without regard to case. */
  attrs: Map<string, string>;
  children: (XmlElement | string)[];
}

/** Deeper nesting than any real TwiML needs; bounds the work done on a hostile document. */
const MAX_DEPTH = 32;
const NAME = /[A-Za-z_:][A-Za-z0-9._:-]*/y;
// A UTF-8 declaration only: a document that claims another encoding (UTF-7's `+ADw-` is a `<`) reads differently.
const DECLARATION =
  /^<\?xml[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*(["'])1\.0\1([ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*(["'])[Uu][Tt][Ff]-8\3)?([ \t\r\n]+standalone[ \t\r\n]*=[ \t\r\n]*(["'])(?:yes|no)\5)?[ \t\r\n]*\?>/;

/** A character XML does not allow, or U+FFFD: it stands for bytes that were not UTF-8, which Twilio may decode otherwise. */
function hasBadChar(src: string): boolean {
  for (let i = 0; i < src.length; i++) {
    const c = src.charCodeAt(i);
    if ((c < 0x20 && c !== 0x9 && c !== 0xa && c !== 0xd) || c >= 0xfffd) return true;
    if (c >= 0xdc00 && c <= 0xdfff) return true;
    if (c >= 0xd800 && c <= 0xdbff) {
      const low = src.charCodeAt(++i);
      if (!(low >= 0xdc00 && low <= 0xdfff)) return true;
    }
  }
  return false;
}
const WS = /[ \t\r\n]/;

const malformed = (why: string) => unpriceable(`the Twiml is not plain well-formed XML (${why})`);

function parseXml(src: string): XmlElement {
  if (hasBadChar(src)) throw malformed("a character that XML does not allow");
  let i = 0;
  const declaration = DECLARATION.exec(src);
  if (declaration) i = declaration[0].length;
  const stack: XmlElement[] = [];
  let root: XmlElement | null = null;

  const name = (): string => {
    NAME.lastIndex = i;
    const m = NAME.exec(src);
    if (!m) throw malformed(`a name was expected at offset ${i}`);
    i += m[0].length;
    return m[0];
  };
  const skipSpace = (): boolean => {
    const start = i;
    while (i < src.length && WS.test(src[i]!)) i++;
    return i > start;
  };

  while (i < src.length) {
    const lt = src.indexOf("<", i);
    const end = lt === -1 ? src.length : lt;
    if (end > i) {
      const text = decodeText(src.slice(i, end));
      const top = stack[stack.length - 1];
      if (top) top.children.push(text);
      else if (!isBlank(text)) throw malformed("text outside the root element");
      i = end;
      continue;
    }
    if (src.startsWith("<!--", i)) {
      const close = src.indexOf("-->", i + 4);
      if (close === -1) throw malformed("an unclosed comment");
      const body = src.slice(i + 4, close);
      if (body.includes("--") || body.endsWith("-")) throw malformed('"--" inside a comment');
      i = close + 3;
      continue;
    }
    if (src.startsWith("<!", i)) throw malformed("a DOCTYPE, ENTITY or CDATA section");
    if (src.startsWith("<?", i)) throw malformed("a processing instruction");
    if (src.startsWith("</", i)) {
      i += 2;
      const closing = name();
      skipSpace();
      if (src[i] !== ">") throw malformed(`</${closing} is not closed by >`);
      i++;
      const open = stack.pop();
      if (!open || open.name !== closing) throw malformed(`</${closing}> does not close ${open ? `<${open.name}>` : "anything"}`);
      continue;
    }
    i++;
    if (root !== null && stack.length === 0) throw malformed("more than one root element");
    const el: XmlElement = { name: name(), attrs: new Map(), children: [] };
    for (;;) {
      const spaced = skipSpace();
      if (src.startsWith("/>", i) || src[i] === ">") break;
      if (!spaced) throw malformed(`<${el.name}>'s attributes are not separated by spaces`);
      const attr = name();
      skipSpace();
      if (src[i] !== "=") throw malformed(`attribute ${attr} has no value`);
      i++;
      skipSpace();
      const quote = src[i];
      if (quote !== '"' && quote !== "'") throw malformed(`attribute ${attr}'s value is not quoted`);
      const close = src.indexOf(quote, i + 1);
      if (close === -1) throw malformed(`attribute ${attr}'s value is not closed`);
      const raw = src.slice(i + 1, close);
      if (raw.includes("<")) throw malformed(`attribute ${attr}'s value contains <`);
      const key = attr.toLowerCase();
      // XML forbids a repeated attribute; one repeated in another case is refused too, as Twilio might read either.
      if (el.attrs.has(key)) throw malformed(`<${el.name}> has attribute ${attr} twice`);
      el.attrs.set(key, decodeText(raw.replace(/[\t\n\r]/g, " ")));
      i = close + 1;
    }
    const selfClosing = src[i] === "/";
    i += selfClosing ? 2 : 1;
    const parent = stack[stack.length - 1];
    if (parent) parent.children.push(el);
    else root = el;
    if (!selfClosing) {
      if (stack.length >= MAX_DEPTH) throw malformed(`elements nested more than ${MAX_DEPTH} deep`);
      stack.push(el);
    }
  }
  if (stack.length > 0) throw malformed(`<${stack[stack.length - 1]!.name}> is not closed`);
  if (root === null) throw malformed("no root element");
  return root;
}

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

function decodeText(raw: string): string {
  if (raw.includes("]]>")) throw malformed('"]]>" in text');
  return raw.replace(/&([^;&]{0,12});?/g, (ref, body: string) => {
    if (!ref.endsWith(";")) throw malformed("a & that does not start an entity reference");
    const named = ENTITIES[body];
    if (named !== undefined) return named;
    const hex = /^#x([0-9A-Fa-f]{1,6})$/.exec(body);
    const dec = /^#([0-9]{1,7})$/.exec(body);
    const code = hex ? Number.parseInt(hex[1]!, 16) : dec ? Number(dec[1]) : NaN;
    const isChar =
      code === 0x9 ||
      code === 0xa ||
      code === 0xd ||
      (code >= 0x20 && code <= 0xd7ff) ||
      (code >= 0xe000 && code <= 0xfffd) ||
      (code >= 0x10000 && code <= 0x10ffff);
    if (!isChar) throw malformed(`the entity reference ${ref.slice(0, 20)}`);
    return String.fromCodePoint(code);
  });
}

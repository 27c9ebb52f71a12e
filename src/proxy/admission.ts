import type { Config } from "../config";
import { compiledAllowlist, matchEndpoint } from "../endpoints";
import { KeybrakeError } from "../errors";
import type { Balance, HoldRequest, KeyPolicy, RequestLimiter, Store, StoredResponse, Tightest } from "../store/index";
import { iso, microsToUsd, sha256Hex, utcDay } from "../util";
import { unpriceable } from "../vendors/body";
import type { Classification } from "../vendors/catalogue";
import { vendorNamed } from "../vendors/index";
import {
  type AnyVendor,
  type Credentials,
  FREE,
  type PriceFn,
  type PricingContext,
  type Quote,
  type VendorSettings,
} from "../vendors/types";
import { addUpstreamTime, type CallFacts, type ProxyCall, type ProxyDeps, traced } from "./call";
import { presentedVaultKey } from "./credentials";
import { type DryRunVerdict, isDryRun, pricedVerdict } from "./dry-run";
import { callUpstream, parseJson } from "./forward";
import { IDEMPOTENCY_TTL_MS, callFingerprint, idempotencyKeyOf, requireJobChosenKey } from "./idempotency";
import { callId } from "./ids";
import { capExhausted, limitExhausted } from "./notices";
import { normalizeVendorPath } from "./path";
import { wouldDenyCode } from "./would-deny";

/**
 * Everything a call passes before it is forwarded (SPEC §4–§7, §14–§16), as stages in order: auth → vendor → path
 * → allowlist → catalogue → body → rate → idempotency → price → hold. Each stage returns what it found or throws
 * the refusal; `admit` records what they return in the call's facts, from which its audit row is built.
 */

/** A call that passed every check and holds its price. */
export interface Admitted {
  key: KeyPolicy;
  vendor: AnyVendor;
  settings: VendorSettings;
  path: string;
  body: Uint8Array;
  quote: Quote;
  creds: Credentials;
  /** The ledger entry holding the price (null when the call holds nothing). */
  holdId: string | null;
  /** What that entry holds (an entry re-forwarded after an ambiguous attempt may hold more than the quote). */
  holdMicros: number;
  /** Set when an ambiguous attempt's entry is forwarded again: what it counted before. */
  priorCostMicros: number | null;
  day: string;
  /** What the vendor sees for the job's Idempotency-Key: its derivation (SPEC §7). */
  vendorKey: string | null;
  /** The key Keybrake remembers the call by (idempotent methods only). */
  idempotencyKey: string | null;
  /** The key's balances right after the hold, for the X-Keybrake-*-Usd headers. */
  balance: Balance;
  /** The limit (the key's or a budget's) with the least room left once the call was held. */
  tightest: Tightest | null;
  /** An observe-mode key's call past a limit (SPEC §16): the refusal enforcing would have given. */
  wouldDeny: string | null;
}

/** A repeat of a completed call: its stored answer is replayed. */
export interface Replay {
  replay: StoredResponse;
  vendor: AnyVendor;
  key: KeyPolicy;
  /** The key's balances now, for the X-Keybrake-*-Usd headers. */
  balance?: Balance;
}

/** A dry run that passed every check before the hold (SPEC §16): what the hold would decide. */
export interface DryRun {
  dryRun: DryRunVerdict;
}

export async function admit(deps: ProxyDeps, call: ProxyCall, facts: CallFacts): Promise<Admitted | Replay | DryRun> {
  const { request } = call;
  const { method } = request;
  const now = deps.now();
  const key = await presentedKey(deps.store, request.headers);
  facts.key = key;
  // A revoked or expired key's call is refused, and audited under the key: its run sees the refusals.
  if (key.status === "revoked") throw new KeybrakeError("key_revoked");
  if (key.expiresAt <= now) throw new KeybrakeError("key_expired");
  const vendor = vendorFor(call, key);
  facts.vendor = vendor.name;
  const settings = deps.config.vendors[vendor.name];
  if (!settings) throw notConfigured(vendor, key);
  // The Host header is not looked at: the upstream is fixed, so it can neither route nor refuse a call (SPEC §4).
  const normalized = normalizeVendorPath(call.rawPath);
  if (normalized === null) throw new KeybrakeError("bad_path");
  const path = vendor.publicPath(normalized);
  facts.path = path;
  if (!matchEndpoint(compiledAllowlist(key.allowedEndpoints, vendor.publicPath), method, path)) {
    throw new KeybrakeError("endpoint_not_allowed", `${method} ${path} is not in this key's allowed_endpoints.`);
  }
  const endpoint = catalogued(vendor, deps.config, method, path);
  const body = await readBody(request, deps.config.maxBodyBytes);
  await withinRate(deps.rateLimiter, key, now);
  const priced = isPricedCall(endpoint, method, path, request.headers);
  const idempotency = idempotencyOf(call, key, vendor, path, body, priced !== null);
  // Another call under a remembered Idempotency-Key is refused (SPEC §7) by the hold, which compares fingerprints
  // in its own transaction; before it, only where something would come first: a read of the vendor (a pre-flight),
  // a refusal while pricing, a dry run's verdict. Most calls reach the hold with no read of the memory before it.
  const refuseConflict = conflictCheck(deps.store, key, vendor, idempotency.remembered, now);

  const creds = settings.credentials[key.mode];
  let quote: Quote = FREE;
  try {
    if (priced) quote = await priceCall(deps, call, facts, { key, vendor, settings, creds, path, body, endpoint: priced, refuseConflict });
  } catch (err) {
    if (err instanceof KeybrakeError) await refuseConflict();
    throw err;
  }
  facts.quote = quote;
  if (!creds) throw notConfigured(vendor, key);

  const counterparty = counterpartyOf(key, quote);
  if (isDryRun(request.headers)) {
    await refuseConflict();
    const on = { requestId: facts.id, method, path, priced: priced !== null, counterparty };
    return { dryRun: await pricedVerdict(deps.store, key, quote, on, now) };
  }
  const approval = approvalNeeded(key, priced !== null, quote, idempotency.remembered?.key ?? null, now);
  // Derived before the hold (its secret is read from the store once): a store that fails here holds nothing.
  const vendorKey = idempotency.jobKey === null ? null : await deps.deriveIdempotencyKey(key.mintedBy, idempotency.jobKey);
  const remembered = idempotency.remembered;
  const hold = await deps.store.holdSpend({
    holdId: callId("hold_", now),
    keyId: key.id,
    day: utcDay(now),
    micros: quote.micros,
    ledger: priced !== null,
    reuseAmbiguous: vendor.honoursIdempotencyKey,
    now,
    call: { requestId: facts.id, method, path },
    idempotency: remembered ? { ...remembered, ttlMs: IDEMPOTENCY_TTL_MS } : undefined,
    approval,
    counterparty,
    enforce: key.enforcement !== "observe",
  });
  switch (hold.kind) {
    case "admitted":
      return {
        key,
        vendor,
        settings,
        path,
        body,
        quote,
        creds,
        holdId: hold.holdId,
        holdMicros: hold.holdMicros,
        priorCostMicros: hold.priorCostMicros,
        day: hold.day,
        vendorKey,
        idempotencyKey: remembered?.key ?? null,
        balance: hold.balance,
        tightest: hold.tightest,
        wouldDeny: wouldDenyCode(hold.wouldDeny),
      };
    case "replay":
      return { replay: hold.response, vendor, key, balance: hold.balance };
    case "in_flight":
      throw new KeybrakeError("idempotency_in_flight", undefined, { "retry-after": "1" });
    case "conflict":
      throw idempotencyConflict(vendor);
    case "approval_pending":
      throw new KeybrakeError(
        "approval_required",
        `This ${microsToUsd(quote.micros)} USD call is above the key's approval threshold of ${microsToUsd(key.approvalAboveMicros ?? 0)} USD: approval ${hold.approvalId} waits for a person (until ${iso(hold.expiresAt)}); its hold is reserved. Retry with the same Idempotency-Key once it is approved.`,
        { "retry-after": String(APPROVAL_RETRY_AFTER_S), ...vendor.doNotRetryHeaders },
        { approval_id: hold.approvalId, expires_at: iso(hold.expiresAt), price_usd: microsToUsd(quote.micros) },
      );
    case "approval_denied":
      throw new KeybrakeError(hold.kind, undefined, vendor.doNotRetryHeaders, { approval_id: hold.approvalId });
    case "approval_expired":
      throw new KeybrakeError(hold.kind, APPROVAL_EXPIRED_BECAUSE[hold.why], vendor.doNotRetryHeaders, {
        approval_id: hold.approvalId,
      });
    case "denied": {
      if (hold.reason === "revoked") throw new KeybrakeError("key_revoked");
      if (hold.reason === "daily_cap" || hold.reason === "total_cap") throw capExhausted(deps.log, key, hold, quote.micros, now);
      throw limitExhausted(hold, quote.micros, now);
    }
  }
}

/** The presented vault key's policy; an unknown key is refused (401). */
async function presentedKey(store: Store, headers: Headers): Promise<KeyPolicy> {
  const secret = presentedVaultKey(headers);
  const key = secret ? await store.findKeyByHash(sha256Hex(secret)) : null;
  if (!key) throw new KeybrakeError("invalid_key");
  return key;
}

async function withinRate(limiter: RequestLimiter, key: KeyPolicy, now: number): Promise<void> {
  if (key.maxRequestsPerMinute === null) return;
  const wait = await limiter.take(key.id, key.maxRequestsPerMinute, now);
  if (wait > 0) {
    throw new KeybrakeError("rate_limited", `This key allows ${key.maxRequestsPerMinute} requests per minute.`, {
      "retry-after": String(wait),
    });
  }
}

/** What the call's Idempotency-Key means for it (SPEC §7). */
interface CallIdempotency {
  /** The job's Idempotency-Key, any method: the vendor sees its derivation. */
  jobKey: string | null;
  /** What Keybrake remembers the call by (POST, PUT, PATCH, DELETE with a key): the key and the call's fingerprint. */
  remembered: { key: string; fingerprint: string } | null;
}

const IDEMPOTENT_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

function idempotencyOf(
  call: ProxyCall,
  key: KeyPolicy,
  vendor: AnyVendor,
  path: string,
  body: Uint8Array,
  priced: boolean,
): CallIdempotency {
  const { request } = call;
  const jobKey = idempotencyKeyOf(request.headers);
  if (key.requireIdempotencyKey && priced) requireJobChosenKey(jobKey);
  if (jobKey === null || !IDEMPOTENT_METHODS.has(request.method)) return { jobKey, remembered: null };
  const fingerprint = callFingerprint({
    method: request.method,
    path,
    search: call.url.search,
    headers: request.headers,
    contextHeaders: vendor.contextHeaders,
    body,
  });
  return { jobKey, remembered: { key: jobKey, fingerprint } };
}

/**
 * Refuses the call (409) when its Idempotency-Key is remembered with another call's fingerprint: the memory is read
 * once, at the first ask; nothing to ask about without a remembered key.
 */
function conflictCheck(
  store: Store,
  key: KeyPolicy,
  vendor: AnyVendor,
  call: CallIdempotency["remembered"],
  now: number,
): () => Promise<void> {
  let checked: Promise<void> | undefined;
  const check = async () => {
    const remembered = await store.idempotencyFingerprint(key.id, call!.key, now);
    if (remembered !== null && remembered !== call!.fingerprint) throw idempotencyConflict(vendor);
  };
  return call === null ? async () => {} : () => (checked ??= check());
}

/** Why an approval no longer covers its call; each ends with what the job does next. */
const APPROVAL_EXPIRED_BECAUSE = {
  lapsed:
    "The approval lapsed before its call went out; its hold is released. Send the call again with a new Idempotency-Key to ask again.",
  price_rose:
    "The call now costs more than the hold that was approved; the approval is void and its hold released. Send the call again with a new Idempotency-Key to ask again.",
  used: "The approved call went out already, and this retry came after Keybrake stopped remembering its answer: it is not sent twice.",
} as const;

/** How long a job should wait before asking again whether its call was approved. */
const APPROVAL_RETRY_AFTER_S = 60;
/** What an approval request lives when the key sets no `approval_ttl` (SPEC §15). */
const DEFAULT_APPROVAL_TTL_MS = 3_600_000;

/**
 * A priced call above the key's `approval_above_usd` needs a person's approval (SPEC §15), which covers exactly one
 * call: such calls need an Idempotency-Key (400 otherwise). Undefined for every other call.
 */
function approvalNeeded(
  key: KeyPolicy,
  priced: boolean,
  quote: Quote,
  idempotencyKey: string | null,
  now: number,
): HoldRequest["approval"] {
  if (!priced || key.approvalAboveMicros === null || quote.micros <= key.approvalAboveMicros) return undefined;
  // An observed key only notes that the call would wait (SPEC §16): nothing is requested, so no key is needed.
  if (idempotencyKey === null && key.enforcement !== "observe")
    throw new KeybrakeError(
      "idempotency_key_required",
      "A call that needs a person's approval needs an Idempotency-Key: the approval covers exactly that call.",
    );
  return { id: callId("apr_", now), ttlMs: key.approvalTtlMs ?? DEFAULT_APPROVAL_TTL_MS, requestedBy: key.mintedBy };
}

/** The same Idempotency-Key with another call: refused for good, so the vendor's SDK is told not to retry. */
export const idempotencyConflict = (vendor: AnyVendor, message?: string) =>
  new KeybrakeError("idempotency_conflict", message, vendor.doNotRetryHeaders);

/**
 * The call's vendor: its route's, which the key must be for; on a bare path (`/v1/…`, `/emails`), the key's
 * own, provided it claims that path (stripe-node can change only host and port, so its calls come bare).
 */
function vendorFor(call: ProxyCall, key: KeyPolicy): AnyVendor {
  const vendor = call.vendor ?? vendorNamed(key.vendor);
  const mismatch = () =>
    new KeybrakeError(
      "vendor_mismatch",
      `This vault key is for ${key.vendor}, not ${call.vendor?.name ?? `the vendor of ${call.rawPath}`}.`,
    );
  if (!vendor || vendor.name !== key.vendor) throw mismatch();
  if (call.vendor === null && !vendor.bareRoutes.some((route) => claims(route, call.rawPath))) throw mismatch();
  return vendor;
}

/** Whether an Elysia route pattern ("/v1/*", "/emails") covers a path. */
const claims = (route: string, path: string) => (route.endsWith("/*") ? path.startsWith(route.slice(0, -1)) : path === route);

const notConfigured = (vendor: AnyVendor, key: KeyPolicy) =>
  new KeybrakeError("vendor_not_configured", `No ${key.mode} secret is configured for ${vendor.name}.`);

type Endpoint = Classification<PriceFn>;
type PricedEndpoint = Extract<Endpoint, { class: "priced" }>;

/**
 * The call's counterparty as the key caps it (SPEC §14): a Stripe customer under `per_customer_usd_cap` (calls
 * naming none share one "none" bucket), a Twilio destination under `per_destination_usd_cap`; none otherwise.
 */
function counterpartyOf(key: KeyPolicy, quote: Quote): HoldRequest["counterparty"] {
  const c = quote.counterparty;
  if (!c) return undefined;
  const capMicros = c.kind === "customer" ? key.perCustomerCapMicros : key.perDestinationCapMicros;
  if (capMicros === null || capMicros === undefined) return undefined;
  return { id: `${c.kind === "customer" ? "customer" : "to"}:${c.id ?? "none"}`, capMicros };
}

/**
 * The call by its vendor's closed catalogue (SPEC §6): credential endpoints are refused whatever the method, and
 * what the catalogue does not know is refused unless the operator's KEYBRAKE_<VENDOR>_FREE_ENDPOINTS name it.
 */
function catalogued(vendor: AnyVendor, config: Config, method: string, path: string): Endpoint {
  const endpoint = vendor.catalogue.classify(method, path);
  if (endpoint.class === "credential") {
    throw new KeybrakeError(
      "credential_endpoint_refused",
      `${method} ${path} manages ${vendor.name} credentials or accounts (${endpoint.entry.why}); Keybrake never forwards it.`,
    );
  }
  if (endpoint.class !== "not_catalogued") return endpoint;
  if (matchEndpoint(config.freeEndpoints[vendor.name]?.compiled ?? [], method, path))
    return { class: "free", entry: null, why: "the operator's free endpoints" };
  throw new KeybrakeError(
    "endpoint_not_catalogued",
    `${method} ${path} is not in Keybrake's ${vendor.name} catalogue, so what it costs is unknown; nothing was forwarded.`,
  );
}

/**
 * The priced entry when the call is priced (a POST on a priced path), else null. Other methods than GET/HEAD/POST
 * on a priced path, calls that move money Keybrake does not price, and compressed priced bodies (which Keybrake
 * cannot read as the vendor will) are refused, never forwarded at $0.
 */
function isPricedCall(endpoint: Endpoint, method: string, path: string, headers: Headers): PricedEndpoint | null {
  if (endpoint.class === "free") return null;
  if (endpoint.class === "refused")
    throw unpriceable(`${method} ${path} can move money and Keybrake does not price it (${endpoint.entry.why})`);
  if (endpoint.class !== "priced")
    throw new KeybrakeError("method_not_priced", `${method} is not allowed on ${path}: it is priced for POST only.`);
  const encoding = headers.get("content-encoding");
  if (encoding !== null && encoding.trim().toLowerCase() !== "identity") throw unpriceable(`the body is compressed (${encoding})`);
  return endpoint;
}

interface PricedCall {
  key: KeyPolicy;
  vendor: AnyVendor;
  settings: VendorSettings;
  creds: Credentials | null;
  path: string;
  body: Uint8Array;
  endpoint: PricedEndpoint;
  /** Asked before the vendor is read: see conflictCheck. */
  refuseConflict: () => Promise<void>;
}

/** The call's quote from its vendor's price function (SPEC §6): what its hold must be. */
function priceCall(deps: ProxyDeps, call: ProxyCall, facts: CallFacts, p: PricedCall): Promise<Quote> {
  const { request } = call;
  return p.endpoint.entry.price!(
    {
      method: request.method,
      path: p.path,
      query: call.url.searchParams,
      contentType: request.headers.get("content-type"),
      body: p.body,
      keyId: p.key.id,
      ids: p.endpoint.ids,
    },
    {
      fx: deps.config.fx,
      prices: p.settings.prices,
      findTracked: (id) => deps.store.findTracked(id),
      preflight: preflightReader(deps, facts, p, request.headers),
    },
  );
}

/** Class 2's pre-flight read (SPEC §6), with the real secret and the call's context headers; its time counts as upstream time. */
function preflightReader(deps: ProxyDeps, facts: CallFacts, p: PricedCall, incoming: Headers): PricingContext["preflight"] {
  const { vendor, creds } = p;
  return async (path) => {
    // A call the hold would refuse as another under a remembered Idempotency-Key never reads the vendor.
    await p.refuseConflict();
    if (!creds) throw notConfigured(vendor, p.key);
    const headers = new Headers(creds.headers);
    for (const name of vendor.contextHeaders) {
      const value = incoming.get(name);
      if (value !== null) headers.set(name, value);
    }
    const started = performance.now();
    const result = await traced(deps, facts.id, "preflight", headers, () =>
      callUpstream(p.settings.baseUrl + creds.upstreamPath(path), {
        method: "GET",
        headers,
        body: null,
        timeoutMs: deps.config.upstreamTimeoutMs,
      }),
    );
    addUpstreamTime(facts, started);
    const failed = (why: string) =>
      new KeybrakeError(
        "preflight_failed",
        `Keybrake could not read ${path} from ${vendor.name} to price this call (${why}); nothing was forwarded.`,
      );
    if (result.kind !== "response") throw failed(result.kind === "timeout" ? "timed out" : "unreachable");
    if (result.status !== 200) throw failed(`${vendor.name} answered ${result.status}`);
    const object = parseJson(result.body);
    if (typeof object !== "object" || object === null || Array.isArray(object)) throw failed("the answer is not a JSON object");
    return object as Record<string, unknown>;
  };
}

async function readBody(request: Request, limit: number): Promise<Uint8Array> {
  const tooLarge = () => new KeybrakeError("body_too_large", `Request bodies are limited to ${limit} bytes.`);
  const length = request.headers.get("content-length");
  if (Number(length ?? "0") > limit) throw tooLarge();
  if (!request.body) return new Uint8Array(0);
  try {
    // A declared length within the limit is what Bun will deliver: read it whole. Chunked bodies are counted.
    if (length !== null) return new Uint8Array(await request.arrayBuffer());
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of request.body) {
      size += chunk.length;
      if (size > limit) throw tooLarge();
      chunks.push(chunk);
    }
    return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
  } catch (err) {
    if (err instanceof KeybrakeError) throw err;
    // The client closed the connection before the body's end: the stream fails with no message. A refusal
    // like any other, so the attempt is audited and the hold is never taken.
    throw new KeybrakeError("request_aborted");
  }
}

import type { Config } from "../config";
import { KeybrakeError, errorResponse } from "../errors";
import {
  auditRow,
  isStoreOutage,
  storeUnavailable,
  type AuditRow,
  type Balance,
  type HoldRequest,
  type IdempotencyResult,
  type Tightest,
  type KeyPolicy,
  type Outcome,
  type RequestLimiter,
  type Store,
  type StoredResponse,
} from "../store/index";
import { MAX_STORED_RESPONSE_BYTES } from "../store/ledger-shared";
import { formatUsd, iso, microsToUsd, sha256Hex, utcDay } from "../util";
import { unpriceable } from "../vendors/body";
import { vendorNamed } from "../vendors/index";
import type { Classification } from "../vendors/catalogue";
import {
  FREE,
  atHold,
  type AnyVendor,
  type PriceFn,
  type Credentials,
  type PricingContext,
  type Quote,
  type Settlement,
  type VendorSettings,
} from "../vendors/types";
import { presentedVaultKey } from "./credentials";
import { compiledAllowlist, matchEndpoint } from "../endpoints";
import { callId } from "./ids";
import {
  callUpstream,
  callUpstreamStreaming,
  clientResponseHeaders,
  upstreamRequestHeaders,
  type UpstreamResult,
  type UpstreamStream,
} from "./forward";
import { IDEMPOTENCY_TTL_MS, callFingerprint, idempotencyKeyOf, requireJobChosenKey } from "./idempotency";
import { balanceHeaders, capExhausted, limitExhausted, logVendorFailure, vendorFailed } from "./notices";
import { normalizeVendorPath } from "./path";
import type { Scrubber } from "./scrub";
import { type Logger, logStoreOutage } from "../ops/log";
import type { Metrics } from "../ops/metrics";
import type { Stage, Tracing } from "../ops/tracing";
import type { UnauthenticatedDenials } from "./unauthenticated";
import { answerDryRun, type DryRunVerdict, isDryRun, isDryRunDecision, pricedVerdict, refusedVerdict } from "./dry-run";
import { wouldDenyCode } from "./would-deny";

export interface ProxyDeps {
  config: Config;
  store: Store;
  now: () => number;
  rateLimiter: RequestLimiter;
  metrics: Metrics;
  /** Notable events only (a cap's first hit per key and day, vendor failures, settlement failures), never every call. */
  log: Logger;
  /** The Idempotency-Key the vendor sees for a job's key (see idempotency.ts). */
  deriveIdempotencyKey: (mintedBy: string, jobKey: string) => Promise<string>;
  /** Audits `invalid_key` denials per client and minute, so a flood cannot grow the database per request. */
  unauthenticated: UnauthenticatedDenials;
  /** Replaces every configured secret in a vendor's answer, whole or streamed (see scrub.ts). */
  scrub: Scrubber;
  /**
   * Answer only once the settlement is committed. Several instances (PostgreSQL) need it: a retry or a spend
   * read at another instance cannot commit this one's queued settlement first, as a read in this process does.
   */
  answerAfterSettlement?: boolean;
  /** OpenTelemetry, when the OTEL_* variables ask for it (ops/tracing.ts); its store traces holds and settlements. */
  tracing?: Tracing;
}

export interface ProxyCall {
  request: Request;
  /** The vendor of a `/{vendor}/…` route; null on a bare path, which is the presented key's vendor's. */
  vendor: AnyVendor | null;
  url: URL;
  /** The path after the vendor prefix, as Bun delivered it. */
  rawPath: string;
  clientIp: string | null;
}

/** A repeat of a completed call: its stored answer is replayed. */
interface Replay {
  replay: StoredResponse;
  vendor: AnyVendor;
  key: KeyPolicy;
  /** The key's balances now, for the X-Keybrake-*-Usd headers. */
  balance?: Balance;
}

/** A dry run that passed every check before the hold (SPEC §16): what the hold would decide. */
interface DryRun {
  dryRun: DryRunVerdict;
}

/** A call that passed every check and holds its price. */
interface Admitted {
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
}

const IDEMPOTENT_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** auth -> vendor -> path safety -> allowlist -> body size -> rate -> idempotency -> price -> secret -> hold -> forward -> settle -> audit */
export async function handleProxy(deps: ProxyDeps, call: ProxyCall): Promise<Response> {
  const started = performance.now();
  const { request } = call;
  const at = deps.now();
  const audit = auditRow({
    id: callId("kbr_", at),
    at,
    vendor: call.vendor?.name ?? null,
    method: request.method,
    path: call.rawPath.slice(0, 2048),
    decision: "allowed",
    idempotencyKey: request.headers.get("idempotency-key")?.slice(0, 255) ?? null,
    clientIp: call.clientIp,
  });
  deps.tracing?.startCall(audit.id, request);
  const pipeline = runPipeline(deps, call, audit, started);
  deps.tracing?.finish(
    audit.id,
    pipeline.then((a) => a.settled),
    audit,
  );
  const { response, settled, streamed } = await pipeline;
  settled.then(
    (row) => deps.metrics.record(row),
    (err) =>
      deps.log.error(
        "settlement_failed",
        `the settlement of ${audit.id} failed to commit; its hold stays counted: ${err instanceof Error ? err.message : String(err)}`,
        { request_id: audit.id, key_id: audit.keyId },
      ),
  );
  if (deps.answerAfterSettlement && !streamed) await settled.catch(() => {});
  return response;
}

/** An answer, and the write that finishes its call (committed right after the answer leaves): its audit row as written. */
interface Answered {
  response: Response;
  settled: Promise<AuditRow>;
  /** A stream settles when it ends, after its first byte has left (passStream). */
  streamed?: boolean;
}

const answered = (response: Response, audit: AuditRow): Answered => ({ response, settled: Promise.resolve(audit) });

async function runPipeline(deps: ProxyDeps, call: ProxyCall, audit: AuditRow, started: number): Promise<Answered> {
  let admitted: Admitted | Replay | DryRun;
  try {
    admitted = await admit(deps, call, audit);
  } catch (thrown) {
    // The ledger cannot be reached: nothing was held or forwarded, so the job may retry (503), never a 500.
    const outage = isStoreOutage(thrown);
    if (outage) logStoreOutage(deps.log, thrown, deps.now());
    const err = outage ? storeUnavailable() : thrown;
    if (!(err instanceof KeybrakeError)) throw err;
    if (isDryRunDecision(call.request, err)) return answered(await answerDryRun(deps.store, audit, refusedVerdict(err), started), audit);
    audit.status = err.status;
    audit.decision = err.code;
    audit.overheadMs = performance.now() - started;
    try {
      await (audit.decision === "invalid_key" ? deps.unauthenticated.record(audit) : deps.store.recordAudit(audit));
    } catch (auditErr) {
      // A refusal still answers when the store is down; its row is lost with the store, as every write is.
      if (!isStoreOutage(auditErr)) throw auditErr;
    }
    const headers: Record<string, string> = { "x-keybrake-request-id": audit.id };
    if (audit.keyId) headers["x-keybrake-key-id"] = audit.keyId;
    return answered(errorResponse(err, headers), audit);
  }
  if ("replay" in admitted) return answered(await replay(deps, admitted, audit, started), audit);
  if ("dryRun" in admitted) return answered(await answerDryRun(deps.store, audit, admitted.dryRun, started), audit);
  return forwardAndSettle(deps, call, admitted, audit, started);
}

async function admit(deps: ProxyDeps, call: ProxyCall, audit: AuditRow): Promise<Admitted | Replay | DryRun> {
  const { request } = call;
  const { store, config } = deps;
  const secret = presentedVaultKey(request.headers);
  const key = secret ? await store.findKeyByHash(sha256Hex(secret)) : null;
  if (!key) throw new KeybrakeError("invalid_key");
  audit.keyId = key.id;
  audit.label = key.label;
  audit.mode = key.mode;
  const now = deps.now();
  if (key.status === "revoked") throw new KeybrakeError("key_revoked");
  if (key.expiresAt <= now) throw new KeybrakeError("key_expired");
  const vendor = vendorFor(call, key);
  audit.vendor = vendor.name;
  const settings = config.vendors[vendor.name];
  if (!settings) throw notConfigured(vendor, key);

  // The Host header is not looked at: the upstream is fixed, so it can neither route nor refuse a call (SPEC §4).
  const normalized = normalizeVendorPath(call.rawPath);
  if (normalized === null) {
    throw new KeybrakeError("bad_path");
  }
  const creds = settings.credentials[key.mode];
  const path = vendor.publicPath(normalized);
  audit.path = path;
  if (!matchEndpoint(compiledAllowlist(key.allowedEndpoints, vendor.publicPath), request.method, path)) {
    throw new KeybrakeError("endpoint_not_allowed", `${request.method} ${path} is not in this key's allowed_endpoints.`);
  }
  const endpoint = catalogued(vendor, config, request.method, path);

  const body = await readBody(request, config.maxBodyBytes);

  if (key.maxRequestsPerMinute !== null) {
    const wait = await deps.rateLimiter.take(key.id, key.maxRequestsPerMinute, now);
    if (wait > 0) {
      throw new KeybrakeError("rate_limited", `This key allows ${key.maxRequestsPerMinute} requests per minute.`, {
        "retry-after": String(wait),
      });
    }
  }
  const jobKey = idempotencyKeyOf(request.headers);
  const priced = isPricedCall(endpoint, request.method, path, request.headers);
  if (key.requireIdempotencyKey && priced) requireJobChosenKey(jobKey);

  const idempotencyKey = IDEMPOTENT_METHODS.has(request.method) ? jobKey : null;
  const fingerprint = idempotencyKey
    ? callFingerprint({
        method: request.method,
        path,
        search: call.url.search,
        headers: request.headers,
        contextHeaders: vendor.contextHeaders,
        body,
      })
    : null;
  // Another call under a remembered Idempotency-Key is refused before anything reaches the vendor (SPEC §7). The
  // hold compares fingerprints in its own transaction, so the store is read here only where something could come
  // before it: a pre-flight read of the vendor, or a refusal while pricing (the conflict is the answer then).
  let conflictChecked = idempotencyKey === null;
  const refuseConflict = async () => {
    if (conflictChecked) return;
    conflictChecked = true;
    const remembered = await store.idempotencyFingerprint(key.id, idempotencyKey!, now);
    if (remembered !== null && remembered !== fingerprint) throw idempotencyConflict(vendor);
  };
  const preflight = preflightReader(deps, vendor, settings, key, creds, request.headers, audit);
  let quote: Quote;
  try {
    quote = priced
      ? await priced.entry.price!(
          {
            method: request.method,
            path,
            query: call.url.searchParams,
            contentType: request.headers.get("content-type"),
            body,
            keyId: key.id,
            ids: priced.ids,
          },
          {
            fx: config.fx,
            prices: settings.prices,
            findTracked: (id) => store.findTracked(id),
            preflight: async (objectPath) => {
              await refuseConflict();
              return preflight(objectPath);
            },
          },
        )
      : FREE;
    audit.currency = quote.currency;
    audit.amountMinor = quote.amountMinor;
    audit.costSource = quote.source;
    if (!creds) throw notConfigured(vendor, key);
  } catch (err) {
    if (err instanceof KeybrakeError) await refuseConflict();
    throw err;
  }

  if (isDryRun(request.headers)) {
    await refuseConflict();
    const on = { requestId: audit.id, method: request.method, path, priced: priced !== null, counterparty: counterpartyOf(key, quote) };
    return { dryRun: await pricedVerdict(store, key, quote, on, now) };
  }

  const approval = approvalNeeded(key, priced !== null, quote, idempotencyKey, now);
  // Derived before the hold (its secret is read from the store once): a store that fails here holds nothing.
  const vendorKey = jobKey === null ? null : await deps.deriveIdempotencyKey(key.mintedBy, jobKey);
  const holdId = callId("hold_", now);
  const hold = await store.holdSpend({
    holdId,
    keyId: key.id,
    day: utcDay(now),
    micros: quote.micros,
    ledger: priced !== null,
    reuseAmbiguous: vendor.honoursIdempotencyKey,
    now,
    call: { requestId: audit.id, method: request.method, path },
    idempotency: idempotencyKey ? { key: idempotencyKey, fingerprint: fingerprint!, ttlMs: IDEMPOTENCY_TTL_MS } : undefined,
    approval,
    counterparty: counterpartyOf(key, quote),
    enforce: key.enforcement !== "observe",
  });
  switch (hold.kind) {
    case "admitted":
      audit.holdMicros = hold.holdMicros;
      audit.wouldDeny = wouldDenyCode(hold.wouldDeny);
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
        idempotencyKey,
        balance: hold.balance,
        tightest: hold.tightest,
      };
    case "replay":
      return { replay: hold.response, vendor, key, balance: hold.balance };
    case "in_flight":
      throw new KeybrakeError("idempotency_in_flight", undefined, { "retry-after": "1" });
    case "conflict":
      throw idempotencyConflict(vendor);
    case "approval_pending":
      audit.holdMicros = quote.micros;
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
const idempotencyConflict = (vendor: AnyVendor, message?: string) =>
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
function isPricedCall(endpoint: Endpoint, method: string, path: string, headers: Headers): Extract<Endpoint, { class: "priced" }> | null {
  if (endpoint.class === "free") return null;
  if (endpoint.class === "refused")
    throw unpriceable(`${method} ${path} can move money and Keybrake does not price it (${endpoint.entry.why})`);
  if (endpoint.class !== "priced")
    throw new KeybrakeError("method_not_priced", `${method} is not allowed on ${path}: it is priced for POST only.`);
  const encoding = headers.get("content-encoding");
  if (encoding !== null && encoding.trim().toLowerCase() !== "identity") throw unpriceable(`the body is compressed (${encoding})`);
  return endpoint;
}

/** Class 2's pre-flight read (SPEC §6), with the real secret and the call's context headers; its time counts as upstream time. */
function preflightReader(
  deps: ProxyDeps,
  vendor: AnyVendor,
  settings: VendorSettings,
  key: KeyPolicy,
  creds: Credentials | null,
  incoming: Headers,
  audit: AuditRow,
): PricingContext["preflight"] {
  return async (path) => {
    if (!creds) throw notConfigured(vendor, key);
    const headers = new Headers(creds.headers);
    for (const name of vendor.contextHeaders) {
      const value = incoming.get(name);
      if (value !== null) headers.set(name, value);
    }
    const started = performance.now();
    const result = await traced(deps, audit, "preflight", headers, () =>
      callUpstream(settings.baseUrl + creds.upstreamPath(path), {
        method: "GET",
        headers,
        body: null,
        timeoutMs: deps.config.upstreamTimeoutMs,
      }),
    );
    audit.upstreamMs = (audit.upstreamMs ?? 0) + (performance.now() - started);
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

function parseJson(body: ArrayBuffer): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(body));
  } catch {
    return null;
  }
}

/** A request to the vendor, as a traced stage when tracing is on: its headers then carry the stage's traceparent. */
const traced = <T>(deps: ProxyDeps, audit: AuditRow, stage: Stage, headers: Headers, work: () => Promise<T>): Promise<T> =>
  deps.tracing ? deps.tracing.stage(audit.id, stage, work, headers) : work();

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

async function forwardAndSettle(deps: ProxyDeps, call: ProxyCall, a: Admitted, audit: AuditRow, started: number): Promise<Answered> {
  const { request } = call;
  const upstreamStarted = performance.now();
  const url = a.settings.baseUrl + a.creds.upstreamPath(a.path) + call.url.search;
  const init = {
    method: request.method,
    headers: upstreamRequestHeaders(request.headers, a.creds.headers, a.vendorKey),
    body: request.method === "GET" || request.method === "HEAD" ? null : (a.quote.forwardBody ?? a.body),
    timeoutMs: deps.config.upstreamTimeoutMs,
  };
  // A client that has gone (it closed the connection, or pipelined requests Bun will not answer) gets nothing
  // forwarded: its hold is released as for a call that never left.
  const result = request.signal.aborted
    ? ({ kind: "not_sent" } as const)
    : await traced(deps, audit, "upstream", init.headers, () =>
        a.quote.stream ? callUpstreamStreaming(url, init, isEventStream) : callUpstream(url, init),
      );
  // A pre-flight's time is already in upstreamMs.
  audit.upstreamMs = (audit.upstreamMs ?? 0) + (performance.now() - upstreamStarted);
  if (result.kind === "stream") return passStream(deps, request, a, audit, started, result);
  // Before anything reads the answer: the job, the audit row, the idempotency memory and the logs all see it with
  // every configured secret replaced (SPEC §4).
  let passedHeaders: Headers | null = null;
  if (result.kind === "response") {
    passedHeaders = clientResponseHeaders(result.headers);
    const scrubbed = deps.scrub.answer(passedHeaders, result.body);
    result.body = scrubbed.body;
    audit.secretsScrubbed = scrubbed.replaced;
  }
  const { outcome, settlement } = settlementFor(result, a);
  const settled = commitSettlement(deps, request, a, audit, started, { result, outcome, settlement, headers: passedHeaders });

  const keybrakeHeaders = spendHeaders(a, settlement.costMicros, audit);
  keybrakeHeaders["x-keybrake-overhead-ms"] = audit.overheadMs!.toFixed(3);
  if (result.kind !== "response") {
    const err =
      result.kind === "timeout"
        ? new KeybrakeError("upstream_timeout", `${a.vendor.name} did not answer within ${deps.config.upstreamTimeoutMs} ms.`)
        : new KeybrakeError("upstream_unreachable", `${a.vendor.name} could not be reached.`);
    return { response: errorResponse(err, keybrakeHeaders), settled };
  }
  const headers = passedHeaders!;
  for (const [name, value] of Object.entries(keybrakeHeaders)) headers.set(name, value);
  return { response: new Response(result.body, { status: result.status, headers }), settled };
}

/** A 2xx server-sent-events answer, to a request whose vendor streams it (SPEC §18). */
const isEventStream = (status: number, headers: Headers) =>
  status >= 200 && status < 300 && /^text\/event-stream\b/i.test(headers.get("content-type") ?? "");

interface Outcomes {
  result: UpstreamResult;
  outcome: Outcome;
  settlement: Settlement;
  /** The answer's headers as the job sees them (scrubbed), when there is an answer. */
  headers: Headers | null;
}

/**
 * Logs what is notable about a call's outcome, completes its audit row, and queues its settlement: the promise of
 * the row as written.
 */
function commitSettlement(
  deps: ProxyDeps,
  request: Request,
  a: Admitted,
  audit: AuditRow,
  started: number,
  o: Outcomes,
): Promise<AuditRow> {
  const { result, outcome, settlement } = o;
  if (settlement.unreadable) {
    deps.log.warn("settled_at_hold", `${audit.id}: settled at its hold: ${settlement.unreadable}`, {
      request_id: audit.id,
      key_id: a.key.id,
    });
  }
  if (outcome === "settled" && settlement.costMicros > a.holdMicros) {
    deps.log.warn(
      "price_differential",
      `price_differential: ${audit.id} (key ${a.key.id}) cost ${microsToUsd(settlement.costMicros)} USD, ${microsToUsd(a.holdMicros)} USD was held`,
      { request_id: audit.id, key_id: a.key.id, cost_usd: microsToUsd(settlement.costMicros), hold_usd: microsToUsd(a.holdMicros) },
    );
  }
  if (vendorFailed(result, request)) {
    logVendorFailure(deps.log, {
      vendor: a.vendor.name,
      keyId: a.key.id,
      holdId: a.holdId,
      path: a.path,
      audit,
      request,
      result,
      outcome,
      costMicros: settlement.costMicros,
      timeoutMs: deps.config.upstreamTimeoutMs,
    });
  }
  audit.status = result.kind === "response" ? result.status : result.kind === "timeout" ? 504 : 502;
  // An ambiguous call is spent at its hold (SPEC §6), and may yet change (a retry, an operator): its row says so
  // with `cost_source: hold` and its 5xx, 502 or 504 status; the spend view counts what is still ambiguous.
  audit.costSource = outcome === "ambiguous" && a.holdId !== null ? "hold" : settlement.source;
  audit.currency = settlement.currency;
  audit.amountMinor = settlement.amountMinor;
  if (o.headers) audit.vendorRequestId = a.vendor.requestId(o.headers);
  // A stream's overhead is Keybrake's time before its first byte, set when its headers left.
  audit.overheadMs ??= performance.now() - started - audit.upstreamMs!;

  // Queued now and committed by the next group commit, right after the answer leaves: the caller does not wait
  // for a second commit. The hold is already durable, so answering first loses nothing. Every other read of the
  // store commits queued settlements first, so a client that reads its spend, or retries, right after an answer
  // sees that answer's outcome; shutdown commits them; a crash in between leaves the hold counted (orphaned).
  const now = deps.now();
  // The row's cost is what the call added to spend, known once settled (a retry's re-settle adds a difference).
  return deps.store
    .settleCall({
      keyId: a.key.id,
      day: a.day,
      holdId: a.holdId ?? undefined,
      outcome,
      costMicros: settlement.costMicros,
      now,
      audit,
      track: settlement.track,
      idempotency: a.idempotencyKey
        ? { key: a.idempotencyKey, result: idempotencyResult(result, outcome, a, o.headers, audit.vendorRequestId) }
        : undefined,
      reconcile: settlement.reconcilePath ? { path: settlement.reconcilePath, at: now + (a.settings.reconcileAfterMs ?? 0) } : undefined,
    })
    .then((costMicros) => ({ ...audit, costMicros }));
}

/** How a stream ended: whole, cut by the vendor's side (silence past the timeout, a lost connection), or by the job. */
type StreamEnd = "end" | "timeout" | "lost" | "cancelled";

/**
 * A streamed answer (SPEC §18): its headers go to the job at once, then each chunk as it arrives (read only as
 * fast as the job takes them, nothing buffered), scrubbed of secrets on its way and read by the quote's watcher.
 * Once it ends, the call settles at the usage the stream stated; a stream that ended before stating it (cut off,
 * the job gone, an error event) stays at its hold, ambiguous. The settlement is committed as the stream ends; with
 * answerAfterSettlement (several instances) the stream's close waits for that commit, never its first byte.
 */
function passStream(deps: ProxyDeps, request: Request, a: Admitted, audit: AuditRow, started: number, upstream: UpstreamStream): Answered {
  const headers = clientResponseHeaders(upstream.headers);
  const scrub = deps.scrub.stream(headers);
  audit.overheadMs = performance.now() - started - audit.upstreamMs!;
  const streamStarted = performance.now();
  const watcher = a.quote.stream!();
  // What the job received, kept for a replay under its Idempotency-Key (the store keeps it up to its limit).
  const kept: Uint8Array[] | null = a.idempotencyKey ? [] : null;
  let keptBytes = 0;
  const { promise: settled, resolve, reject } = Promise.withResolvers<AuditRow>();
  let finished = false;
  const finish = (end: StreamEnd): Promise<AuditRow> => {
    if (finished) return settled;
    finished = true;
    audit.upstreamMs! += performance.now() - streamStarted;
    audit.secretsScrubbed = scrub.replaced();
    const stated = end === "end" ? watcher.settlement() : null;
    const body = Buffer.concat(kept ?? []);
    // A stream the vendor closed before its closing event was cut on the vendor's side, as a lost connection is.
    const result: UpstreamResult =
      stated || end === "cancelled"
        ? {
            kind: "response",
            status: upstream.status,
            headers,
            body: body.buffer.slice(body.byteOffset, body.byteOffset + body.length) as ArrayBuffer,
          }
        : { kind: end === "timeout" ? "timeout" : "lost" };
    const { outcome, settlement } = stated ? settledAt(a, stated) : { outcome: "ambiguous" as const, settlement: heldAt(a) };
    if (end === "cancelled") {
      deps.log.warn(
        "stream_cancelled",
        `stream_cancelled: the job closed ${audit.id} (key ${a.key.id}) before its usage arrived; ${formatUsd(a.holdMicros)} USD stays counted, ambiguous, until an operator settles it (keybrake holds list --state ambiguous)`,
        { request_id: audit.id, key_id: a.key.id, hold_id: a.holdId, ambiguous_usd: microsToUsd(a.holdMicros) },
      );
    }
    commitSettlement(deps, request, a, audit, started, { result, outcome, settlement, headers }).then(resolve, reject);
    return settled;
  };
  const send = (controller: ReadableStreamDefaultController<Uint8Array>, bytes: Uint8Array): boolean => {
    if (bytes.length === 0) return false;
    if (kept && keptBytes <= MAX_STORED_RESPONSE_BYTES) {
      kept.push(bytes);
      keptBytes += bytes.length;
    }
    controller.enqueue(bytes);
    return true;
  };
  const body = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        for (;;) {
          const read = await upstream.read();
          if (read.kind === "chunk") {
            watcher.chunk(read.bytes);
            if (send(controller, scrub.push(read.bytes))) return;
          } else if (read.kind === "end") {
            send(controller, scrub.end());
            const row = finish("end");
            if (deps.answerAfterSettlement) await row.catch(() => {});
            controller.close();
            return;
          } else {
            void finish(read.kind);
            controller.error(new Error(`${a.vendor.name}'s stream was cut off (${read.kind})`));
            return;
          }
        }
      },
      cancel() {
        upstream.cancel();
        void finish("cancelled");
      },
    },
    { highWaterMark: 0 },
  );
  // Until the stream's usage settles the call, its hold is what it counts. (The vendor's headers, as kept for a
  // replay, stay without Keybrake's: a replay sets its own.)
  const sent = new Headers(headers);
  const keybrakeHeaders = spendHeaders(a, a.holdMicros, audit);
  keybrakeHeaders["x-keybrake-overhead-ms"] = audit.overheadMs.toFixed(3);
  for (const [name, value] of Object.entries(keybrakeHeaders)) sent.set(name, value);
  return { response: new Response(body, { status: upstream.status, headers: sent }), settled, streamed: true };
}

/**
 * 2xx: what the vendor states, else the hold. A definite failure (vendor 3xx/4xx, or the request never left):
 * released, cost 0. Ambiguous (vendor 5xx, timeout, connection lost after sending): spent at the full hold.
 *
 * A retry re-forwarded on an ambiguous entry (its vendor honours the forwarded Idempotency-Key) answers for the
 * first attempt only through a 2xx, or a failure the vendor gives only when no attempt under that key has run or
 * is running (SPEC §7). Any other answer (409 "key in use", 429, 401/403 of a rolled secret, 404, 5xx, a timeout,
 * nothing sent) leaves the entry ambiguous at its hold: the first attempt may still move the money.
 */
function settlementFor(result: UpstreamResult, a: Admitted): { outcome: Outcome; settlement: Settlement } {
  const held = heldAt(a);
  const released = { outcome: "released" as const, settlement: { ...held, costMicros: 0 } };
  const retry = a.priorCostMicros !== null;
  if (result.kind === "not_sent") return retry ? { outcome: "ambiguous", settlement: held } : released;
  if (result.kind !== "response" || result.status >= 500) return { outcome: "ambiguous", settlement: held };
  if (result.status < 200 || result.status >= 300) {
    if (!retry || a.vendor.speaksForFirstAttempt?.(result.status, result.headers, parseJson(result.body))) return released;
    return { outcome: "ambiguous", settlement: held };
  }
  if (!a.quote.settle) return { outcome: "settled", settlement: held };
  return settledAt(a, a.quote.settle(parseJson(result.body)));
}

/** The hold as the cost: what the entry holds (a re-forwarded entry may hold more than the quote). */
const heldAt = (a: Admitted): Settlement => ({ ...atHold(a.quote), costMicros: a.holdMicros });

/**
 * A 2xx answer's settlement. A retry's 2xx may be the vendor's replay of the first attempt, priced against an
 * object this retry read after the first attempt had already moved its money: never below what that attempt counted.
 */
function settledAt(a: Admitted, settlement: Settlement): { outcome: Outcome; settlement: Settlement } {
  if (a.priorCostMicros !== null && settlement.costMicros < a.priorCostMicros)
    return { outcome: "settled", settlement: { ...settlement, costMicros: a.priorCostMicros } };
  return { outcome: "settled", settlement };
}

function idempotencyResult(
  result: UpstreamResult,
  outcome: Outcome,
  a: Admitted,
  headers: Headers | null,
  vendorRequestId: string | null,
): IdempotencyResult {
  if (result.kind === "not_sent") return a.priorCostMicros !== null ? { kind: "ambiguous" } : { kind: "forget" };
  if (result.kind !== "response" || outcome === "ambiguous") return { kind: "ambiguous" };
  return {
    kind: "completed",
    response: { status: result.status, headers: [...headers!.entries()], body: new Uint8Array(result.body), vendorRequestId },
  };
}

/** A completed call seen again with the same Idempotency-Key and body: its answer, with nothing forwarded or charged. */
async function replay(
  deps: ProxyDeps,
  { replay: stored, vendor, key, balance }: Replay,
  audit: AuditRow,
  started: number,
): Promise<Response> {
  if (stored.body === null) {
    const err = idempotencyConflict(vendor, "The first answer to this Idempotency-Key was too large to keep; nothing was forwarded.");
    audit.status = 409;
    audit.decision = err.code;
    await deps.store.recordAudit(audit);
    const spend = balance ? balanceHeaders(key, balance, 0, 0) : {};
    return errorResponse(err, { "x-keybrake-request-id": audit.id, "x-keybrake-key-id": key.id, ...spend });
  }
  audit.status = stored.status;
  audit.costSource = "replay";
  audit.vendorRequestId = stored.vendorRequestId;
  audit.overheadMs = performance.now() - started;
  await deps.store.recordAudit(audit);
  const headers = new Headers(stored.headers);
  headers.set("x-keybrake-replayed", "true");
  headers.set("x-keybrake-request-id", audit.id);
  headers.set("x-keybrake-key-id", audit.keyId!);
  headers.set("x-keybrake-overhead-ms", audit.overheadMs.toFixed(3));
  if (balance) for (const [name, value] of Object.entries(balanceHeaders(key, balance, 0, 0))) headers.set(name, value);
  return new Response(stored.body, { status: stored.status, headers });
}

/** Today's spend and what remains after this call, from the balances its hold saw. */
function spendHeaders(a: Admitted, costMicros: number, audit: AuditRow): Record<string, string> {
  return {
    "x-keybrake-request-id": audit.id,
    // An observe-mode key's call that went out past a limit (SPEC §16): the job sees what enforcing would answer.
    ...(audit.wouldDeny && { "x-keybrake-would-deny": audit.wouldDeny }),
    "x-keybrake-key-id": a.key.id,
    ...balanceHeaders(a.key, a.balance, a.holdMicros, a.holdId !== null ? costMicros : 0),
    // Which limit binds (SPEC §14): the key's own, or a budget's it draws from, and its room once this call was held.
    ...(a.tightest && {
      "x-keybrake-binding-limit": a.tightest.limit === "key" ? "key" : `budget:${a.tightest.limit}`,
      "x-keybrake-binding-remaining-usd": String(microsToUsd(a.tightest.remainingMicros)),
    }),
  };
}

import type { Config } from "../config";
import type { KeybrakeError } from "../errors";
import type { Logger } from "../ops/log";
import type { Metrics } from "../ops/metrics";
import type { Stage, Tracing } from "../ops/tracing";
import {
  type AuditRow,
  auditRow,
  type KeyPolicy,
  type Outcome,
  type RequestLimiter,
  type Store,
  type StoredResponse,
} from "../store/index";
import type { AnyVendor, Quote, Settlement } from "../vendors/types";
import type { DryRunVerdict } from "./dry-run";
import type { Scrubber } from "./scrub";
import type { UnauthenticatedDenials } from "./unauthenticated";

/** What a proxied call needs from the rest of Keybrake. */
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

/**
 * What the stages have found out about a call so far, each fact set once from what a stage returned. However the
 * call ends (refused at any stage, replayed, a dry run, forwarded), its audit row is built from these: `auditOf`.
 */
export interface CallFacts {
  readonly id: string;
  readonly at: number;
  readonly method: string;
  readonly rawPath: string;
  readonly clientIp: string | null;
  /** The job's Idempotency-Key header, as sent. */
  readonly idempotencyKey: string | null;
  key?: KeyPolicy;
  /** The route's vendor (`/stripe/…`), else the key's once known. */
  vendor: string | null;
  /** The vendor path as the allowlist and the catalogue read it. */
  path?: string;
  quote?: Quote;
  /** Time spent waiting on the vendor: a pre-flight read, the call itself, a stream's whole length. */
  upstreamMs: number | null;
}

/** How a call ended, for its audit row. */
export type CallEnd = { refused: KeybrakeError } | { replayed: StoredResponse } | { dryRun: DryRunVerdict } | { forwarded: Forwarded };

/** A call that went to the vendor (or was admitted and never left), settled as its answer says. */
export interface Forwarded {
  /** The vendor's status; 504 for a timeout, 502 for a lost or unsent call. */
  status: number;
  outcome: Outcome;
  settlement: Settlement;
  /** Whether a ledger entry holds the call's price (free calls hold nothing). */
  held: boolean;
  holdMicros: number;
  /** An observe-mode key's call that went out past a limit: the refusal enforcing would have given. */
  wouldDeny: string | null;
  vendorRequestId: string | null;
  secretsScrubbed: number;
}

export function newCallFacts(id: string, at: number, call: ProxyCall): CallFacts {
  return {
    id,
    at,
    method: call.request.method,
    rawPath: call.rawPath,
    clientIp: call.clientIp,
    idempotencyKey: call.request.headers.get("idempotency-key")?.slice(0, 255) ?? null,
    vendor: call.vendor?.name ?? null,
    upstreamMs: null,
  };
}

/** The call's audit row (SPEC §8), built once from what its stages found and how it ended. */
export function auditOf(facts: CallFacts, end: CallEnd, overheadMs: number): AuditRow {
  const { key, quote } = facts;
  const row = auditRow({
    id: facts.id,
    at: facts.at,
    vendor: facts.vendor,
    method: facts.method,
    path: facts.path ?? facts.rawPath.slice(0, 2048),
    decision: "allowed",
    idempotencyKey: facts.idempotencyKey,
    clientIp: facts.clientIp,
    keyId: key?.id ?? null,
    label: key?.label ?? null,
    mode: key?.mode ?? null,
    // What the call was priced at, refused or not: a cap's refusal shows the price it would not fit.
    currency: quote?.currency ?? null,
    amountMinor: quote?.amountMinor ?? null,
    costSource: quote?.source ?? null,
    upstreamMs: facts.upstreamMs,
    overheadMs,
  });
  if ("refused" in end) {
    row.status = end.refused.status;
    row.decision = end.refused.code;
    // A call waiting on a person has its hold reserved (SPEC §15): the caps count it until the decision.
    if (end.refused.code === "approval_required" && quote) row.holdMicros = quote.micros;
  } else if ("replayed" in end) {
    row.status = end.replayed.status;
    row.costSource = "replay";
    row.vendorRequestId = end.replayed.vendorRequestId;
  } else if ("dryRun" in end) {
    const verdict = end.dryRun;
    row.status = 200;
    row.decision = "dry_run";
    row.wouldDeny = verdict.decision === "allowed" ? verdict.wouldDeny : verdict.decision;
    row.costSource = null;
  } else {
    const f = end.forwarded;
    row.status = f.status;
    row.holdMicros = f.holdMicros;
    row.wouldDeny = f.wouldDeny;
    // An ambiguous call is spent at its hold (SPEC §6), and may yet change (a retry, an operator): its row says so
    // with `cost_source: hold` and its 5xx, 502 or 504 status; the spend view counts what is still ambiguous.
    row.costSource = f.outcome === "ambiguous" && f.held ? "hold" : f.settlement.source;
    row.currency = f.settlement.currency;
    row.amountMinor = f.settlement.amountMinor;
    row.vendorRequestId = f.vendorRequestId;
    row.secretsScrubbed = f.secretsScrubbed;
  }
  return row;
}

/** A request to the vendor, as a traced stage when tracing is on: its headers then carry the stage's traceparent. */
export const traced = <T>(deps: ProxyDeps, requestId: string, stage: Stage, headers: Headers, work: () => Promise<T>): Promise<T> =>
  deps.tracing ? deps.tracing.stage(requestId, stage, work, headers) : work();

/** Adds a wait on the vendor to the call's upstream time. */
export function addUpstreamTime(facts: CallFacts, since: number): void {
  facts.upstreamMs = (facts.upstreamMs ?? 0) + (performance.now() - since);
}

import { KeybrakeError, errorResponse } from "../errors";
import { type AuditRow, isStoreOutage, storeUnavailable, type Outcome } from "../store/index";
import { MAX_STORED_RESPONSE_BYTES } from "../store/ledger-shared";
import { formatUsd, microsToUsd } from "../util";
import type { Settlement } from "../vendors/types";
import { logStoreOutage } from "../ops/log";
import { type Admitted, admit, idempotencyConflict, type Replay } from "./admission";
import { addUpstreamTime, auditOf, type CallEnd, type CallFacts, newCallFacts, type ProxyCall, type ProxyDeps, traced } from "./call";
import { answerDryRun, type DryRunVerdict, isDryRunDecision, refusedVerdict } from "./dry-run";
import {
  callUpstream,
  callUpstreamStreaming,
  clientResponseHeaders,
  upstreamRequestHeaders,
  type UpstreamResult,
  type UpstreamStream,
} from "./forward";
import { callId } from "./ids";
import { balanceHeaders, logVendorFailure, vendorFailed } from "./notices";
import { heldAt, idempotencyResult, settledAt, settlementFor } from "./settlement";

/**
 * A proxied call: admitted (admission.ts: auth → vendor → path → allowlist → catalogue → body → rate →
 * idempotency → price → hold), then forwarded with the real secret, settled, and audited. Its audit row is built
 * once, from the facts the stages returned and how the call ended (call.ts).
 */
export async function handleProxy(deps: ProxyDeps, call: ProxyCall): Promise<Response> {
  const started = performance.now();
  const at = deps.now();
  const facts = newCallFacts(callId("kbr_", at), at, call);
  deps.tracing?.startCall(facts.id, call.request);
  const pipeline = runPipeline(deps, call, facts, started);
  deps.tracing?.finish(facts.id, pipeline);
  const { response, settled, streamed, row } = await pipeline;
  settled.then(
    (written) => deps.metrics.record(written),
    (err) =>
      deps.log.error(
        "settlement_failed",
        `the settlement of ${facts.id} failed to commit; its hold stays counted: ${err instanceof Error ? err.message : String(err)}`,
        { request_id: facts.id, key_id: row.keyId },
      ),
  );
  if (deps.answerAfterSettlement && !streamed) await settled.catch(() => {});
  return response;
}

/** An answer, its audit row, and the write that finishes its call (committed right after the answer leaves): the row as written. */
interface Answered {
  response: Response;
  row: AuditRow;
  settled: Promise<AuditRow>;
  /** A stream settles when it ends, after its first byte has left (passStream). */
  streamed?: boolean;
}

const answered = (response: Response, row: AuditRow): Answered => ({ response, row, settled: Promise.resolve(row) });

async function runPipeline(deps: ProxyDeps, call: ProxyCall, facts: CallFacts, started: number): Promise<Answered> {
  let admitted: Awaited<ReturnType<typeof admit>>;
  try {
    admitted = await admit(deps, call, facts);
  } catch (thrown) {
    return refuse(deps, call, facts, thrown, started);
  }
  if ("replay" in admitted) return replay(deps, admitted, facts, started);
  if ("dryRun" in admitted) return dryRunAnswer(deps, facts, admitted.dryRun, started);
  return forwardAndSettle(deps, call, admitted, facts, started);
}

/** A refusal: audited, answered with the contract's error body. */
async function refuse(deps: ProxyDeps, call: ProxyCall, facts: CallFacts, thrown: unknown, started: number): Promise<Answered> {
  // The ledger cannot be reached: nothing was held or forwarded, so the job may retry (503), never a 500.
  const outage = isStoreOutage(thrown);
  if (outage) logStoreOutage(deps.log, thrown, deps.now());
  const err = outage ? storeUnavailable() : thrown;
  if (!(err instanceof KeybrakeError)) throw err;
  if (isDryRunDecision(call.request, err)) return dryRunAnswer(deps, facts, refusedVerdict(err), started);
  const row = auditOf(facts, { refused: err }, performance.now() - started);
  try {
    await (row.decision === "invalid_key" ? deps.unauthenticated.record(row) : deps.store.recordAudit(row));
  } catch (auditErr) {
    // A refusal still answers when the store is down; its row is lost with the store, as every write is.
    if (!isStoreOutage(auditErr)) throw auditErr;
  }
  const headers: Record<string, string> = { "x-keybrake-request-id": row.id };
  if (row.keyId) headers["x-keybrake-key-id"] = row.keyId;
  return answered(errorResponse(err, headers), row);
}

async function dryRunAnswer(deps: ProxyDeps, facts: CallFacts, verdict: DryRunVerdict, started: number): Promise<Answered> {
  const row = auditOf(facts, { dryRun: verdict }, performance.now() - started - (facts.upstreamMs ?? 0));
  return answered(await answerDryRun(deps.store, row, verdict), row);
}

async function forwardAndSettle(deps: ProxyDeps, call: ProxyCall, a: Admitted, facts: CallFacts, started: number): Promise<Answered> {
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
    : await traced(deps, facts.id, "upstream", init.headers, () =>
        a.quote.stream ? callUpstreamStreaming(url, init, isEventStream) : callUpstream(url, init),
      );
  addUpstreamTime(facts, upstreamStarted);
  if (result.kind === "stream") return passStream(deps, request, a, facts, started, result);
  // Before anything reads the answer: the job, the audit row, the idempotency memory and the logs all see it with
  // every configured secret replaced (SPEC §4).
  let passedHeaders: Headers | null = null;
  let secretsScrubbed = 0;
  if (result.kind === "response") {
    passedHeaders = clientResponseHeaders(result.headers);
    const scrubbed = deps.scrub.answer(passedHeaders, result.body);
    result.body = scrubbed.body;
    secretsScrubbed = scrubbed.replaced;
  }
  const { outcome, settlement } = settlementFor(result, a);
  const overheadMs = performance.now() - started - facts.upstreamMs!;
  const row = auditOf(
    facts,
    forwarded(a, { status: statusOf(result), outcome, settlement, headers: passedHeaders, secretsScrubbed }),
    overheadMs,
  );
  const settled = commitSettlement(deps, request, a, row, { result, outcome, settlement, headers: passedHeaders });

  const keybrakeHeaders = spendHeaders(a, settlement.costMicros, facts.id);
  keybrakeHeaders["x-keybrake-overhead-ms"] = overheadMs.toFixed(3);
  if (result.kind !== "response") {
    const err =
      result.kind === "timeout"
        ? new KeybrakeError("upstream_timeout", `${a.vendor.name} did not answer within ${deps.config.upstreamTimeoutMs} ms.`)
        : new KeybrakeError("upstream_unreachable", `${a.vendor.name} could not be reached.`);
    return { response: errorResponse(err, keybrakeHeaders), row, settled };
  }
  const headers = passedHeaders!;
  for (const [name, value] of Object.entries(keybrakeHeaders)) headers.set(name, value);
  return { response: new Response(result.body, { status: result.status, headers }), row, settled };
}

/** The status a forwarded call is audited with: the vendor's, else 504 for a timeout and 502 for a lost or unsent call. */
const statusOf = (result: UpstreamResult) => (result.kind === "response" ? result.status : result.kind === "timeout" ? 504 : 502);

/** How a forwarded call ended, for its audit row. */
function forwarded(
  a: Admitted,
  o: { status: number; outcome: Outcome; settlement: Settlement; headers: Headers | null; secretsScrubbed: number },
): CallEnd {
  return {
    forwarded: {
      status: o.status,
      outcome: o.outcome,
      settlement: o.settlement,
      held: a.holdId !== null,
      holdMicros: a.holdMicros,
      wouldDeny: a.wouldDeny,
      vendorRequestId: o.headers ? a.vendor.requestId(o.headers) : null,
      secretsScrubbed: o.secretsScrubbed,
    },
  };
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

/** Logs what is notable about a call's outcome and queues its settlement: the promise of its audit row as written. */
function commitSettlement(deps: ProxyDeps, request: Request, a: Admitted, audit: AuditRow, o: Outcomes): Promise<AuditRow> {
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
function passStream(deps: ProxyDeps, request: Request, a: Admitted, facts: CallFacts, started: number, upstream: UpstreamStream): Answered {
  const headers = clientResponseHeaders(upstream.headers);
  const scrub = deps.scrub.stream(headers);
  // A stream's overhead is Keybrake's time before its first byte.
  const overheadMs = performance.now() - started - facts.upstreamMs!;
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
    addUpstreamTime(facts, streamStarted);
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
        `stream_cancelled: the job closed ${facts.id} (key ${a.key.id}) before its usage arrived; ${formatUsd(a.holdMicros)} USD stays counted, ambiguous, until an operator settles it (keybrake holds list --state ambiguous)`,
        { request_id: facts.id, key_id: a.key.id, hold_id: a.holdId, ambiguous_usd: microsToUsd(a.holdMicros) },
      );
    }
    const ended = forwarded(a, { status: statusOf(result), outcome, settlement, headers, secretsScrubbed: scrub.replaced() });
    commitSettlement(deps, request, a, auditOf(facts, ended, overheadMs), { result, outcome, settlement, headers }).then(resolve, reject);
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
  const keybrakeHeaders = spendHeaders(a, a.holdMicros, facts.id);
  keybrakeHeaders["x-keybrake-overhead-ms"] = overheadMs.toFixed(3);
  for (const [name, value] of Object.entries(keybrakeHeaders)) sent.set(name, value);
  // Until it ends, the stream's row is as far as it got: passing, counted at its hold.
  const passing = forwarded(a, { status: upstream.status, outcome: "ambiguous", settlement: heldAt(a), headers, secretsScrubbed: 0 });
  const row = auditOf(facts, passing, overheadMs);
  return { response: new Response(body, { status: upstream.status, headers: sent }), row, settled, streamed: true };
}

/** A completed call seen again with the same Idempotency-Key and body: its answer, with nothing forwarded or charged. */
async function replay(
  deps: ProxyDeps,
  { replay: stored, vendor, key, balance }: Replay,
  facts: CallFacts,
  started: number,
): Promise<Answered> {
  const spend = balance ? balanceHeaders(key, balance, 0, 0) : {};
  if (stored.body === null) {
    const err = idempotencyConflict(vendor, "The first answer to this Idempotency-Key was too large to keep; nothing was forwarded.");
    const row = auditOf(facts, { refused: err }, performance.now() - started);
    await deps.store.recordAudit(row);
    return answered(errorResponse(err, { "x-keybrake-request-id": row.id, "x-keybrake-key-id": key.id, ...spend }), row);
  }
  const overheadMs = performance.now() - started;
  const row = auditOf(facts, { replayed: stored }, overheadMs);
  await deps.store.recordAudit(row);
  const headers = new Headers(stored.headers);
  headers.set("x-keybrake-replayed", "true");
  headers.set("x-keybrake-request-id", row.id);
  headers.set("x-keybrake-key-id", key.id);
  headers.set("x-keybrake-overhead-ms", overheadMs.toFixed(3));
  for (const [name, value] of Object.entries(spend)) headers.set(name, value);
  return answered(new Response(stored.body, { status: stored.status, headers }), row);
}

/** Today's spend and what remains after this call, from the balances its hold saw. */
function spendHeaders(a: Admitted, costMicros: number, requestId: string): Record<string, string> {
  return {
    "x-keybrake-request-id": requestId,
    // An observe-mode key's call that went out past a limit (SPEC §16): the job sees what enforcing would answer.
    ...(a.wouldDeny && { "x-keybrake-would-deny": a.wouldDeny }),
    "x-keybrake-key-id": a.key.id,
    ...balanceHeaders(a.key, a.balance, a.holdMicros, a.holdId !== null ? costMicros : 0),
    // Which limit binds (SPEC §14): the key's own, or a budget's it draws from, and its room once this call was held.
    ...(a.tightest && {
      "x-keybrake-binding-limit": a.tightest.limit === "key" ? "key" : `budget:${a.tightest.limit}`,
      "x-keybrake-binding-remaining-usd": String(microsToUsd(a.tightest.remainingMicros)),
    }),
  };
}

import type { IdempotencyResult, Outcome } from "../store/index";
import { atHold, type Settlement } from "../vendors/types";
import type { Admitted } from "./admission";
import { parseJson, type UpstreamResult } from "./forward";

/**
 * 2xx: what the vendor states, else the hold. A definite failure (vendor 3xx/4xx, or the request never left):
 * released, cost 0. Ambiguous (vendor 5xx, timeout, connection lost after sending): spent at the full hold.
 *
 * A retry re-forwarded on an ambiguous entry (its vendor honours the forwarded Idempotency-Key) answers for the
 * first attempt only through a 2xx, or a failure the vendor gives only when no attempt under that key has run or
 * is running (SPEC §7). Any other answer (409 "key in use", 429, 401/403 of a rolled secret, 404, 5xx, a timeout,
 * nothing sent) leaves the entry ambiguous at its hold: the first attempt may still move the money.
 */
export function settlementFor(result: UpstreamResult, a: Admitted): { outcome: Outcome; settlement: Settlement } {
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
export const heldAt = (a: Admitted): Settlement => ({ ...atHold(a.quote), costMicros: a.holdMicros });

/**
 * A 2xx answer's settlement. A retry's 2xx is the vendor's replay of the first attempt or, when that attempt never
 * acted, the retry's own: an answer that states its total (a create's or a refund's amount) is exact either way. An
 * answer priced against the object this retry read (`deductedMicros`) may deduct what the first attempt had already
 * moved: it is never settled below what that attempt counted.
 */
export function settledAt(a: Admitted, settlement: Settlement): { outcome: Outcome; settlement: Settlement } {
  if (a.priorCostMicros !== null && settlement.deductedMicros && settlement.costMicros < a.priorCostMicros)
    return { outcome: "settled", settlement: { ...settlement, costMicros: a.priorCostMicros } };
  return { outcome: "settled", settlement };
}

/** What Keybrake remembers under the call's Idempotency-Key once its answer is known. */
export function idempotencyResult(
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

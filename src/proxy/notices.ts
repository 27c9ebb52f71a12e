import { KeybrakeError } from "../errors";
import type { Logger } from "../ops/log";
import type { AuditRow, Balance, HoldResult, KeyPolicy, Outcome } from "../store/index";
import { formatUsd, iso, microsToUsd, msUntilUtcMidnight, utcDay } from "../util";
import type { UpstreamResult } from "./forward";

/**
 * What the pipeline tells a job and an operator beyond the contract's codes: the numbers of a cap hit, the spend
 * headers, and the log line of a vendor failure.
 */

type Denied = Extract<HoldResult, { kind: "denied" }>;

/** Keys whose cap hit is already logged today (the log has one line per key and UTC day, however many hits). */
const capHitsLogged = new WeakMap<Logger, { day: string; keys: Set<string> }>();

function firstCapHitToday(log: Logger, keyId: string, day: string): boolean {
  let seen = capHitsLogged.get(log);
  if (seen?.day !== day) {
    seen = { day, keys: new Set() };
    capHitsLogged.set(log, seen);
  }
  if (seen.keys.has(keyId)) return false;
  seen.keys.add(keyId);
  return true;
}

/** "3h 12m", "45s": how long until `ms` from now. */
function humanDelay(ms: number): string {
  const s = Math.ceil(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.ceil(s / 60);
  return m < 60 ? `${m}m` : `${Math.floor(m / 60)}h ${m % 60}m`;
}

/** The numbers of a refused hold against one cap (a key's, a budget's, a counterparty's): said the same for each. */
function capNumbers(hold: Denied, daily: boolean, capMicros: number, priceMicros: number, now: number) {
  const b = hold.balance ?? { daySettled: 0, dayHeld: 0, totalSpent: 0, totalHeld: 0 };
  const spent = daily ? b.daySettled : b.totalSpent;
  const held = daily ? b.dayHeld : b.totalHeld;
  const untilReset = msUntilUtcMidnight(now);
  const resetsAt = daily ? iso(now + untilReset) : null;
  return {
    balance: b,
    untilReset,
    text: `cap ${formatUsd(capMicros)} USD, spent ${daily ? "today " : ""}${formatUsd(spent)}, held by calls not yet settled ${formatUsd(held)}, this call ${formatUsd(priceMicros)}`,
    details: {
      cap: daily ? "daily" : "total",
      cap_usd: microsToUsd(capMicros),
      spent_usd: microsToUsd(spent),
      held_usd: microsToUsd(held),
      price_usd: microsToUsd(priceMicros),
      remaining_usd: microsToUsd(Math.max(0, capMicros - spent - held)),
      resets_at: resetsAt,
    },
    headers: {
      "x-keybrake-cap-hit": "true",
      // The OpenAI and Anthropic SDKs retry a 429 unless told not to; before the reset, a retry cannot pass.
      "x-should-retry": "false",
      ...(daily ? { "retry-after": String(Math.ceil(untilReset / 1000)) } : {}),
    } as Record<string, string>,
    resets: daily ? `at ${resetsAt} (UTC midnight, in ${humanDelay(untilReset)}); retrying before then will not help.` : null,
  };
}

/**
 * 429 cap_exhausted with the numbers a job author needs (also in `error.details`): the cap, what is spent and
 * held, this call's price and when the cap resets; and the spend headers every answer carries. `log` null: a
 * dry run's verdict, which is no cap hit to log.
 */
export function capExhausted(log: Logger | null, key: KeyPolicy, hold: Denied, priceMicros: number, now: number): KeybrakeError {
  const daily = hold.reason === "daily_cap";
  const cap = hold.capMicros ?? (daily ? key.dailyCapMicros : key.totalCapMicros) ?? 0;
  const n = capNumbers(hold, daily, cap, priceMicros, now);
  const message = daily
    ? `This call would exceed the key's daily USD cap: ${n.text}. The cap resets ${n.resets}`
    : `This call would exceed the key's lifetime USD cap: ${n.text}. A lifetime cap never resets, so retrying will not help: raise total_usd_cap or issue a new key.`;
  if (log && firstCapHitToday(log, key.id, utcDay(now))) {
    log.info(
      "cap_hit",
      `cap_hit: key ${key.id}${key.label ? ` (${key.label})` : ""} reached its ${daily ? "daily" : "lifetime"} cap: ${n.text}; further hits of this key today are not logged`,
      { key_id: key.id, label: key.label, ...n.details },
    );
  }
  return new KeybrakeError("cap_exhausted", message, { ...n.headers, ...balanceHeaders(key, n.balance, 0, 0) }, n.details);
}

/**
 * 429 budget_exhausted or counterparty_cap_exhausted (SPEC §14): which budget or counterparty refused, with the
 * same numbers as a key's cap hit in `error.details`. Retrying does not help before the daily cap resets.
 */
export function limitExhausted(hold: Denied, priceMicros: number, now: number): KeybrakeError {
  const daily = hold.reason !== "budget_total_cap";
  const n = capNumbers(hold, daily, hold.capMicros ?? 0, priceMicros, now);
  const when = n.resets ? `It resets ${n.resets}` : "A lifetime cap never resets, so retrying will not help.";
  const counterparty = hold.reason === "counterparty_cap";
  const message = counterparty
    ? `This call would exceed the key's daily USD cap for ${hold.counterparty}: ${n.text}. ${when}`
    : `This call would exceed the ${daily ? "daily" : "lifetime"} USD cap of budget ${hold.budgetId}, which the key draws from: ${n.text}. ${when}`;
  const details = { ...(counterparty ? { counterparty: hold.counterparty } : { budget_id: hold.budgetId }), ...n.details };
  return new KeybrakeError(counterparty ? "counterparty_cap_exhausted" : "budget_exhausted", message, n.headers, details);
}

/**
 * X-Keybrake-Spent-Usd (settled today) and X-Keybrake-Remaining-Usd (under the daily cap, else the lifetime
 * one), from balances that include `ownHold`, which the call's settlement replaces by `added`.
 */
export function balanceHeaders(key: KeyPolicy, b: Balance, ownHold: number, added: number): Record<string, string> {
  const spentToday = b.daySettled + added;
  const remaining =
    key.dailyCapMicros !== null
      ? key.dailyCapMicros - spentToday - (b.dayHeld - ownHold)
      : key.totalCapMicros! - (b.totalSpent + added) - (b.totalHeld - ownHold);
  return {
    "x-keybrake-spent-usd": String(microsToUsd(spentToday)),
    "x-keybrake-remaining-usd": String(microsToUsd(remaining)),
  };
}

/** A failure of the vendor's, not of the client's (a client that left is not the vendor's fault). */
export const vendorFailed = (result: UpstreamResult, request: Request) =>
  result.kind === "timeout" ||
  result.kind === "lost" ||
  (result.kind === "not_sent" && !request.signal.aborted) ||
  (result.kind === "response" && result.status >= 500);

/** One log line per vendor failure (SPEC §9), saying what stays counted while the outcome is ambiguous. */
export function logVendorFailure(
  log: Logger,
  f: {
    vendor: string;
    keyId: string;
    holdId: string | null;
    path: string;
    audit: AuditRow;
    request: Request;
    result: UpstreamResult;
    outcome: Outcome;
    costMicros: number;
    timeoutMs: number;
  },
) {
  const { result } = f;
  const what =
    result.kind === "timeout"
      ? `did not answer within ${f.timeoutMs} ms`
      : result.kind === "lost"
        ? "dropped the connection after the request was sent"
        : result.kind === "not_sent"
          ? "could not be reached (nothing was sent)"
          : `answered ${result.status}`;
  const ambiguous = f.outcome === "ambiguous" && f.holdId !== null;
  const counted = ambiguous
    ? `; ambiguous: ${formatUsd(f.costMicros)} USD stays counted as spent until a retry with the same Idempotency-Key or an operator settles it (keybrake holds list --state ambiguous)`
    : "";
  log.warn("vendor_error", `vendor_error: ${f.vendor} ${what} to ${f.request.method} ${f.path} (${f.audit.id}, key ${f.keyId})${counted}`, {
    vendor: f.vendor,
    request_id: f.audit.id,
    key_id: f.keyId,
    method: f.request.method,
    path: f.path,
    status: result.kind === "response" ? result.status : null,
    failure: result.kind === "response" ? "5xx" : result.kind,
    hold_id: f.holdId,
    ambiguous_usd: ambiguous ? microsToUsd(f.costMicros) : 0,
  });
}

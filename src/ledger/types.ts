/**
 * The ledger's vocabulary: what a hold asks, what it answers, and the balances it reads. Shared by the rule book
 * (rules.ts), the stores that apply its decisions, and the proxy that asks for holds.
 */

/** A response remembered for an Idempotency-Key, replayed instead of calling the vendor again. */
export interface StoredResponse {
  status: number;
  headers: [string, string][];
  /** Null when the answer was larger than Keybrake keeps. */
  body: Uint8Array | null;
  vendorRequestId: string | null;
}

/** A key's committed money right after a hold: the day's and the lifetime's settled and held micro-dollars. */
export interface Balance {
  daySettled: number;
  dayHeld: number;
  totalSpent: number;
  totalHeld: number;
}

/** What refused a hold: the key itself, its own caps, a budget up its chain, or its cap for one counterparty. */
export type DenialReason = "revoked" | "daily_cap" | "total_cap" | "budget_daily_cap" | "budget_total_cap" | "counterparty_cap";

/** The limit with the least room left after a hold (the key's or a budget's), for the job's spend headers. */
export interface Tightest {
  /** "key", or the budget's id. */
  limit: string;
  remainingMicros: number;
}

export type HoldResult =
  /**
   * Forward the call. `priorCostMicros`: an earlier ambiguous (or orphaned) attempt's entry is forwarded again
   * (no second hold) and this is what it counted before; a retry that never leaves puts it back at that.
   */
  | {
      kind: "admitted";
      holdId: string | null;
      day: string;
      holdMicros: number;
      priorCostMicros: number | null;
      balance: Balance;
      /** The daily or lifetime limit, of the key or a budget, with the least room left (null: none is capped). */
      tightest: Tightest | null;
      /** An observe-mode key's call, admitted past what would have refused it (SPEC §16). */
      wouldDeny?: DenialReason | "approval_required";
    }
  /**
   * A cap would be exceeded (or the key is revoked). For a cap: the cap (`capMicros`) and the balances of what
   * refused (the key's, the budget's or the counterparty's) the check saw, on the day of the entry it would hold.
   */
  | {
      kind: "denied";
      reason: DenialReason;
      capMicros?: number;
      balance?: Balance;
      /** The budget whose cap refused it (`budget_*`). */
      budgetId?: string;
      /** The counterparty whose cap refused it (`counterparty_cap`). */
      counterparty?: string;
    }
  /** A completed call's stored answer, with the key's balances now (for the X-Keybrake-*-Usd headers). */
  | { kind: "replay"; response: StoredResponse; balance?: Balance }
  | { kind: "in_flight" }
  | { kind: "conflict" }
  /** The call waits for a person's decision (SPEC §15): its hold is reserved meanwhile. */
  | { kind: "approval_pending"; approvalId: string; expiresAt: number }
  /** Refused by a person (its hold released), or not decided in time (released by then). */
  | { kind: "approval_denied"; approvalId: string }
  /**
   * `lapsed`: its time ran out; `price_rose`: the call now costs more than the hold the person approved;
   * `used`: it already went out once and its retry outlived the idempotency memory (sending it again could pay twice).
   */
  | { kind: "approval_expired"; approvalId: string; why: "lapsed" | "price_rose" | "used" };

export interface HoldRequest {
  holdId: string;
  keyId: string;
  day: string;
  micros: number;
  /** Whether the call gets a ledger entry (it holds money). */
  ledger: boolean;
  /**
   * Whether a retry of an ambiguous call goes out again on the same entry: only where the vendor honours the
   * forwarded Idempotency-Key, so it cannot act twice. Elsewhere the retry is a new call with a new hold.
   */
  reuseAmbiguous: boolean;
  now: number;
  /** The call taking the hold: its audit id, method and path. */
  call: { requestId: string; method: string; path: string };
  idempotency?: { key: string; fingerprint: string; ttlMs: number };
  /**
   * Who the call moves money to or from, when the key caps that kind of counterparty (SPEC §14): its id
   * ("customer:cus_1", "to:+15551230000", "customer:none") and the key's cap per UTC day.
   */
  counterparty?: { id: string; capMicros: number };
  /** false for an observe-mode key (SPEC §16): admitted past its limits, what would have refused it reported. */
  enforce?: boolean;
  /**
   * The call's price is above the key's `approval_above` (SPEC §15): without an approval its hold is reserved and a
   * request `id` recorded, living `ttlMs`. Needs `idempotency`: an approval covers exactly one call.
   */
  approval?: { id: string; ttlMs: number; requestedBy: string | null };
}

export type Outcome = "settled" | "released" | "ambiguous";

/** What happens to the call's idempotency memory once the answer is known. */
export type IdempotencyResult =
  /** The request never reached the vendor: forget it, so a retry is a fresh call. */
  | { kind: "forget" }
  /** The vendor may or may not have acted: a retry is forwarded again on the same hold. */
  | { kind: "ambiguous" }
  | { kind: "completed"; response: StoredResponse };

/** Which of a vendor's real secrets a key's calls use. */
export type KeyMode = "live" | "test";

/** What an object created through Keybrake (a Stripe PaymentIntent) has already been charged on the cap. */
export interface TrackedObject {
  objectId: string;
  keyId: string;
  currency: string;
  amountMinor: number;
  countedMicros: number;
}

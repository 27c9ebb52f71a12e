import type { Balance, HoldRequest, HoldResult, Outcome, StoredResponse } from "./types";

/**
 * The rule book: every decision that moves a key's money, decided once, as pure functions (no SQL, no I/O, no
 * clock). A store reads what a decision needs (its snapshot) in its own transaction, asks the rule here, and
 * applies the writes it returns in the same transaction, in its own dialect: SQLite (store/ledger.ts) and
 * PostgreSQL (store/pg/ledger.ts) decide nothing themselves.
 *
 * The one promise (SPEC §6): no sequence, retry or concurrency of calls makes a key's settled + held spend exceed
 * its cap, except by what a vendor charges beyond what it stated before the call. The stores make each decision
 * atomic (the key's row locked or the database's write lock held); these rules make it right.
 */

/** A key as a hold reads it: its status, caps, and lifetime settled and held micro-dollars. */
export interface KeyState {
  status: string;
  daily: number | null;
  total: number | null;
  spent: number;
  held: number;
}

/** A key's UTC day: settled and held micro-dollars. */
export interface DayState {
  settled: number;
  held: number;
}

/** What Keybrake remembers of an Idempotency-Key (SPEC §7), if anything. */
export interface RememberedCall {
  fingerprint: string;
  state: "in_flight" | "completed" | "ambiguous";
  holdId: string | null;
  expiresAt: number;
  /** The stored answer of a completed call. */
  response: StoredResponse | null;
}

export type EntryStatus = "held" | "settled" | "released" | "ambiguous" | "orphaned";

/** A ledger entry, with its own day's balance where a decision needs it (a retry re-opening it). */
export interface Entry {
  id: string;
  keyId: string;
  state: EntryStatus;
  hold: number;
  cost: number | null;
  day: string;
}

export type EntryWithDay = Entry & { daySettled: number; dayHeld: number };

/** An alert a decision fires, written to the outbox in the same transaction (SPEC §12). */
export type AlertIntent =
  | { alert: "cap_refused"; keyId: string; cap: "daily" | "total"; day: string; capMicros: number; balance: Balance; priceMicros: number }
  | { alert: "spend_settled"; keyId: string; day: string; delta: number }
  | { alert: "price_differential"; keyId: string; holdId: string; requestId: string | null; holdMicros: number; costMicros: number }
  | {
      alert: "holds_need_attention";
      keyId: string;
      reason: "orphaned" | "ambiguous";
      holds: { id: string; micros: number }[];
      day: string;
    };

/** A change a decision makes; each store applies them in order, in the decision's transaction. */
export type LedgerWrite =
  | { kind: "insert_entry"; holdId: string; keyId: string; day: string; micros: number; call: HoldRequest["call"] }
  /** An ambiguous or orphaned entry held again for its retry: `cost` is what it counted before (kept for the audit). */
  | { kind: "reopen_entry"; holdId: string; hold: number; cost: number | null }
  | { kind: "close_entry"; holdId: string; state: Outcome; cost: number; reconcile: { path: string; at: number } | null }
  /** A settled entry's final price, read later (SPEC §6, Twilio): nothing is awaited any more. */
  | { kind: "reprice_entry"; holdId: string; cost: number }
  | { kind: "add_day"; keyId: string; day: string; settled: number; held: number }
  /** `usedAt`: a proxied call's time (`calls` counts it), null for an operator's or the reconciler's change. */
  | { kind: "add_key"; keyId: string; spent: number; held: number; calls: number; usedAt: number | null }
  | { kind: "claim_call"; keyId: string; key: string; fingerprint: string; holdId: string | null; day: string; expiresAt: number }
  | { kind: "call_in_flight"; keyId: string; key: string }
  | ({ kind: "alert" } & AlertIntent);

export interface Decision<T> {
  result: T;
  writes: LedgerWrite[];
}

/** Whether `micros` more fits under `cap` (null: no such cap) on top of what is already `committed`. */
export const fits = (committed: number, micros: number, cap: number | null) => cap === null || committed + micros <= cap;

const balanceOf = (day: DayState, key: KeyState): Balance => ({
  daySettled: day.settled,
  dayHeld: day.held,
  totalSpent: key.spent,
  totalHeld: key.held,
});

/** Which cap refuses `micros` more, if any: the daily cap first (it resets), then the lifetime cap. */
function capRefusing(day: DayState, key: KeyState, micros: number): { reason: "daily_cap" | "total_cap"; capMicros: number } | null {
  if (!fits(day.settled + day.held, micros, key.daily)) return { reason: "daily_cap", capMicros: key.daily! };
  if (!fits(key.spent + key.held, micros, key.total)) return { reason: "total_cap", capMicros: key.total! };
  return null;
}

/** What a hold reads before deciding. `entry` is read only when the decision asks for it (`needsEntry`). */
export interface HoldSnapshot {
  key: KeyState | null;
  /** The request's day. */
  day: DayState;
  remembered: RememberedCall | null;
  /** The ambiguous entry a retry would re-open: undefined until read, null when there is none. */
  entry?: EntryWithDay | null;
}

/**
 * A hold (SPEC §6, §7): revoked → the call's idempotency memory (conflict, in flight, replay, or an ambiguous
 * entry forwarded again on its own hold) → daily cap → lifetime cap → the entry, the day's and key's held money
 * and the idempotency claim. `{ needsEntry }` when the decision depends on an entry the store has not read yet:
 * read it and ask again. A cap's refusal fires `cap_exhausted` (the outbox fires it once per window).
 */
export function decideHold(req: HoldRequest, seen: HoldSnapshot): Decision<HoldResult> | { needsEntry: string } {
  const decision = holdOrRefuse(req, seen);
  if ("needsEntry" in decision) return decision;
  const { result } = decision;
  if (result.kind === "denied" && result.reason !== "revoked") {
    const cap = result.reason === "daily_cap" ? "daily" : "total";
    decision.writes.push({
      kind: "alert",
      alert: "cap_refused",
      keyId: req.keyId,
      cap,
      day: req.day,
      capMicros: result.capMicros ?? 0,
      balance: result.balance!,
      priceMicros: req.micros,
    });
  }
  return decision;
}

function holdOrRefuse(req: HoldRequest, seen: HoldSnapshot): Decision<HoldResult> | { needsEntry: string } {
  const { key, day } = seen;
  if (key?.status !== "active") return { result: { kind: "denied", reason: "revoked" }, writes: [] };
  const before = balanceOf(day, key);
  const prior = seen.remembered;
  if (req.idempotency && prior && prior.expiresAt > req.now) {
    if (prior.fingerprint !== req.idempotency.fingerprint) return { result: { kind: "conflict" }, writes: [] };
    if (prior.state === "in_flight") return { result: { kind: "in_flight" }, writes: [] };
    if (prior.state === "completed") return { result: { kind: "replay", response: prior.response!, balance: before }, writes: [] };
    if (req.reuseAmbiguous && prior.holdId) {
      if (seen.entry === undefined) return { needsEntry: prior.holdId };
      const reopened = seen.entry && seen.entry.keyId === req.keyId ? reopen(seen.entry, req.micros, key) : null;
      if (reopened?.result.kind === "denied") return reopened;
      if (reopened) {
        reopened.writes.push({ kind: "call_in_flight", keyId: req.keyId, key: req.idempotency.key });
        return reopened;
      }
    }
    // Otherwise the retry is a new call: the ambiguous entry stays counted and a new hold is taken below.
  }
  const refusing = capRefusing(day, key, req.micros);
  if (refusing) return { result: { kind: "denied", ...refusing, balance: before }, writes: [] };
  const writes: LedgerWrite[] = [];
  const held = req.ledger ? req.micros : 0;
  if (req.ledger) {
    writes.push(
      { kind: "insert_entry", holdId: req.holdId, keyId: req.keyId, day: req.day, micros: req.micros, call: req.call },
      { kind: "add_day", keyId: req.keyId, day: req.day, settled: 0, held },
      { kind: "add_key", keyId: req.keyId, spent: 0, held, calls: 0, usedAt: null },
    );
  }
  if (req.idempotency) {
    writes.push({
      kind: "claim_call",
      keyId: req.keyId,
      key: req.idempotency.key,
      fingerprint: req.idempotency.fingerprint,
      holdId: req.ledger ? req.holdId : null,
      day: req.day,
      expiresAt: req.now + req.idempotency.ttlMs,
    });
  }
  const balance = { ...before, dayHeld: day.held + held, totalHeld: key.held + held };
  return {
    result: { kind: "admitted", holdId: req.ledger ? req.holdId : null, day: req.day, holdMicros: held, priorCostMicros: null, balance },
    writes,
  };
}

/**
 * A retry of an ambiguous call, forwarded again on its entry: what the entry counted as spent becomes held again
 * (at least as much; more if the retry's price is higher), so settled + held never drops below what the vendor
 * may have charged. A higher price needs headroom for the difference, on the entry's own day. Null when the entry
 * cannot be re-opened (already settled or released): the retry is then a new call.
 */
function reopen(entry: EntryWithDay, micros: number, key: KeyState): Decision<HoldResult> | null {
  if (entry.state !== "ambiguous" && entry.state !== "orphaned") return null;
  const ambiguous = entry.state === "ambiguous";
  // An orphaned entry was never settled: it counts its hold as held, and keeps no prior cost.
  const counted = ambiguous ? (entry.cost ?? 0) : entry.hold;
  const hold = Math.max(micros, counted);
  const more = hold - counted;
  const day = { settled: entry.daySettled, held: entry.dayHeld };
  const before = balanceOf(day, key);
  const refusing = more > 0 ? capRefusing(day, key, more) : null;
  if (refusing) return { result: { kind: "denied", ...refusing, balance: before }, writes: [] };
  const settledBack = ambiguous ? -counted : 0;
  const heldMore = ambiguous ? hold : more;
  return {
    result: {
      kind: "admitted",
      holdId: entry.id,
      day: entry.day,
      holdMicros: hold,
      priorCostMicros: counted,
      balance: {
        daySettled: day.settled + settledBack,
        dayHeld: day.held + heldMore,
        totalSpent: key.spent + settledBack,
        totalHeld: key.held + heldMore,
      },
    },
    writes: [
      { kind: "reopen_entry", holdId: entry.id, hold, cost: ambiguous ? counted : null },
      { kind: "add_day", keyId: entry.keyId, day: entry.day, settled: settledBack, held: heldMore },
      { kind: "add_key", keyId: entry.keyId, spent: settledBack, held: heldMore, calls: 0, usedAt: null },
    ],
  };
}

/** What a call's answer settles (SPEC §6): its entry's outcome and cost, and the request's own facts. */
export interface SettleFacts {
  keyId: string;
  holdId?: string;
  outcome: Outcome;
  costMicros: number;
  now: number;
  requestId: string;
  reconcile?: { path: string; at: number };
}

/**
 * A call's settlement: an open entry (held, or orphaned by a crash) is closed at its outcome and cost, its hold
 * released and its cost settled on its own day and the key; the call is counted. Thresholds its spend crossed, a
 * cost above the hold (a price differential) and an ambiguous outcome fire alerts. `result` is the audit row's
 * cost: what the call added to spend, so audit sums always equal the ledger's (a retry re-settling an ambiguous
 * entry adds the difference; an entry already closed adds nothing).
 */
export function decideSettlement(req: SettleFacts, entry: Entry | null): Decision<number> {
  if (!req.holdId || !entry || (entry.state !== "held" && entry.state !== "orphaned")) {
    return { result: 0, writes: [{ kind: "add_key", keyId: req.keyId, spent: 0, held: 0, calls: 1, usedAt: req.now }] };
  }
  const cost = req.costMicros;
  const writes: LedgerWrite[] = [
    { kind: "close_entry", holdId: entry.id, state: req.outcome, cost, reconcile: req.reconcile ?? null },
    { kind: "add_day", keyId: entry.keyId, day: entry.day, settled: cost, held: -entry.hold },
    { kind: "add_key", keyId: entry.keyId, spent: cost, held: -entry.hold, calls: 1, usedAt: req.now },
    { kind: "alert", alert: "spend_settled", keyId: entry.keyId, day: entry.day, delta: cost },
  ];
  if (req.outcome === "settled" && cost > entry.hold) {
    writes.push({
      kind: "alert",
      alert: "price_differential",
      keyId: entry.keyId,
      holdId: entry.id,
      requestId: req.requestId,
      holdMicros: entry.hold,
      costMicros: cost,
    });
  }
  if (req.outcome === "ambiguous") {
    const holds = [{ id: entry.id, micros: cost }];
    writes.push({ kind: "alert", alert: "holds_need_attention", keyId: entry.keyId, reason: "ambiguous", holds, day: entry.day });
  }
  return { result: cost - (entry.cost ?? 0), writes };
}

/**
 * An operator's decision on an orphaned entry (still counted as held) or an ambiguous one (counted as spent at
 * its hold): settled at `costMicros`, or released at 0. Null for any other entry. `result` is the audit row's
 * cost: what the decision added to spend.
 */
export function decideResolution(entry: Entry, outcome: "settled" | "released", costMicros: number): Decision<number> | null {
  if (entry.state !== "orphaned" && entry.state !== "ambiguous") return null;
  const cost = outcome === "released" ? 0 : costMicros;
  const delta = cost - (entry.cost ?? 0);
  // An orphaned entry's hold is released as its cost settles; an ambiguous one's spend moves by the difference.
  const orphaned = entry.state === "orphaned";
  const settled = orphaned ? cost : delta;
  const held = orphaned ? -entry.hold : 0;
  return {
    result: delta,
    writes: [
      { kind: "close_entry", holdId: entry.id, state: outcome, cost, reconcile: null },
      { kind: "add_day", keyId: entry.keyId, day: entry.day, settled, held },
      { kind: "add_key", keyId: entry.keyId, spent: settled, held, calls: 0, usedAt: null },
      { kind: "alert", alert: "spend_settled", keyId: entry.keyId, day: entry.day, delta: settled },
    ],
  };
}

/**
 * A settled entry's final price, read later (SPEC §6: Twilio): the entry's cost becomes it, and its own day's and
 * the key's spend move by the difference, up or down; a final price above the hold is a price differential.
 * Null unless the entry is settled. `result` is the audit row's cost: the difference.
 */
export function decideReconciliation(entry: Entry, finalCost: number, requestId: string | null): Decision<number> | null {
  if (entry.state !== "settled") return null;
  const delta = finalCost - (entry.cost ?? 0);
  const writes: LedgerWrite[] = [
    { kind: "reprice_entry", holdId: entry.id, cost: finalCost },
    { kind: "add_day", keyId: entry.keyId, day: entry.day, settled: delta, held: 0 },
    { kind: "add_key", keyId: entry.keyId, spent: delta, held: 0, calls: 0, usedAt: null },
    { kind: "alert", alert: "spend_settled", keyId: entry.keyId, day: entry.day, delta },
  ];
  if (finalCost > entry.hold) {
    writes.push({
      kind: "alert",
      alert: "price_differential",
      keyId: entry.keyId,
      holdId: entry.id,
      requestId,
      holdMicros: entry.hold,
      costMicros: finalCost,
    });
  }
  return { result: delta, writes };
}

/**
 * Held entries whose calls no process will settle (a crash, a gone instance) become `orphaned`: still counted as
 * held until an operator resolves them or a retry re-opens them. One `holds_need_attention` per key.
 */
export function orphanAlerts(entries: readonly Entry[]): LedgerWrite[] {
  return [...Map.groupBy(entries, (e) => e.keyId)].map(([keyId, ofKey]) => ({
    kind: "alert",
    alert: "holds_need_attention",
    keyId,
    reason: "orphaned",
    holds: ofKey.map((e) => ({ id: e.id, micros: e.hold })),
    day: ofKey[0]!.day,
  }));
}

import type { Balance, DenialReason, HoldRequest, HoldResult, Outcome, StoredResponse, Tightest } from "./types";

/**
 * The rule book: every decision that moves a key's money, decided once, as pure functions (no SQL, no I/O, no
 * clock). A store reads what a decision needs (its snapshot) in its own transaction, asks the rule here, and
 * applies the writes it returns in the same transaction, in its own dialect: SQLite (store/ledger.ts) and
 * PostgreSQL (store/pg/ledger.ts) decide nothing themselves.
 *
 * The one promise (SPEC §6, §14): no sequence, retry or concurrency of calls makes the settled + held spend of a
 * key, of any budget up its chain, or of one counterparty of the key exceed its cap, except by what a vendor
 * charges beyond what it stated before the call. The stores make each decision atomic (the key's row locked or
 * the database's write lock held); these rules make it right. Every change of a key's money moves its day, its
 * lifetime totals, every budget up its chain and its counterparty together (`move`).
 */

/** A key as a hold reads it: its status, caps, and lifetime settled and held micro-dollars. */
export interface KeyState {
  status: string;
  daily: number | null;
  total: number | null;
  spent: number;
  held: number;
}

/** A key's (or a budget's, or a counterparty's) UTC day: settled and held micro-dollars. */
export interface DayState {
  settled: number;
  held: number;
}

/** A budget up the key's chain (SPEC §14), as a hold reads it: its caps, lifetime totals, and the hold's day. */
export interface BudgetState {
  id: string;
  daily: number | null;
  total: number | null;
  spent: number;
  held: number;
  day: DayState;
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

/** A person's approval of one call (SPEC §15), as a hold or a decision reads it. */
export interface ApprovalState {
  id: string;
  keyId: string;
  status: "pending" | "approved" | "denied" | "expired" | "used";
  fingerprint: string;
  holdId: string;
  expiresAt: number;
}

export type EntryStatus = "held" | "settled" | "released" | "ambiguous" | "orphaned";

/** A ledger entry. */
export interface Entry {
  id: string;
  keyId: string;
  state: EntryStatus;
  hold: number;
  cost: number | null;
  day: string;
  /** Who it moves money to or from, when its key caps counterparties: that bucket moves with it. */
  counterparty: string | null;
}

/**
 * An entry as a retry re-opening it reads it: with its own day's balances, of the key, of each budget up the
 * chain (in the snapshot's order) and of its counterparty.
 */
export type EntryWithDay = Entry & {
  daySettled: number;
  dayHeld: number;
  budgetDays: DayState[];
  counterpartyDay: DayState | null;
};

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
    }
  | {
      alert: "budget_refused";
      budgetId: string;
      cap: "daily" | "total";
      day: string;
      capMicros: number;
      balance: Balance;
      priceMicros: number;
    }
  | { alert: "budget_settled"; budgetId: string; day: string; delta: number }
  | {
      alert: "approval_requested";
      keyId: string;
      approvalId: string;
      priceMicros: number;
      method: string;
      path: string;
      expiresAt: number;
      requestedBy: string | null;
    }
  | {
      alert: "approval_decided";
      keyId: string;
      approvalId: string;
      status: "approved" | "denied" | "expired";
      by: string | null;
      reason: string | null;
    };

/** A change a decision makes; each store applies them in order, in the decision's transaction. */
export type LedgerWrite =
  | {
      kind: "insert_entry";
      holdId: string;
      keyId: string;
      day: string;
      micros: number;
      call: HoldRequest["call"];
      counterparty: string | null;
    }
  /** An ambiguous or orphaned entry held again for its retry: `cost` is what it counted before (kept for the audit). */
  | { kind: "reopen_entry"; holdId: string; hold: number; cost: number | null }
  | { kind: "close_entry"; holdId: string; state: Outcome; cost: number; reconcile: { path: string; at: number } | null }
  /** A settled entry's final price, read later (SPEC §6, Twilio): nothing is awaited any more. */
  | { kind: "reprice_entry"; holdId: string; cost: number }
  | { kind: "add_day"; keyId: string; day: string; settled: number; held: number }
  /** `usedAt`: a proxied call's time (`calls` counts it), null for an operator's or the reconciler's change. */
  | { kind: "add_key"; keyId: string; spent: number; held: number; calls: number; usedAt: number | null }
  /** A budget up the key's chain: its day and its lifetime totals. */
  | { kind: "add_budget"; budgetId: string; day: string; settled: number; held: number }
  | { kind: "add_counterparty"; keyId: string; day: string; counterparty: string; settled: number; held: number }
  | { kind: "claim_call"; keyId: string; key: string; fingerprint: string; holdId: string | null; day: string; expiresAt: number }
  | { kind: "call_in_flight"; keyId: string; key: string }
  | {
      kind: "insert_approval";
      approvalId: string;
      keyId: string;
      key: string;
      fingerprint: string;
      holdId: string;
      call: HoldRequest["call"];
      priceMicros: number;
      expiresAt: number;
      requestedBy: string | null;
    }
  /** `by` and `reason` for a person's decision; none for an expiry or the approved call going out (`used`). */
  | { kind: "set_approval"; approvalId: string; status: ApprovalState["status"]; by?: string | null; reason?: string | null }
  | ({ kind: "alert" } & AlertIntent);

export interface Decision<T> {
  result: T;
  writes: LedgerWrite[];
}

/** Whether `micros` more fits under `cap` (null: no such cap) on top of what is already `committed`. */
export const fits = (committed: number, micros: number, cap: number | null) => cap === null || committed + micros <= cap;

/** A level of limits a hold must fit: the key, or a budget up its chain, with its balances on the hold's day. */
interface Level {
  budgetId: string | null;
  daily: number | null;
  total: number | null;
  spent: number;
  held: number;
  day: DayState;
}

const balanceOf = (level: Level): Balance => ({
  daySettled: level.day.settled,
  dayHeld: level.day.held,
  totalSpent: level.spent,
  totalHeld: level.held,
});

type Refusal = { reason: DenialReason; capMicros: number; balance: Balance; budgetId?: string; counterparty?: string };

/**
 * Which limit refuses `micros` more, if any: the key's daily cap, its lifetime cap, then each budget's up the
 * chain (daily first: it resets), then the key's cap for the call's counterparty.
 */
function refusal(
  levels: readonly Level[],
  micros: number,
  counterparty: { id: string; capMicros: number; day: DayState } | null,
): Refusal | null {
  for (const level of levels) {
    const budget = level.budgetId !== null;
    if (!fits(level.day.settled + level.day.held, micros, level.daily))
      return {
        reason: budget ? "budget_daily_cap" : "daily_cap",
        capMicros: level.daily!,
        balance: balanceOf(level),
        ...(budget && { budgetId: level.budgetId! }),
      };
    if (!fits(level.spent + level.held, micros, level.total))
      return {
        reason: budget ? "budget_total_cap" : "total_cap",
        capMicros: level.total!,
        balance: balanceOf(level),
        ...(budget && { budgetId: level.budgetId! }),
      };
  }
  if (counterparty && !fits(counterparty.day.settled + counterparty.day.held, micros, counterparty.capMicros)) {
    const balance = { daySettled: counterparty.day.settled, dayHeld: counterparty.day.held, totalSpent: 0, totalHeld: 0 };
    return { reason: "counterparty_cap", capMicros: counterparty.capMicros, balance, counterparty: counterparty.id };
  }
  return null;
}

/** After a hold of `micros` more: the daily or lifetime limit, of the key or a budget, with the least room left. */
function tightest(levels: readonly Level[], micros: number): Tightest | null {
  let best: Tightest | null = null;
  for (const level of levels) {
    const rooms = [
      level.daily === null ? null : level.daily - level.day.settled - level.day.held - micros,
      level.total === null ? null : level.total - level.spent - level.held - micros,
    ];
    for (const room of rooms) {
      if (room !== null && (best === null || room < best.remainingMicros)) best = { limit: level.budgetId ?? "key", remainingMicros: room };
    }
  }
  return best;
}

/**
 * The writes that move a key's money by `settled` and `held` on `day`, at every level together: the key's day
 * and lifetime totals (counting `calls`, used at `usedAt`), each budget up its chain, and its counterparty.
 */
function move(
  m: { keyId: string; day: string; budgets: readonly string[]; counterparty: string | null },
  settled: number,
  held: number,
  calls = 0,
  usedAt: number | null = null,
): LedgerWrite[] {
  return [
    { kind: "add_day", keyId: m.keyId, day: m.day, settled, held },
    { kind: "add_key", keyId: m.keyId, spent: settled, held, calls, usedAt },
    ...m.budgets.map((budgetId): LedgerWrite => ({ kind: "add_budget", budgetId, day: m.day, settled, held })),
    ...(m.counterparty === null
      ? []
      : [{ kind: "add_counterparty" as const, keyId: m.keyId, day: m.day, counterparty: m.counterparty, settled, held }]),
  ];
}

/** A key's settled spend rose (or fell) by `delta` on `day`: its thresholds, and each budget's, are checked. */
function settledAlerts(keyId: string, day: string, budgets: readonly string[], delta: number): LedgerWrite[] {
  return [
    { kind: "alert", alert: "spend_settled", keyId, day, delta },
    ...budgets.map((budgetId): LedgerWrite => ({ kind: "alert", alert: "budget_settled", budgetId, day, delta })),
  ];
}

/** What a hold reads before deciding. `entry` is read only when the decision asks for it (`needsEntry`). */
export interface HoldSnapshot {
  key: KeyState | null;
  /** The key's day: the request's. */
  day: DayState;
  /** The budgets up the key's chain, the key's own first, each with the request's day. */
  budgets: BudgetState[];
  /** The request's counterparty's day, when the request names one. */
  counterpartyDay: DayState | null;
  remembered: RememberedCall | null;
  /** The approval of the call's Idempotency-Key, if one was requested (SPEC §15). */
  approval: ApprovalState | null;
  /**
   * The entry the decision asked for (`needsEntry`): an ambiguous one a retry would re-open, or an approval's
   * reserved hold. Undefined until read, null when there is none.
   */
  entry?: EntryWithDay | null;
}

/**
 * A hold (SPEC §6, §7, §14): revoked → the call's idempotency memory (conflict, in flight, replay, or an ambiguous
 * entry forwarded again on its own hold) → the key's caps → each budget's up the chain → the key's cap for the
 * counterparty → the entry, held at every level, and the idempotency claim. `{ needsEntry }` when the decision
 * depends on an entry the store has not read yet: read it and ask again. A cap's refusal fires `cap_exhausted`
 * or `budget_exhausted` (the outbox fires each once per window).
 */
export function decideHold(req: HoldRequest, seen: HoldSnapshot): Decision<HoldResult> | { needsEntry: string } {
  const decision = holdOrRefuse(req, seen);
  if ("needsEntry" in decision) return decision;
  // A cap's refusal fires its alert, enforced or only observed.
  const r = decision.refusal;
  if (!r || r.reason === "counterparty_cap") return decision;
  const cap = r.reason === "daily_cap" || r.reason === "budget_daily_cap" ? "daily" : "total";
  const refused = { cap, day: req.day, capMicros: r.capMicros, balance: r.balance, priceMicros: req.micros } as const;
  decision.writes.push(
    r.budgetId
      ? { kind: "alert", alert: "budget_refused", budgetId: r.budgetId, ...refused }
      : { kind: "alert", alert: "cap_refused", keyId: req.keyId, ...refused },
  );
  return decision;
}

/** A decision of a hold, with the refusal it met (enforced, or observed: SPEC §16). */
type HoldDecision = Decision<HoldResult> & { refusal?: Refusal };

/** An observe-mode key's call goes out past `refusal`, which is reported; an enforced one is refused. */
const refuse = (req: HoldRequest, refusal: Refusal): HoldDecision | null =>
  req.enforce === false ? null : { result: { kind: "denied", ...refusal }, writes: [], refusal };

/** A reserved hold given back: the approval was denied or lapsed before its call went out. */
function releaseReserved(entry: Entry, budgets: readonly string[]): LedgerWrite[] {
  if (entry.state !== "held" && entry.state !== "orphaned") return [];
  return [
    { kind: "close_entry", holdId: entry.id, state: "released", cost: 0, reconcile: null },
    ...move({ ...entry, budgets }, 0, -entry.hold),
  ];
}

/**
 * The call's approval (SPEC §15), when one was requested under its Idempotency-Key: another body is a conflict;
 * pending is the same answer until decided or lapsed (a lapsed one releases its hold now, if the sweep has not);
 * approved goes out once on the reserved hold, if its price still fits it; used leaves the retry to the idempotency
 * memory (a replay), and once that is gone refuses it: the call went out already.
 */
function approvalStep(req: HoldRequest, seen: HoldSnapshot, key: KeyState): HoldDecision | { needsEntry: string } | null {
  const a = seen.approval!;
  if (a.fingerprint !== req.idempotency!.fingerprint) return { result: { kind: "conflict" }, writes: [] };
  if (a.status === "used") {
    const remembered = seen.remembered !== null && seen.remembered.expiresAt > req.now;
    return remembered ? null : { result: { kind: "approval_expired", approvalId: a.id, why: "used" }, writes: [] };
  }
  if (a.status === "denied") return { result: { kind: "approval_denied", approvalId: a.id }, writes: [] };
  if (a.status === "expired") return { result: { kind: "approval_expired", approvalId: a.id, why: "lapsed" }, writes: [] };
  if (a.status === "pending" && a.expiresAt > req.now)
    return { result: { kind: "approval_pending", approvalId: a.id, expiresAt: a.expiresAt }, writes: [] };
  if (seen.entry === undefined) return { needsEntry: a.holdId };
  const budgets = seen.budgets.map((b) => b.id);
  const entry = seen.entry;
  if (a.expiresAt <= req.now || !entry || (entry.state !== "held" && entry.state !== "orphaned")) {
    const lapsed = decideApproval(a, entry, budgets, { status: "expired", by: null, reason: null }, req.now).writes;
    return { result: { kind: "approval_expired", approvalId: a.id, why: "lapsed" }, writes: lapsed };
  }
  // The person approved this hold, no more: a call whose price rose since (an invoice grew) is asked for anew.
  if (req.micros > entry.hold) {
    const voided = decideApproval(a, entry, budgets, { status: "expired", by: null, reason: "price rose" }, req.now).writes;
    return { result: { kind: "approval_expired", approvalId: a.id, why: "price_rose" }, writes: voided };
  }
  // Approved: out once, on the hold reserved when it was requested; its retries find the call in flight or done.
  const levels = levelsOf(key, { settled: entry.daySettled, held: entry.dayHeld }, seen.budgets, entry.budgetDays);
  return {
    result: {
      kind: "admitted",
      holdId: entry.id,
      day: entry.day,
      holdMicros: entry.hold,
      priorCostMicros: null,
      balance: balanceOf(levels[0]!),
      tightest: tightest(levels, 0),
    },
    writes: [
      { kind: "set_approval", approvalId: a.id, status: "used" },
      {
        kind: "claim_call",
        keyId: req.keyId,
        key: req.idempotency!.key,
        fingerprint: req.idempotency!.fingerprint,
        holdId: entry.id,
        day: entry.day,
        expiresAt: req.now + req.idempotency!.ttlMs,
      },
    ],
  };
}

const levelsOf = (key: KeyState, day: DayState, budgets: readonly BudgetState[], budgetDays?: readonly DayState[]): Level[] => [
  { budgetId: null, ...key, day },
  ...budgets.map((b, i) => ({
    budgetId: b.id,
    daily: b.daily,
    total: b.total,
    spent: b.spent,
    held: b.held,
    day: budgetDays?.[i] ?? b.day,
  })),
];

function holdOrRefuse(req: HoldRequest, seen: HoldSnapshot): HoldDecision | { needsEntry: string } {
  const { key } = seen;
  if (key?.status !== "active") return { result: { kind: "denied", reason: "revoked" }, writes: [] };
  const levels = levelsOf(key, seen.day, seen.budgets);
  if (req.idempotency && seen.approval) {
    const step = approvalStep(req, seen, key);
    if (step) return step;
  }
  const prior = seen.remembered;
  if (req.idempotency && prior && prior.expiresAt > req.now) {
    if (prior.fingerprint !== req.idempotency.fingerprint) return { result: { kind: "conflict" }, writes: [] };
    if (prior.state === "in_flight") return { result: { kind: "in_flight" }, writes: [] };
    if (prior.state === "completed")
      return { result: { kind: "replay", response: prior.response!, balance: balanceOf(levels[0]!) }, writes: [] };
    if (req.reuseAmbiguous && prior.holdId) {
      if (seen.entry === undefined) return { needsEntry: prior.holdId };
      const reopened = seen.entry && seen.entry.keyId === req.keyId ? reopen(seen.entry, req, key, seen.budgets) : null;
      if (reopened?.result.kind === "denied") return reopened;
      if (reopened) {
        reopened.writes.push({ kind: "call_in_flight", keyId: req.keyId, key: req.idempotency.key });
        return reopened;
      }
    }
    // Otherwise the retry is a new call: the ambiguous entry stays counted and a new hold is taken below.
  }
  const counterparty = req.counterparty ? { ...req.counterparty, day: seen.counterpartyDay ?? { settled: 0, held: 0 } } : null;
  const refused = refusal(levels, req.micros, counterparty);
  const refusedNow = refused && refuse(req, refused);
  if (refusedNow) return refusedNow;
  const writes: LedgerWrite[] = [];
  const held = req.ledger ? req.micros : 0;
  if (req.ledger) {
    const counterpartyId = req.counterparty?.id ?? null;
    writes.push(
      {
        kind: "insert_entry",
        holdId: req.holdId,
        keyId: req.keyId,
        day: req.day,
        micros: req.micros,
        call: req.call,
        counterparty: counterpartyId,
      },
      ...move({ keyId: req.keyId, day: req.day, budgets: seen.budgets.map((b) => b.id), counterparty: counterpartyId }, 0, held),
    );
  }
  // An enforced call above the approval threshold waits on its reserved hold; an observed one goes out (SPEC §16).
  if (req.approval && req.idempotency && req.ledger && req.enforce !== false) return requestApproval(req, writes);
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
  const before = balanceOf(levels[0]!);
  const balance = { ...before, dayHeld: before.dayHeld + held, totalHeld: before.totalHeld + held };
  return {
    result: {
      kind: "admitted",
      holdId: req.ledger ? req.holdId : null,
      day: req.day,
      holdMicros: held,
      priorCostMicros: null,
      balance,
      tightest: tightest(levels, held),
      ...(refused
        ? { wouldDeny: refused.reason }
        : req.approval && req.enforce === false
          ? { wouldDeny: "approval_required" as const }
          : {}),
    },
    writes,
    ...(refused && { refusal: refused }),
  };
}

/**
 * A call that needs a person's approval (SPEC §15) and has none: its hold is reserved now (the caps count it while
 * it waits) and the request recorded with the call's fingerprint; nothing goes to the vendor.
 */
function requestApproval(req: HoldRequest, writes: LedgerWrite[]): HoldDecision {
  const a = req.approval!;
  const expiresAt = req.now + a.ttlMs;
  writes.push(
    {
      kind: "insert_approval",
      approvalId: a.id,
      keyId: req.keyId,
      key: req.idempotency!.key,
      fingerprint: req.idempotency!.fingerprint,
      holdId: req.holdId,
      call: req.call,
      priceMicros: req.micros,
      expiresAt,
      requestedBy: a.requestedBy,
    },
    {
      kind: "alert",
      alert: "approval_requested",
      keyId: req.keyId,
      approvalId: a.id,
      priceMicros: req.micros,
      method: req.call.method,
      path: req.call.path,
      expiresAt,
      requestedBy: a.requestedBy,
    },
  );
  return { result: { kind: "approval_pending", approvalId: a.id, expiresAt }, writes };
}

/** What a person decided, or the sweep: approved, denied (with a reason), or lapsed unanswered. */
export type ApprovalDecision = { status: "approved" | "denied" | "expired"; by: string | null; reason: string | null };

/**
 * A decision on a pending approval (SPEC §15): approved leaves its hold reserved for the call's retry; denied or
 * lapsed gives the hold back at every level. Only a pending one can be decided (`result` false otherwise: another
 * person decided first, or it lapsed); one past its expiry can only lapse, an approved one not yet used included.
 */
export function decideApproval(
  approval: ApprovalState,
  entry: Entry | null,
  budgets: readonly string[],
  decision: ApprovalDecision,
  now: number,
): Decision<boolean> {
  // An approved call not retried before the approval lapses gives its hold back too.
  const open = approval.status === "pending" || (approval.status === "approved" && decision.status === "expired");
  if (!open) return { result: false, writes: [] };
  if (decision.status !== "expired" && approval.expiresAt <= now) return { result: false, writes: [] };
  const writes: LedgerWrite[] = [
    { kind: "set_approval", approvalId: approval.id, status: decision.status, by: decision.by, reason: decision.reason },
    ...(decision.status !== "approved" && entry ? releaseReserved(entry, budgets) : []),
    { kind: "alert", alert: "approval_decided", keyId: approval.keyId, approvalId: approval.id, ...decision },
  ];
  return { result: true, writes };
}

/**
 * A retry of an ambiguous call, forwarded again on its entry: what the entry counted as spent becomes held again
 * (at least as much; more if the retry's price is higher), so settled + held never drops below what the vendor
 * may have charged, at any level. A higher price needs headroom for the difference, on the entry's own day, at
 * every level. Null when the entry cannot be re-opened (already settled or released): the retry is then a new call.
 */
function reopen(entry: EntryWithDay, req: HoldRequest, key: KeyState, budgets: readonly BudgetState[]): HoldDecision | null {
  if (entry.state !== "ambiguous" && entry.state !== "orphaned") return null;
  const ambiguous = entry.state === "ambiguous";
  // An orphaned entry was never settled: it counts its hold as held, and keeps no prior cost.
  const counted = ambiguous ? (entry.cost ?? 0) : entry.hold;
  const hold = Math.max(req.micros, counted);
  const more = hold - counted;
  const levels = levelsOf(key, { settled: entry.daySettled, held: entry.dayHeld }, budgets, entry.budgetDays);
  const counterparty =
    req.counterparty && entry.counterparty !== null
      ? { id: entry.counterparty, capMicros: req.counterparty.capMicros, day: entry.counterpartyDay ?? { settled: 0, held: 0 } }
      : null;
  const refused = more > 0 ? refusal(levels, more, counterparty) : null;
  const refusedNow = refused && refuse(req, refused);
  if (refusedNow) return refusedNow;
  const settledBack = ambiguous ? -counted : 0;
  const heldMore = ambiguous ? hold : more;
  const before = balanceOf(levels[0]!);
  return {
    result: {
      kind: "admitted",
      holdId: entry.id,
      day: entry.day,
      holdMicros: hold,
      priorCostMicros: counted,
      balance: {
        daySettled: before.daySettled + settledBack,
        dayHeld: before.dayHeld + heldMore,
        totalSpent: before.totalSpent + settledBack,
        totalHeld: before.totalHeld + heldMore,
      },
      tightest: tightest(levels, more),
      ...(refused && { wouldDeny: refused.reason }),
    },
    writes: [
      { kind: "reopen_entry", holdId: entry.id, hold, cost: ambiguous ? counted : null },
      ...move({ ...entry, budgets: budgets.map((b) => b.id) }, settledBack, heldMore),
    ],
    ...(refused && { refusal: refused }),
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
 * released and its cost settled at every level; the call is counted. Thresholds its spend crossed, a cost above
 * the hold (a price differential) and an ambiguous outcome fire alerts. `budgets` is the key's chain. `result` is
 * the audit row's cost: what the call added to spend, so audit sums always equal the ledger's (a retry re-settling
 * an ambiguous entry adds the difference; an entry already closed adds nothing).
 */
export function decideSettlement(req: SettleFacts, entry: Entry | null, budgets: readonly string[]): Decision<number> {
  if (!req.holdId || !entry || (entry.state !== "held" && entry.state !== "orphaned")) {
    return { result: 0, writes: [{ kind: "add_key", keyId: req.keyId, spent: 0, held: 0, calls: 1, usedAt: req.now }] };
  }
  const cost = req.costMicros;
  const writes: LedgerWrite[] = [
    { kind: "close_entry", holdId: entry.id, state: req.outcome, cost, reconcile: req.reconcile ?? null },
    ...move({ ...entry, budgets }, cost, -entry.hold, 1, req.now),
    ...settledAlerts(entry.keyId, entry.day, budgets, cost),
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
 * its hold): settled at `costMicros`, or released at 0, at every level. Null for any other entry. `result` is the
 * audit row's cost: what the decision added to spend.
 */
export function decideResolution(
  entry: Entry,
  outcome: "settled" | "released",
  costMicros: number,
  budgets: readonly string[],
): Decision<number> | null {
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
      ...move({ ...entry, budgets }, settled, held),
      ...settledAlerts(entry.keyId, entry.day, budgets, settled),
    ],
  };
}

/**
 * A settled entry's final price, read later (SPEC §6: Twilio): the entry's cost becomes it, and its own day's
 * spend moves by the difference at every level, up or down; a final price above the hold is a price
 * differential. Null unless the entry is settled. `result` is the audit row's cost: the difference.
 */
export function decideReconciliation(
  entry: Entry,
  finalCost: number,
  requestId: string | null,
  budgets: readonly string[],
): Decision<number> | null {
  if (entry.state !== "settled") return null;
  const delta = finalCost - (entry.cost ?? 0);
  const writes: LedgerWrite[] = [
    { kind: "reprice_entry", holdId: entry.id, cost: finalCost },
    ...move({ ...entry, budgets }, delta, 0),
    ...settledAlerts(entry.keyId, entry.day, budgets, delta),
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
 * held, at every level, until an operator resolves them or a retry re-opens them. One `holds_need_attention` per key.
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

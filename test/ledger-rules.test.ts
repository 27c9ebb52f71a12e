import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import {
  type ApprovalState,
  type BudgetState,
  type DayState,
  type Entry,
  type KeyState,
  type LedgerWrite,
  type RememberedCall,
  decideApproval,
  decideHold,
  decideReconciliation,
  decideResolution,
  decideSettlement,
} from "../src/ledger/rules";
import type { HoldRequest, Outcome } from "../src/ledger/types";

/**
 * The rule book driven alone, with no database: a store in memory applies its writes exactly as the SQLite and
 * PostgreSQL stores do, and random interleavings of holds, settlements, retries of ambiguous calls, operators'
 * resolutions, reconciliations and crashes must keep the promise (SPEC §6) and the ledger's books balanced.
 * Thousands of sequences a second: a one-line change to a money rule fails here first.
 */

const USD = 1_000_000;
const DAYS = ["2031-05-14", "2031-05-15"];
/** How often the runs took the approval and observe paths: a property that never reaches them proves nothing. */
const seenPaths = { approvals: 0, observed: 0 };

/** Keys in observe mode in these runs (SPEC §16): admitted past their limits, so not held to them here. */
const OBSERVED = new Set(["vk_2"]);
/** Every key's cap per counterparty in these runs. */
const COUNTERPARTY_CAP = 30 * USD;

class Memory {
  keys = new Map<string, KeyState>();
  /** Each key's chain, its own budget first. */
  chains = new Map<string, string[]>();
  budgets = new Map<string, Omit<BudgetState, "day">>();
  budgetDays = new Map<string, DayState>();
  counterparties = new Map<string, DayState>();
  days = new Map<string, DayState>();
  entries = new Map<string, Entry>();
  calls = new Map<string, RememberedCall>();
  approvals = new Map<string, ApprovalState>();
  /** Each audit row's cost: what it added to spend. */
  audit: number[] = [];
  /** What vendors charged beyond what was held (price differentials): the only way past a cap. */
  overshoot = new Map<string, number>();

  day(keyId: string, day: string): DayState {
    return this.days.get(`${keyId}|${day}`) ?? { settled: 0, held: 0 };
  }

  budgetDay(budgetId: string, day: string): DayState {
    return this.budgetDays.get(`${budgetId}|${day}`) ?? { settled: 0, held: 0 };
  }

  counterpartyDay(keyId: string, day: string, counterparty: string): DayState {
    return this.counterparties.get(`${keyId}|${day}|${counterparty}`) ?? { settled: 0, held: 0 };
  }

  chain(keyId: string, day: string): BudgetState[] {
    return (this.chains.get(keyId) ?? []).map((id) => ({ ...this.budgets.get(id)!, day: this.budgetDay(id, day) }));
  }

  apply(writes: readonly LedgerWrite[]) {
    for (const w of writes) {
      switch (w.kind) {
        case "insert_entry":
          this.entries.set(w.holdId, {
            id: w.holdId,
            keyId: w.keyId,
            state: "held",
            hold: w.micros,
            cost: null,
            day: w.day,
            counterparty: w.counterparty,
          });
          break;
        case "reopen_entry":
          Object.assign(this.entries.get(w.holdId)!, { state: "held", hold: w.hold, cost: w.cost });
          break;
        case "close_entry":
          Object.assign(this.entries.get(w.holdId)!, { state: w.state, cost: w.cost });
          break;
        case "reprice_entry":
          this.entries.get(w.holdId)!.cost = w.cost;
          break;
        case "add_day": {
          const d = this.day(w.keyId, w.day);
          this.days.set(`${w.keyId}|${w.day}`, { settled: d.settled + w.settled, held: d.held + w.held });
          break;
        }
        case "add_key": {
          const k = this.keys.get(w.keyId)!;
          k.spent += w.spent;
          k.held += w.held;
          break;
        }
        case "add_budget": {
          const b = this.budgets.get(w.budgetId)!;
          b.spent += w.settled;
          b.held += w.held;
          const d = this.budgetDay(w.budgetId, w.day);
          this.budgetDays.set(`${w.budgetId}|${w.day}`, { settled: d.settled + w.settled, held: d.held + w.held });
          break;
        }
        case "add_counterparty": {
          const d = this.counterpartyDay(w.keyId, w.day, w.counterparty);
          this.counterparties.set(`${w.keyId}|${w.day}|${w.counterparty}`, { settled: d.settled + w.settled, held: d.held + w.held });
          break;
        }
        case "claim_call":
          this.calls.set(`${w.keyId}|${w.key}`, {
            fingerprint: w.fingerprint,
            state: "in_flight",
            holdId: w.holdId,
            expiresAt: w.expiresAt,
            response: null,
          });
          break;
        case "insert_approval":
          this.approvals.set(w.approvalId, {
            id: w.approvalId,
            keyId: w.keyId,
            status: "pending",
            fingerprint: w.fingerprint,
            holdId: w.holdId,
            expiresAt: w.expiresAt,
          });
          break;
        case "set_approval":
          this.approvals.get(w.approvalId)!.status = w.status;
          break;
        case "call_in_flight":
          this.calls.get(`${w.keyId}|${w.key}`)!.state = "in_flight";
          break;
        case "alert":
          if (w.alert === "price_differential") {
            // What a vendor charged beyond the hold is over the key's caps, its budgets' and its counterparty's.
            const over = w.costMicros - w.holdMicros;
            for (const owner of [w.keyId, ...(this.chains.get(w.keyId) ?? [])])
              this.overshoot.set(owner, (this.overshoot.get(owner) ?? 0) + over);
          }
          break;
      }
    }
  }

  /** The books: every total equals what its entries add up to, and the audit rows what the calls added. */
  checkBooks() {
    const entries = [...this.entries.values()];
    for (const [keyId, key] of this.keys) {
      const mine = entries.filter((e) => e.keyId === keyId);
      const spent = mine.filter((e) => e.state === "settled" || e.state === "ambiguous").reduce((s, e) => s + (e.cost ?? 0), 0);
      const held = mine.filter((e) => e.state === "held" || e.state === "orphaned").reduce((s, e) => s + e.hold, 0);
      expect(key.spent).toBe(spent);
      expect(key.held).toBe(held);
      for (const day of DAYS) {
        const onDay = mine.filter((e) => e.day === day);
        const d = this.day(keyId, day);
        expect(d.settled).toBe(
          onDay.filter((e) => e.state === "settled" || e.state === "ambiguous").reduce((s, e) => s + (e.cost ?? 0), 0),
        );
        expect(d.held).toBe(onDay.filter((e) => e.state === "held" || e.state === "orphaned").reduce((s, e) => s + e.hold, 0));
        // The promise: within the daily cap, but for what vendors charged beyond their holds (an observe-mode key
        // is not braked at all: its books still balance).
        if (key.daily !== null && !OBSERVED.has(keyId))
          expect(d.settled + d.held).toBeLessThanOrEqual(key.daily + (this.overshoot.get(keyId) ?? 0));
      }
      if (key.total !== null && !OBSERVED.has(keyId))
        expect(key.spent + key.held).toBeLessThanOrEqual(key.total + (this.overshoot.get(keyId) ?? 0));
    }
    // Audit rows add up to the spend, and to what re-opened entries counted before (their first attempt's rows),
    // until they settle again: every audit row's cost is what its call added.
    // Every budget: its totals and days are its keys' entries, within its caps but for price differentials.
    for (const [budgetId, budget] of this.budgets) {
      const drawing = entries.filter((e) => this.chains.get(e.keyId)?.includes(budgetId));
      expect(budget.spent).toBe(
        drawing.filter((e) => e.state === "settled" || e.state === "ambiguous").reduce((s, e) => s + (e.cost ?? 0), 0),
      );
      expect(budget.held).toBe(drawing.filter((e) => e.state === "held" || e.state === "orphaned").reduce((s, e) => s + e.hold, 0));
      const over = this.overshoot.get(budgetId) ?? 0;
      for (const day of DAYS) {
        const d = this.budgetDay(budgetId, day);
        if (budget.daily !== null) expect(d.settled + d.held).toBeLessThanOrEqual(budget.daily + over);
      }
      if (budget.total !== null) expect(budget.spent + budget.held).toBeLessThanOrEqual(budget.total + over);
    }
    // Every counterparty of a key: within the key's cap for it but for price differentials.
    for (const [bucket, d] of this.counterparties) {
      const keyId = bucket.split("|")[0]!;
      if (OBSERVED.has(keyId)) continue;
      expect(d.settled + d.held).toBeLessThanOrEqual(COUNTERPARTY_CAP + (this.overshoot.get(keyId) ?? 0));
    }
    const spentAll = [...this.keys.values()].reduce((s, k) => s + k.spent, 0);
    const reopened = entries.filter((e) => e.state === "held" || e.state === "orphaned").reduce((s, e) => s + (e.cost ?? 0), 0);
    expect(this.audit.reduce((s, c) => s + c, 0)).toBe(spentAll + reopened);
  }
}

type Op =
  | { op: "hold"; key: number; price: number; idem: number | null; day: number; customer: number | null }
  | { op: "settle"; pending: number; outcome: Outcome; costPercent: number }
  | { op: "resolve"; entry: number; settle: boolean; costPercent: number }
  | { op: "reconcile"; entry: number; costPercent: number }
  | { op: "decide"; approval: number; status: "approved" | "denied" | "expired" }
  | { op: "crash" };

const price = fc.oneof(fc.integer({ min: 0, max: 40 * USD }), fc.constantFrom(0, 1, 10 * USD, 25 * USD));
const ops = fc.array(
  fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record({
        op: fc.constant("hold" as const),
        key: fc.nat(2),
        price,
        idem: fc.option(fc.nat(5)),
        day: fc.nat(1),
        customer: fc.option(fc.nat(2)),
      }),
    },
    {
      weight: 4,
      arbitrary: fc.record({
        op: fc.constant("settle" as const),
        pending: fc.nat(9),
        outcome: fc.constantFrom<Outcome>("settled", "released", "ambiguous"),
        // Mostly at or under the hold; sometimes above it (a price differential).
        costPercent: fc.oneof(
          { weight: 5, arbitrary: fc.integer({ min: 0, max: 100 }) },
          { weight: 1, arbitrary: fc.integer({ min: 101, max: 150 }) },
        ),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant("resolve" as const),
        entry: fc.nat(20),
        settle: fc.boolean(),
        costPercent: fc.integer({ min: 0, max: 100 }),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ op: fc.constant("reconcile" as const), entry: fc.nat(20), costPercent: fc.integer({ min: 0, max: 130 }) }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant("decide" as const),
        approval: fc.nat(9),
        status: fc.constantFrom<"approved" | "denied" | "expired">("approved", "denied", "expired"),
      }),
    },
    { weight: 1, arbitrary: fc.constant({ op: "crash" as const }) },
  ),
  { maxLength: 60 },
);

type Caps = { daily: number | null; total: number | null };

/**
 * Runs one sequence against fresh keys; checks each admitted hold and the books after every step. Budgets:
 * `bud_team` above `bud_dag`; key 0 draws from the DAG's (a chain of two), key 1 from the team's, key 2 from none.
 */
function run(sequence: Op[], caps: Caps[], budgets: { team: Caps; dag: Caps }) {
  const m = new Memory();
  for (const [i, c] of caps.entries()) m.keys.set(`vk_${i}`, { status: "active", spent: 0, held: 0, ...c });
  m.budgets.set("bud_team", { id: "bud_team", spent: 0, held: 0, ...budgets.team });
  m.budgets.set("bud_dag", { id: "bud_dag", spent: 0, held: 0, ...budgets.dag });
  m.chains.set("vk_0", ["bud_dag", "bud_team"]);
  m.chains.set("vk_1", ["bud_team"]);
  const pending: { keyId: string; holdId: string | null; idem: string | null; hold: number }[] = [];
  let n = 0;
  const now = 1_000;
  for (const o of sequence) {
    if (o.op === "hold") {
      const keyId = `vk_${o.key % caps.length}`;
      const idem = o.idem === null ? null : `idem_${o.idem}`;
      const req: HoldRequest = {
        holdId: `hold_${++n}`,
        keyId,
        day: DAYS[o.day]!,
        micros: o.price,
        ledger: true,
        reuseAmbiguous: true,
        now,
        call: { requestId: `kbr_${n}`, method: "POST", path: "/v1/x" },
        // One body per Idempotency-Key: a retry is the same call, its price as the vendor states it now.
        idempotency: idem === null ? undefined : { key: idem, fingerprint: idem, ttlMs: 1_000 },
        counterparty: o.customer === null ? undefined : { id: `customer:${o.customer}`, capMicros: COUNTERPARTY_CAP },
        // Key 1 asks a person above $20 (SPEC §15); keys 0 and 2 do not. Key 2 only observes (SPEC §16).
        approval: keyId === "vk_1" && o.price > 20 * USD && idem !== null ? { id: `apr_${n}`, ttlMs: 5_000, requestedBy: null } : undefined,
        enforce: keyId !== "vk_2",
      };
      const seen = {
        key: m.keys.get(keyId)!,
        day: m.day(keyId, req.day),
        budgets: m.chain(keyId, req.day),
        counterpartyDay: req.counterparty ? m.counterpartyDay(keyId, req.day, req.counterparty.id) : null,
        approval: idem ? ([...m.approvals.values()].find((a) => a.keyId === keyId && a.fingerprint === idem) ?? null) : null,
        remembered: idem ? (m.calls.get(`${keyId}|${idem}`) ?? null) : null,
      };
      let d = decideHold(req, seen);
      if ("needsEntry" in d) {
        const e = m.entries.get(d.needsEntry);
        const withDays = e && {
          ...e,
          daySettled: m.day(e.keyId, e.day).settled,
          dayHeld: m.day(e.keyId, e.day).held,
          budgetDays: m.chain(e.keyId, e.day).map((b) => b.day),
          counterpartyDay: e.counterparty === null ? null : m.counterpartyDay(e.keyId, e.day, e.counterparty),
        };
        d = decideHold(req, { ...seen, entry: withDays ?? null });
      }
      if ("needsEntry" in d) throw new Error("asked twice");
      m.apply(d.writes);
      if (d.result.kind === "approval_pending") seenPaths.approvals++;
      if (d.result.kind === "admitted" && d.result.wouldDeny) seenPaths.observed++;
      if (d.result.kind === "admitted") {
        // A hold is never less than the price, nor than what a re-opened entry counted before.
        expect(d.result.holdMicros).toBeGreaterThanOrEqual(o.price);
        if (d.result.priorCostMicros !== null) expect(d.result.holdMicros).toBeGreaterThanOrEqual(d.result.priorCostMicros);
        pending.push({ keyId, holdId: d.result.holdId, idem, hold: d.result.holdMicros });
      }
    } else if (o.op === "settle") {
      const p = pending.splice(o.pending % Math.max(pending.length, 1), 1)[0];
      if (!p) continue;
      const entry = p.holdId ? (m.entries.get(p.holdId) ?? null) : null;
      const cost = o.outcome === "released" ? 0 : Math.floor((p.hold * o.costPercent) / 100);
      const s = decideSettlement(
        {
          keyId: p.keyId,
          holdId: p.holdId ?? undefined,
          outcome: o.outcome,
          costMicros: o.outcome === "ambiguous" ? p.hold : cost,
          now,
          requestId: "kbr",
        },
        entry,
        m.chains.get(p.keyId) ?? [],
      );
      m.apply(s.writes);
      m.audit.push(s.result);
      // The call's idempotency memory, as the stores keep it (store-level, not a money rule).
      if (p.idem) {
        const call = m.calls.get(`${p.keyId}|${p.idem}`)!;
        if (o.outcome === "ambiguous") call.state = "ambiguous";
        else m.calls.delete(`${p.keyId}|${p.idem}`);
      }
    } else if (o.op === "resolve") {
      const open = [...m.entries.values()].filter((e) => e.state === "orphaned" || e.state === "ambiguous");
      const e = open[o.entry % Math.max(open.length, 1)];
      if (!e) continue;
      const r = decideResolution(
        e,
        o.settle ? "settled" : "released",
        Math.floor((e.hold * o.costPercent) / 100),
        m.chains.get(e.keyId) ?? [],
      );
      m.apply(r!.writes);
      m.audit.push(r!.result);
    } else if (o.op === "reconcile") {
      const settled = [...m.entries.values()].filter((e) => e.state === "settled");
      const e = settled[o.entry % Math.max(settled.length, 1)];
      if (!e) continue;
      const r = decideReconciliation(e, Math.floor((e.hold * o.costPercent) / 100), null, m.chains.get(e.keyId) ?? []);
      m.apply(r!.writes);
      m.audit.push(r!.result);
    } else if (o.op === "decide") {
      const all = [...m.approvals.values()];
      const a = all[o.approval % Math.max(all.length, 1)];
      if (!a) continue;
      const entry = m.entries.get(a.holdId) ?? null;
      const d = decideApproval(
        a,
        entry,
        m.chains.get(a.keyId) ?? [],
        { status: o.status, by: "someone", reason: null },
        o.status === "expired" ? a.expiresAt : now,
      );
      m.apply(d.writes);
    } else {
      // A crash: open holds are orphaned (still counted as held), calls in flight become ambiguous.
      for (const e of m.entries.values()) if (e.state === "held") e.state = "orphaned";
      for (const c of m.calls.values()) if (c.state === "in_flight") c.state = "ambiguous";
      pending.length = 0;
    }
    m.checkBooks();
  }
}

const cap = fc.option(fc.integer({ min: 1, max: 100 * USD }), { nil: null });
const caps = fc.array(fc.record({ daily: cap, total: cap }), { minLength: 1, maxLength: 3 });
const budgetCaps = fc.record({ team: fc.record({ daily: cap, total: cap }), dag: fc.record({ daily: cap, total: cap }) });

describe("the rule book, with no database", () => {
  test("random interleavings keep every cap (but for price differentials) and balance the books", () => {
    const started = performance.now();
    fc.assert(
      fc.property(ops, caps, budgetCaps, (sequence, c, b) => run(sequence, c, b)),
      { numRuns: 3_000, seed: 24 },
    );
    expect(seenPaths.approvals).toBeGreaterThan(50);
    expect(seenPaths.observed).toBeGreaterThan(50);
    // Cheap enough to run thousands a second: the property gets many sequences in the suite's time.
    expect(performance.now() - started).toBeLessThan(60_000);
  });

  test("a hold exactly at the cap fits; one micro-dollar more is refused, and fires cap_exhausted", () => {
    const key = { status: "active", daily: 10 * USD, total: null, spent: 0, held: 0 };
    const req = (micros: number): HoldRequest => ({
      holdId: "hold_1",
      keyId: "vk_1",
      day: DAYS[0]!,
      micros,
      ledger: true,
      reuseAmbiguous: true,
      now: 0,
      call: { requestId: "kbr_1", method: "POST", path: "/v1/x" },
    });
    const seen = { key, day: { settled: 4 * USD, held: 1 * USD }, budgets: [], counterpartyDay: null, remembered: null, approval: null };
    const fitting = decideHold(req(5 * USD), seen);
    expect("result" in fitting && fitting.result.kind).toBe("admitted");
    const over = decideHold(req(5 * USD + 1), seen);
    expect("result" in over && over.result).toMatchObject({ kind: "denied", reason: "daily_cap", capMicros: 10 * USD });
    expect("writes" in over && over.writes).toEqual([
      expect.objectContaining({ kind: "alert", alert: "cap_refused", cap: "daily", priceMicros: 5 * USD + 1 }),
    ]);
  });

  test("a retry of an ambiguous entry holds at least what it counted, with no second entry", () => {
    const key = { status: "active", daily: 100 * USD, total: null, spent: 90 * USD, held: 0 };
    const entry = {
      id: "hold_1",
      keyId: "vk_1",
      state: "ambiguous" as const,
      hold: 90 * USD,
      cost: 90 * USD,
      day: DAYS[0]!,
      counterparty: null,
    };
    const req: HoldRequest = {
      holdId: "hold_2",
      keyId: "vk_1",
      day: DAYS[0]!,
      micros: 30 * USD,
      ledger: true,
      reuseAmbiguous: true,
      now: 0,
      call: { requestId: "kbr_2", method: "POST", path: "/v1/x" },
      idempotency: { key: "k", fingerprint: "f", ttlMs: 1 },
    };
    const remembered = { fingerprint: "f", state: "ambiguous" as const, holdId: "hold_1", expiresAt: 10, response: null };
    const seen = { key, day: { settled: 90 * USD, held: 0 }, budgets: [], counterpartyDay: null, remembered, approval: null };
    expect(decideHold(req, seen)).toEqual({ needsEntry: "hold_1" });
    const d = decideHold(req, { ...seen, entry: { ...entry, daySettled: 90 * USD, dayHeld: 0, budgetDays: [], counterpartyDay: null } });
    expect("result" in d && d.result).toMatchObject({
      kind: "admitted",
      holdId: "hold_1",
      holdMicros: 90 * USD,
      priorCostMicros: 90 * USD,
    });
    expect("writes" in d && d.writes.filter((w) => w.kind === "insert_entry")).toEqual([]);
  });

  describe("an approval covers its one call at the hold the person saw", () => {
    const key = { status: "active", daily: 2_000 * USD, total: null, spent: 0, held: 1_000 * USD };
    const entry = {
      id: "hold_1",
      keyId: "vk_1",
      state: "held" as const,
      hold: 1_000 * USD,
      cost: 0,
      day: DAYS[0]!,
      counterparty: null,
      daySettled: 0,
      dayHeld: 1_000 * USD,
      budgetDays: [],
      counterpartyDay: null,
    };
    const approval = { id: "apr_1", keyId: "vk_1", fingerprint: "f", holdId: "hold_1", expiresAt: 3_600_000 };
    const retry = (micros: number): HoldRequest => ({
      holdId: "hold_2",
      keyId: "vk_1",
      day: DAYS[0]!,
      micros,
      ledger: true,
      reuseAmbiguous: true,
      now: 60_000,
      call: { requestId: "kbr_2", method: "POST", path: "/v1/invoices/in_1/pay" },
      idempotency: { key: "k", fingerprint: "f", ttlMs: 86_400_000 },
      approval: { id: "apr_2", ttlMs: 3_600_000, requestedBy: null },
    });
    const seen = { key, day: { settled: 0, held: 1_000 * USD }, budgets: [], counterpartyDay: null, remembered: null, entry };

    test("approved at $1,000: the retry at $1,000 goes out on the reserved hold", () => {
      const d = decideHold(retry(1_000 * USD), { ...seen, approval: { ...approval, status: "approved" } });
      expect("result" in d && d.result).toMatchObject({ kind: "admitted", holdId: "hold_1", holdMicros: 1_000 * USD });
    });

    test("the invoice grew to $3,000 after the approval: refused, the approval void and its hold released", () => {
      const d = decideHold(retry(3_000 * USD), { ...seen, approval: { ...approval, status: "approved" } });
      expect("result" in d && d.result).toEqual({ kind: "approval_expired", approvalId: "apr_1", why: "price_rose" });
      const writes = "writes" in d ? d.writes : [];
      expect(writes).toContainEqual(expect.objectContaining({ kind: "set_approval", approvalId: "apr_1", status: "expired" }));
      expect(writes.filter((w) => w.kind === "claim_call" || w.kind === "insert_entry")).toEqual([]);
    });

    test("used, and its retry outlived the idempotency memory: refused, never a second approval request", () => {
      const d = decideHold(retry(1_000 * USD), { ...seen, approval: { ...approval, status: "used" } });
      expect("result" in d && d.result).toEqual({ kind: "approval_expired", approvalId: "apr_1", why: "used" });
      expect("writes" in d && d.writes).toEqual([]);
    });
  });
});

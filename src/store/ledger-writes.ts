import type { Database } from "bun:sqlite";
import type { AlertIntent, BudgetState, LedgerWrite } from "../ledger/rules";
import type { AlertOutbox } from "./alerts";
import { MAX_BUDGET_DEPTH } from "./ledger-shared";
import type { DayUsage } from "./types";

/**
 * The SQLite store's hands for the rule book (ledger/rules.ts): each write a decision returns, as a prepared
 * statement, run in the caller's transaction. Nothing is decided here.
 */
export function sqliteLedgerWriter(client: Database, alerts: AlertOutbox) {
  const insertEntry = client.prepare(
    `INSERT INTO ledger_entries (id, key_id, day, hold_micros, state, created_at, request_id, method, path, counterparty)
     VALUES (?, ?, ?, ?, 'held', ?, ?, ?, ?, ?)`,
  );
  const reopenEntry = client.prepare(`UPDATE ledger_entries SET state = 'held', hold_micros = ?2, cost_micros = ?3 WHERE id = ?1`);
  const closeEntry = client.prepare(
    `UPDATE ledger_entries SET state = ?2, cost_micros = ?3, settled_at = ?4, reconcile_path = ?5, reconcile_at = ?6 WHERE id = ?1`,
  );
  const repriceEntry = client.prepare(`UPDATE ledger_entries SET cost_micros = ?2, reconcile_at = NULL WHERE id = ?1`);
  const addDay = client.prepare(
    `INSERT INTO spend_days (key_id, day, settled_micros, held_micros) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (key_id, day) DO UPDATE SET settled_micros = settled_micros + ?3, held_micros = held_micros + ?4`,
  );
  const addKey = client.prepare(
    `UPDATE vault_keys SET spent_total_micros = spent_total_micros + ?2, held_total_micros = held_total_micros + ?3,
            calls = calls + ?4, last_used_at = coalesce(?5, last_used_at)
      WHERE id = ?1`,
  );
  const addBudgetDay = client.prepare(
    `INSERT INTO budget_days (budget_id, day, settled_micros, held_micros) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (budget_id, day) DO UPDATE SET settled_micros = settled_micros + ?3, held_micros = held_micros + ?4`,
  );
  const addBudgetTotals = client.prepare(
    `UPDATE budgets SET spent_total_micros = spent_total_micros + ?2, held_total_micros = held_total_micros + ?3 WHERE id = ?1`,
  );
  const addCounterparty = client.prepare(
    `INSERT INTO counterparty_days (key_id, day, counterparty, settled_micros, held_micros) VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (key_id, day, counterparty) DO UPDATE SET settled_micros = settled_micros + ?4, held_micros = held_micros + ?5`,
  );
  // A claim replaces an expired entry, or an ambiguous one whose retry is a new call, whole.
  const claimCall = client.prepare(
    `INSERT OR REPLACE INTO idempotency_entries (key_id, idempotency_key, fingerprint, state, hold_id, day, created_at, expires_at)
     VALUES (?, ?, ?, 'in_flight', ?, ?, ?, ?)`,
  );
  const insertApproval = client.prepare(
    `INSERT INTO approvals (id, key_id, idempotency_key, fingerprint, hold_id, method, path, price_micros, status, requested_at,
                            requested_by, expires_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)`,
  );
  const setApproval =
    client.prepare(`UPDATE approvals SET status = ?2, decided_at = coalesce(?3, decided_at), decided_by = coalesce(?4, decided_by),
                                             reason = coalesce(?5, reason) WHERE id = ?1`);
  const callInFlight = client.prepare(`UPDATE idempotency_entries SET state = 'in_flight' WHERE key_id = ?1 AND idempotency_key = ?2`);

  function alert(a: AlertIntent, now: number) {
    switch (a.alert) {
      case "cap_refused":
        return alerts.capRefused(a.keyId, a.cap, a.day, a.capMicros, a.balance, a.priceMicros, now);
      case "spend_settled":
        return alerts.spendSettled(a.keyId, a.day, a.delta, now);
      case "price_differential":
        return alerts.priceDifferential(a.keyId, a, now);
      case "holds_need_attention":
        return alerts.holdsNeedAttention(a.keyId, a.reason, a.holds, a.day, now);
      case "budget_refused":
        return alerts.budgetRefused(a.budgetId, a, now);
      case "budget_settled":
        return alerts.budgetSettled(a.budgetId, a.day, a.delta, now);
      case "approval_requested":
        return alerts.approvalRequested(a, now);
      case "approval_decided":
        return alerts.approvalDecided(a, now);
    }
  }

  /** Applies a decision's writes, in order, at `now`. */
  return function apply(writes: readonly LedgerWrite[], now: number): void {
    for (const w of writes) {
      switch (w.kind) {
        case "insert_entry":
          insertEntry.run(w.holdId, w.keyId, w.day, w.micros, now, w.call.requestId, w.call.method, w.call.path, w.counterparty);
          break;
        case "reopen_entry":
          reopenEntry.run(w.holdId, w.hold, w.cost);
          break;
        case "close_entry":
          closeEntry.run(w.holdId, w.state, w.cost, now, w.reconcile?.path ?? null, w.reconcile?.at ?? null);
          break;
        case "reprice_entry":
          repriceEntry.run(w.holdId, w.cost);
          break;
        case "add_day":
          addDay.run(w.keyId, w.day, w.settled, w.held);
          break;
        case "add_key":
          addKey.run(w.keyId, w.spent, w.held, w.calls, w.usedAt);
          break;
        case "add_budget":
          addBudgetDay.run(w.budgetId, w.day, w.settled, w.held);
          addBudgetTotals.run(w.budgetId, w.settled, w.held);
          break;
        case "add_counterparty":
          addCounterparty.run(w.keyId, w.day, w.counterparty, w.settled, w.held);
          break;
        case "claim_call":
          claimCall.run(w.keyId, w.key, w.fingerprint, w.holdId, w.day, now, w.expiresAt);
          break;
        case "call_in_flight":
          callInFlight.run(w.keyId, w.key);
          break;
        case "insert_approval":
          insertApproval.run(
            w.approvalId,
            w.keyId,
            w.key,
            w.fingerprint,
            w.holdId,
            w.call.method,
            w.call.path,
            w.priceMicros,
            now,
            w.requestedBy,
            w.expiresAt,
          );
          break;
        case "set_approval":
          // A person's decision is timed and signed; the call going out (`used`) or a lapse only changes the status.
          if (w.by === undefined) setApproval.run(w.approvalId, w.status, null, null, null);
          else setApproval.run(w.approvalId, w.status, now, w.by, w.reason ?? null);
          break;
        case "alert":
          alert(w, now);
          break;
      }
    }
  };
}

/** The budgets up a key's chain (SPEC §14), read for the rule book: their parents never change, so neither does a chain. */
export function sqliteBudgetChain(client: Database) {
  const keyBudget = client.prepare<{ budgetId: string | null }, [string]>(`SELECT budget_id AS budgetId FROM vault_keys WHERE id = ?`);
  const budgetById = client.prepare<Omit<BudgetState, "day"> & { parentId: string | null }, [string]>(
    `SELECT id, parent_id AS parentId, daily_cap_micros AS daily, total_cap_micros AS total,
            spent_total_micros AS spent, held_total_micros AS held
       FROM budgets WHERE id = ?`,
  );
  const budgetDay = client.prepare<DayUsage, [string, string]>(
    `SELECT settled_micros AS settledMicros, held_micros AS heldMicros FROM budget_days WHERE budget_id = ? AND day = ?`,
  );

  /** The chain from `budgetId` up, each budget with its balance on `day`. */
  function chain(budgetId: string | null, day: string): BudgetState[] {
    const budgets: BudgetState[] = [];
    for (let id = budgetId; id !== null && budgets.length < MAX_BUDGET_DEPTH; ) {
      const b = budgetById.get(id);
      if (!b) break;
      const { parentId, ...state } = b;
      const d = budgetDay.get(b.id, day);
      budgets.push({ ...state, day: { settled: d?.settledMicros ?? 0, held: d?.heldMicros ?? 0 } });
      id = parentId;
    }
    return budgets;
  }

  /** The ids of a key's chain, the key's own budget first. */
  function chainIds(keyId: string): string[] {
    const ids: string[] = [];
    for (
      let id = keyBudget.get(keyId)?.budgetId ?? null;
      id !== null && ids.length < MAX_BUDGET_DEPTH;
      id = budgetById.get(id)?.parentId ?? null
    )
      ids.push(id);
    return ids;
  }

  return { chain, chainIds };
}

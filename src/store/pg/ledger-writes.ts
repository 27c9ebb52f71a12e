import type { AlertIntent, BudgetState, Entry, LedgerWrite } from "../../ledger/rules";
import { MAX_BUDGET_DEPTH } from "../ledger-shared";
import type { PgAlertOutbox } from "./alerts";
import { type Pg, num, numOrNull } from "./client";
import { lockKey, sendNow } from "./send";

/**
 * The PostgreSQL store's hands for the rule book (ledger/rules.ts): each write a decision returns, as a
 * statement on the transaction's connection. The ledger's writes are sent together (one round trip, run in order
 * once the key's lock is held); the alerts, which read what they fire on, follow. Nothing is decided here.
 * Entries and idempotency claims are written under `instanceId`: recovery leaves a live instance's alone.
 */
export function pgLedgerWriter(alerts: PgAlertOutbox, instanceId: string) {
  function statement(tx: Pg, w: Exclude<LedgerWrite, { kind: "alert" }>, now: number) {
    switch (w.kind) {
      case "insert_entry":
        return tx`INSERT INTO ledger_entries (id, key_id, day, hold_micros, state, created_at, request_id, method, path, instance_id,
                                              counterparty)
                  VALUES (${w.holdId}, ${w.keyId}, ${w.day}, ${w.micros}, 'held', ${now}, ${w.call.requestId}, ${w.call.method},
                          ${w.call.path}, ${instanceId}, ${w.counterparty})`;
      case "reopen_entry":
        return tx`UPDATE ledger_entries SET state = 'held', hold_micros = ${w.hold}, cost_micros = ${w.cost}, instance_id = ${instanceId}
                   WHERE id = ${w.holdId}`;
      case "close_entry":
        return tx`UPDATE ledger_entries SET state = ${w.state}, cost_micros = ${w.cost}, settled_at = ${now},
                         reconcile_path = ${w.reconcile?.path ?? null}, reconcile_at = ${w.reconcile?.at ?? null}
                   WHERE id = ${w.holdId}`;
      case "reprice_entry":
        return tx`UPDATE ledger_entries SET cost_micros = ${w.cost}, reconcile_at = NULL WHERE id = ${w.holdId}`;
      case "add_day":
        return tx`INSERT INTO spend_days (key_id, day, settled_micros, held_micros) VALUES (${w.keyId}, ${w.day}, ${w.settled}, ${w.held})
                  ON CONFLICT (key_id, day) DO UPDATE SET settled_micros = spend_days.settled_micros + excluded.settled_micros,
                                                          held_micros = spend_days.held_micros + excluded.held_micros`;
      case "add_key":
        return tx`UPDATE vault_keys SET spent_total_micros = spent_total_micros + ${w.spent}, held_total_micros = held_total_micros + ${w.held},
                         calls = calls + ${w.calls}, last_used_at = coalesce(${w.usedAt}::bigint, last_used_at)
                   WHERE id = ${w.keyId}`;
      // The budget's day and its lifetime totals, in one statement.
      case "add_budget":
        return tx`WITH day AS (
                    INSERT INTO budget_days (budget_id, day, settled_micros, held_micros) VALUES (${w.budgetId}, ${w.day}, ${w.settled}, ${w.held})
                    ON CONFLICT (budget_id, day) DO UPDATE SET settled_micros = budget_days.settled_micros + excluded.settled_micros,
                                                               held_micros = budget_days.held_micros + excluded.held_micros
                  )
                  UPDATE budgets SET spent_total_micros = spent_total_micros + ${w.settled}, held_total_micros = held_total_micros + ${w.held}
                   WHERE id = ${w.budgetId}`;
      case "add_counterparty":
        return tx`INSERT INTO counterparty_days (key_id, day, counterparty, settled_micros, held_micros)
                  VALUES (${w.keyId}, ${w.day}, ${w.counterparty}, ${w.settled}, ${w.held})
                  ON CONFLICT (key_id, day, counterparty) DO UPDATE SET settled_micros = counterparty_days.settled_micros + excluded.settled_micros,
                                                                      held_micros = counterparty_days.held_micros + excluded.held_micros`;
      // A claim replaces an expired entry, or an ambiguous one whose retry is a new call, whole.
      case "claim_call":
        return tx`INSERT INTO idempotency_entries (key_id, idempotency_key, fingerprint, state, hold_id, day, created_at, expires_at, instance_id)
                  VALUES (${w.keyId}, ${w.key}, ${w.fingerprint}, 'in_flight', ${w.holdId}, ${w.day}, ${now}, ${w.expiresAt}, ${instanceId})
                  ON CONFLICT (key_id, idempotency_key) DO UPDATE SET fingerprint = excluded.fingerprint, state = 'in_flight',
                         hold_id = excluded.hold_id, day = excluded.day, status = NULL, headers = NULL, body = NULL,
                         body_too_large = false, vendor_request_id = NULL, created_at = excluded.created_at,
                         expires_at = excluded.expires_at, instance_id = excluded.instance_id`;
      case "call_in_flight":
        return tx`UPDATE idempotency_entries SET state = 'in_flight', instance_id = ${instanceId}
                   WHERE key_id = ${w.keyId} AND idempotency_key = ${w.key}`;
      case "insert_approval":
        return tx`INSERT INTO approvals (id, key_id, idempotency_key, fingerprint, hold_id, method, path, price_micros, status,
                                         requested_at, requested_by, expires_at)
                  VALUES (${w.approvalId}, ${w.keyId}, ${w.key}, ${w.fingerprint}, ${w.holdId}, ${w.call.method}, ${w.call.path},
                          ${w.priceMicros}, 'pending', ${now}, ${w.requestedBy}, ${w.expiresAt})`;
      // A person's decision is timed and signed; the call going out (`used`) or a lapse only changes the status.
      case "set_approval":
        return w.by === undefined
          ? tx`UPDATE approvals SET status = ${w.status} WHERE id = ${w.approvalId}`
          : tx`UPDATE approvals SET status = ${w.status}, decided_at = ${now}, decided_by = ${w.by}, reason = ${w.reason ?? null}
                WHERE id = ${w.approvalId}`;
    }
  }

  function alert(tx: Pg, a: AlertIntent, now: number) {
    switch (a.alert) {
      case "cap_refused":
        return alerts.capRefused(tx, a.keyId, a.cap, a.day, a.capMicros, a.balance, a.priceMicros, now);
      case "spend_settled":
        return alerts.spendSettled(tx, a.keyId, a.day, a.delta, now);
      case "price_differential":
        return alerts.priceDifferential(tx, a.keyId, a, now);
      case "holds_need_attention":
        return alerts.holdsNeedAttention(tx, a.keyId, a.reason, a.holds, a.day, now);
      case "budget_refused":
        return alerts.budgetRefused(tx, a.budgetId, a, now);
      case "budget_settled":
        return alerts.budgetSettled(tx, a.budgetId, a.day, a.delta, now);
      case "approval_requested":
        return alerts.approvalRequested(tx, a, now);
      case "approval_decided":
        return alerts.approvalDecided(tx, a, now);
    }
  }

  /** Applies a decision's writes at `now`: the ledger's together, then its alerts in order. */
  return async function apply(tx: Pg, writes: readonly LedgerWrite[], now: number): Promise<void> {
    const sent: Promise<unknown>[] = [];
    for (const w of writes) if (w.kind !== "alert") sent.push(sendNow(statement(tx, w, now)));
    await Promise.all(sent);
    for (const w of writes) if (w.kind === "alert") await alert(tx, w, now);
  };
}

/** A ledger entry as the rule book reads it, its bigints as numbers. */
export function toEntry(r: Record<string, unknown>): Entry {
  return {
    id: r.id as string,
    keyId: r.keyId as string,
    state: r.state as Entry["state"],
    hold: num(r.hold),
    cost: numOrNull(r.cost),
    day: r.day as string,
    counterparty: (r.counterparty as string | null) ?? null,
  };
}

/** The columns toEntry reads, for `SELECT ${ENTRY_COLUMNS} FROM ledger_entries e`. */
export const ENTRY_COLUMNS = `e.id, e.key_id AS "keyId", e.state, e.hold_micros AS hold, e.cost_micros AS cost, e.day, e.counterparty`;

/**
 * The budgets up a key's chain (SPEC §14), each with its balance on `day` (empty: none), in one statement: the
 * key's budget and at most two parents, which never change.
 */
export async function pgBudgetChain(tx: Pg, keyId: string, day: string): Promise<BudgetState[]> {
  const rows = await tx`
    WITH RECURSIVE up AS (
      SELECT b.*, 1 AS depth FROM budgets b JOIN vault_keys k ON k.budget_id = b.id WHERE k.id = ${keyId}
      UNION ALL
      SELECT p.*, up.depth + 1 FROM budgets p JOIN up ON p.id = up.parent_id WHERE up.depth < ${MAX_BUDGET_DEPTH}
    )
    SELECT up.id, up.daily_cap_micros AS daily, up.total_cap_micros AS total, up.spent_total_micros AS spent,
           up.held_total_micros AS held, d.settled_micros AS "daySettled", d.held_micros AS "dayHeld"
      FROM up LEFT JOIN budget_days d ON d.budget_id = up.id AND d.day = ${day}
     ORDER BY up.depth`;
  return rows.map((r: Record<string, unknown>) => ({
    id: r.id as string,
    daily: numOrNull(r.daily),
    total: numOrNull(r.total),
    spent: num(r.spent),
    held: num(r.held),
    day: { settled: num(r.daySettled ?? 0), held: num(r.dayHeld ?? 0) },
  }));
}

/**
 * The order every transaction that moves a key's money takes its locks in, across instances: the root of the
 * key's budget chain first, then the rest of the chain down to the key's own budget, then the key's row. A budget
 * is shared by many keys, so its rows are locked (FOR UPDATE) before its balances are read, as a key's are; and
 * since every such transaction starts at the root (the group commit sorts its ops by `lockOrder`), none waits for
 * a lock another holds while holding one that other wants. A key without a budget is its own root.
 */
export function pgMoneyLocks(sql: Pg) {
  // A key's budget, and each budget's parent, never change: a chain read once is the chain for good.
  const chains = new Map<string, string[]>();

  /** The ids of a key's chain, the key's own budget first (empty: none). */
  async function chainOf(keyId: string): Promise<string[]> {
    const known = chains.get(keyId);
    if (known) return known;
    const rows = await sql`
      WITH RECURSIVE up AS (
        SELECT b.id, b.parent_id, 1 AS depth FROM budgets b JOIN vault_keys k ON k.budget_id = b.id WHERE k.id = ${keyId}
        UNION ALL
        SELECT p.id, p.parent_id, up.depth + 1 FROM budgets p JOIN up ON p.id = up.parent_id WHERE up.depth < ${MAX_BUDGET_DEPTH}
      )
      SELECT id FROM up ORDER BY depth`;
    const chain = rows.map((r: { id: string }) => r.id);
    if (chains.size > 100_000) chains.clear();
    chains.set(keyId, chain);
    return chain;
  }

  return {
    chainOf,
    /** The chain when already read: a settlement follows its hold, so it can join the group commit in the same turn. */
    known: (keyId: string): string[] | undefined => chains.get(keyId),
    /** What the group commit sorts a key's ops by: the root of its chain, or the key. */
    lockOrder: (keyId: string, chain: readonly string[]): string => chain.at(-1) ?? keyId,
    /** Locks the chain (root first) and then the key, sent at once: statements after it run once they are held. */
    lockMoney(tx: Pg, keyId: string, chain: readonly string[]): Promise<unknown> {
      const locks =
        chain.length === 0
          ? []
          : [
              sendNow(tx`SELECT 1 FROM budgets WHERE id = ANY(${[...chain]}::text[])
                                                           ORDER BY array_position(${[...chain]}::text[], id) DESC FOR UPDATE`),
            ];
      return Promise.all([...locks, lockKey(tx, keyId)]);
    },
  };
}

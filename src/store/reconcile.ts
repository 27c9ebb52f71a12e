import type { Database } from "bun:sqlite";
import type { AlertOutbox } from "./alerts";
import { auditParams, insertAuditSql } from "./audit";
import type { GroupCommit } from "./group-commit";
import type { DueReconciliation, ReconcileRequest } from "./types";

/**
 * Settled ledger entries whose final price the vendor states only later (SPEC §6: Twilio messages and calls).
 * The settlement wrote where to read it (`reconcile_path`) and when (`reconcile_at`); the reconciler
 * (ops/reconciler.ts) reads it and re-settles the entry here, or sets the next time to try.
 */
export function reconcileQueries(client: Database, commits: GroupCommit, alerts: AlertOutbox) {
  // `reconcile_at IS NOT NULL` lets SQLite use the partial index on reconcile_at.
  const due = client.prepare<DueReconciliation, [number, number]>(
    `SELECT e.id, e.key_id AS keyId, k.label, k.vendor, k.mode, e.hold_micros AS holdMicros, e.cost_micros AS costMicros,
            e.reconcile_path AS reconcilePath, e.reconcile_attempts AS attempts, e.settled_at AS settledAt,
            e.method, e.path
       FROM ledger_entries e JOIN vault_keys k ON k.id = e.key_id
      WHERE e.reconcile_at IS NOT NULL AND e.reconcile_at <= ?
      ORDER BY e.reconcile_at LIMIT ?`,
  );
  const awaiting = client.prepare<{ keyId: string; day: string; cost: number; hold: number; requestId: string | null }, [string]>(
    `SELECT key_id AS keyId, day, cost_micros AS cost, hold_micros AS hold, request_id AS requestId FROM ledger_entries
      WHERE id = ? AND state = 'settled' AND reconcile_at IS NOT NULL`,
  );
  const setCost = client.prepare(`UPDATE ledger_entries SET cost_micros = ?2, reconcile_at = NULL WHERE id = ?1`);
  const addDaySettled = client.prepare(`UPDATE spend_days SET settled_micros = settled_micros + ?3 WHERE key_id = ?1 AND day = ?2`);
  const addKeySpent = client.prepare(`UPDATE vault_keys SET spent_total_micros = spent_total_micros + ?2 WHERE id = ?1`);
  const insertAudit = client.prepare(insertAuditSql);
  const postpone = client.prepare(`UPDATE ledger_entries SET reconcile_at = ?2, reconcile_attempts = reconcile_attempts + 1 WHERE id = ?1`);

  /**
   * The entry's cost becomes the final price; its own day's and the key's spend move by the difference (up or
   * down), and so does the audit row's cost, so audit sums keep equalling the ledger.
   */
  const resettle = (req: ReconcileRequest): boolean => {
    const entry = awaiting.get(req.id);
    if (!entry) return false;
    const delta = req.costMicros - entry.cost;
    setCost.run(req.id, req.costMicros);
    addDaySettled.run(entry.keyId, entry.day, delta);
    addKeySpent.run(entry.keyId, delta);
    insertAudit.run(...auditParams({ ...req.audit, costMicros: delta }));
    // Alerts in the same transaction (see alerts.ts): thresholds a higher final price crossed, a price above the hold.
    alerts.spendSettled(entry.keyId, entry.day, delta, req.audit.at);
    if (req.costMicros > entry.hold) {
      const f = { holdId: req.id, requestId: entry.requestId, holdMicros: entry.hold, costMicros: req.costMicros };
      alerts.priceDifferential(entry.keyId, f, req.audit.at);
    }
    return true;
  };

  return {
    async dueReconciliations(now: number, limit: number) {
      return due.all(now, limit);
    },
    reconcileEntry: (req: ReconcileRequest) => commits.submit(() => resettle(req)),
    postponeReconciliation: (id: string, nextAt: number | null) => commits.submit(() => void postpone.run(id, nextAt)),
  };
}

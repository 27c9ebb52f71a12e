import type { Database } from "bun:sqlite";
import { decideReconciliation, type Entry } from "../ledger/rules";
import type { AlertOutbox } from "./alerts";
import { auditAppender } from "./audit-append";
import type { GroupCommit } from "./group-commit";
import { sqliteBudgetChain, sqliteLedgerWriter } from "./ledger-writes";
import type { DueReconciliation, ReconcileRequest } from "./types";

/**
 * Settled ledger entries whose final price the vendor states only later (SPEC §6: Twilio messages and calls).
 * The settlement wrote where to read it (`reconcile_path`) and when (`reconcile_at`); the reconciler
 * (proxy/reconciler.ts) reads it and re-settles the entry here, or sets the next time to try.
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
  const awaiting = client.prepare<Entry & { requestId: string | null }, [string]>(
    `SELECT id, key_id AS keyId, state, hold_micros AS hold, cost_micros AS cost, day, counterparty, request_id AS requestId FROM ledger_entries
      WHERE id = ? AND reconcile_at IS NOT NULL`,
  );
  const apply = sqliteLedgerWriter(client, alerts);
  const { chainIds } = sqliteBudgetChain(client);
  const appendAudit = auditAppender(client);
  const postpone = client.prepare(`UPDATE ledger_entries SET reconcile_at = ?2, reconcile_attempts = reconcile_attempts + 1 WHERE id = ?1`);

  /** The rule book's re-settlement (decideReconciliation), and its audit row, whose cost is the difference. */
  const resettle = (req: ReconcileRequest): boolean => {
    const entry = awaiting.get(req.id);
    const decision = entry && decideReconciliation(entry, req.costMicros, entry.requestId, chainIds(entry.keyId));
    if (!decision) return false;
    apply(decision.writes, req.audit.at);
    appendAudit({ ...req.audit, costMicros: decision.result });
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

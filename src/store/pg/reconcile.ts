import { decideReconciliation } from "../../ledger/rules";
import type { DueReconciliation, ReconcileRequest } from "../types";
import type { PgAlertOutbox } from "./alerts";
import { insertAuditRows } from "./audit";
import type { PgBatch } from "./batch";
import { type Pg, num } from "./client";
import { ENTRY_COLUMNS, pgLedgerWriter, pgMoneyLocks, toEntry } from "./ledger-writes";
import { lockKey } from "./send";

/** How long an instance has the entries it was given to read; after that, any instance may read them again. */
const CLAIM_MS = 60_000;

/**
 * Settled ledger entries whose final price the vendor states only later (SPEC §6: Twilio messages and calls), on
 * PostgreSQL; the same rules as ../reconcile.ts. Every instance runs a reconciler: the entries one is given are
 * claimed for a minute, so no two read the same entry at once, and re-settling an entry happens once at most.
 */
export function pgReconcileQueries(sql: Pg, batch: PgBatch, alerts: PgAlertOutbox, instanceId: string) {
  const apply = pgLedgerWriter(alerts, instanceId);
  const locks = pgMoneyLocks(sql);
  /** The rule book's re-settlement (decideReconciliation) of an entry still awaiting its final price, and its audit row. */
  async function resettle(tx: Pg, keyId: string, req: ReconcileRequest, chain: readonly string[]): Promise<boolean> {
    const [, [row]] = await Promise.all([
      locks.lockMoney(tx, keyId, chain),
      tx.unsafe(
        `SELECT ${ENTRY_COLUMNS}, e.request_id AS "requestId" FROM ledger_entries e
          WHERE e.id = $1 AND e.key_id = $2 AND e.reconcile_at IS NOT NULL`,
        [req.id, keyId],
      ),
    ]);
    const decision = row && decideReconciliation(toEntry(row), req.costMicros, row.requestId, chain);
    if (!decision) return false;
    await Promise.all([apply(tx, decision.writes, req.audit.at), insertAuditRows(tx, [{ ...req.audit, costMicros: decision.result }])]);
    return true;
  }

  /** The key of an entry (it never changes): the group commit orders its ops by the key they lock. */
  async function keyOf(id: string): Promise<string | null> {
    const [entry] = await sql`SELECT key_id AS "keyId" FROM ledger_entries WHERE id = ${id}`;
    return entry?.keyId ?? null;
  }

  return {
    /** Claims what it returns: its next read moves a minute on, and rows another instance is claiming are skipped. */
    async dueReconciliations(now: number, limit: number): Promise<DueReconciliation[]> {
      const rows = await sql`
        WITH due AS (
          SELECT id, reconcile_at FROM ledger_entries
           WHERE reconcile_at IS NOT NULL AND reconcile_at <= ${now}
           ORDER BY reconcile_at LIMIT ${limit}
             FOR UPDATE SKIP LOCKED
        ), claimed AS (
          UPDATE ledger_entries e SET reconcile_at = ${now + CLAIM_MS} FROM due WHERE e.id = due.id
          RETURNING e.id, e.key_id, e.hold_micros, e.cost_micros, e.reconcile_path, e.reconcile_attempts, e.settled_at,
                    e.method, e.path, due.reconcile_at AS due_at
        )
        SELECT c.id, c.key_id AS "keyId", k.label, k.vendor, k.mode, c.hold_micros AS "holdMicros", c.cost_micros AS "costMicros",
               c.reconcile_path AS "reconcilePath", c.reconcile_attempts AS attempts, c.settled_at AS "settledAt", c.method, c.path
          FROM claimed c JOIN vault_keys k ON k.id = c.key_id
         ORDER BY c.due_at`;
      return rows.map((r: Record<string, unknown>) => ({
        ...(r as unknown as DueReconciliation),
        holdMicros: num(r.holdMicros),
        costMicros: num(r.costMicros),
        settledAt: num(r.settledAt),
      }));
    },

    async reconcileEntry(req: ReconcileRequest): Promise<boolean> {
      const keyId = await keyOf(req.id);
      if (keyId === null) return false;
      const chain = await locks.chainOf(keyId);
      return batch.submit(locks.lockOrder(keyId, chain), (tx) => resettle(tx, keyId, req, chain));
    },

    /** An entry re-settled meanwhile (by another instance) awaits nothing more: it is not set to be read again. */
    async postponeReconciliation(id: string, nextAt: number | null): Promise<void> {
      const keyId = await keyOf(id);
      if (keyId === null) return;
      await batch.submit(keyId, async (tx) => {
        await Promise.all([
          lockKey(tx, keyId),
          tx`UPDATE ledger_entries SET reconcile_at = ${nextAt}, reconcile_attempts = reconcile_attempts + 1
              WHERE id = ${id} AND reconcile_at IS NOT NULL`,
        ]);
      });
    },
  };
}

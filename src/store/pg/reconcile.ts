import type { DueReconciliation, ReconcileRequest } from "../types";
import type { PgAlertOutbox } from "./alerts";
import { insertAuditRows } from "./audit";
import type { PgBatch } from "./batch";
import { type Pg, num } from "./client";
import { lockKey } from "./ledger";

/** How long an instance has the entries it was given to read; after that, any instance may read them again. */
const CLAIM_MS = 60_000;

/**
 * Settled ledger entries whose final price the vendor states only later (SPEC §6: Twilio messages and calls), on
 * PostgreSQL; the same rules as ../reconcile.ts. Every instance runs a reconciler: the entries one is given are
 * claimed for a minute, so no two read the same entry at once, and re-settling an entry happens once at most.
 */
export function pgReconcileQueries(sql: Pg, batch: PgBatch, alerts: PgAlertOutbox) {
  /**
   * The entry's cost becomes the final price, if it still awaits one; its own day's and the key's spend move by
   * the difference (up or down), and so does the audit row's cost, so audit sums keep equalling the ledger.
   */
  async function resettle(tx: Pg, keyId: string, req: ReconcileRequest): Promise<boolean> {
    const [, [entry]] = await Promise.all([
      lockKey(tx, keyId),
      tx`SELECT day, cost_micros AS cost, hold_micros AS hold, request_id AS "requestId" FROM ledger_entries
          WHERE id = ${req.id} AND key_id = ${keyId} AND state = 'settled' AND reconcile_at IS NOT NULL`,
    ]);
    if (!entry) return false;
    const hold = num(entry.hold);
    const delta = req.costMicros - num(entry.cost);
    await Promise.all([
      tx`UPDATE ledger_entries SET cost_micros = ${req.costMicros}, reconcile_at = NULL WHERE id = ${req.id}`,
      tx`UPDATE spend_days SET settled_micros = settled_micros + ${delta} WHERE key_id = ${keyId} AND day = ${entry.day}`,
      tx`UPDATE vault_keys SET spent_total_micros = spent_total_micros + ${delta} WHERE id = ${keyId}`,
      insertAuditRows(tx, [{ ...req.audit, costMicros: delta }]),
    ]);
    // Alerts in the same transaction (see alerts.ts): thresholds a higher final price crossed, a price above the hold.
    await alerts.spendSettled(tx, keyId, entry.day, delta, req.audit.at);
    if (req.costMicros > hold) {
      const f = { holdId: req.id, requestId: entry.requestId, holdMicros: hold, costMicros: req.costMicros };
      await alerts.priceDifferential(tx, keyId, f, req.audit.at);
    }
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
      return keyId !== null && batch.submit(keyId, (tx) => resettle(tx, keyId, req));
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

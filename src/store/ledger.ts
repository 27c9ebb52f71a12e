import type { Db } from "./sqlite";
import { insertAuditSql, auditParams } from "./audit";
import type { DayUsage, HoldRequest, HoldResult, SettleRequest, TrackedObject } from "./types";

/**
 * Holds and settlements. Each runs in one `BEGIN IMMEDIATE` transaction: the write lock is taken before the
 * balance is read, so no two holds can both see the same headroom.
 */
export function ledgerQueries(db: Db) {
  const client = db.$client;
  const keyBalance = client.prepare<
    { status: string; daily: number | null; total: number | null; spent: number; held: number },
    [string]
  >(
    `SELECT status, daily_cap_micros AS daily, total_cap_micros AS total,
            spent_total_micros AS spent, held_total_micros AS held
       FROM vault_keys WHERE id = ?`,
  );
  const dayBalance = client.prepare<DayUsage, [string, string]>(
    `SELECT settled_micros AS settledMicros, held_micros AS heldMicros FROM spend_days WHERE key_id = ? AND day = ?`,
  );
  const insertHold = client.prepare(
    `INSERT INTO ledger_entries (id, key_id, day, hold_micros, state, created_at) VALUES (?, ?, ?, ?, 'held', ?)`,
  );
  const addDay = client.prepare(
    `INSERT INTO spend_days (key_id, day, settled_micros, held_micros) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (key_id, day) DO UPDATE SET settled_micros = settled_micros + ?3, held_micros = held_micros + ?4`,
  );
  const addKeyTotals = client.prepare(
    `UPDATE vault_keys SET spent_total_micros = spent_total_micros + ?2, held_total_micros = held_total_micros + ?3,
            calls = calls + ?4, last_used_at = coalesce(?5, last_used_at)
      WHERE id = ?1`,
  );
  const closeHold = client.prepare(
    `UPDATE ledger_entries SET state = ?2, cost_micros = ?3, settled_at = ?4 WHERE id = ?1 AND state = 'held'`,
  );
  const insertAudit = client.prepare(insertAuditSql);
  const upsertTracked = client.prepare(
    `INSERT INTO tracked_objects (object_id, key_id, currency, amount_minor, counted_micros, updated_at)
     VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT (object_id) DO UPDATE SET currency = excluded.currency, amount_minor = excluded.amount_minor,
            counted_micros = excluded.counted_micros, updated_at = excluded.updated_at`,
  );
  const trackedById = client.prepare<TrackedObject, [string]>(
    `SELECT object_id AS objectId, key_id AS keyId, currency, amount_minor AS amountMinor, counted_micros AS countedMicros
       FROM tracked_objects WHERE object_id = ?`,
  );

  const hold = client.transaction((req: HoldRequest): HoldResult => {
    const key = keyBalance.get(req.keyId);
    if (!key || key.status !== "active") return { admitted: false, reason: "revoked" };
    const day = dayBalance.get(req.keyId, req.day) ?? { settledMicros: 0, heldMicros: 0 };
    const fits = (committed: number, cap: number | null) =>
      cap === null || (req.needsHeadroom ? committed + req.micros < cap : committed + req.micros <= cap);
    if (!fits(day.settledMicros + day.heldMicros, key.daily)) return { admitted: false, reason: "daily_cap" };
    if (!fits(key.spent + key.held, key.total)) return { admitted: false, reason: "total_cap" };
    if (req.micros > 0 || req.needsHeadroom) {
      insertHold.run(req.holdId, req.keyId, req.day, req.micros, req.now);
      addDay.run(req.keyId, req.day, 0, req.micros);
      addKeyTotals.run(req.keyId, 0, req.micros, 0, null);
    }
    return { admitted: true };
  });

  const settle = client.transaction((req: SettleRequest): DayUsage => {
    // A hold settles once: a second settle of the same hold moves no money (only the audit row is written).
    const closed = req.holdId ? closeHold.run(req.holdId, req.outcome, req.costMicros, req.now).changes === 1 : true;
    const held = req.holdId && closed ? req.holdMicros : 0;
    const cost = closed ? req.costMicros : 0;
    addDay.run(req.keyId, req.day, cost, -held);
    addKeyTotals.run(req.keyId, cost, -held, 1, req.now);
    insertAudit.run(...auditParams(req.audit));
    if (req.track) {
      const t = req.track;
      upsertTracked.run(t.objectId, t.keyId, t.currency, t.amountMinor, t.countedMicros, req.now);
    }
    return dayBalance.get(req.keyId, req.day) ?? { settledMicros: 0, heldMicros: 0 };
  });

  return {
    async holdSpend(req: HoldRequest) {
      return hold.immediate(req);
    },
    async settleCall(req: SettleRequest) {
      return settle.immediate(req);
    },
    async findTracked(objectId: string) {
      return trackedById.get(objectId) ?? null;
    },
  };
}

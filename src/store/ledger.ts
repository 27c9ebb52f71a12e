import type { Statement } from "bun:sqlite";
import type { AlertOutbox } from "./alerts";
import type { AlertKey } from "./alerts-shared";
import type { GroupCommit } from "./group-commit";
import type { Db } from "./sqlite";
import { auditParams, insertAuditSql } from "./audit";
import { type HoldRow, holdAuditRow, holdRecord, MAX_STORED_RESPONSE_BYTES } from "./ledger-shared";
import { OPEN_HOLDS } from "./schema";
import type {
  DayUsage,
  HoldRecord,
  HoldRequest,
  HoldResult,
  IdempotencyResult,
  SettleRequest,
  StoredResponse,
  TrackedObject,
} from "./types";

type EntryState = HoldRecord["state"];

/**
 * Holds and settlements. Each runs inside a `BEGIN IMMEDIATE` transaction (shared with the other writes of the
 * same event-loop turn, see GroupCommit): the write lock is taken before any balance is read and the writes run
 * one after another, so no two holds can both see the same headroom, and no two calls can both claim the same
 * Idempotency-Key.
 */
export function ledgerQueries(db: Db, commits: GroupCommit, alerts: AlertOutbox) {
  const client = db.$client;
  const keyBalance = client.prepare<{ status: string; daily: number | null; total: number | null; spent: number; held: number }, [string]>(
    `SELECT status, daily_cap_micros AS daily, total_cap_micros AS total,
            spent_total_micros AS spent, held_total_micros AS held
       FROM vault_keys WHERE id = ?`,
  );
  const dayBalance = client.prepare<DayUsage, [string, string]>(
    `SELECT settled_micros AS settledMicros, held_micros AS heldMicros FROM spend_days WHERE key_id = ? AND day = ?`,
  );
  const insertHold = client.prepare(
    `INSERT INTO ledger_entries (id, key_id, day, hold_micros, state, created_at, request_id, method, path)
     VALUES (?, ?, ?, ?, 'held', ?, ?, ?, ?)`,
  );
  const entryById = client.prepare<
    { row: number; state: EntryState; hold: number; cost: number | null; keyId: string; day: string },
    [string]
  >(`SELECT rowid AS row, state, hold_micros AS hold, cost_micros AS cost, key_id AS keyId, day FROM ledger_entries WHERE id = ?`);
  // By rowid, found by the read just before: one index search fewer per settlement.
  const closeEntry = client.prepare(
    `UPDATE ledger_entries SET state = ?2, cost_micros = ?3, settled_at = ?4, reconcile_path = ?5, reconcile_at = ?6 WHERE rowid = ?1`,
  );
  const reholdEntry = client.prepare(`UPDATE ledger_entries SET state = 'held', hold_micros = ?2, cost_micros = ?3 WHERE id = ?1`);
  const addDay = client.prepare(
    `INSERT INTO spend_days (key_id, day, settled_micros, held_micros) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (key_id, day) DO UPDATE SET settled_micros = settled_micros + ?3, held_micros = held_micros + ?4`,
  );
  const ADD_KEY_TOTALS = `UPDATE vault_keys SET spent_total_micros = spent_total_micros + ?2, held_total_micros = held_total_micros + ?3,
            calls = calls + ?4, last_used_at = coalesce(?5, last_used_at)
      WHERE id = ?1`;
  const addKeyTotals = client.prepare(ADD_KEY_TOTALS);
  // A settlement's: the key as its alerts read it (caps, lifetime spend after it, thresholds), with no read of its own.
  const settleKeyTotals = client.prepare<AlertKey, [string, number, number, number, number]>(
    `${ADD_KEY_TOTALS} RETURNING id, label, vendor, mode, daily_cap_micros AS daily, total_cap_micros AS total,
       spent_total_micros AS spent, alert_thresholds AS thresholds`,
  );
  // Closing a hold: the day's settled spend after it, for its alerts.
  const settleDay = client.prepare<{ settled: number }, [string, string, number, number]>(
    `INSERT INTO spend_days (key_id, day, settled_micros, held_micros) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (key_id, day) DO UPDATE SET settled_micros = settled_micros + ?3, held_micros = held_micros + ?4
     RETURNING settled_micros AS settled`,
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
  const idemGet = client.prepare<
    {
      fingerprint: string;
      state: string;
      holdId: string | null;
      day: string;
      status: number | null;
      headers: string | null;
      body: Uint8Array | null;
      vendorRequestId: string | null;
      expiresAt: number;
    },
    [string, string]
  >(
    `SELECT fingerprint, state, hold_id AS holdId, day, status, headers, body, vendor_request_id AS vendorRequestId, expires_at AS expiresAt
       FROM idempotency_entries WHERE key_id = ? AND idempotency_key = ?`,
  );
  const idemClaim = client.prepare(
    `INSERT OR REPLACE INTO idempotency_entries (key_id, idempotency_key, fingerprint, state, hold_id, day, created_at, expires_at)
     VALUES (?, ?, ?, 'in_flight', ?, ?, ?, ?)`,
  );
  const idemSetState = client.prepare(`UPDATE idempotency_entries SET state = ?3 WHERE key_id = ?1 AND idempotency_key = ?2`);
  const idemComplete = client.prepare(
    `UPDATE idempotency_entries SET state = 'completed', status = ?3, headers = ?4, body = ?5, body_too_large = ?6, vendor_request_id = ?7
      WHERE key_id = ?1 AND idempotency_key = ?2`,
  );
  const idemForget = client.prepare(`DELETE FROM idempotency_entries WHERE key_id = ? AND idempotency_key = ?`);
  const idemPrune = client.prepare(
    `DELETE FROM idempotency_entries WHERE rowid IN (SELECT rowid FROM idempotency_entries WHERE expires_at <= ? LIMIT ?)`,
  );
  const fits = (committed: number, micros: number, cap: number | null) => cap === null || committed + micros <= cap;

  const HOLD_COLUMNS = `e.id, e.key_id AS keyId, k.label, k.vendor, k.mode, e.day, e.hold_micros AS holdMicros, e.cost_micros AS costMicros,
            e.state, e.created_at AS createdAt, e.settled_at AS settledAt, e.method, e.path, e.request_id AS requestId
       FROM ledger_entries e LEFT JOIN vault_keys k ON k.id = e.key_id`;
  // The state is spelled into each query so SQLite can use the partial index on open holds.
  const entriesIn = Object.fromEntries(
    (["held", "orphaned", "ambiguous"] as const).map((state) => [
      state,
      client.prepare<HoldRow, [number]>(
        `SELECT ${HOLD_COLUMNS} WHERE e.${OPEN_HOLDS} AND e.state = '${state}' ORDER BY e.created_at LIMIT ?`,
      ),
    ]),
  ) as Record<"held" | "orphaned" | "ambiguous", Statement<HoldRow, [number]>>;
  const heldEntryById = client.prepare<HoldRow, [string]>(`SELECT ${HOLD_COLUMNS} WHERE e.id = ?`);
  const orphanEntries = client.prepare(`UPDATE ledger_entries SET state = 'orphaned' WHERE ${OPEN_HOLDS} AND state = 'held'`);
  const ambiguousInFlight = client.prepare(`UPDATE idempotency_entries SET state = 'ambiguous' WHERE state = 'in_flight'`);

  /**
   * Moves an open ledger entry (`held`, or `orphaned` by a crash) to its outcome and returns what that moves: the
   * hold is released and the cost settled. An entry already closed moves no money again. `auditDelta` is what
   * the call added to spend: an entry re-forwarded after an ambiguous attempt still carries that attempt's
   * cost, which its new outcome replaces.
   */
  function closeHold(
    holdId: string,
    outcome: "settled" | "released" | "ambiguous",
    costMicros: number,
    now: number,
    reconcile?: { path: string; at: number },
  ) {
    const entry = entryById.get(holdId);
    if (!entry || (entry.state !== "held" && entry.state !== "orphaned")) return null;
    closeEntry.run(entry.row, outcome, costMicros, now, reconcile?.path ?? null, reconcile?.at ?? null);
    const { settled } = settleDay.get(entry.keyId, entry.day, costMicros, -entry.hold)!;
    return {
      keyId: entry.keyId,
      day: entry.day,
      daySettled: settled,
      hold: entry.hold,
      costDelta: costMicros,
      heldDelta: -entry.hold,
      auditDelta: costMicros - (entry.cost ?? 0),
    };
  }

  /**
   * A retry of an ambiguous call, forwarded again on its entry: what the entry counted as spent becomes held
   * again (at least as much; more if the retry's price is higher), so settle + held never drops below what the
   * vendor may have charged. Returns the denial (with the cap and balances) when a higher price does not fit.
   */
  function reopenEntry(holdId: string, micros: number, key: { daily: number | null; total: number | null; spent: number; held: number }) {
    const entry = entryById.get(holdId);
    if (!entry || (entry.state !== "ambiguous" && entry.state !== "orphaned")) return undefined;
    const counted = entry.state === "ambiguous" ? (entry.cost ?? 0) : entry.hold;
    const hold = Math.max(micros, counted);
    const more = hold - counted;
    const day = dayBalance.get(entry.keyId, entry.day) ?? { settledMicros: 0, heldMicros: 0 };
    const before = { daySettled: day.settledMicros, dayHeld: day.heldMicros, totalSpent: key.spent, totalHeld: key.held };
    if (more > 0 && !fits(day.settledMicros + day.heldMicros, more, key.daily))
      return { kind: "denied", reason: "daily_cap", capMicros: key.daily!, balance: before } as const;
    if (more > 0 && !fits(key.spent + key.held, more, key.total))
      return { kind: "denied", reason: "total_cap", capMicros: key.total!, balance: before } as const;
    // An orphaned entry was never settled: it keeps no prior cost, its hold simply grows.
    const settledBack = entry.state === "ambiguous" ? -counted : 0;
    const heldMore = entry.state === "ambiguous" ? hold : more;
    reholdEntry.run(holdId, hold, entry.state === "ambiguous" ? counted : null);
    addDay.run(entry.keyId, entry.day, settledBack, heldMore);
    addKeyTotals.run(entry.keyId, settledBack, heldMore, 0, null);
    const balance = {
      daySettled: day.settledMicros + settledBack,
      dayHeld: day.heldMicros + heldMore,
      totalSpent: key.spent + settledBack,
      totalHeld: key.held + heldMore,
    };
    return { day: entry.day, hold, counted, balance };
  }

  function rememberOutcome(keyId: string, idemKey: string, result: IdempotencyResult) {
    if (result.kind === "forget") return idemForget.run(keyId, idemKey);
    if (result.kind === "ambiguous") return idemSetState.run(keyId, idemKey, "ambiguous");
    const r = result.response;
    const tooLarge = r.body !== null && r.body.byteLength > MAX_STORED_RESPONSE_BYTES;
    idemComplete.run(keyId, idemKey, r.status, JSON.stringify(r.headers), tooLarge ? null : r.body, tooLarge ? 1 : 0, r.vendorRequestId);
  }

  /** A hold, and the first refusal of a cap window as a `cap_exhausted` alert in the same transaction. */
  const hold = (req: HoldRequest): HoldResult => {
    const result = holdOrRefuse(req);
    if (result.kind === "denied" && result.reason !== "revoked") {
      const cap = result.reason === "daily_cap" ? "daily" : "total";
      alerts.capRefused(req.keyId, cap, req.day, result.capMicros ?? 0, result.balance, req.micros, req.now);
    }
    return result;
  };

  const holdOrRefuse = (req: HoldRequest): HoldResult => {
    const key = keyBalance.get(req.keyId);
    if (key?.status !== "active") return { kind: "denied", reason: "revoked" };
    if (req.idempotency) {
      const prior = idemGet.get(req.keyId, req.idempotency.key);
      if (prior && prior.expiresAt > req.now) {
        if (prior.fingerprint !== req.idempotency.fingerprint) return { kind: "conflict" };
        if (prior.state === "in_flight") return { kind: "in_flight" };
        if (prior.state === "completed") {
          const response: StoredResponse = {
            status: prior.status!,
            headers: JSON.parse(prior.headers ?? "[]"),
            body: prior.body,
            vendorRequestId: prior.vendorRequestId,
          };
          const day = dayBalance.get(req.keyId, req.day) ?? { settledMicros: 0, heldMicros: 0 };
          const balance = { daySettled: day.settledMicros, dayHeld: day.heldMicros, totalSpent: key.spent, totalHeld: key.held };
          return { kind: "replay", response, balance };
        }
        if (req.reuseAmbiguous && prior.holdId) {
          const reopened = reopenEntry(prior.holdId, req.micros, key);
          if (reopened?.kind === "denied")
            return { kind: "denied", reason: reopened.reason, capMicros: reopened.capMicros, balance: reopened.balance };
          if (reopened) {
            idemSetState.run(req.keyId, req.idempotency.key, "in_flight");
            return {
              kind: "admitted",
              holdId: prior.holdId,
              day: reopened.day,
              holdMicros: reopened.hold,
              priorCostMicros: reopened.counted,
              balance: reopened.balance,
            };
          }
        }
        // Otherwise the retry is a new call: the ambiguous entry stays counted and a new hold is taken below.
      }
    }
    const day = dayBalance.get(req.keyId, req.day) ?? { settledMicros: 0, heldMicros: 0 };
    const before = { daySettled: day.settledMicros, dayHeld: day.heldMicros, totalSpent: key.spent, totalHeld: key.held };
    if (!fits(day.settledMicros + day.heldMicros, req.micros, key.daily))
      return { kind: "denied", reason: "daily_cap", capMicros: key.daily!, balance: before };
    if (!fits(key.spent + key.held, req.micros, key.total))
      return { kind: "denied", reason: "total_cap", capMicros: key.total!, balance: before };
    if (req.ledger) {
      insertHold.run(req.holdId, req.keyId, req.day, req.micros, req.now, req.call.requestId, req.call.method, req.call.path);
      addDay.run(req.keyId, req.day, 0, req.micros);
      addKeyTotals.run(req.keyId, 0, req.micros, 0, null);
    }
    if (req.idempotency) {
      idemClaim.run(
        req.keyId,
        req.idempotency.key,
        req.idempotency.fingerprint,
        req.ledger ? req.holdId : null,
        req.day,
        req.now,
        req.now + req.idempotency.ttlMs,
      );
    }
    const held = req.ledger ? req.micros : 0;
    const balance = { daySettled: day.settledMicros, dayHeld: day.heldMicros + held, totalSpent: key.spent, totalHeld: key.held + held };
    return { kind: "admitted", holdId: req.ledger ? req.holdId : null, day: req.day, holdMicros: held, priorCostMicros: null, balance };
  };

  const settle = (req: SettleRequest): number => {
    const moved = req.holdId ? closeHold(req.holdId, req.outcome, req.costMicros, req.now, req.reconcile) : null;
    // Alerts in the settlement's own transaction (see alerts.ts): thresholds its spend crossed, a price above
    // its hold, an outcome the vendor left ambiguous. The writes return what the threshold check reads.
    if (moved && req.holdId) {
      const key = settleKeyTotals.get(req.keyId, moved.costDelta, moved.heldDelta, 1, req.now);
      const after = key && key.id === moved.keyId ? { key, daySettled: moved.daySettled } : undefined;
      alerts.spendSettled(moved.keyId, moved.day, moved.costDelta, req.now, after);
      if (req.outcome === "settled" && req.costMicros > moved.hold) {
        const f = { holdId: req.holdId, requestId: req.audit.id, holdMicros: moved.hold, costMicros: req.costMicros };
        alerts.priceDifferential(moved.keyId, f, req.now);
      }
      if (req.outcome === "ambiguous") {
        alerts.holdsNeedAttention(moved.keyId, "ambiguous", [{ id: req.holdId, micros: req.costMicros }], moved.day, req.now);
      }
    } else {
      addKeyTotals.run(req.keyId, 0, 0, 1, req.now);
    }
    // An audit row's cost is what this call added to spend, so audit sums always equal the ledger's: a retry
    // re-settling an ambiguous hold records the difference, a second settle of one hold records 0.
    const costMicros = moved?.auditDelta ?? 0;
    insertAudit.run(...auditParams({ ...req.audit, costMicros }));
    if (req.track) {
      const t = req.track;
      upsertTracked.run(t.objectId, t.keyId, t.currency, t.amountMinor, t.countedMicros, req.now);
    }
    if (req.idempotency) rememberOutcome(req.keyId, req.idempotency.key, req.idempotency.result);
    return costMicros;
  };

  const recover = client.transaction((now: number): HoldRecord[] => {
    const held = entriesIn.held.all(1_000_000);
    orphanEntries.run();
    ambiguousInFlight.run();
    for (const h of held) insertAudit.run(...auditParams(holdAuditRow(h, h.requestId ?? `kbr_orphan_${h.id}`, now, "orphaned_hold", 0)));
    const byKey = Map.groupBy(held, (h) => h.keyId);
    for (const [keyId, holds] of byKey) {
      const list = holds.map((h) => ({ id: h.id, micros: h.holdMicros }));
      alerts.holdsNeedAttention(keyId, "orphaned", list, holds[0]!.day, now);
    }
    return held.map((h) => ({ ...h, state: "orphaned" as const }));
  });

  /**
   * An operator's decision on an orphaned hold (still counted as held) or an ambiguous entry (counted as spent at
   * its hold): settled at `costMicros`, or released at 0. An ambiguous entry's spend moves by the difference.
   */
  const resolve = client.transaction((id: string, outcome: "settled" | "released", costMicros: number, now: number) => {
    const entry = entryById.get(id);
    if (entry?.state !== "orphaned" && entry?.state !== "ambiguous") return false;
    const cost = outcome === "released" ? 0 : costMicros;
    let moved: { keyId: string; auditDelta: number };
    if (entry.state === "orphaned") {
      const closed = closeHold(id, outcome, cost, now)!;
      addKeyTotals.run(closed.keyId, closed.costDelta, closed.heldDelta, 0, null);
      alerts.spendSettled(closed.keyId, closed.day, closed.costDelta, now);
      moved = closed;
    } else {
      const delta = cost - (entry.cost ?? 0);
      closeEntry.run(entry.row, outcome, cost, now, null, null);
      addDay.run(entry.keyId, entry.day, delta, 0);
      addKeyTotals.run(entry.keyId, delta, 0, 0, null);
      alerts.spendSettled(entry.keyId, entry.day, delta, now);
      moved = { keyId: entry.keyId, auditDelta: delta };
    }
    const h = heldEntryById.get(id)!;
    insertAudit.run(
      ...auditParams(
        holdAuditRow(h, `kbr_hold_${outcome}_${id}`, now, outcome === "settled" ? "hold_settled" : "hold_released", moved.auditDelta),
      ),
    );
    return true;
  });

  return {
    holdSpend: (req: HoldRequest) => commits.submit(() => hold(req)),
    // Deferred (group-commit.ts): a settlement lost to a power loss leaves its hold counted, orphaned at start.
    settleCall: (req: SettleRequest) => commits.defer(() => settle(req)),
    async findTracked(objectId: string) {
      return trackedById.get(objectId) ?? null;
    },
    async idempotencyFingerprint(keyId: string, idemKey: string, now: number) {
      const prior = idemGet.get(keyId, idemKey);
      return prior && prior.expiresAt > now ? prior.fingerprint : null;
    },
    async recoverOrphanedHolds(now: number) {
      return recover.immediate(now).map(holdRecord);
    },
    async listHolds(state: "held" | "orphaned" | "ambiguous", limit: number) {
      return entriesIn[state].all(limit).map(holdRecord);
    },
    async resolveHold(id: string, outcome: "settled" | "released", costMicros: number, now: number) {
      if (!resolve.immediate(id, outcome, costMicros, now)) return null;
      return holdRecord(heldEntryById.get(id)!);
    },
    async findHold(id: string) {
      const row = heldEntryById.get(id);
      return row ? holdRecord(row) : null;
    },
    async pruneIdempotency(now: number, batch: number) {
      return idemPrune.run(now, batch).changes;
    },
  };
}

import { hostname } from "node:os";
import {
  type ApprovalState,
  type BudgetState,
  type DayState,
  type EntryWithDay,
  type HoldSnapshot,
  type LedgerWrite,
  type RememberedCall,
  decideHold,
  decideResolution,
  decideSettlement,
  orphanAlerts,
} from "../../ledger/rules";
import { asEntry, type HoldRow, holdAuditRow, holdRecord, MAX_STORED_RESPONSE_BYTES } from "../ledger-shared";
import { OPEN_HOLDS, WAITING_ON_APPROVAL } from "../schema";
import type { HoldRecord, HoldRequest, HoldResult, IdempotencyResult, SettleRequest, TrackedObject } from "../types";
import type { PgAlertOutbox } from "./alerts";
import { insertAuditRows } from "./audit";
import type { PgBatch } from "./batch";
import { type Pg, num, numOrNull } from "./client";
import { ENTRY_COLUMNS, pgBudgetChain, pgLedgerWriter, pgMoneyLocks, toEntry } from "./ledger-writes";

/**
 * The ledger's two group commits: `durable` for holds and operators' decisions (committed to disk before they
 * resolve: a call is forwarded only once its hold is), `deferred` for settlements and audit rows (not waited
 * for on disk: see batch.ts). Losing a settlement to a crash loses no money: its hold stays counted and is
 * recovered as orphaned, and its in-flight idempotency entry as ambiguous, as SPEC §6 has it.
 */
export interface LedgerBatches {
  durable: PgBatch;
  deferred: PgBatch;
}

/** What a hold reads once its key is locked: the day's balance and the call's idempotency memory, if any. */
interface Seen {
  daySettled: string | null;
  dayHeld: string | null;
  fingerprint: string | null;
  state: "in_flight" | "completed" | "ambiguous" | null;
  holdId: string | null;
  status: number | null;
  headers: string | null;
  body: Uint8Array | null;
  vendorRequestId: string | null;
  expiresAt: string | null;
}

/** What a hold took, so that a failed transaction gives it back. */
interface Taken {
  hold?: string;
  claim?: string;
}

const HOLD_COLUMNS = `e.id, e.key_id AS "keyId", k.label, k.vendor, k.mode, e.day, e.hold_micros AS "holdMicros",
       e.cost_micros AS "costMicros", e.state, e.created_at AS "createdAt", e.settled_at AS "settledAt", e.method, e.path,
       e.request_id AS "requestId"`;
const HOLDS_FROM = "ledger_entries e LEFT JOIN vault_keys k ON k.id = e.key_id";

/** A ledger entry as read with HOLD_COLUMNS, its bigints as numbers. */
function toHoldRow(r: Record<string, unknown>): HoldRow {
  return {
    ...(r as unknown as HoldRow),
    holdMicros: num(r.holdMicros),
    costMicros: numOrNull(r.costMicros),
    createdAt: num(r.createdAt),
    settledAt: numOrNull(r.settledAt),
  };
}

/**
 * Holds and settlements on PostgreSQL, shared by every instance (SPEC §13); the same rules as the SQLite ledger
 * (../ledger.ts). Every transaction that moves a key's money first locks the key's row (FOR UPDATE), so one key's
 * holds are serialised across instances and each reads committed balances: its reads are statements sent after
 * the lock is granted (READ COMMITTED: each statement sees what committed before it started), never the lock's
 * own statement, which would see the key's row as committed but other rows as they were before it waited.
 *
 * A hold is its own transaction (the call waits for it), in two round trips: BEGIN, the lock and the reads
 * together, then the writes and COMMIT together. Settlements go through the group commit (batch.ts).
 *
 * `instanceId` is written into the holds and idempotency claims this process takes; recovery leaves those of
 * live instances alone, and this process's own open ones (see `recoverOrphanedHolds`).
 */
export function pgLedgerQueries(sql: Pg, batches: LedgerBatches, alerts: PgAlertOutbox, instanceId: string) {
  const host = hostname();
  const pid = process.pid;
  // This process's holds and idempotency claims not yet settled. A hold under this instance id that is not here
  // was taken by an earlier run under the same id (a restart): recovery treats it as a dead instance's.
  const openHolds = new Set<string>();
  const openClaims = new Set<string>();
  const claimOf = (keyId: string, idemKey: string) => `${keyId}\n${idemKey}`;
  // An earlier run's in-flight idempotency entries are looked for once (recovery runs on every heartbeat).
  let earlierRunsClaimsChecked = false;

  const apply = pgLedgerWriter(alerts, instanceId);
  const locks = pgMoneyLocks(sql);

  /**
   * A hold (the rule book's `decideHold`), in the durable group commit, so that the holds of one event-loop turn
   * share a transaction and its one sync (the key's row stays locked until it commits). The key is locked and the
   * day and the idempotency memory read in one round trip; an ambiguous entry a retry re-opens in a second.
   */
  async function holdSpend(req: HoldRequest): Promise<HoldResult> {
    const taken: Taken = {};
    try {
      const chain = await locks.chainOf(req.keyId);
      return await batches.durable.submit(locks.lockOrder(req.keyId, chain), async (conn) => {
        const seen = await holdSnapshot(conn, req, chain);
        let decision = decideHold(req, seen);
        if ("needsEntry" in decision)
          decision = decideHold(req, { ...seen, entry: await entryWithDay(conn, decision.needsEntry, req.keyId, chain) });
        if ("needsEntry" in decision) throw new Error("decideHold asked twice for the entry");
        take(taken, decision.writes);
        await apply(conn, decision.writes, req.now);
        return decision.result;
      });
    } catch (error) {
      // Not taken after all, or not known to be: should it have committed, recovery may orphan it.
      if (taken.hold) openHolds.delete(taken.hold);
      if (taken.claim) openClaims.delete(taken.claim);
      throw error;
    }
  }

  /**
   * The key's budgets and the key locked (FOR UPDATE, see pgMoneyLocks), then read with their days, the call's
   * counterparty's day and its idempotency memory: statements sent together, run once the locks are granted.
   */
  async function holdSnapshot(conn: Pg, req: HoldRequest, chain: readonly string[]): Promise<HoldSnapshot> {
    const [, [key], [seen], budgets, counterpartyDay, [approval]] = (await Promise.all([
      chain.length > 0 ? locks.lockMoney(conn, req.keyId, chain) : null,
      conn`SELECT status, daily_cap_micros AS daily, total_cap_micros AS total, spent_total_micros AS spent,
                  held_total_micros AS held
             FROM vault_keys WHERE id = ${req.keyId} FOR UPDATE`,
      conn`SELECT d.settled_micros AS "daySettled", d.held_micros AS "dayHeld", i.fingerprint, i.state, i.hold_id AS "holdId",
                  i.status, i.headers, i.body, i.vendor_request_id AS "vendorRequestId", i.expires_at AS "expiresAt"
             FROM (VALUES (1)) AS one (x)
             LEFT JOIN spend_days d ON d.key_id = ${req.keyId} AND d.day = ${req.day}
             LEFT JOIN idempotency_entries i ON i.key_id = ${req.keyId} AND i.idempotency_key = ${req.idempotency?.key ?? null}`,
      chain.length > 0 ? pgBudgetChain(conn, req.keyId, req.day) : [],
      req.counterparty ? counterpartyDayOf(conn, req.keyId, req.day, req.counterparty.id) : null,
      req.idempotency
        ? conn`SELECT id, key_id AS "keyId", status, fingerprint, hold_id AS "holdId", expires_at AS "expiresAt" FROM approvals
                WHERE key_id = ${req.keyId} AND idempotency_key = ${req.idempotency.key}`
        : [],
    ])) as [
      unknown,
      { status: string; daily: string | null; total: string | null; spent: string; held: string }[],
      Seen[],
      BudgetState[],
      DayState | null,
      (ApprovalState & { expiresAt: string })[],
    ];
    const remembered: RememberedCall | null =
      seen!.state === null
        ? null
        : {
            fingerprint: seen!.fingerprint!,
            state: seen!.state,
            holdId: seen!.holdId,
            expiresAt: num(seen!.expiresAt),
            response:
              seen!.state === "completed"
                ? {
                    status: seen!.status!,
                    headers: JSON.parse(seen!.headers ?? "[]"),
                    body: seen!.body,
                    vendorRequestId: seen!.vendorRequestId,
                  }
                : null,
          };
    return {
      key: key
        ? { status: key.status, daily: numOrNull(key.daily), total: numOrNull(key.total), spent: num(key.spent), held: num(key.held) }
        : null,
      day: { settled: num(seen!.daySettled ?? 0), held: num(seen!.dayHeld ?? 0) },
      budgets,
      counterpartyDay,
      remembered,
      approval: approval ? { ...approval, expiresAt: num(approval.expiresAt) } : null,
    };
  }

  async function counterpartyDayOf(conn: Pg, keyId: string, day: string, counterparty: string): Promise<DayState> {
    const [row] = await conn`SELECT settled_micros AS settled, held_micros AS held FROM counterparty_days
                              WHERE key_id = ${keyId} AND day = ${day} AND counterparty = ${counterparty}`;
    return { settled: num(row?.settled ?? 0), held: num(row?.held ?? 0) };
  }

  /** An entry of the key, with its own day's balances: the key's, its budgets' and its counterparty's (all locked). */
  async function entryWithDay(conn: Pg, holdId: string, keyId: string, chain: readonly string[]): Promise<EntryWithDay | null> {
    const [row] = await conn.unsafe(
      `SELECT ${ENTRY_COLUMNS}, d.settled_micros AS "daySettled", d.held_micros AS "dayHeld"
         FROM ledger_entries e LEFT JOIN spend_days d ON d.key_id = e.key_id AND d.day = e.day
        WHERE e.id = $1 AND e.key_id = $2`,
      [holdId, keyId],
    );
    if (!row) return null;
    const entry = toEntry(row);
    const [budgets, counterpartyDay] = await Promise.all([
      chain.length > 0 ? pgBudgetChain(conn, keyId, entry.day) : [],
      entry.counterparty === null ? null : counterpartyDayOf(conn, keyId, entry.day, entry.counterparty),
    ]);
    const days = { daySettled: num(row.daySettled ?? 0), dayHeld: num(row.dayHeld ?? 0) };
    return { ...entry, ...days, budgetDays: budgets.map((b) => b.day), counterpartyDay };
  }

  /** An entry of the key, as the rule book reads it. */
  async function entryOf(tx: Pg, holdId: string, keyId: string) {
    const [row] = await tx.unsafe(`SELECT ${ENTRY_COLUMNS} FROM ledger_entries e WHERE e.id = $1 AND e.key_id = $2`, [holdId, keyId]);
    return row ? toEntry(row) : null;
  }

  /** A hold or claim a decision takes becomes this process's open work before it can commit. */
  function take(taken: Taken, writes: readonly LedgerWrite[]) {
    for (const w of writes) {
      if (w.kind === "insert_entry" || w.kind === "reopen_entry") {
        taken.hold = w.holdId;
        openHolds.add(w.holdId);
      } else if (w.kind === "claim_call" || w.kind === "call_in_flight") {
        taken.claim = claimOf(w.keyId, w.key);
        openClaims.add(taken.claim);
      }
    }
  }

  function rememberOutcome(tx: Pg, keyId: string, idemKey: string, result: IdempotencyResult) {
    if (result.kind === "forget") return tx`DELETE FROM idempotency_entries WHERE key_id = ${keyId} AND idempotency_key = ${idemKey}`;
    if (result.kind === "ambiguous")
      return tx`UPDATE idempotency_entries SET state = 'ambiguous' WHERE key_id = ${keyId} AND idempotency_key = ${idemKey}`;
    const r = result.response;
    const tooLarge = r.body !== null && r.body.byteLength > MAX_STORED_RESPONSE_BYTES;
    return tx`UPDATE idempotency_entries SET state = 'completed', status = ${r.status}, headers = ${JSON.stringify(r.headers)},
                     body = ${tooLarge ? null : r.body}, body_too_large = ${tooLarge}, vendor_request_id = ${r.vendorRequestId}
               WHERE key_id = ${keyId} AND idempotency_key = ${idemKey}`;
  }

  /** A call's settlement (the rule book's `decideSettlement`), in the group commit, with its audit row and idempotency memory. */
  async function settle(tx: Pg, req: SettleRequest, chain: readonly string[]): Promise<number> {
    const [, entry] = await Promise.all([locks.lockMoney(tx, req.keyId, chain), req.holdId ? entryOf(tx, req.holdId, req.keyId) : null]);
    const { result: costMicros, writes } = decideSettlement({ ...req, requestId: req.audit.id }, entry, chain);
    const t = req.track;
    // Independent writes, sent together.
    await Promise.all([
      apply(tx, writes, req.now),
      insertAuditRows(tx, [{ ...req.audit, costMicros }]),
      t &&
        tx`INSERT INTO tracked_objects (object_id, key_id, currency, amount_minor, counted_micros, updated_at)
           VALUES (${t.objectId}, ${t.keyId}, ${t.currency}, ${t.amountMinor}, ${t.countedMicros}, ${req.now})
           ON CONFLICT (object_id) DO UPDATE SET currency = excluded.currency, amount_minor = excluded.amount_minor,
                  counted_micros = excluded.counted_micros, updated_at = excluded.updated_at`,
      req.idempotency && rememberOutcome(tx, req.keyId, req.idempotency.key, req.idempotency.result),
    ]);
    return costMicros;
  }

  /**
   * An operator's decision on an orphaned hold (still counted as held) or an ambiguous entry (counted as spent at
   * its hold): settled at `costMicros`, or released at 0. An ambiguous entry's spend moves by the difference.
   */
  async function resolve(
    tx: Pg,
    keyId: string,
    id: string,
    outcome: "settled" | "released",
    costMicros: number,
    now: number,
    chain: readonly string[],
  ) {
    const [, entry] = await Promise.all([locks.lockMoney(tx, keyId, chain), entryOf(tx, id, keyId)]);
    const decision = entry && decideResolution(entry, outcome, costMicros, chain);
    if (!decision) return false;
    await apply(tx, decision.writes, now);
    const [h] = await tx.unsafe(`SELECT ${HOLD_COLUMNS} FROM ${HOLDS_FROM} WHERE e.id = $1`, [id]);
    const auditDecision = outcome === "settled" ? "hold_settled" : "hold_released";
    await insertAuditRows(tx, [holdAuditRow(toHoldRow(h), `kbr_hold_${outcome}_${id}`, now, auditDecision, decision.result)]);
    return true;
  }

  /**
   * Held entries and in-flight idempotency entries left behind by instances that are gone: those of an instance
   * with no live lease, and those under this instance's id that an earlier run of it took (not in this process's
   * open work). Never a live instance's, never this process's own.
   */
  async function leftBehind(now: number) {
    // Live: leased until after `now`, by another instance, or under this instance's id by another process (a
    // misconfigured twin, whose holds are no earlier run's).
    const alive = (column: string) =>
      `EXISTS (SELECT 1 FROM instances i WHERE i.id = ${column} AND i.lease_until > $1 AND (i.id <> $2 OR i.host <> $3 OR i.pid <> $4))`;
    const me = [now, instanceId, host, pid];
    const [dead, held] = (await Promise.all([
      sql`SELECT id FROM instances WHERE lease_until <= ${now} AND id <> ${instanceId}`,
      // `state = 'held'`: the partial index on instance_id answers it.
      sql.unsafe(
        `SELECT id, key_id AS "keyId", instance_id AS "instanceId" FROM ledger_entries e
                   WHERE state = 'held' AND NOT ${alive("e.instance_id")} AND NOT ${WAITING_ON_APPROVAL("e")}`,
        me,
      ),
    ])) as [{ id: string }[], { id: string; keyId: string; instanceId: string | null }[]];
    // In-flight entries have no index by instance: they are looked for only when an instance is found gone.
    const gone = dead.map((d) => d.id);
    if (!earlierRunsClaimsChecked) gone.push(instanceId);
    const inFlight: { keyId: string; idemKey: string; instanceId: string }[] =
      gone.length === 0
        ? []
        : await sql`SELECT key_id AS "keyId", idempotency_key AS "idemKey", instance_id AS "instanceId" FROM idempotency_entries
                     WHERE state = 'in_flight' AND instance_id = ANY(${gone}::text[])`;
    return {
      alive,
      me,
      deadInstances: dead.map((d) => d.id),
      keys: [...new Set([...held.map((h) => h.keyId), ...inFlight.map((c) => c.keyId)])],
      // This process's open work at the moment it is asked: taken, and not yet settled.
      holdIds: () => held.filter((h) => !(h.instanceId === instanceId && openHolds.has(h.id))).map((h) => h.id),
      claims: () => inFlight.filter((c) => !(c.instanceId === instanceId && openClaims.has(claimOf(c.keyId, c.idemKey)))),
    };
  }

  /**
   * What instances that are gone left behind (see `leftBehind`): held entries become `orphaned` (still counted as
   * held), audited, with one `holds_need_attention` alert per key; in-flight idempotency entries become ambiguous.
   * The gone instances are forgotten. Safe at any time, by any number of instances: it runs on every heartbeat.
   */
  async function recoverOrphanedHolds(now: number): Promise<HoldRecord[]> {
    const found = await leftBehind(now);
    if (found.holdIds().length === 0 && found.claims().length === 0 && found.deadInstances.length === 0) {
      earlierRunsClaimsChecked = true;
      return [];
    }
    const { alive, me } = found;
    const recovered = await sql.begin("ISOLATION LEVEL READ COMMITTED", async (tx) => {
      await tx`SELECT id FROM vault_keys WHERE id = ANY(${found.keys}::text[]) ORDER BY id COLLATE "C" FOR UPDATE`;
      // Asked only now: with the keys locked, this process can take no hold nor claim on them, and what it took
      // before has committed.
      const claims = found.claims();
      const [orphaned] = await Promise.all([
        tx.unsafe(
          `WITH orphaned AS (
             UPDATE ledger_entries e SET state = 'orphaned'
              WHERE e.id = ANY($5::text[]) AND e.state = 'held' AND NOT ${alive("e.instance_id")}
             RETURNING e.*
           )
           SELECT ${HOLD_COLUMNS} FROM orphaned e LEFT JOIN vault_keys k ON k.id = e.key_id ORDER BY e.created_at`,
          [...me, found.holdIds()],
        ),
        tx.unsafe(
          `UPDATE idempotency_entries e SET state = 'ambiguous'
            WHERE e.state = 'in_flight' AND NOT ${alive("e.instance_id")}
              AND (e.key_id, e.idempotency_key, e.instance_id) IN (SELECT * FROM unnest($5::text[], $6::text[], $7::text[]))`,
          [...me, claims.map((c) => c.keyId), claims.map((c) => c.idemKey), claims.map((c) => c.instanceId)],
        ),
        tx`DELETE FROM instances WHERE id = ANY(${found.deadInstances}::text[]) AND lease_until <= ${now}`,
      ]);
      const holds = (orphaned as Record<string, unknown>[]).map(toHoldRow);
      const audit = holds.map((h) => holdAuditRow(h, h.requestId ?? `kbr_orphan_${h.id}`, now, "orphaned_hold", 0));
      if (audit.length > 0) await insertAuditRows(tx, audit);
      await apply(tx, orphanAlerts(holds.map(asEntry)), now);
      return holds;
    });
    earlierRunsClaimsChecked = true;
    return recovered.map(holdRecord);
  }

  const findHold = async (id: string): Promise<HoldRecord | null> => {
    const [row] = await sql.unsafe(`SELECT ${HOLD_COLUMNS} FROM ${HOLDS_FROM} WHERE e.id = $1`, [id]);
    return row ? holdRecord(toHoldRow(row)) : null;
  };

  // The state is spelled into each query, next to the partial index's own condition, so that even a generic plan
  // of the prepared statement uses that index.
  const listByState = Object.fromEntries(
    (["held", "orphaned", "ambiguous"] as const).map((state) => [
      state,
      `SELECT ${HOLD_COLUMNS} FROM ${HOLDS_FROM} WHERE e.${OPEN_HOLDS} AND e.state = '${state}' ORDER BY e.created_at LIMIT $1`,
    ]),
  ) as Record<"held" | "orphaned" | "ambiguous", string>;

  return {
    holdSpend,

    async settleCall(req: SettleRequest): Promise<number> {
      try {
        // Queued in this turn when the chain is known (its hold read it), so that reads after it see it committed.
        const submit = (chain: readonly string[]) =>
          batches.deferred.submit(locks.lockOrder(req.keyId, chain), (tx) => settle(tx, req, chain));
        const known = locks.known(req.keyId);
        return await (known ? submit(known) : locks.chainOf(req.keyId).then(submit));
      } finally {
        // Settled, or failed: either way no longer this process's open work (recovery may orphan what is left).
        if (req.holdId) openHolds.delete(req.holdId);
        if (req.idempotency) openClaims.delete(claimOf(req.keyId, req.idempotency.key));
      }
    },

    async idempotencyFingerprint(keyId: string, idemKey: string, now: number): Promise<string | null> {
      const [prior] = await sql`SELECT fingerprint, expires_at AS "expiresAt" FROM idempotency_entries
                                 WHERE key_id = ${keyId} AND idempotency_key = ${idemKey}`;
      return prior && num(prior.expiresAt) > now ? prior.fingerprint : null;
    },

    recoverOrphanedHolds,

    async listHolds(state: "held" | "orphaned" | "ambiguous", limit: number): Promise<HoldRecord[]> {
      const rows = await sql.unsafe(listByState[state], [limit]);
      return rows.map((r: Record<string, unknown>) => holdRecord(toHoldRow(r)));
    },

    findHold,

    async resolveHold(id: string, outcome: "settled" | "released", costMicros: number, now: number): Promise<HoldRecord | null> {
      const [entry] = await sql`SELECT key_id AS "keyId" FROM ledger_entries WHERE id = ${id}`;
      if (!entry) return null;
      const chain = await locks.chainOf(entry.keyId);
      const resolved = await batches.durable.submit(locks.lockOrder(entry.keyId, chain), (tx) =>
        resolve(tx, entry.keyId, id, outcome, costMicros, now, chain),
      );
      return resolved ? findHold(id) : null;
    },

    /** Expired idempotency entries, a batch at a time; rows a transaction is writing now are left for next time. */
    async pruneIdempotency(now: number, batchSize: number): Promise<number> {
      const result = await sql`DELETE FROM idempotency_entries WHERE ctid = ANY(ARRAY(
                                 SELECT ctid FROM idempotency_entries WHERE expires_at <= ${now}
                                  LIMIT ${batchSize} FOR UPDATE SKIP LOCKED))`;
      return result.count;
    },

    async findTracked(objectId: string): Promise<TrackedObject | null> {
      const [row] = await sql`SELECT object_id AS "objectId", key_id AS "keyId", currency, amount_minor AS "amountMinor",
                                     counted_micros AS "countedMicros"
                                FROM tracked_objects WHERE object_id = ${objectId}`;
      return row ? { ...row, amountMinor: num(row.amountMinor), countedMicros: num(row.countedMicros) } : null;
    },

    async countOpenHolds(): Promise<number> {
      const [row] = await sql.unsafe(`SELECT count(*) AS n FROM ledger_entries WHERE ${OPEN_HOLDS} AND state IN ('held', 'orphaned')`);
      return num(row.n);
    },
  };
}

import { type HoldRow, holdAuditRow, holdRecord, MAX_STORED_RESPONSE_BYTES } from "../ledger-shared";
import { OPEN_HOLDS } from "../schema";
import type {
  Balance,
  HoldRecord,
  HoldRequest,
  HoldResult,
  IdempotencyResult,
  SettleRequest,
  StoredResponse,
  TrackedObject,
} from "../types";
import type { PgAlertOutbox } from "./alerts";
import { insertAuditRows } from "./audit";
import type { PgBatch } from "./batch";

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
import type { SQL } from "bun";
import { hostname } from "node:os";
import { type Pg, num, numOrNull } from "./client";

/** A key's caps and lifetime totals, as a hold reads them (its row locked). */
interface KeyBalance {
  daily: number | null;
  total: number | null;
  spent: number;
  held: number;
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

/** A hold's transaction: its connection, the writes sent to travel with its COMMIT, and what it took. */
interface HoldTx {
  conn: Pg;
  writes: Promise<unknown>[];
  takenHold?: string;
  takenClaim?: string;
}

type Reopened =
  | { kind: "denied"; reason: "daily_cap" | "total_cap"; capMicros: number; balance: Balance }
  | { kind: "reopened"; day: string; hold: number; counted: number; balance: Balance };

/** What closing an open entry moved: its hold released, its cost settled, and what the audit row counts. */
interface Moved {
  day: string;
  hold: number;
  costDelta: number;
  auditDelta: number;
}

const fits = (committed: number, micros: number, cap: number | null) => cap === null || committed + micros <= cap;

/**
 * Locks a key's row: the first statement of every transaction that moves the key's money (see batch.ts). Sent at
 * once, so that statements started after it travel in the same round trip and run once the lock is granted.
 */
export function lockKey(tx: Pg, keyId: string): Promise<unknown> {
  return sendNow(tx`SELECT 1 FROM vault_keys WHERE id = ${keyId} FOR UPDATE`);
}

/**
 * Starts a statement now (queries are lazy), to be awaited later: what is sent after it on the connection runs
 * after it. A failure is reported where it is awaited, never as an unhandled rejection.
 */
export function sendNow(query: SQL.Query<unknown>): Promise<unknown> {
  const sent = query.execute();
  sent.catch(() => {});
  return sent;
}

/** A change to a key's day: settled and held micro-dollars, either may be negative. */
const addDay = (tx: Pg, keyId: string, day: string, settled: number, held: number) =>
  tx`INSERT INTO spend_days (key_id, day, settled_micros, held_micros) VALUES (${keyId}, ${day}, ${settled}, ${held})
     ON CONFLICT (key_id, day) DO UPDATE SET settled_micros = spend_days.settled_micros + excluded.settled_micros,
                                             held_micros = spend_days.held_micros + excluded.held_micros`;

const addKeyTotals = (tx: Pg, keyId: string, spent: number, held: number) =>
  tx`UPDATE vault_keys SET spent_total_micros = spent_total_micros + ${spent}, held_total_micros = held_total_micros + ${held}
      WHERE id = ${keyId}`;

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

  /**
   * A hold, and the first refusal of a cap window as a `cap_exhausted` alert in the same transaction: in the
   * durable group commit, so that the holds of one event-loop turn share a transaction and its one sync (the
   * key's row stays locked until it commits). Its writes are sent with the next op's statements or the COMMIT.
   */
  async function holdSpend(req: HoldRequest): Promise<HoldResult> {
    const h: HoldTx = { conn: null as unknown as Pg, writes: [] };
    try {
      return await batches.durable.submit(req.keyId, async (conn) => {
        h.conn = conn;
        h.writes = [];
        const result = await holdOrRefuse(h, req);
        if (result.kind === "denied" && result.reason !== "revoked") {
          const cap = result.reason === "daily_cap" ? "daily" : "total";
          await alerts.capRefused(conn, req.keyId, cap, req.day, result.capMicros ?? 0, result.balance, req.micros, req.now);
        }
        await Promise.all(h.writes);
        return result;
      });
    } catch (error) {
      // Not taken after all, or not known to be: should it have committed, recovery may orphan it.
      if (h.takenHold) openHolds.delete(h.takenHold);
      if (h.takenClaim) openClaims.delete(h.takenClaim);
      throw error;
    }
  }

  /**
   * Decides a hold and sends its writes (to travel with the COMMIT). A hold or claim it takes is added to this
   * process's open work before it can commit.
   */
  async function holdOrRefuse(h: HoldTx, req: HoldRequest): Promise<HoldResult> {
    const conn = h.conn;
    const [[key], [seen]] = (await Promise.all([
      conn`SELECT status, daily_cap_micros AS daily, total_cap_micros AS total, spent_total_micros AS spent,
                  held_total_micros AS held
             FROM vault_keys WHERE id = ${req.keyId} FOR UPDATE`,
      conn`SELECT d.settled_micros AS "daySettled", d.held_micros AS "dayHeld", i.fingerprint, i.state, i.hold_id AS "holdId",
                  i.status, i.headers, i.body, i.vendor_request_id AS "vendorRequestId", i.expires_at AS "expiresAt"
             FROM (VALUES (1)) AS one (x)
             LEFT JOIN spend_days d ON d.key_id = ${req.keyId} AND d.day = ${req.day}
             LEFT JOIN idempotency_entries i ON i.key_id = ${req.keyId} AND i.idempotency_key = ${req.idempotency?.key ?? null}`,
    ])) as [{ status: string; daily: string | null; total: string | null; spent: string; held: string }[], Seen[]];
    if (key?.status !== "active") return { kind: "denied", reason: "revoked" };
    const k: KeyBalance = { daily: numOrNull(key.daily), total: numOrNull(key.total), spent: num(key.spent), held: num(key.held) };
    const day = { settled: num(seen!.daySettled ?? 0), held: num(seen!.dayHeld ?? 0) };
    const before = { daySettled: day.settled, dayHeld: day.held, totalSpent: k.spent, totalHeld: k.held };
    const idem = req.idempotency;
    if (idem && seen!.state !== null && num(seen!.expiresAt) > req.now) {
      const prior = seen!;
      if (prior.fingerprint !== idem.fingerprint) return { kind: "conflict" };
      if (prior.state === "in_flight") return { kind: "in_flight" };
      if (prior.state === "completed") {
        const response: StoredResponse = {
          status: prior.status!,
          headers: JSON.parse(prior.headers ?? "[]"),
          body: prior.body,
          vendorRequestId: prior.vendorRequestId,
        };
        return { kind: "replay", response, balance: before };
      }
      if (req.reuseAmbiguous && prior.holdId) {
        const reopened = await reopenEntry(h, req, prior.holdId, k);
        if (reopened?.kind === "denied") return { ...reopened, kind: "denied" };
        if (reopened) {
          takeClaim(h, req.keyId, idem.key);
          h.writes.push(
            sendNow(conn`UPDATE idempotency_entries SET state = 'in_flight', instance_id = ${instanceId}
                          WHERE key_id = ${req.keyId} AND idempotency_key = ${idem.key}`),
          );
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
    if (!fits(day.settled + day.held, req.micros, k.daily))
      return { kind: "denied", reason: "daily_cap", capMicros: k.daily!, balance: before };
    if (!fits(k.spent + k.held, req.micros, k.total)) return { kind: "denied", reason: "total_cap", capMicros: k.total!, balance: before };
    if (req.ledger) {
      takeHold(h, req.holdId);
      // One statement: the entry, its day and the key's total.
      h.writes.push(
        sendNow(conn`WITH entry AS (
             INSERT INTO ledger_entries (id, key_id, day, hold_micros, state, created_at, request_id, method, path, instance_id)
             VALUES (${req.holdId}, ${req.keyId}, ${req.day}, ${req.micros}, 'held', ${req.now}, ${req.call.requestId},
                     ${req.call.method}, ${req.call.path}, ${instanceId})
           ), day AS (
             INSERT INTO spend_days (key_id, day, settled_micros, held_micros) VALUES (${req.keyId}, ${req.day}, 0, ${req.micros})
             ON CONFLICT (key_id, day) DO UPDATE SET held_micros = spend_days.held_micros + excluded.held_micros
           )
           UPDATE vault_keys SET held_total_micros = held_total_micros + ${req.micros} WHERE id = ${req.keyId}`),
      );
    }
    if (idem) {
      takeClaim(h, req.keyId, idem.key);
      // A claim replaces an expired entry, or an ambiguous one whose retry is a new call, whole.
      h.writes.push(
        sendNow(conn`INSERT INTO idempotency_entries (key_id, idempotency_key, fingerprint, state, hold_id, day, created_at, expires_at, instance_id)
           VALUES (${req.keyId}, ${idem.key}, ${idem.fingerprint}, 'in_flight', ${req.ledger ? req.holdId : null}, ${req.day},
                   ${req.now}, ${req.now + idem.ttlMs}, ${instanceId})
           ON CONFLICT (key_id, idempotency_key) DO UPDATE SET fingerprint = excluded.fingerprint, state = 'in_flight',
                  hold_id = excluded.hold_id, day = excluded.day, status = NULL, headers = NULL, body = NULL,
                  body_too_large = false, vendor_request_id = NULL, created_at = excluded.created_at,
                  expires_at = excluded.expires_at, instance_id = excluded.instance_id`),
      );
    }
    const held = req.ledger ? req.micros : 0;
    const balance = { ...before, dayHeld: day.held + held, totalHeld: k.held + held };
    return { kind: "admitted", holdId: req.ledger ? req.holdId : null, day: req.day, holdMicros: held, priorCostMicros: null, balance };
  }

  /**
   * A retry of an ambiguous call, forwarded again on its entry: what the entry counted as spent becomes held
   * again (at least as much; more if the retry's price is higher), so settled + held never drops below what the
   * vendor may have charged. The denial (with the cap and the entry's day's balances) when a higher price does
   * not fit. Its writes are sent, not awaited. The entry becomes this instance's: its call is in flight here.
   */
  async function reopenEntry(h: HoldTx, req: HoldRequest, holdId: string, key: KeyBalance): Promise<Reopened | undefined> {
    const conn = h.conn;
    const [entry] = await conn`
      SELECT e.state, e.hold_micros AS hold, e.cost_micros AS cost, e.day, d.settled_micros AS "daySettled", d.held_micros AS "dayHeld"
        FROM ledger_entries e LEFT JOIN spend_days d ON d.key_id = e.key_id AND d.day = e.day
       WHERE e.id = ${holdId} AND e.key_id = ${req.keyId}`;
    if (!entry || (entry.state !== "ambiguous" && entry.state !== "orphaned")) return undefined;
    const ambiguous = entry.state === "ambiguous";
    const daySettled = num(entry.daySettled ?? 0);
    const dayHeld = num(entry.dayHeld ?? 0);
    const counted = ambiguous ? num(entry.cost ?? 0) : num(entry.hold);
    const hold = Math.max(req.micros, counted);
    const more = hold - counted;
    const before = { daySettled, dayHeld, totalSpent: key.spent, totalHeld: key.held };
    if (more > 0 && !fits(daySettled + dayHeld, more, key.daily))
      return { kind: "denied", reason: "daily_cap", capMicros: key.daily!, balance: before };
    if (more > 0 && !fits(key.spent + key.held, more, key.total))
      return { kind: "denied", reason: "total_cap", capMicros: key.total!, balance: before };
    // An orphaned entry was never settled: it keeps no prior cost, its hold simply grows.
    const settledBack = ambiguous ? -counted : 0;
    const heldMore = ambiguous ? hold : more;
    takeHold(h, holdId);
    h.writes.push(
      sendNow(conn`UPDATE ledger_entries SET state = 'held', hold_micros = ${hold}, cost_micros = ${ambiguous ? counted : null},
                         instance_id = ${instanceId}
                   WHERE id = ${holdId}`),
      sendNow(addDay(conn, req.keyId, entry.day, settledBack, heldMore)),
      sendNow(addKeyTotals(conn, req.keyId, settledBack, heldMore)),
    );
    const balance = {
      daySettled: daySettled + settledBack,
      dayHeld: dayHeld + heldMore,
      totalSpent: key.spent + settledBack,
      totalHeld: key.held + heldMore,
    };
    return { kind: "reopened", day: entry.day, hold, counted, balance };
  }

  /**
   * Closes an open entry (`held`, or `orphaned` by a crash) of the key at `costMicros`, and moves its day and the
   * key's totals (with `calls` more calls, used at `usedAt`) in the same statement. An entry already closed moves
   * no money again (null). `auditDelta` is what the call added to spend: an entry re-forwarded after an ambiguous
   * attempt still carries that attempt's cost, which its new outcome replaces. The key must be locked.
   */
  async function closeHold(
    tx: Pg,
    c: {
      holdId: string;
      keyId: string;
      outcome: "settled" | "released" | "ambiguous";
      costMicros: number;
      now: number;
      reconcile?: { path: string; at: number };
      calls: number;
      usedAt: number | null;
    },
  ): Promise<Moved | null> {
    const [closed] = await tx`
      WITH entry AS (
        SELECT id, day, hold_micros, cost_micros FROM ledger_entries
         WHERE id = ${c.holdId} AND key_id = ${c.keyId} AND state IN ('held', 'orphaned')
      ), closed AS (
        UPDATE ledger_entries e SET state = ${c.outcome}, cost_micros = ${c.costMicros}, settled_at = ${c.now},
               reconcile_path = ${c.reconcile?.path ?? null}, reconcile_at = ${c.reconcile?.at ?? null}
          FROM entry WHERE e.id = entry.id
        RETURNING entry.day, entry.hold_micros AS hold, entry.cost_micros AS "priorCost"
      ), day AS (
        INSERT INTO spend_days (key_id, day, settled_micros, held_micros)
        SELECT ${c.keyId}, day, ${c.costMicros}, -hold FROM closed
        ON CONFLICT (key_id, day) DO UPDATE SET settled_micros = spend_days.settled_micros + excluded.settled_micros,
                                                held_micros = spend_days.held_micros + excluded.held_micros
      ), totals AS (
        UPDATE vault_keys SET spent_total_micros = spent_total_micros + coalesce((SELECT ${c.costMicros}::bigint FROM closed), 0),
               held_total_micros = held_total_micros - coalesce((SELECT hold FROM closed), 0),
               calls = calls + ${c.calls}, last_used_at = coalesce(${c.usedAt}::bigint, last_used_at)
         WHERE id = ${c.keyId}
      )
      SELECT day, hold, "priorCost" FROM closed`;
    if (!closed) return null;
    return { day: closed.day, hold: num(closed.hold), costDelta: c.costMicros, auditDelta: c.costMicros - num(closed.priorCost ?? 0) };
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

  /** A call's settlement, in the group commit: its entry closed, its audit row, alerts, its idempotency memory. */
  async function settle(tx: Pg, req: SettleRequest): Promise<number> {
    const count = { keyId: req.keyId, calls: 1, usedAt: req.now };
    const [, moved] = await Promise.all([
      lockKey(tx, req.keyId),
      req.holdId
        ? closeHold(tx, {
            ...count,
            holdId: req.holdId,
            outcome: req.outcome,
            costMicros: req.costMicros,
            now: req.now,
            reconcile: req.reconcile,
          })
        : tx`UPDATE vault_keys SET calls = calls + 1, last_used_at = ${req.now} WHERE id = ${req.keyId}`.then(() => null),
    ]);
    // An audit row's cost is what this call added to spend, so audit sums always equal the ledger's: a retry
    // re-settling an ambiguous hold records the difference, a second settle of one hold records 0.
    const costMicros = moved?.auditDelta ?? 0;
    const t = req.track;
    // Independent writes, sent together.
    await Promise.all([
      insertAuditRows(tx, [{ ...req.audit, costMicros }]),
      t &&
        tx`INSERT INTO tracked_objects (object_id, key_id, currency, amount_minor, counted_micros, updated_at)
           VALUES (${t.objectId}, ${t.keyId}, ${t.currency}, ${t.amountMinor}, ${t.countedMicros}, ${req.now})
           ON CONFLICT (object_id) DO UPDATE SET currency = excluded.currency, amount_minor = excluded.amount_minor,
                  counted_micros = excluded.counted_micros, updated_at = excluded.updated_at`,
      req.idempotency && rememberOutcome(tx, req.keyId, req.idempotency.key, req.idempotency.result),
      // Alerts in the settlement's own transaction: thresholds its spend crossed, a price above its hold, an
      // outcome the vendor left ambiguous.
      moved && req.holdId && settlementAlerts(tx, req, req.holdId, moved),
    ]);
    return costMicros;
  }

  async function settlementAlerts(tx: Pg, req: SettleRequest, holdId: string, moved: Moved) {
    await alerts.spendSettled(tx, req.keyId, moved.day, moved.costDelta, req.now);
    if (req.outcome === "settled" && req.costMicros > moved.hold) {
      const f = { holdId, requestId: req.audit.id, holdMicros: moved.hold, costMicros: req.costMicros };
      await alerts.priceDifferential(tx, req.keyId, f, req.now);
    }
    if (req.outcome === "ambiguous") {
      await alerts.holdsNeedAttention(tx, req.keyId, "ambiguous", [{ id: holdId, micros: req.costMicros }], moved.day, req.now);
    }
  }

  /**
   * An operator's decision on an orphaned hold (still counted as held) or an ambiguous entry (counted as spent at
   * its hold): settled at `costMicros`, or released at 0. An ambiguous entry's spend moves by the difference.
   */
  async function resolve(tx: Pg, keyId: string, id: string, outcome: "settled" | "released", costMicros: number, now: number) {
    const [, [entry]] = await Promise.all([
      lockKey(tx, keyId),
      tx`SELECT state, cost_micros AS cost, day FROM ledger_entries WHERE id = ${id} AND key_id = ${keyId}`,
    ]);
    if (entry?.state !== "orphaned" && entry?.state !== "ambiguous") return false;
    const cost = outcome === "released" ? 0 : costMicros;
    let moved: { day: string; costDelta: number; auditDelta: number };
    if (entry.state === "orphaned") {
      moved = (await closeHold(tx, { holdId: id, keyId, outcome, costMicros: cost, now, calls: 0, usedAt: null }))!;
    } else {
      const delta = cost - num(entry.cost ?? 0);
      await Promise.all([
        tx`UPDATE ledger_entries SET state = ${outcome}, cost_micros = ${cost}, settled_at = ${now}, reconcile_path = NULL,
                  reconcile_at = NULL
            WHERE id = ${id}`,
        addDay(tx, keyId, entry.day, delta, 0),
        addKeyTotals(tx, keyId, delta, 0),
      ]);
      moved = { day: entry.day, costDelta: delta, auditDelta: delta };
    }
    await alerts.spendSettled(tx, keyId, moved.day, moved.costDelta, now);
    const [h] = await tx.unsafe(`SELECT ${HOLD_COLUMNS} FROM ${HOLDS_FROM} WHERE e.id = $1`, [id]);
    const decision = outcome === "settled" ? "hold_settled" : "hold_released";
    await insertAuditRows(tx, [holdAuditRow(toHoldRow(h), `kbr_hold_${outcome}_${id}`, now, decision, moved.auditDelta)]);
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
                   WHERE state = 'held' AND NOT ${alive("e.instance_id")}`,
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
      for (const [keyId, ofKey] of Map.groupBy(holds, (h) => h.keyId)) {
        const list = ofKey.map((h) => ({ id: h.id, micros: h.holdMicros }));
        await alerts.holdsNeedAttention(tx, keyId, "orphaned", list, ofKey[0]!.day, now);
      }
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
        return await batches.deferred.submit(req.keyId, (tx) => settle(tx, req));
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
      const resolved = await batches.durable.submit(entry.keyId, (tx) => resolve(tx, entry.keyId, id, outcome, costMicros, now));
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

  function takeHold(h: HoldTx, holdId: string) {
    h.takenHold = holdId;
    openHolds.add(holdId);
  }

  function takeClaim(h: HoldTx, keyId: string, idemKey: string) {
    h.takenClaim = claimOf(keyId, idemKey);
    openClaims.add(h.takenClaim);
  }
}

import { randomBase62 } from "../../util";
import {
  type AlertKey,
  ambiguousMark,
  type ApprovalDecided,
  type ApprovalRequested,
  approvalDecidedData,
  approvalRequestedData,
  attemptResult,
  capExhaustedData,
  type EventRow,
  exhaustedMark,
  holdsNeedAttentionData,
  keyRevokedData,
  type Mark,
  priceDifferentialData,
  thresholdCrossings,
  thresholdsOf,
  toEvent,
  toWebhook,
  urlOrigin,
  type WebhookRow,
  webhookWants,
} from "../alerts-shared";
import { likePrefix } from "../keys-shared";
import type {
  AlertEventFilter,
  AlertEventRecord,
  AlertEventType,
  Balance,
  DeliveryAttempt,
  DeliveryFilter,
  DeliveryRecord,
  DueDelivery,
  NewWebhook,
  Page,
  WebhookRecord,
} from "../types";
import { allOf, type Fragment, type Pg, num, numOrNull } from "./client";

/**
 * The alert outbox on PostgreSQL (SPEC §12): the same events as the SQLite outbox (../alerts.ts), written in the
 * caller's transaction `tx`, which already holds the key's row lock where a key is involved. What fires once per
 * key and cap window is an `alert_marks` row inserted ON CONFLICT DO NOTHING: of two instances marking the same
 * window, the second waits for the first to commit and then inserts nothing, so the event fires once fleet-wide.
 */

const ALERT_KEY_COLUMNS = `k.id, k.label, k.vendor, k.mode, k.daily_cap_micros AS daily, k.total_cap_micros AS total,
  k.spent_total_micros AS spent, k.alert_thresholds AS thresholds`;

type RawAlertKey = Omit<AlertKey, "daily" | "total" | "spent"> & { daily: string | null; total: string | null; spent: string };

const toAlertKey = (r: RawAlertKey): AlertKey => ({ ...r, daily: numOrNull(r.daily), total: numOrNull(r.total), spent: num(r.spent) });

async function alertKey(tx: Pg, keyId: string): Promise<AlertKey | null> {
  const [row] = await tx`SELECT ${tx.unsafe(ALERT_KEY_COLUMNS)} FROM vault_keys k WHERE k.id = ${keyId}`;
  return row ? toAlertKey(row) : null;
}

/** True the first time (key, window, name) is marked, at this instance or any other. */
async function firstTime(tx: Pg, keyId: string, m: Mark, now: number): Promise<boolean> {
  const inserted = await tx`INSERT INTO alert_marks (key_id, "window", mark, at) VALUES (${keyId}, ${m.window}, ${m.mark}, ${now})
                            ON CONFLICT DO NOTHING`;
  return inserted.count === 1;
}

/** Writes the event and a delivery for each webhook that wants it (its events, its label prefix). */
async function emit(tx: Pg, type: AlertEventType, key: AlertKey, data: Record<string, unknown>, now: number): Promise<void> {
  const id = `evt_${randomBase62(24)}`;
  await tx`INSERT INTO alert_events (id, type, at, key_id, label, vendor, mode, data)
           VALUES (${id}, ${type}, ${now}, ${key.id}, ${key.label}, ${key.vendor}, ${key.mode}, ${JSON.stringify(data)})`;
  const webhooks: Pick<WebhookRow, "id" | "events" | "labelPrefix">[] =
    await tx`SELECT id, events, label_prefix AS "labelPrefix" FROM alert_webhooks WHERE deleted_at IS NULL ORDER BY seq`;
  const deliveries = webhooks
    .filter((w) => webhookWants(w, type, key.label))
    .map((w) => ({ event_id: id, webhook_id: w.id, status: "pending", attempts: 0, created_at: now, next_attempt_at: now }));
  if (deliveries.length > 0) await tx`INSERT INTO alert_deliveries ${tx(deliveries)}`;
}

export interface PgAlertOutbox {
  spendSettled(tx: Pg, keyId: string, day: string, delta: number, now: number): Promise<void>;
  capRefused(
    tx: Pg,
    keyId: string,
    cap: "daily" | "total",
    day: string,
    capMicros: number,
    balance: Balance | undefined,
    priceMicros: number,
    now: number,
  ): Promise<void>;
  keysRevoked(tx: Pg, keyIds: readonly string[], now: number, by: string | null): Promise<void>;
  priceDifferential(
    tx: Pg,
    keyId: string,
    f: { holdId: string; requestId: string | null; holdMicros: number; costMicros: number },
    now: number,
  ): Promise<void>;
  holdsNeedAttention(
    tx: Pg,
    keyId: string,
    reason: "orphaned" | "ambiguous",
    holds: { id: string; micros: number }[],
    day: string,
    now: number,
  ): Promise<void>;
  budgetSettled(tx: Pg, budgetId: string, day: string, delta: number, now: number): Promise<void>;
  approvalRequested(tx: Pg, a: ApprovalRequested, now: number): Promise<void>;
  approvalDecided(tx: Pg, a: ApprovalDecided, now: number): Promise<void>;
  budgetRefused(
    tx: Pg,
    budgetId: string,
    r: { cap: "daily" | "total"; day: string; capMicros: number; balance: Balance; priceMicros: number },
    now: number,
  ): Promise<void>;
}

/** A budget as its alerts read it: as a key, its name as the label, no vendor nor mode. */
const BUDGET_COLUMNS = `b.id, b.name AS label, NULL AS vendor, NULL AS mode, b.daily_cap_micros AS daily, b.total_cap_micros AS total,
  b.spent_total_micros AS spent, b.alert_thresholds AS thresholds`;

/** The thresholds a rise of `delta` crossed for a key or budget read with its day's settled spend, once per window. */
async function crossed(
  tx: Pg,
  type: "cap_threshold" | "budget_threshold",
  row: Record<string, unknown> | undefined,
  day: string,
  delta: number,
  now: number,
) {
  if (!row) return;
  const owner = toAlertKey(row as RawAlertKey);
  if (thresholdsOf(owner.thresholds).length === 0) return;
  for (const crossing of thresholdCrossings(owner, day, delta, num(row.daySettled ?? 0))) {
    if (await firstTime(tx, owner.id, crossing, now)) await emit(tx, type, owner, crossing.data, now);
  }
}

export function pgAlertOutbox(): PgAlertOutbox {
  return {
    /**
     * The key's settled spend rose by `delta` on `day` (already written: the day's row and the key's lifetime
     * total): one `cap_threshold` per threshold crossed, of the daily and of the lifetime cap. The key and its
     * day are read in one round trip, as this runs in every settlement.
     */
    async spendSettled(tx, keyId, day, delta, now) {
      if (delta <= 0) return;
      const [row] = await tx`
        SELECT ${tx.unsafe(ALERT_KEY_COLUMNS)},
               (SELECT s.settled_micros FROM spend_days s WHERE s.key_id = k.id AND s.day = ${day}) AS "daySettled"
          FROM vault_keys k WHERE k.id = ${keyId}`;
      await crossed(tx, "cap_threshold", row, day, delta, now);
    },

    async budgetSettled(tx, budgetId, day, delta, now) {
      if (delta <= 0) return;
      const [row] = await tx`
        SELECT ${tx.unsafe(BUDGET_COLUMNS)},
               (SELECT d.settled_micros FROM budget_days d WHERE d.budget_id = b.id AND d.day = ${day}) AS "daySettled"
          FROM budgets b WHERE b.id = ${budgetId}`;
      await crossed(tx, "budget_threshold", row, day, delta, now);
    },

    async approvalRequested(tx, a, now) {
      const key = await alertKey(tx, a.keyId);
      if (key) await emit(tx, "approval_requested", key, approvalRequestedData(a), now);
    },

    async approvalDecided(tx, a, now) {
      const key = await alertKey(tx, a.keyId);
      if (key) await emit(tx, "approval_decided", key, approvalDecidedData(a), now);
    },

    async budgetRefused(tx, budgetId, r, now) {
      if (!(await firstTime(tx, budgetId, exhaustedMark(r.cap, r.day), now))) return;
      const [row] = await tx`SELECT ${tx.unsafe(BUDGET_COLUMNS)} FROM budgets b WHERE b.id = ${budgetId}`;
      if (row)
        await emit(tx, "budget_exhausted", toAlertKey(row), capExhaustedData(r.cap, r.day, r.capMicros, r.balance, r.priceMicros), now);
    },

    /** A call was refused at a cap: `cap_exhausted`, the first time in the cap's window. */
    async capRefused(tx, keyId, cap, day, capMicros, balance, priceMicros, now) {
      if (!(await firstTime(tx, keyId, exhaustedMark(cap, day), now))) return;
      const key = await alertKey(tx, keyId);
      if (key) await emit(tx, "cap_exhausted", key, capExhaustedData(cap, day, capMicros, balance, priceMicros), now);
    },

    /** Keys just revoked (their rows already say so): one `key_revoked` each. */
    async keysRevoked(tx, keyIds, now, by) {
      for (const id of keyIds) {
        const key = await alertKey(tx, id);
        if (key) await emit(tx, "key_revoked", key, keyRevokedData(now, by, key.spent), now);
      }
    },

    /** A settlement above its hold (SPEC §6: recorded, and it blocks further calls while over the cap). */
    async priceDifferential(tx, keyId, f, now) {
      const key = await alertKey(tx, keyId);
      if (key) await emit(tx, "price_differential", key, priceDifferentialData(f), now);
    },

    /** Orphaned holds fire every time (one event per key); ambiguous ones for the first of a key per UTC day. */
    async holdsNeedAttention(tx, keyId, reason, holds, day, now) {
      if (reason === "ambiguous" && !(await firstTime(tx, keyId, ambiguousMark(day), now))) return;
      const key = await alertKey(tx, keyId);
      if (key) await emit(tx, "holds_need_attention", key, holdsNeedAttentionData(reason, holds), now);
    },
  };
}

/** How long a delivery handed to a worker stays its own: longer than an attempt takes (send.ts's timeout). */
const DELIVERY_LEASE_MS = 60_000;

const WEBHOOK_COLUMNS = `id, url, events, label_prefix AS "labelPrefix", format, created_at AS "createdAt", created_by AS "createdBy",
  deleted_at AS "deletedAt", secret`;
const EVENT_COLUMNS = `e.seq, e.id, e.type, e.at, e.key_id AS "keyId", e.label, e.vendor, e.mode, e.data`;

type Int8 = string;
type RawWebhook = Omit<WebhookRow, "createdAt" | "deletedAt"> & { createdAt: Int8; deletedAt: Int8 | null };
type RawEvent = Omit<EventRow, "seq" | "at"> & { seq: Int8; at: Int8 };
type RawDelivery = Omit<DeliveryRecord, "seq" | "createdAt" | "nextAttemptAt" | "lastAttemptAt" | "deliveredAt"> & {
  seq: Int8;
  createdAt: Int8;
  nextAttemptAt: Int8 | null;
  lastAttemptAt: Int8 | null;
  deliveredAt: Int8 | null;
};
type RawDue = RawEvent & {
  deliverySeq: Int8;
  attempts: number;
  createdAt: Int8;
  nextAttemptAt: Int8;
  webhookId: string;
  url: string;
  format: "json" | "slack";
  secret: string;
};

const webhookRow = (r: RawWebhook): WebhookRow => ({ ...r, createdAt: num(r.createdAt), deletedAt: numOrNull(r.deletedAt) });
const eventRecord = (r: RawEvent): AlertEventRecord => toEvent({ ...r, seq: num(r.seq), at: num(r.at) });
const deliveryRecord = (r: RawDelivery): DeliveryRecord => ({
  ...r,
  seq: num(r.seq),
  url: r.url === null ? null : urlOrigin(r.url),
  createdAt: num(r.createdAt),
  nextAttemptAt: numOrNull(r.nextAttemptAt),
  lastAttemptAt: numOrNull(r.lastAttemptAt),
  deliveredAt: numOrNull(r.deliveredAt),
});

/** The newest `limit` rows, and the cursor of the next page when there are more (the query read `limit + 1`). */
function page<T extends { seq: number }>(rows: T[], limit: number): Page<T> {
  const data = rows.slice(0, limit);
  return { data, nextCursor: rows.length > limit ? data[data.length - 1]!.seq : null };
}

/** The admin side: webhooks, the deliveries' state, and what the delivery workers claim and record. */
export function pgAlertQueries(sql: Pg) {
  const webhookById = async (id: string): Promise<WebhookRow | null> => {
    const [row] = await sql`SELECT ${sql.unsafe(WEBHOOK_COLUMNS)} FROM alert_webhooks WHERE id = ${id} AND deleted_at IS NULL`;
    return row ? webhookRow(row) : null;
  };

  return {
    async insertWebhook(w: NewWebhook): Promise<WebhookRecord> {
      const [row] = await sql`
        INSERT INTO alert_webhooks (id, url, events, label_prefix, format, secret, created_at, created_by)
        VALUES (${w.id}, ${w.url}, ${JSON.stringify(w.events)}, ${w.labelPrefix}, ${w.format}, ${w.secret}, ${w.createdAt}, ${w.createdBy})
        RETURNING ${sql.unsafe(WEBHOOK_COLUMNS)}`;
      return toWebhook(webhookRow(row));
    },

    async findWebhook(id: string): Promise<(WebhookRecord & { secret: string }) | null> {
      const row = await webhookById(id);
      return row ? { ...toWebhook(row), secret: row.secret } : null;
    },

    async listWebhooks(): Promise<WebhookRecord[]> {
      const rows: RawWebhook[] = await sql`SELECT ${sql.unsafe(WEBHOOK_COLUMNS)} FROM alert_webhooks WHERE deleted_at IS NULL ORDER BY seq`;
      return rows.map((r) => toWebhook(webhookRow(r)));
    },

    /** Deletes the webhook and cancels its pending deliveries together; null when there is no such webhook. */
    async deleteWebhook(id: string, now: number): Promise<WebhookRecord | null> {
      return sql.begin(async (tx) => {
        const [row] = await tx`UPDATE alert_webhooks SET deleted_at = ${now} WHERE id = ${id} AND deleted_at IS NULL
                               RETURNING ${tx.unsafe(WEBHOOK_COLUMNS)}`;
        if (!row) return null;
        await tx`UPDATE alert_deliveries
                    SET status = 'cancelled', next_attempt_at = NULL, lease_until = NULL,
                        last_error = coalesce(last_error, 'webhook deleted')
                  WHERE webhook_id = ${id} AND status = 'pending'`;
        return toWebhook(webhookRow(row));
      });
    },

    async listDeliveries(f: DeliveryFilter): Promise<Page<DeliveryRecord>> {
      const where: Fragment[] = [];
      if (f.status !== undefined) where.push(sql`d.status = ${f.status}`);
      if (f.webhookId !== undefined) where.push(sql`d.webhook_id = ${f.webhookId}`);
      if (f.eventId !== undefined) where.push(sql`d.event_id = ${f.eventId}`);
      if (f.cursor !== undefined) where.push(sql`d.seq < ${f.cursor}`);
      const rows: RawDelivery[] = await sql`
        SELECT d.seq, d.event_id AS "eventId", e.type AS "eventType", e.key_id AS "keyId", e.label, d.webhook_id AS "webhookId", w.url,
               d.status, d.attempts, d.created_at AS "createdAt", d.next_attempt_at AS "nextAttemptAt",
               d.last_attempt_at AS "lastAttemptAt", d.last_status AS "lastStatus", d.last_error AS "lastError",
               d.delivered_at AS "deliveredAt"
          FROM alert_deliveries d
          LEFT JOIN alert_events e ON e.id = d.event_id
          LEFT JOIN alert_webhooks w ON w.id = d.webhook_id
         WHERE ${allOf(sql, where)}
         ORDER BY d.seq DESC LIMIT ${f.limit + 1}`;
      return page(rows.map(deliveryRecord), f.limit);
    },

    async listAlertEvents(f: AlertEventFilter): Promise<Page<AlertEventRecord>> {
      const where: Fragment[] = [];
      if (f.type !== undefined) where.push(sql`e.type = ${f.type}`);
      if (f.keyId !== undefined) where.push(sql`e.key_id = ${f.keyId}`);
      if (f.labelPrefix !== undefined) where.push(sql`e.label LIKE ${likePrefix(f.labelPrefix)} ESCAPE '\\'`);
      if (f.cursor !== undefined) where.push(sql`e.seq < ${f.cursor}`);
      const rows: RawEvent[] = await sql`
        SELECT ${sql.unsafe(EVENT_COLUMNS)} FROM alert_events e WHERE ${allOf(sql, where)} ORDER BY e.seq DESC LIMIT ${f.limit + 1}`;
      return page(rows.map(eventRecord), f.limit);
    },

    /**
     * Claims the pending deliveries due by `now` (the longest due first) for this instance's worker: each is
     * leased for DELIVERY_LEASE_MS, so the workers of other instances neither see it (SKIP LOCKED while this
     * claim commits, the lease after) nor send it at the same time. A worker that stops mid-send leaves the lease
     * to run out, and the delivery is sent again then (at least once).
     */
    async dueDeliveries(now: number, limit: number, skip: readonly number[]): Promise<DueDelivery[]> {
      const rows: RawDue[] = await sql`
        WITH claimed AS (
          SELECT d.seq FROM alert_deliveries d
            JOIN alert_events e ON e.id = d.event_id
            JOIN alert_webhooks w ON w.id = d.webhook_id
           WHERE d.status = 'pending' AND d.next_attempt_at <= ${now}
             AND (d.lease_until IS NULL OR d.lease_until <= ${now})
             AND d.seq <> ALL(${[...skip]}::bigint[])
           ORDER BY d.next_attempt_at LIMIT ${limit}
           FOR UPDATE OF d SKIP LOCKED)
        UPDATE alert_deliveries d SET lease_until = ${now + DELIVERY_LEASE_MS}
          FROM claimed, alert_events e, alert_webhooks w
         WHERE d.seq = claimed.seq AND e.id = d.event_id AND w.id = d.webhook_id
        RETURNING d.seq AS "deliverySeq", d.attempts, d.created_at AS "createdAt", d.next_attempt_at AS "nextAttemptAt",
                  ${sql.unsafe(EVENT_COLUMNS)}, w.id AS "webhookId", w.url, w.format, w.secret`;
      // RETURNING keeps no order: put the longest due first again.
      rows.sort((a, b) => num(a.nextAttemptAt) - num(b.nextAttemptAt) || num(a.deliverySeq) - num(b.deliverySeq));
      return rows.map((r) => ({
        seq: num(r.deliverySeq),
        attempts: r.attempts,
        createdAt: num(r.createdAt),
        event: eventRecord(r),
        webhook: { id: r.webhookId, url: r.url, format: r.format, secret: r.secret },
      }));
    },

    /** Records an attempt and ends the claim on it. */
    async recordDeliveryAttempt(a: DeliveryAttempt): Promise<void> {
      const result = attemptResult(a);
      await sql`
        UPDATE alert_deliveries
           SET status = ${result.status}, attempts = attempts + 1, last_attempt_at = ${a.at}, last_status = ${a.status},
               last_error = ${a.error}, next_attempt_at = ${result.nextAttemptAt}, delivered_at = ${result.deliveredAt}, lease_until = NULL
         WHERE seq = ${a.seq} AND status = 'pending'`;
    },

    async countPendingDeliveries(): Promise<number> {
      const [row] = await sql`SELECT count(*) AS n FROM alert_deliveries WHERE status = 'pending'`;
      return num(row.n);
    },

    /** Deletes events older than `before` whose deliveries are all finished, with those deliveries and past days' marks. */
    async pruneAlerts(before: number, batch: number): Promise<number> {
      return sql.begin(async (tx) => {
        const deliveries = await tx`
          DELETE FROM alert_deliveries
           WHERE event_id IN (SELECT id FROM alert_events WHERE at < ${before} ORDER BY at LIMIT ${batch})
             AND NOT EXISTS (SELECT 1 FROM alert_deliveries p WHERE p.event_id = alert_deliveries.event_id AND p.status = 'pending')`;
        const events = await tx`
          DELETE FROM alert_events WHERE seq IN (
            SELECT seq FROM alert_events e WHERE at < ${before}
               AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.event_id = e.id)
             ORDER BY at LIMIT ${batch})`;
        const marks = await tx`
          DELETE FROM alert_marks WHERE (key_id, "window", mark) IN (
            SELECT key_id, "window", mark FROM alert_marks WHERE "window" LIKE 'day:%' AND at < ${before} LIMIT ${batch})`;
        return Math.max(deliveries.count, events.count, marks.count);
      });
    },
  };
}

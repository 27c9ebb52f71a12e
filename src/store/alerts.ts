import type { Database } from "bun:sqlite";
import { randomBase62 } from "../util";
import type { GroupCommit } from "./group-commit";
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
} from "./alerts-shared";
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
} from "./types";

export { urlOrigin };

/**
 * The alert outbox (SPEC §12). Its `emit…` functions run inside the transaction of the change that causes the
 * event (a settlement, a refusal, a revocation, a start-up's recovery): the event and one delivery row per
 * webhook that wants it are committed with that change or not at all. The delivery worker (alerts/worker.ts)
 * sends what is pending.
 *
 * Thresholds are crossed by **settled** spend (what `spent_today_usd` and `spent_total_usd` show, ambiguous
 * calls included), not by holds: a hold may yet be released, and an alert is not taken back. Each threshold
 * and the first refusal fire once per key and cap window (`day:<UTC day>` for the daily cap, `total` for the
 * lifetime cap), remembered in `alert_marks`, so a restart or spend that dips and rises again never refires.
 */

export type AlertOutbox = ReturnType<typeof alertOutbox>;

/** The synchronous writes other store modules make inside their own transactions. */
export function alertOutbox(client: Database) {
  const keyInfo = client.prepare<AlertKey, [string]>(
    `SELECT id, label, vendor, mode, daily_cap_micros AS daily, total_cap_micros AS total, spent_total_micros AS spent,
            alert_thresholds AS thresholds
       FROM vault_keys WHERE id = ?`,
  );
  const daySettled = client.prepare<{ settled: number }, [string, string]>(
    `SELECT settled_micros AS settled FROM spend_days WHERE key_id = ? AND day = ?`,
  );
  const budgetInfo = client.prepare<AlertKey, [string]>(
    `SELECT id, name AS label, NULL AS vendor, NULL AS mode, daily_cap_micros AS daily, total_cap_micros AS total,
            spent_total_micros AS spent, alert_thresholds AS thresholds
       FROM budgets WHERE id = ?`,
  );
  const budgetDaySettled = client.prepare<{ settled: number }, [string, string]>(
    `SELECT settled_micros AS settled FROM budget_days WHERE budget_id = ? AND day = ?`,
  );
  const mark = client.prepare(`INSERT OR IGNORE INTO alert_marks (key_id, window, mark, at) VALUES (?, ?, ?, ?)`);
  const activeWebhooks = client.prepare<Pick<WebhookRow, "id" | "events" | "labelPrefix">, []>(
    `SELECT id, events, label_prefix AS labelPrefix FROM alert_webhooks WHERE deleted_at IS NULL`,
  );
  const insertEvent = client.prepare(
    `INSERT INTO alert_events (id, type, at, key_id, label, vendor, mode, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertDelivery = client.prepare(
    `INSERT INTO alert_deliveries (event_id, webhook_id, status, attempts, created_at, next_attempt_at) VALUES (?, ?, 'pending', 0, ?, ?)`,
  );

  /** Writes the event and a delivery for each webhook that wants it (its events, its label prefix). */
  function emit(type: AlertEventType, key: Pick<AlertKey, "id" | "label" | "vendor" | "mode">, data: Record<string, unknown>, now: number) {
    const id = `evt_${randomBase62(24)}`;
    insertEvent.run(id, type, now, key.id, key.label, key.vendor, key.mode, JSON.stringify(data));
    for (const w of activeWebhooks.all()) {
      if (webhookWants(w, type, key.label)) insertDelivery.run(id, w.id, now, now);
    }
    return id;
  }

  /** True the first time (key or budget, window, name) is marked: what fires once per cap window. */
  const firstTime = (keyId: string, m: Mark, now: number) => mark.run(keyId, m.window, m.mark, now).changes === 1;

  /** The thresholds a rise of `delta` in settled spend crossed, each fired once per window as `type`. */
  function crossed(
    type: "cap_threshold" | "budget_threshold",
    owner: AlertKey | null,
    day: string,
    delta: number,
    settledToday: () => number,
    now: number,
  ) {
    if (!owner || thresholdsOf(owner.thresholds).length === 0) return;
    for (const crossing of thresholdCrossings(owner, day, delta, owner.daily === null ? 0 : settledToday())) {
      if (firstTime(owner.id, crossing, now)) emit(type, owner, crossing.data, now);
    }
  }

  /** A refusal at `owner`'s cap: fired as `type` the first time in the cap's window. */
  function refused(
    type: "cap_exhausted" | "budget_exhausted",
    owner: (id: string) => AlertKey | null,
    id: string,
    r: { cap: "daily" | "total"; day: string; capMicros: number; balance: Balance | undefined; priceMicros: number },
    now: number,
  ) {
    if (!firstTime(id, exhaustedMark(r.cap, r.day), now)) return;
    const o = owner(id);
    if (o) emit(type, o, capExhaustedData(r.cap, r.day, r.capMicros, r.balance, r.priceMicros), now);
  }

  return {
    /**
     * The key's settled spend rose by `delta` on `day` (already written: the day's row and the key's lifetime
     * total): one `cap_threshold` per threshold crossed, of the daily and of the lifetime cap. `after` is the
     * key and the day's settled spend as those writes returned them (a settlement's), else they are read.
     */
    spendSettled(keyId: string, day: string, delta: number, now: number) {
      if (delta <= 0) return;
      crossed("cap_threshold", keyInfo.get(keyId), day, delta, () => daySettled.get(keyId, day)?.settled ?? 0, now);
    },

    /** A budget's settled spend rose by `delta` on `day` (already written): `budget_threshold` per threshold crossed. */
    budgetSettled(budgetId: string, day: string, delta: number, now: number) {
      if (delta <= 0) return;
      crossed("budget_threshold", budgetInfo.get(budgetId), day, delta, () => budgetDaySettled.get(budgetId, day)?.settled ?? 0, now);
    },

    /** A call was refused at a cap: `cap_exhausted`, the first time in the cap's window. */
    capRefused(
      keyId: string,
      cap: "daily" | "total",
      day: string,
      capMicros: number,
      balance: Balance | undefined,
      priceMicros: number,
      now: number,
    ) {
      refused("cap_exhausted", (id) => keyInfo.get(id), keyId, { cap, day, capMicros, balance, priceMicros }, now);
    },

    /** A call waits for a person's approval (SPEC §15). */
    approvalRequested(a: ApprovalRequested, now: number) {
      const key = keyInfo.get(a.keyId);
      if (key) emit("approval_requested", key, approvalRequestedData(a), now);
    },

    /** A person decided an approval, or it lapsed. */
    approvalDecided(a: ApprovalDecided, now: number) {
      const key = keyInfo.get(a.keyId);
      if (key) emit("approval_decided", key, approvalDecidedData(a), now);
    },

    /** A call was refused at a budget's cap: `budget_exhausted`, the first time in the cap's window. */
    budgetRefused(
      budgetId: string,
      r: { cap: "daily" | "total"; day: string; capMicros: number; balance: Balance; priceMicros: number },
      now: number,
    ) {
      refused("budget_exhausted", (id) => budgetInfo.get(id), budgetId, r, now);
    },

    /** Keys just revoked (their rows already say so): one `key_revoked` each. */
    keysRevoked(keyIds: readonly string[], now: number, by: string | null) {
      for (const id of keyIds) {
        const key = keyInfo.get(id);
        if (key) emit("key_revoked", key, keyRevokedData(now, by, key.spent), now);
      }
    },

    /** A settlement above its hold (SPEC §6: recorded, and it blocks further calls while over the cap). */
    priceDifferential(keyId: string, f: { holdId: string; requestId: string | null; holdMicros: number; costMicros: number }, now: number) {
      const key = keyInfo.get(keyId);
      if (key) emit("price_differential", key, priceDifferentialData(f), now);
    },

    /**
     * Holds an operator must resolve: `orphaned` (found at start-up, one event per key, every time) or
     * `ambiguous` (a vendor 5xx, timeout or dropped connection; the first of a key per UTC day fires, the
     * others are in `keybrake holds list --state ambiguous`).
     */
    holdsNeedAttention(keyId: string, reason: "orphaned" | "ambiguous", holds: { id: string; micros: number }[], day: string, now: number) {
      if (reason === "ambiguous" && !firstTime(keyId, ambiguousMark(day), now)) return;
      const key = keyInfo.get(keyId);
      if (key) emit("holds_need_attention", key, holdsNeedAttentionData(reason, holds), now);
    },
  };
}

/** A WHERE clause built up condition by condition, with its parameters in order. */
function conditions() {
  const where: string[] = [];
  const params: (string | number)[] = [];
  const cond = (sql: string, ...values: (string | number)[]) => {
    where.push(sql);
    params.push(...values);
  };
  return { where, params, cond };
}

/** The admin side: webhooks, the deliveries' state, and what the delivery worker reads and records. */
export function alertQueries(client: Database, commits: GroupCommit) {
  const WEBHOOK_COLUMNS = `id, url, events, label_prefix AS labelPrefix, format, created_at AS createdAt, created_by AS createdBy,
    deleted_at AS deletedAt, secret`;
  const insertWebhook = client.prepare(
    `INSERT INTO alert_webhooks (id, url, events, label_prefix, format, secret, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const webhookById = client.prepare<WebhookRow, [string]>(
    `SELECT ${WEBHOOK_COLUMNS} FROM alert_webhooks WHERE id = ? AND deleted_at IS NULL`,
  );
  const webhooks = client.prepare<WebhookRow, []>(`SELECT ${WEBHOOK_COLUMNS} FROM alert_webhooks WHERE deleted_at IS NULL ORDER BY seq`);
  const markDeleted = client.prepare(`UPDATE alert_webhooks SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL`);
  const cancelPending = client.prepare(
    `UPDATE alert_deliveries SET status = 'cancelled', next_attempt_at = NULL, last_error = coalesce(last_error, 'webhook deleted')
      WHERE webhook_id = ? AND status = 'pending'`,
  );
  const EVENT_COLUMNS = `e.seq, e.id, e.type, e.at, e.key_id AS keyId, e.label, e.vendor, e.mode, e.data`;
  const due = client.prepare<
    EventRow & {
      deliverySeq: number;
      attempts: number;
      createdAt: number;
      webhookId: string;
      url: string;
      format: "json" | "slack";
      secret: string;
    },
    [number, number]
  >(
    `SELECT d.seq AS deliverySeq, d.attempts, d.created_at AS createdAt, ${EVENT_COLUMNS},
            w.id AS webhookId, w.url, w.format, w.secret
       FROM alert_deliveries d
       JOIN alert_events e ON e.id = d.event_id
       JOIN alert_webhooks w ON w.id = d.webhook_id
      WHERE d.status = 'pending' AND d.next_attempt_at <= ?
      ORDER BY d.next_attempt_at LIMIT ?`,
  );
  const attempted = client.prepare(
    `UPDATE alert_deliveries SET status = ?2, attempts = attempts + 1, last_attempt_at = ?3, last_status = ?4, last_error = ?5,
            next_attempt_at = ?6, delivered_at = ?7
      WHERE seq = ?1 AND status = 'pending'`,
  );
  const pending = client.prepare<{ n: number }, []>(`SELECT count(*) AS n FROM alert_deliveries WHERE status = 'pending'`);
  const pruneDeliveries = client.prepare(
    `DELETE FROM alert_deliveries WHERE event_id IN (SELECT id FROM alert_events WHERE at < ?1 ORDER BY at LIMIT ?2)
        AND NOT EXISTS (SELECT 1 FROM alert_deliveries p WHERE p.event_id = alert_deliveries.event_id AND p.status = 'pending')`,
  );
  const pruneEvents = client.prepare(
    `DELETE FROM alert_events WHERE seq IN (
        SELECT seq FROM alert_events e WHERE at < ?1
           AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.event_id = e.id)
         ORDER BY at LIMIT ?2)`,
  );
  const pruneMarks = client.prepare(
    `DELETE FROM alert_marks WHERE rowid IN (SELECT rowid FROM alert_marks WHERE window LIKE 'day:%' AND at < ?1 LIMIT ?2)`,
  );

  return {
    async insertWebhook(w: NewWebhook): Promise<WebhookRecord> {
      insertWebhook.run(w.id, w.url, JSON.stringify(w.events), w.labelPrefix, w.format, w.secret, w.createdAt, w.createdBy);
      return toWebhook(webhookById.get(w.id)!);
    },
    async findWebhook(id: string) {
      const row = webhookById.get(id);
      return row ? { ...toWebhook(row), secret: row.secret } : null;
    },
    async listWebhooks() {
      return webhooks.all().map(toWebhook);
    },
    async deleteWebhook(id: string, now: number) {
      const row = webhookById.get(id);
      if (!row) return null;
      client
        .transaction(() => {
          markDeleted.run(id, now);
          cancelPending.run(id);
        })
        .immediate();
      return { ...toWebhook(row), deletedAt: now };
    },
    async listDeliveries(f: DeliveryFilter): Promise<Page<DeliveryRecord>> {
      const { where, params, cond } = conditions();
      if (f.status !== undefined) cond("d.status = ?", f.status);
      if (f.webhookId !== undefined) cond("d.webhook_id = ?", f.webhookId);
      if (f.eventId !== undefined) cond("d.event_id = ?", f.eventId);
      if (f.cursor !== undefined) cond("d.seq < ?", f.cursor);
      const rows = client
        .query<DeliveryRecord, (string | number)[]>(
          `SELECT d.seq, d.event_id AS eventId, e.type AS eventType, e.key_id AS keyId, e.label, d.webhook_id AS webhookId, w.url,
                  d.status, d.attempts, d.created_at AS createdAt, d.next_attempt_at AS nextAttemptAt,
                  d.last_attempt_at AS lastAttemptAt, d.last_status AS lastStatus, d.last_error AS lastError, d.delivered_at AS deliveredAt
             FROM alert_deliveries d
             LEFT JOIN alert_events e ON e.id = d.event_id
             LEFT JOIN alert_webhooks w ON w.id = d.webhook_id
            ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
            ORDER BY d.seq DESC LIMIT ?`,
        )
        .all(...params, f.limit + 1);
      const more = rows.length > f.limit;
      const data = rows.slice(0, f.limit).map((r) => ({ ...r, url: r.url === null ? null : urlOrigin(r.url) }));
      return { data, nextCursor: more ? data[data.length - 1]!.seq : null };
    },
    async listAlertEvents(f: AlertEventFilter): Promise<Page<AlertEventRecord>> {
      const { where, params, cond } = conditions();
      if (f.type !== undefined) cond("e.type = ?", f.type);
      if (f.keyId !== undefined) cond("e.key_id = ?", f.keyId);
      if (f.labelPrefix !== undefined) cond("substr(e.label, 1, length(?)) = ?", f.labelPrefix, f.labelPrefix);
      if (f.cursor !== undefined) cond("e.seq < ?", f.cursor);
      const rows = client
        .query<EventRow, (string | number)[]>(
          `SELECT ${EVENT_COLUMNS} FROM alert_events e ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY e.seq DESC LIMIT ?`,
        )
        .all(...params, f.limit + 1);
      const more = rows.length > f.limit;
      const data = rows.slice(0, f.limit).map(toEvent);
      return { data, nextCursor: more ? data[data.length - 1]!.seq : null };
    },
    async dueDeliveries(now: number, limit: number, skip: readonly number[]): Promise<DueDelivery[]> {
      const busy = new Set(skip);
      return due
        .all(now, limit + busy.size)
        .filter((r) => !busy.has(r.deliverySeq))
        .slice(0, limit)
        .map((r) => ({
          seq: r.deliverySeq,
          attempts: r.attempts,
          createdAt: r.createdAt,
          event: toEvent(r),
          webhook: { id: r.webhookId, url: r.url, format: r.format, secret: r.secret },
        }));
    },
    /**
     * Through the group commit, deferred: a delivery's bookkeeping shares the proxy's commits instead of adding its
     * own, and is not synced by itself (lost to a power loss, the delivery is pending again: sent at least once).
     */
    recordDeliveryAttempt: (a: DeliveryAttempt) =>
      commits.defer(() => {
        const result = attemptResult(a);
        attempted.run(a.seq, result.status, a.at, a.status, a.error, result.nextAttemptAt, result.deliveredAt);
      }),
    async countPendingDeliveries() {
      return pending.get()!.n;
    },
    async pruneAlerts(before: number, batch: number) {
      return client.transaction(() => {
        const deliveries = pruneDeliveries.run(before, batch).changes;
        const events = pruneEvents.run(before, batch).changes;
        const marks = pruneMarks.run(before, batch).changes;
        return Math.max(deliveries, events, marks);
      })();
    },
  };
}

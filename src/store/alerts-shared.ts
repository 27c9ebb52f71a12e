import type { AlertIntent } from "../ledger/rules";
import type { AlertEventRecord, AlertEventType, Balance, DeliveryAttempt, DeliveryStatus, WebhookRecord } from "./types";

/**
 * What the SQLite outbox (alerts.ts) and the PostgreSQL one (pg/alerts.ts) decide alike: which thresholds a
 * settlement crosses, which cap window a mark belongs to, what each event says, which webhooks want it, and how
 * rows become records. Only the SQL differs between the two.
 */

/**
 * A key as its alerts need it: the caps, the lifetime spend, the thresholds as stored (JSON). A budget's alerts
 * read a budget the same way: its name as the label, no vendor nor mode.
 */
export type AlertKey = {
  id: string;
  label: string | null;
  vendor: string | null;
  mode: string | null;
  daily: number | null;
  total: number | null;
  spent: number;
  thresholds: string;
};

export type WebhookRow = {
  id: string;
  url: string;
  events: string;
  labelPrefix: string | null;
  format: "json" | "slack";
  createdAt: number;
  createdBy: string;
  deletedAt: number | null;
  secret: string;
};

export type EventRow = Omit<AlertEventRecord, "data"> & { data: string };

/** What fires once per key and cap window: its window (`day:<UTC day>` or `total`) and its name in that window. */
export interface Mark {
  window: string;
  mark: string;
}

export const usd = (micros: number) => micros / 1_000_000;
export const percentOf = (part: number, whole: number) => (whole > 0 ? Math.round((part / whole) * 1000) / 10 : 0);

/** The window of a cap: each UTC day for the daily cap, the key's whole life for the lifetime cap. */
export const capWindow = (cap: "daily" | "total", day: string) => (cap === "daily" ? `day:${day}` : "total");

/** Thresholds as the key stores them (JSON), parsed once per distinct text. */
const parsedThresholds = new Map<string, number[]>();
export function thresholdsOf(text: string): number[] {
  let parsed = parsedThresholds.get(text);
  if (!parsed) {
    try {
      const value = JSON.parse(text);
      parsed = Array.isArray(value) ? value.filter((t): t is number => typeof t === "number" && t > 0 && t <= 1).sort((a, b) => a - b) : [];
    } catch {
      parsed = [];
    }
    if (parsedThresholds.size > 1000) parsedThresholds.clear();
    parsedThresholds.set(text, parsed);
  }
  return parsed;
}

/**
 * The `cap_threshold` events a settlement of `delta` crossed, in threshold order, daily cap first:
 * `daySettled` is the day's settled spend after it (only read when the key has a daily cap), the key's `spent`
 * its lifetime spend after it. Each still has to pass its mark (fire once per window).
 */
export function thresholdCrossings(
  key: AlertKey,
  day: string,
  delta: number,
  daySettled: number,
): (Mark & { data: Record<string, unknown> })[] {
  const crossed: (Mark & { data: Record<string, unknown> })[] = [];
  const check = (cap: "daily" | "total", before: number, after: number, capMicros: number) => {
    for (const threshold of thresholdsOf(key.thresholds)) {
      const level = Math.round(threshold * capMicros);
      if (!(before < level && after >= level)) continue;
      crossed.push({
        window: capWindow(cap, day),
        mark: `threshold:${threshold}`,
        data: {
          cap,
          window: cap === "daily" ? day : null,
          threshold,
          cap_usd: usd(capMicros),
          spent_usd: usd(after),
          percent: percentOf(after, capMicros),
        },
      });
    }
  };
  if (key.daily !== null) check("daily", daySettled - delta, daySettled, key.daily);
  if (key.total !== null) check("total", key.spent - delta, key.spent, key.total);
  return crossed;
}

/** `cap_exhausted` fires at the first refusal of each cap window. */
export const exhaustedMark = (cap: "daily" | "total", day: string): Mark => ({ window: capWindow(cap, day), mark: "exhausted" });

/** Ambiguous holds fire `holds_need_attention` for the first of a key per UTC day. */
export const ambiguousMark = (day: string): Mark => ({ window: capWindow("daily", day), mark: "ambiguous" });

export function capExhaustedData(
  cap: "daily" | "total",
  day: string,
  capMicros: number,
  balance: Balance | undefined,
  priceMicros: number,
): Record<string, unknown> {
  const b = balance ?? { daySettled: 0, dayHeld: 0, totalSpent: 0, totalHeld: 0 };
  const spent = cap === "daily" ? b.daySettled : b.totalSpent;
  return {
    cap,
    window: cap === "daily" ? day : null,
    cap_usd: usd(capMicros),
    spent_usd: usd(spent),
    held_usd: usd(cap === "daily" ? b.dayHeld : b.totalHeld),
    price_usd: usd(priceMicros),
    percent: percentOf(spent, capMicros),
  };
}

export const keyRevokedData = (now: number, by: string | null, spentMicros: number): Record<string, unknown> => ({
  revoked_at: new Date(now).toISOString(),
  by,
  spent_total_usd: usd(spentMicros),
});

export const priceDifferentialData = (f: {
  holdId: string;
  requestId: string | null;
  holdMicros: number;
  costMicros: number;
}): Record<string, unknown> => ({
  hold_id: f.holdId,
  request_id: f.requestId,
  hold_usd: usd(f.holdMicros),
  cost_usd: usd(f.costMicros),
  over_usd: usd(f.costMicros - f.holdMicros),
});

export const holdsNeedAttentionData = (
  reason: "orphaned" | "ambiguous",
  holds: { id: string; micros: number }[],
): Record<string, unknown> => ({
  reason,
  count: holds.length,
  amount_usd: usd(holds.reduce((sum, h) => sum + h.micros, 0)),
  hold_ids: holds.slice(0, 100).map((h) => h.id),
  resolve: `keybrake holds list --state ${reason}, then keybrake holds settle|release <id>`,
});

/** Whether a webhook gets an event: it lists the event's type, and the key's label starts with its prefix. */
export function webhookWants(w: Pick<WebhookRow, "events" | "labelPrefix">, type: AlertEventType, label: string | null): boolean {
  const events = JSON.parse(w.events) as string[];
  if (!events.includes(type)) return false;
  return w.labelPrefix === null || (label ?? "").startsWith(w.labelPrefix);
}

/** A delivery's row after an attempt: delivered, pending again from `nextAttemptAt`, or failed for good. */
export function attemptResult(a: DeliveryAttempt): { status: DeliveryStatus; nextAttemptAt: number | null; deliveredAt: number | null } {
  return {
    status: a.outcome === "delivered" ? "delivered" : a.outcome === "failed" ? "failed" : "pending",
    nextAttemptAt: a.outcome === "retry" ? a.nextAttemptAt : null,
    deliveredAt: a.outcome === "delivered" ? a.at : null,
  };
}

export const toWebhook = ({ secret: _secret, events, ...w }: WebhookRow): WebhookRecord => ({ ...w, events: JSON.parse(events) });

export const toEvent = ({ seq, id, type, at, keyId, label, vendor, mode, data }: EventRow): AlertEventRecord => ({
  seq,
  id,
  type,
  at,
  keyId,
  label,
  vendor,
  mode,
  data: JSON.parse(data),
});

/** An address's origin only: a Slack incoming webhook's path is its credential. */
export function urlOrigin(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return "?";
  }
}

/** An approval request's event data (SPEC §15). */
/** What an approval's alert intent says, as the rule book decided it. */
export type ApprovalRequested = Extract<AlertIntent, { alert: "approval_requested" }>;
export type ApprovalDecided = Extract<AlertIntent, { alert: "approval_decided" }>;

export const approvalRequestedData = (a: ApprovalRequested): Record<string, unknown> => ({
  approval_id: a.approvalId,
  price_usd: usd(a.priceMicros),
  method: a.method,
  path: a.path,
  expires_at: new Date(a.expiresAt).toISOString(),
  requested_by: a.requestedBy,
});

export const approvalDecidedData = (a: ApprovalDecided) => ({
  approval_id: a.approvalId,
  status: a.status,
  by: a.by,
  reason: a.reason,
});

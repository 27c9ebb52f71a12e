import type { AlertIntent, Entry, LedgerWrite } from "../../ledger/rules";
import type { PgAlertOutbox } from "./alerts";
import { type Pg, num, numOrNull } from "./client";
import { sendNow } from "./send";

/**
 * The PostgreSQL store's hands for the rule book (ledger/rules.ts): each write a decision returns, as a
 * statement on the transaction's connection. The ledger's writes are sent together (one round trip, run in order
 * once the key's lock is held); the alerts, which read what they fire on, follow. Nothing is decided here.
 * Entries and idempotency claims are written under `instanceId`: recovery leaves a live instance's alone.
 */
export function pgLedgerWriter(alerts: PgAlertOutbox, instanceId: string) {
  function statement(tx: Pg, w: Exclude<LedgerWrite, { kind: "alert" }>, now: number) {
    switch (w.kind) {
      case "insert_entry":
        return tx`INSERT INTO ledger_entries (id, key_id, day, hold_micros, state, created_at, request_id, method, path, instance_id)
                  VALUES (${w.holdId}, ${w.keyId}, ${w.day}, ${w.micros}, 'held', ${now}, ${w.call.requestId}, ${w.call.method},
                          ${w.call.path}, ${instanceId})`;
      case "reopen_entry":
        return tx`UPDATE ledger_entries SET state = 'held', hold_micros = ${w.hold}, cost_micros = ${w.cost}, instance_id = ${instanceId}
                   WHERE id = ${w.holdId}`;
      case "close_entry":
        return tx`UPDATE ledger_entries SET state = ${w.state}, cost_micros = ${w.cost}, settled_at = ${now},
                         reconcile_path = ${w.reconcile?.path ?? null}, reconcile_at = ${w.reconcile?.at ?? null}
                   WHERE id = ${w.holdId}`;
      case "reprice_entry":
        return tx`UPDATE ledger_entries SET cost_micros = ${w.cost}, reconcile_at = NULL WHERE id = ${w.holdId}`;
      case "add_day":
        return tx`INSERT INTO spend_days (key_id, day, settled_micros, held_micros) VALUES (${w.keyId}, ${w.day}, ${w.settled}, ${w.held})
                  ON CONFLICT (key_id, day) DO UPDATE SET settled_micros = spend_days.settled_micros + excluded.settled_micros,
                                                          held_micros = spend_days.held_micros + excluded.held_micros`;
      case "add_key":
        return tx`UPDATE vault_keys SET spent_total_micros = spent_total_micros + ${w.spent}, held_total_micros = held_total_micros + ${w.held},
                         calls = calls + ${w.calls}, last_used_at = coalesce(${w.usedAt}::bigint, last_used_at)
                   WHERE id = ${w.keyId}`;
      // A claim replaces an expired entry, or an ambiguous one whose retry is a new call, whole.
      case "claim_call":
        return tx`INSERT INTO idempotency_entries (key_id, idempotency_key, fingerprint, state, hold_id, day, created_at, expires_at, instance_id)
                  VALUES (${w.keyId}, ${w.key}, ${w.fingerprint}, 'in_flight', ${w.holdId}, ${w.day}, ${now}, ${w.expiresAt}, ${instanceId})
                  ON CONFLICT (key_id, idempotency_key) DO UPDATE SET fingerprint = excluded.fingerprint, state = 'in_flight',
                         hold_id = excluded.hold_id, day = excluded.day, status = NULL, headers = NULL, body = NULL,
                         body_too_large = false, vendor_request_id = NULL, created_at = excluded.created_at,
                         expires_at = excluded.expires_at, instance_id = excluded.instance_id`;
      case "call_in_flight":
        return tx`UPDATE idempotency_entries SET state = 'in_flight', instance_id = ${instanceId}
                   WHERE key_id = ${w.keyId} AND idempotency_key = ${w.key}`;
    }
  }

  function alert(tx: Pg, a: AlertIntent, now: number) {
    switch (a.alert) {
      case "cap_refused":
        return alerts.capRefused(tx, a.keyId, a.cap, a.day, a.capMicros, a.balance, a.priceMicros, now);
      case "spend_settled":
        return alerts.spendSettled(tx, a.keyId, a.day, a.delta, now);
      case "price_differential":
        return alerts.priceDifferential(tx, a.keyId, a, now);
      case "holds_need_attention":
        return alerts.holdsNeedAttention(tx, a.keyId, a.reason, a.holds, a.day, now);
    }
  }

  /** Applies a decision's writes at `now`: the ledger's together, then its alerts in order. */
  return async function apply(tx: Pg, writes: readonly LedgerWrite[], now: number): Promise<void> {
    const sent: Promise<unknown>[] = [];
    for (const w of writes) if (w.kind !== "alert") sent.push(sendNow(statement(tx, w, now)));
    await Promise.all(sent);
    for (const w of writes) if (w.kind === "alert") await alert(tx, w, now);
  };
}

/** A ledger entry as the rule book reads it, its bigints as numbers. */
export function toEntry(r: Record<string, unknown>): Entry {
  return {
    id: r.id as string,
    keyId: r.keyId as string,
    state: r.state as Entry["state"],
    hold: num(r.hold),
    cost: numOrNull(r.cost),
    day: r.day as string,
  };
}

/** The columns toEntry reads, for `SELECT ${ENTRY_COLUMNS} FROM ledger_entries e`. */
export const ENTRY_COLUMNS = `e.id, e.key_id AS "keyId", e.state, e.hold_micros AS hold, e.cost_micros AS cost, e.day`;

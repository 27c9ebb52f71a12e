import type { Entry } from "../ledger/rules";
import { auditRow } from "./audit-row";
import type { AuditRow, HoldRecord } from "./types";

/** A budget has at most two above it (SPEC §14): a hold's chain is at most this long. */
export const MAX_BUDGET_DEPTH = 3;

/** Answers larger than this are not kept for replay (Stripe objects are a few KiB). */
export const MAX_STORED_RESPONSE_BYTES = 256 * 1024;

/** A ledger entry with its key's label and what an audit row of it needs (the call that took the hold). */
export type HoldRow = HoldRecord & {
  vendor: string | null;
  mode: string | null;
  method: string | null;
  path: string | null;
  requestId: string | null;
};

/** The audit row for a hold event that is not a proxied call: orphaned by a crash, or resolved by an operator. */
export function holdAuditRow(h: HoldRow, id: string, now: number, decision: string, costMicros: number): AuditRow {
  return auditRow({
    id,
    at: now,
    keyId: h.keyId,
    label: h.label,
    vendor: h.vendor as AuditRow["vendor"],
    mode: h.mode as AuditRow["mode"],
    method: h.method ?? "?",
    path: h.path ?? "?",
    decision,
    holdMicros: h.holdMicros,
    costMicros,
  });
}

/** A hold as the store answers it: a HoldRow without the audit-only fields. */
export const holdRecord = (h: HoldRecord): HoldRecord => ({
  id: h.id,
  keyId: h.keyId,
  label: h.label,
  day: h.day,
  holdMicros: h.holdMicros,
  costMicros: h.costMicros,
  state: h.state,
  createdAt: h.createdAt,
  settledAt: h.settledAt,
});

/** A hold as the rule book reads a ledger entry. */
export const asEntry = (h: HoldRecord): Entry => ({
  id: h.id,
  keyId: h.keyId,
  state: h.state,
  hold: h.holdMicros,
  cost: h.costMicros,
  day: h.day,
  counterparty: null,
});

import type { AuditRow } from "./types";

/** The fields every audit row must name; everything else starts empty (no key, no money, no timings). */
type Required = Pick<AuditRow, "id" | "at" | "method" | "path" | "decision">;

/** One audit row, from what its writer knows: proxied calls, hold events and unauthenticated aggregates alike. */
export function auditRow(init: Required & Partial<AuditRow>): AuditRow {
  return {
    keyId: null,
    label: null,
    vendor: null,
    mode: null,
    status: 0,
    holdMicros: 0,
    costMicros: 0,
    costSource: null,
    currency: null,
    amountMinor: null,
    vendorRequestId: null,
    idempotencyKey: null,
    upstreamMs: null,
    overheadMs: null,
    clientIp: null,
    secretsScrubbed: 0,
    wouldDeny: null,
    ...init,
  };
}

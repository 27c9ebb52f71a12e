import type { z } from "zod";
import type { AuditRow, Store } from "../store/index";
import { iso, microsToUsd } from "../util";
import type { AuditQuery } from "./model";

export function presentAudit(r: AuditRow) {
  return {
    id: r.id,
    at: iso(r.at)!,
    key_id: r.keyId,
    label: r.label,
    vendor: r.vendor,
    mode: r.mode,
    method: r.method,
    path: r.path,
    status: r.status,
    decision: r.decision,
    hold_usd: microsToUsd(r.holdMicros),
    cost_usd: microsToUsd(r.costMicros),
    cost_source: r.costSource,
    currency: r.currency,
    amount_minor: r.amountMinor,
    vendor_request_id: r.vendorRequestId,
    idempotency_key: r.idempotencyKey,
    upstream_ms: r.upstreamMs,
    overhead_ms: r.overheadMs,
    client_ip: r.clientIp,
  };
}

export async function listAudit(store: Store, q: z.infer<typeof AuditQuery>) {
  const page = await store.listAudit({
    keyId: q.key_id,
    label: q.label,
    labelPrefix: q.label_prefix,
    vendor: q.vendor,
    decision: q.decision,
    since: q.since,
    until: q.until,
    limit: q.limit,
    cursor: q.cursor,
  });
  return { data: page.data.map(presentAudit), next_cursor: page.nextCursor === null ? null : String(page.nextCursor) };
}

import { and, desc, eq, gte, lt, type SQL } from "drizzle-orm";
import type { Db } from "./sqlite";
import { labelHasPrefix } from "./keys";
import { auditEvents } from "./schema";
import type { AuditFilter, AuditRow, Page } from "./types";

const COLUMNS = [
  "id", "at", "key_id", "label", "vendor", "mode", "method", "path", "status", "decision", "hold_micros",
  "cost_micros", "cost_source", "currency", "amount_minor", "vendor_request_id", "idempotency_key",
  "upstream_ms", "overhead_ms", "client_ip",
] as const;

export const insertAuditSql = `INSERT INTO audit_events (${COLUMNS.join(", ")}) VALUES (${COLUMNS.map(() => "?").join(", ")})`;

export function auditParams(r: AuditRow) {
  return [
    r.id, r.at, r.keyId, r.label, r.vendor, r.mode, r.method, r.path, r.status, r.decision, r.holdMicros,
    r.costMicros, r.costSource, r.currency, r.amountMinor, r.vendorRequestId, r.idempotencyKey, r.upstreamMs,
    r.overheadMs, r.clientIp,
  ] as const;
}

export function auditQueries(db: Db) {
  const insert = db.$client.prepare(insertAuditSql);

  return {
    async recordAudit(row: AuditRow) {
      insert.run(...auditParams(row));
    },

    async listAudit(f: AuditFilter): Promise<Page<AuditRow>> {
      const where: SQL[] = [];
      if (f.keyId !== undefined) where.push(eq(auditEvents.keyId, f.keyId));
      if (f.label !== undefined) where.push(eq(auditEvents.label, f.label));
      if (f.labelPrefix !== undefined) where.push(labelHasPrefix(f.labelPrefix, auditEvents.label));
      if (f.vendor !== undefined) where.push(eq(auditEvents.vendor, f.vendor));
      if (f.decision !== undefined) where.push(eq(auditEvents.decision, f.decision));
      if (f.since !== undefined) where.push(gte(auditEvents.at, f.since));
      if (f.until !== undefined) where.push(lt(auditEvents.at, f.until));
      if (f.cursor !== undefined) where.push(lt(auditEvents.seq, f.cursor));
      const rows = db
        .select()
        .from(auditEvents)
        .where(and(...where))
        .orderBy(desc(auditEvents.seq))
        .limit(f.limit + 1)
        .all();
      const more = rows.length > f.limit;
      const page = rows.slice(0, f.limit);
      return {
        data: page.map(({ seq: _seq, ...row }) => row as AuditRow),
        nextCursor: more ? page[page.length - 1]!.seq : null,
      };
    },
  };
}

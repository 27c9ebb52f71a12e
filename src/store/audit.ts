import { and, desc, eq, getTableColumns, gte, lt, sql, type SQL } from "drizzle-orm";
import type { GroupCommit } from "./group-commit";
import type { Db } from "./sqlite";
import { labelHasPrefix } from "./keys";
import { auditEvents } from "./schema";
import type { AuditFilter, AuditRow, Page, SpendGroup, SpendRow } from "./types";

/** The audit table's columns but its rowid, in the table's order: the insert and its parameters follow it. */
const COLUMNS = Object.entries(getTableColumns(auditEvents))
  .filter(([field]) => field !== "seq")
  .map(([field, column]) => ({ field: field as keyof AuditRow, name: column.name }));

export const insertAuditSql = `INSERT INTO audit_events (${COLUMNS.map((c) => c.name).join(", ")}) VALUES (${COLUMNS.map(() => "?").join(", ")})`;

/** An audit row's values in the insert's order; a row that stands for one request may leave `requests` out. */
export function auditParams(row: AuditRow): (string | number | null)[] {
  return COLUMNS.map(({ field }) => (field === "requests" ? (row.requests ?? 1) : row[field]) ?? null);
}

/**
 * Audit rows that are not proxied calls but hold events (a crash's orphan, an operator's decision, a final
 * price read later by the reconciler).
 */
export const HOLD_EVENT_DECISIONS = ["orphaned_hold", "hold_settled", "hold_released", "price_reconciled"];

function conditions(f: Omit<AuditFilter, "limit" | "cursor">): SQL[] {
  const where: SQL[] = [];
  if (f.keyId !== undefined) where.push(eq(auditEvents.keyId, f.keyId));
  if (f.label !== undefined) where.push(eq(auditEvents.label, f.label));
  if (f.labelPrefix !== undefined) where.push(labelHasPrefix(f.labelPrefix, auditEvents.label));
  if (f.vendor !== undefined) where.push(eq(auditEvents.vendor, f.vendor));
  if (f.decision !== undefined) where.push(eq(auditEvents.decision, f.decision));
  if (f.since !== undefined) where.push(gte(auditEvents.at, f.since));
  if (f.until !== undefined) where.push(lt(auditEvents.at, f.until));
  return where;
}

const GROUPS: Record<SpendGroup, SQL> = {
  label: sql`${auditEvents.label}`,
  key: sql`${auditEvents.keyId}`,
  vendor: sql`${auditEvents.vendor}`,
  day: sql`strftime('%Y-%m-%d', ${auditEvents.at} / 1000, 'unixepoch')`,
};

export function auditQueries(db: Db, commits: GroupCommit) {
  const insert = db.$client.prepare(insertAuditSql);
  const prune = db.$client.prepare(
    `DELETE FROM audit_events WHERE seq IN (SELECT seq FROM audit_events WHERE at < ? ORDER BY seq LIMIT ?)`,
  );
  const holdEvents = sql.join(
    HOLD_EVENT_DECISIONS.map((d) => sql`${d}`),
    sql`, `,
  );

  return {
    async recordAudit(row: AuditRow) {
      await commits.submit(() => insert.run(...auditParams(row)));
    },

    async listAudit(f: AuditFilter): Promise<Page<AuditRow>> {
      const where = conditions(f);
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

    /** Spend is the sum of audit costs, which the ledger writes in the same transaction: the two agree exactly. */
    async spendBy(group: SpendGroup, f: Omit<AuditFilter, "limit" | "cursor">): Promise<SpendRow[]> {
      const g = GROUPS[group];
      return db
        .select({
          group: sql<string | null>`${g}`,
          // A row may stand for several requests (aggregated unauthenticated denials): count requests, not rows.
          calls: sql<number>`sum(${auditEvents.requests} * (${auditEvents.decision} NOT IN (${holdEvents})))`,
          allowed: sql<number>`sum(${auditEvents.decision} = 'allowed')`,
          denied: sql<number>`sum(${auditEvents.requests} * (${auditEvents.decision} NOT IN ('allowed', ${holdEvents})))`,
          spendMicros: sql<number>`sum(${auditEvents.costMicros})`,
        })
        .from(auditEvents)
        .where(and(...conditions(f)))
        .groupBy(g)
        .orderBy(sql`${g}`)
        .all();
    },

    async pruneAudit(before: number, batch: number) {
      return prune.run(before, batch).changes;
    },
  };
}

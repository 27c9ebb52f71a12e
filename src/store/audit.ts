import { and, desc, eq, getTableColumns, gte, lt, sql, type SQL } from "drizzle-orm";
import type { GroupCommit } from "./group-commit";
import type { Db } from "./sqlite";
import { labelHasPrefix } from "./keys";
import { auditEvents, vaultKeys } from "./schema";
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

/** Rows of the keys one token minted (an issuer's view): the key's audit index answers each of them. */
const mintedBy = (tokenId: string): SQL =>
  sql`${auditEvents.keyId} IN (SELECT ${vaultKeys.id} FROM ${vaultKeys} WHERE ${vaultKeys.mintedBy} = ${tokenId})`;

function conditions(f: Omit<AuditFilter, "limit" | "cursor">): SQL[] {
  const where: SQL[] = [];
  if (f.requestId !== undefined) where.push(eq(auditEvents.id, f.requestId));
  if (f.keyId !== undefined) where.push(eq(auditEvents.keyId, f.keyId));
  if (f.mintedBy !== undefined) where.push(mintedBy(f.mintedBy));
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

/** The same groups over ledger entries (joined to their key as `k`), for what is still ambiguous. */
const ENTRY_GROUPS: Record<SpendGroup, string> = { label: "k.label", key: "e.key_id", vendor: "k.vendor", day: "e.day" };

/**
 * What is still ambiguous per group (entries a vendor 5xx or timeout left counted at their hold, not yet
 * re-settled by a retry or resolved by an operator), under the same filters as the spend it is part of.
 */
function ambiguousBy(db: Db, group: SpendGroup, f: Omit<AuditFilter, "limit" | "cursor">): Map<string | null, number> {
  if (f.decision !== undefined && f.decision !== "allowed") return new Map();
  const where: SQL[] = [sql.raw("e.state = 'ambiguous'")];
  if (f.requestId !== undefined) where.push(sql`e.request_id = ${f.requestId}`);
  if (f.keyId !== undefined) where.push(sql`e.key_id = ${f.keyId}`);
  if (f.mintedBy !== undefined) where.push(sql`k.minted_by = ${f.mintedBy}`);
  if (f.label !== undefined) where.push(sql`k.label = ${f.label}`);
  if (f.labelPrefix !== undefined) where.push(sql`substr(k.label, 1, length(${f.labelPrefix})) = ${f.labelPrefix}`);
  if (f.vendor !== undefined) where.push(sql`k.vendor = ${f.vendor}`);
  if (f.since !== undefined) where.push(sql`e.created_at >= ${f.since}`);
  if (f.until !== undefined) where.push(sql`e.created_at < ${f.until}`);
  const g = sql.raw(ENTRY_GROUPS[group]);
  const rows = db.all<{ grp: string | null; micros: number }>(
    sql`SELECT ${g} AS grp, sum(e.cost_micros) AS micros FROM ledger_entries e JOIN vault_keys k ON k.id = e.key_id
         WHERE ${sql.join(where, sql` AND `)} GROUP BY ${g}`,
  );
  return new Map(rows.map((r) => [r.grp, r.micros]));
}

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

    /**
     * Spend is the sum of audit costs, which the ledger writes in the same transaction: the two agree exactly.
     * The biggest spender first (days in order); `ambiguousMicros` is the part of it still ambiguous.
     */
    async spendBy(group: SpendGroup, f: Omit<AuditFilter, "limit" | "cursor">): Promise<SpendRow[]> {
      const g = GROUPS[group];
      const ambiguous = ambiguousBy(db, group, f);
      const rows = db
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
        .orderBy(group === "day" ? sql`${g}` : sql`sum(${auditEvents.costMicros}) DESC, ${g}`)
        .all();
      return rows.map((r) => ({ ...r, ambiguousMicros: ambiguous.get(r.group) ?? 0 }));
    },

    async pruneAudit(before: number, batch: number) {
      return prune.run(before, batch).changes;
    },
  };
}

import type { SQL } from "bun";
import { getTableColumns } from "drizzle-orm";
import { HOLD_EVENT_DECISIONS } from "../audit";
import type { AuditFilter, AuditRow, Page, SpendGroup, SpendRow } from "../types";
import type { PgBatch } from "./batch";
import { type Pg, num, numOrNull } from "./client";
import { auditEvents } from "./schema";

type Filter = Omit<AuditFilter, "limit" | "cursor">;
/** A piece of a query (a condition, a group's expression), embedded in another with its parameters. */
type Fragment = SQL.Query<unknown>;

/**
 * The audit table's columns but its seq, in the table's order, each with how to read it back: bigint columns
 * (times, money) arrive as strings.
 */
const COLUMNS = Object.entries(getTableColumns(auditEvents))
  .filter(([field]) => field !== "seq")
  .map(([field, column]) => ({
    field: field as keyof AuditRow,
    name: column.name,
    read: column.getSQLType() !== "bigint" ? (v: unknown) => v : column.notNull ? num : numOrNull,
  }));

const COLUMN_NAMES = COLUMNS.map((c) => c.name);

/** PostgreSQL takes at most 65,535 parameters per statement: rows per INSERT that stay well below it. */
const ROWS_PER_INSERT = 1000;

/** An audit row keyed by column name, as the insert helper takes it; a row for one request may leave out `requests`. */
function toColumns(row: AuditRow): Record<string, unknown> {
  return Object.fromEntries(COLUMNS.map(({ field, name }) => [name, (field === "requests" ? (row.requests ?? 1) : row[field]) ?? null]));
}

function fromColumns(record: Record<string, unknown>): AuditRow {
  return Object.fromEntries(COLUMNS.map(({ field, name, read }) => [field, read(record[name])])) as unknown as AuditRow;
}

/** Writes audit rows within `tx` (the caller's transaction): one multi-row INSERT (per thousand rows). */
export async function insertAuditRows(tx: Pg, rows: AuditRow[]): Promise<void> {
  for (let i = 0; i < rows.length; i += ROWS_PER_INSERT) {
    const values = rows.slice(i, i + ROWS_PER_INSERT).map(toColumns);
    await tx`INSERT INTO audit_events ${tx(values, ...COLUMN_NAMES)}`;
  }
}

/** A LIKE pattern for labels starting with `prefix`: `%`, `_` and `\` in it are plain characters. */
function likePrefix(prefix: string): string {
  return `${prefix.replace(/[\\%_]/g, "\\$&")}%`;
}

export function pgAuditQueries(sql: Pg, batch: PgBatch) {
  const and = (conditions: Fragment[]) => conditions.reduce((all, c) => sql`${all} AND ${c}`, sql`TRUE`);

  function conditions(f: Filter): Fragment[] {
    const where: Fragment[] = [];
    if (f.requestId !== undefined) where.push(sql`id = ${f.requestId}`);
    if (f.keyId !== undefined) where.push(sql`key_id = ${f.keyId}`);
    // Rows of the keys one token minted (an issuer's view): the key's audit index answers each of them.
    if (f.mintedBy !== undefined) where.push(sql`key_id IN (SELECT id FROM vault_keys WHERE minted_by = ${f.mintedBy})`);
    if (f.label !== undefined) where.push(sql`label = ${f.label}`);
    if (f.labelPrefix !== undefined) where.push(sql`label LIKE ${likePrefix(f.labelPrefix)} ESCAPE '\\'`);
    if (f.vendor !== undefined) where.push(sql`vendor = ${f.vendor}`);
    if (f.decision !== undefined) where.push(sql`decision = ${f.decision}`);
    if (f.since !== undefined) where.push(sql`at >= ${f.since}`);
    if (f.until !== undefined) where.push(sql`at < ${f.until}`);
    return where;
  }

  // Fixed fragments without parameters, so each may appear in both SELECT and GROUP BY.
  const GROUPS: Record<SpendGroup, Fragment> = {
    label: sql`label`,
    key: sql`key_id`,
    vendor: sql`vendor`,
    day: sql`to_char(to_timestamp(at / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')`,
  };

  /** The same groups over ledger entries (joined to their key as `k`), for what is still ambiguous. */
  const ENTRY_GROUPS: Record<SpendGroup, Fragment> = { label: sql`k.label`, key: sql`e.key_id`, vendor: sql`k.vendor`, day: sql`e.day` };

  /**
   * What is still ambiguous per group (entries a vendor 5xx or timeout left counted at their hold, not yet
   * re-settled by a retry or resolved by an operator), under the same filters as the spend it is part of.
   */
  async function ambiguousBy(group: SpendGroup, f: Filter): Promise<Map<string | null, number>> {
    if (f.decision !== undefined && f.decision !== "allowed") return new Map();
    const where: Fragment[] = [sql`e.state = 'ambiguous'`];
    if (f.requestId !== undefined) where.push(sql`e.request_id = ${f.requestId}`);
    if (f.keyId !== undefined) where.push(sql`e.key_id = ${f.keyId}`);
    if (f.mintedBy !== undefined) where.push(sql`k.minted_by = ${f.mintedBy}`);
    if (f.label !== undefined) where.push(sql`k.label = ${f.label}`);
    if (f.labelPrefix !== undefined) where.push(sql`k.label LIKE ${likePrefix(f.labelPrefix)} ESCAPE '\\'`);
    if (f.vendor !== undefined) where.push(sql`k.vendor = ${f.vendor}`);
    if (f.since !== undefined) where.push(sql`e.created_at >= ${f.since}`);
    if (f.until !== undefined) where.push(sql`e.created_at < ${f.until}`);
    const g = ENTRY_GROUPS[group];
    const rows = await sql`SELECT ${g} AS grp, sum(e.cost_micros) AS micros
                           FROM ledger_entries e JOIN vault_keys k ON k.id = e.key_id
                           WHERE ${and(where)} GROUP BY ${g}`;
    return new Map(rows.map((r: { grp: string | null; micros: string | null }) => [r.grp, num(r.micros ?? 0)]));
  }

  return {
    async recordAudit(row: AuditRow) {
      await batch.submit(null, (tx) => insertAuditRows(tx, [row]));
    },

    async listAudit(f: AuditFilter): Promise<Page<AuditRow>> {
      const where = conditions(f);
      if (f.cursor !== undefined) where.push(sql`seq < ${f.cursor}`);
      const rows: Record<string, unknown>[] = await sql`SELECT * FROM audit_events WHERE ${and(where)}
                                                        ORDER BY seq DESC LIMIT ${f.limit + 1}`;
      const page = rows.slice(0, f.limit);
      return {
        data: page.map(fromColumns),
        nextCursor: rows.length > f.limit ? num(page[page.length - 1]!.seq) : null,
      };
    },

    /**
     * Spend is the sum of audit costs, which the ledger writes in the same transaction: the two agree exactly.
     * The biggest spender first (days in order); `ambiguousMicros` is the part of it still ambiguous. Groups
     * tie-break as SQLite orders them (bytewise, no group first).
     */
    async spendBy(group: SpendGroup, f: Filter): Promise<SpendRow[]> {
      const g = GROUPS[group];
      const ambiguous = await ambiguousBy(group, f);
      const order = group === "day" ? g : sql`sum(cost_micros) DESC, ${g} COLLATE "C" NULLS FIRST`;
      // A row may stand for several requests (aggregated unauthenticated denials): count requests, not rows.
      const rows = await sql`
        SELECT ${g} AS grp,
               sum(CASE WHEN decision <> ALL(${HOLD_EVENT_DECISIONS}) THEN requests ELSE 0 END) AS calls,
               count(*) FILTER (WHERE decision = 'allowed') AS allowed,
               sum(CASE WHEN decision <> 'allowed' AND decision <> ALL(${HOLD_EVENT_DECISIONS}) THEN requests ELSE 0 END) AS denied,
               sum(cost_micros) AS spend
        FROM audit_events WHERE ${and(conditions(f))} GROUP BY ${g} ORDER BY ${order}`;
      return rows.map((r: Record<string, unknown>) => {
        const groupValue = r.grp as string | null;
        return {
          group: groupValue,
          calls: num(r.calls),
          allowed: num(r.allowed),
          denied: num(r.denied),
          spendMicros: num(r.spend),
          ambiguousMicros: ambiguous.get(groupValue) ?? 0,
        };
      });
    },

    async pruneAudit(before: number, batchSize: number): Promise<number> {
      const result = await sql`DELETE FROM audit_events WHERE seq IN
                                 (SELECT seq FROM audit_events WHERE at < ${before} ORDER BY seq LIMIT ${batchSize})`;
      return result.count;
    },
  };
}

import { and, type Column, desc, eq, gt, gte, lt, lte, notInArray, type SQL, sql, type Table } from "drizzle-orm";
import { DENIED_ROWS, OPEN_HOLDS } from "./schema";
import type {
  AdminEvent,
  ApprovalFilter,
  AuditFilter,
  AuditRow,
  BudgetRecord,
  BudgetWithUsage,
  KeyFilter,
  KeyRecord,
  Page,
  SpendGroup,
  SpendRow,
  TokenRecord,
} from "./types";

/**
 * The admin's list and filter reads (keys, audit and spend, approvals, budgets, tokens, admin events), written once
 * for both stores over drizzle's dialect-neutral operators. Each store hands in its own schema's tables (schema.ts
 * or pg/schema.ts) and runs the query on its own database; what stays in a store is what its dialect spells its
 * own way (a label prefix, a UTC day, text order), and the hot path, whose hand-written SQL pipelining and locks need.
 */

/** Whether `column` starts with `prefix`, its `%` and `_` plain characters: each dialect spells it its own way. */
export type PrefixMatch = (column: Column, prefix: string) => SQL;

/** The condition `condition` makes of a filter's value, or none when the filter is not given. */
const given = <T>(value: T | undefined, condition: (value: T) => SQL | undefined): SQL | undefined =>
  value === undefined ? undefined : condition(value);

/** What both dialects' `db.select(…).from(…)` (joins included) offer a list: a filter, an order, a limit, rows. */
interface Selecting<Row> {
  where(where: SQL | undefined): { orderBy(order: SQL): { limit(limit: number): PromiseLike<Row[]> } };
}

/**
 * Up to `limit` rows that `where` selects, newest (highest seq) first, with the cursor to the next page. The query's
 * `then` is called here, not awaited: SQLite's synchronous driver then runs it at once, as its own statements do.
 */
export function newestFirst<Row extends { seq: number }, T>(
  from: Selecting<Row>,
  seq: Column,
  where: SQL | undefined,
  limit: number,
  toRecord: (row: Row) => T,
): Promise<Page<T>> {
  const query = from
    .where(where)
    .orderBy(desc(seq))
    .limit(limit + 1);
  return Promise.resolve(
    query.then((rows) => {
      const page = rows.slice(0, limit);
      return { data: page.map(toRecord), nextCursor: rows.length > limit ? page[page.length - 1]!.seq : null };
    }),
  );
}

/** SQLite's schema reads JSON columns parsed (`mode: "json"`); PostgreSQL's are text columns holding JSON. */
const fromJson = <T>(value: T | string): T => (typeof value === "string" ? (JSON.parse(value) as T) : value);

/** A row of either schema: its JSON columns parsed, or the text they are. */
type JsonOrText<Row, Json extends keyof Row> = Omit<Row, Json> & { [F in Json]: Row[F] | string };

type KeyColumns = Record<"seq" | "id" | "label" | "vendor" | "budgetId" | "mintedBy" | "status" | "expiresAt", Column>;

export function keyFilter(keys: KeyColumns, f: KeyFilter, now: number, hasPrefix: PrefixMatch): SQL | undefined {
  return and(
    given(f.label, (label) => eq(keys.label, label)),
    given(f.labelPrefix, (prefix) => hasPrefix(keys.label, prefix)),
    given(f.vendor, (vendor) => eq(keys.vendor, vendor)),
    given(f.budgetId, (budgetId) => eq(keys.budgetId, budgetId)),
    given(f.mintedBy, (tokenId) => eq(keys.mintedBy, tokenId)),
    f.status === "revoked" ? eq(keys.status, "revoked") : undefined,
    f.status === "active" ? and(eq(keys.status, "active"), gt(keys.expiresAt, now)) : undefined,
    f.status === "expired" ? and(eq(keys.status, "active"), lte(keys.expiresAt, now)) : undefined,
    given(f.cursor, (cursor) => lt(keys.seq, cursor)),
  );
}

type KeyRow = JsonOrText<KeyRecord, "allowedEndpoints" | "metadata" | "alertThresholds"> & { seq: number; keyHash: string };

export const toKeyRecord = ({ seq: _seq, keyHash: _hash, allowedEndpoints, metadata, alertThresholds, ...rest }: KeyRow): KeyRecord => ({
  ...rest,
  allowedEndpoints: fromJson(allowedEndpoints),
  metadata: fromJson(metadata),
  alertThresholds: fromJson(alertThresholds),
});

/**
 * Audit rows that are not proxied calls but hold events (a crash's orphan, an operator's decision, a final
 * price read later by the reconciler).
 */
export const HOLD_EVENT_DECISIONS = ["orphaned_hold", "hold_settled", "hold_released", "price_reconciled"];

export type SpendFilter = Omit<AuditFilter, "limit" | "cursor">;

/** The vault_keys table of either schema, as far as it tells who minted a key. */
type Minters = Table & Pick<KeyColumns, "id" | "mintedBy">;

/** Rows of the keys one token minted (an issuer's view): the key's audit index answers each of them. */
export const mintedBy = (keyId: Column, keys: Minters, tokenId: string): SQL =>
  sql`${keyId} IN (SELECT ${keys.id} FROM ${keys} WHERE ${keys.mintedBy} = ${tokenId})`;

type AuditColumns = Record<"seq" | "id" | "at" | "keyId" | "label" | "vendor" | "decision" | "requests" | "costMicros", Column>;

export function auditFilter(audit: AuditColumns, keys: Minters, f: SpendFilter, hasPrefix: PrefixMatch): SQL | undefined {
  return and(
    given(f.requestId, (id) => eq(audit.id, id)),
    given(f.keyId, (keyId) => eq(audit.keyId, keyId)),
    given(f.mintedBy, (tokenId) => mintedBy(audit.keyId, keys, tokenId)),
    given(f.label, (label) => eq(audit.label, label)),
    given(f.labelPrefix, (prefix) => hasPrefix(audit.label, prefix)),
    given(f.vendor, (vendor) => eq(audit.vendor, vendor)),
    given(f.decision, (decision) => eq(audit.decision, decision)),
    // A denial's decision: its partial index has it (the condition repeated, as SQLite needs to use it).
    f.decision !== undefined && f.decision !== "allowed" ? sql.raw(DENIED_ROWS) : undefined,
    given(f.since, (since) => gte(audit.at, since)),
    given(f.until, (until) => lt(audit.at, until)),
  );
}

/** The listing's filter: the spend's, and the cursor. */
export const auditPageFilter = (audit: AuditColumns, keys: Minters, f: AuditFilter, hasPrefix: PrefixMatch): SQL | undefined =>
  and(
    auditFilter(audit, keys, f, hasPrefix),
    given(f.cursor, (cursor) => lt(audit.seq, cursor)),
  );

/** An audit row as written: without its seq and its chain's columns (PostgreSQL's `chain`, both schemas' `hash`). */
export function toAuditRow<Row extends { seq: number; hash: string | null; chain?: string | null }>(row: Row): AuditRow {
  const { seq: _seq, hash: _hash, chain: _chain, ...written } = row;
  return written as unknown as AuditRow;
}

/**
 * A group's sums over audit rows. A row may stand for several requests (aggregated unauthenticated denials):
 * calls and denials count requests, not rows.
 */
export const spendSums = (audit: AuditColumns) => ({
  calls: sql`sum(CASE WHEN ${notInArray(audit.decision, HOLD_EVENT_DECISIONS)} THEN ${audit.requests} ELSE 0 END)`.mapWith(Number),
  allowed: sql`sum(CASE WHEN ${audit.decision} = 'allowed' THEN 1 ELSE 0 END)`.mapWith(Number),
  denied: sql`sum(CASE WHEN ${audit.decision} <> 'allowed' AND ${notInArray(audit.decision, HOLD_EVENT_DECISIONS)}
                  THEN ${audit.requests} ELSE 0 END)`.mapWith(Number),
  spendMicros: sql`sum(${audit.costMicros})`.mapWith(Number),
});

type EntryColumns = Record<"keyId" | "requestId" | "state" | "day" | "costMicros" | "createdAt", Column>;

/**
 * What is still ambiguous per group (entries a vendor 5xx or timeout left counted at their hold, not yet re-settled
 * by a retry or resolved by an operator), under the same filters as the spend it is part of: the query's parts,
 * over ledger entries joined to their key; null when the filter selects denials only, which hold nothing.
 */
export function ambiguousSpend(entries: EntryColumns, keys: KeyColumns, group: SpendGroup, f: SpendFilter, hasPrefix: PrefixMatch) {
  if (f.decision !== undefined && f.decision !== "allowed") return null;
  const groups: Record<SpendGroup, Column> = { label: keys.label, key: entries.keyId, vendor: keys.vendor, day: entries.day };
  const byGroup = sql<string | null>`${groups[group]}`;
  return {
    fields: { group: byGroup, micros: sql`sum(${entries.costMicros})`.mapWith(Number) },
    join: eq(keys.id, entries.keyId),
    group: byGroup,
    where: and(
      // The partial index's condition, word for word (see OPEN_HOLDS): the ledger is never pruned, a scan would grow.
      sql.raw(OPEN_HOLDS),
      eq(entries.state, "ambiguous"),
      given(f.requestId, (id) => eq(entries.requestId, id)),
      given(f.keyId, (keyId) => eq(entries.keyId, keyId)),
      given(f.mintedBy, (tokenId) => eq(keys.mintedBy, tokenId)),
      given(f.label, (label) => eq(keys.label, label)),
      given(f.labelPrefix, (prefix) => hasPrefix(keys.label, prefix)),
      given(f.vendor, (vendor) => eq(keys.vendor, vendor)),
      given(f.since, (since) => gte(entries.createdAt, since)),
      given(f.until, (until) => lt(entries.createdAt, until)),
    ),
  };
}

/** The spend rows (fresh objects of this query) completed in place: a copy each would cost as much again for 100 k groups. */
export function withAmbiguous(rows: Omit<SpendRow, "ambiguousMicros">[], ambiguous: { group: unknown; micros: number }[]): SpendRow[] {
  const byGroup = new Map(ambiguous.map((r) => [r.group, r.micros]));
  for (const r of rows as SpendRow[]) r.ambiguousMicros = byGroup.get(r.group) ?? 0;
  return rows as SpendRow[];
}

/** The approvals' own columns the API shows. */
const APPROVAL_FIELDS = [
  "seq",
  "id",
  "keyId",
  "idempotencyKey",
  "method",
  "path",
  "priceMicros",
  "status",
  "requestedAt",
  "requestedBy",
  "expiresAt",
  "decidedAt",
  "decidedBy",
  "reason",
] as const;

type ApprovalColumns = Record<(typeof APPROVAL_FIELDS)[number], Column>;

/** The columns named, of `table`, keeping their dialect's types (a property read of a type parameter would not). */
const pick = <T, K extends keyof T>(table: T, names: readonly K[]): Pick<T, K> =>
  Object.fromEntries(names.map((name) => [name, table[name]])) as Pick<T, K>;

/** The approvals' columns as the API shows them, with the key's label and vendor (the key joined by `join`). */
export const approvalFields = <A extends ApprovalColumns, K extends KeyColumns>(approvals: A, keys: K) => ({
  fields: {
    ...pick(approvals, APPROVAL_FIELDS),
    ...pick(keys, ["label", "vendor"]),
  },
  join: eq(keys.id, approvals.keyId),
});

export const approvalFilter = (approvals: ApprovalColumns, keys: KeyColumns, f: ApprovalFilter): SQL | undefined =>
  and(
    given(f.status, (status) => eq(approvals.status, status)),
    given(f.mintedBy, (tokenId) => eq(keys.mintedBy, tokenId)),
    given(f.cursor, (cursor) => lt(approvals.seq, cursor)),
  );

/** A page's row without the seq its cursor was read from. */
export const withoutSeq = <Row extends { seq: number }>({ seq: _seq, ...rest }: Row): Omit<Row, "seq"> => rest;

type BudgetColumns = Record<"id" | "settledMicros" | "heldMicros" | "budgetId" | "day", Column>;

/**
 * Budgets (the `budgets` table, joined to its `budgetDays` by `join`) with their money on `day` and the active
 * keys that draw from each directly.
 */
export const budgetUsageFields = <B extends Table & Pick<BudgetColumns, "id">>(
  budgets: B,
  budgetDays: Pick<BudgetColumns, "settledMicros" | "heldMicros" | "budgetId" | "day">,
  keys: Table & KeyColumns,
  day: string,
  now: number,
) => ({
  fields: {
    budget: budgets,
    settled: sql`coalesce(${budgetDays.settledMicros}, 0)`.mapWith(Number),
    held: sql`coalesce(${budgetDays.heldMicros}, 0)`.mapWith(Number),
    activeKeys: sql`(SELECT count(*) FROM ${keys} WHERE ${keys.budgetId} = ${budgets.id}
                       AND ${keys.status} = 'active' AND ${keys.expiresAt} > ${now})`.mapWith(Number),
  },
  join: and(eq(budgetDays.budgetId, budgets.id), eq(budgetDays.day, day)),
});

type BudgetRow = JsonOrText<BudgetRecord, "alertThresholds"> & { seq: number };

export const toBudgetRecord = ({ seq: _seq, alertThresholds, ...rest }: BudgetRow): BudgetRecord => ({
  ...rest,
  alertThresholds: fromJson(alertThresholds),
});

export const toBudgetWithUsage = (r: { budget: BudgetRow; settled: number; held: number; activeKeys: number }): BudgetWithUsage => ({
  ...toBudgetRecord(r.budget),
  today: { settledMicros: r.settled, heldMicros: r.held },
  activeKeys: r.activeKeys,
});

type TokenRow = JsonOrText<TokenRecord, "policy"> & { seq: number; tokenHash: string };

export const toTokenRecord = ({ seq: _seq, tokenHash: _hash, policy, ...rest }: TokenRow): TokenRecord => ({
  ...rest,
  policy: fromJson(policy),
});

export const tokenPageFilter = (tokens: { seq: Column }, cursor: number | undefined): SQL | undefined =>
  given(cursor, (c) => lt(tokens.seq, c));

export const adminEventFilter = (events: { seq: Column; tokenId: Column }, cursor?: number, tokenId?: string): SQL | undefined =>
  and(
    given(cursor, (c) => lt(events.seq, c)),
    given(tokenId, (id) => eq(events.tokenId, id)),
  );

export const toAdminEvent = ({ details, ...rest }: JsonOrText<AdminEvent, "details">): AdminEvent => ({
  ...rest,
  details: fromJson(details),
});

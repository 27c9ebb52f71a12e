import { and, eq, gte, lt, sql, type SQL } from "drizzle-orm";
import type { SQLiteColumn } from "drizzle-orm/sqlite-core";
import {
  ambiguousSpend,
  auditFilter,
  auditPageFilter,
  mintedBy,
  newestFirst,
  type SpendFilter,
  spendSums,
  toAuditRow,
  withAmbiguous,
} from "./admin-reads";
import { type ChainHead, type ChainRow, type ChainValue, type Checkpoint, SQLITE_CHAIN, pruneCut } from "./audit-chain";
import { auditAppender, chainRowsSql, toChainRow } from "./audit-append";
import type { GroupCommit } from "./group-commit";
import type { Db } from "./sqlite";
import { labelHasPrefix } from "./keys";
import { auditDays, auditEvents, ledgerEntries, vaultKeys } from "./schema";
import type { AuditFilter, AuditRow, Page, SpendGroup, SpendRow } from "./types";

export { HOLD_EVENT_DECISIONS } from "./admin-reads";

const spendFilter = (f: SpendFilter) => auditFilter(auditEvents, vaultKeys, f, labelHasPrefix);

const DAY_MS = 86_400_000;
/** The first millisecond of the year 10000: strftime's `%Y` has four digits below it. */
const YEAR_10000 = 253_402_300_800_000;

/** A UTC day's start (`2026-11-27T00:00:00Z`), as audit_days names days; null for any other time. */
function wholeDay(at: number): string | null {
  if (!Number.isSafeInteger(at) || at < 0 || at >= YEAR_10000 || at % DAY_MS !== 0) return null;
  return new Date(at).toISOString().slice(0, 10);
}

/**
 * The filter on the rollup (audit_days) that selects exactly the audit rows `spendFilter` selects, or null when it
 * cannot: a request id or a decision (the rollup keeps neither), or since/until inside a day. Rows of a day are
 * at or after its start, and before the next day's, so `at >= since` is `day >= since's day` when since starts a
 * day (times are never negative).
 */
function rollupConditions(f: SpendFilter): SQL[] | null {
  if (f.requestId !== undefined || f.decision !== undefined) return null;
  const since = f.since === undefined ? undefined : wholeDay(f.since);
  const until = f.until === undefined ? undefined : wholeDay(f.until);
  if (since === null || until === null) return null;
  const where: SQL[] = [];
  if (f.keyId !== undefined) where.push(eq(auditDays.keyId, f.keyId));
  if (f.mintedBy !== undefined) where.push(mintedBy(auditDays.keyId, vaultKeys, f.mintedBy));
  if (f.label !== undefined) where.push(eq(auditDays.label, f.label));
  if (f.labelPrefix !== undefined) where.push(labelHasPrefix(auditDays.label, f.labelPrefix));
  if (f.vendor !== undefined) where.push(eq(auditDays.vendor, f.vendor));
  if (since !== undefined) where.push(gte(auditDays.day, since));
  if (until !== undefined) where.push(lt(auditDays.day, until));
  return where;
}

const ROLLUP_GROUPS: Record<SpendGroup, SQLiteColumn> = {
  label: auditDays.label,
  key: auditDays.keyId,
  vendor: auditDays.vendor,
  day: auditDays.day,
};

/**
 * The groups over audit rows. `+label` and `+key_id` are the columns' values, but not indexable: grouping by the
 * column itself, SQLite reads the whole label (or key) index in order to skip a sort, even under `since=1h`, rather
 * than the time index's few rows (7 s instead of 8 ms at 1 M rows).
 */
const GROUPS: Record<SpendGroup, SQL> = {
  label: sql`+${auditEvents.label}`,
  key: sql`+${auditEvents.keyId}`,
  vendor: sql`${auditEvents.vendor}`,
  day: sql`strftime('%Y-%m-%d', ${auditEvents.at} / 1000, 'unixepoch')`,
};

/** What is still ambiguous per group, under the same filters as the spend it is part of (see ambiguousSpend). */
function ambiguousBy(db: Db, group: SpendGroup, f: SpendFilter) {
  const query = ambiguousSpend(ledgerEntries, vaultKeys, group, f, labelHasPrefix);
  if (query === null) return [];
  return db.select(query.fields).from(ledgerEntries).innerJoin(vaultKeys, query.join).where(query.where).groupBy(query.group).all();
}

export function auditQueries(db: Db, commits: GroupCommit) {
  const client = db.$client;
  const append = auditAppender(client);
  const oldest = client.prepare<ChainValue[], [number]>(chainRowsSql(""));
  const pageAfter = client.prepare<ChainValue[], [number, number]>(chainRowsSql("WHERE seq > ?"));
  const newest = client.prepare<{ seq: number; hash: string | null }, []>("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1");
  const checkpoints = client.prepare<Checkpoint, []>("SELECT chain, seq, hash, at, reason FROM audit_checkpoints ORDER BY seq");
  const deleteThrough = client.prepare("DELETE FROM audit_events WHERE seq <= ?");
  const replaceCheckpoints = client.prepare("DELETE FROM audit_checkpoints WHERE chain = ? AND seq <= ?");
  const insertCheckpoint = client.prepare("INSERT INTO audit_checkpoints (chain, seq, hash, at, reason) VALUES (?, ?, ?, ?, 'pruned')");

  /**
   * Retention (SPEC §19): the oldest rows by seq, as long as they are older than `before`, so what is deleted is
   * always the start of the chain, and a `pruned` checkpoint takes the hash of the last one for the rows left to
   * link to (older checkpoints, now of no row, go). The newest row is never deleted: the next rowid would start
   * over at 1. Reads only the batch's rows, from the start of the table.
   */
  const prune = client.transaction((before: number, batch: number, now: number): number => {
    const newestSeq = newest.get()?.seq;
    const rows = oldest
      .values(batch)
      .map(toChainRow)
      .filter((r) => r.seq !== newestSeq);
    const cut = pruneCut(rows, before, checkpoints.all());
    if (cut.lastSeq === null) return 0;
    deleteThrough.run(cut.lastSeq);
    for (const c of cut.checkpoints) {
      replaceCheckpoints.run(c.chain, c.seq);
      insertCheckpoint.run(c.chain, c.seq, c.hash, now);
    }
    return cut.count;
  });

  return {
    async recordAudit(row: AuditRow) {
      await commits.submit(() => append(row));
    },

    /** The chain's head: its newest row, or the checkpoint standing for it when retention took every row. */
    async auditHeads(): Promise<ChainHead[]> {
      const row = newest.get();
      if (row?.hash) return [{ chain: SQLITE_CHAIN, seq: row.seq, hash: row.hash }];
      const checkpoint = checkpoints.all().at(-1);
      return checkpoint ? [{ chain: SQLITE_CHAIN, seq: checkpoint.seq, hash: checkpoint.hash }] : [];
    },

    async auditCheckpoints(): Promise<Checkpoint[]> {
      return checkpoints.all();
    },

    /** Up to `limit` rows after `afterSeq`, in seq order, as the chain reads them (`keybrake audit verify`). */
    async auditChainPage(afterSeq: number, limit: number): Promise<ChainRow[]> {
      return pageAfter.values(afterSeq, limit).map(toChainRow);
    },

    /** The hash of `chain`'s row just before `seq` (null: none, or one from before the chain). */
    async auditHashBefore(_chain: string, seq: number): Promise<string | null> {
      return (
        client.query<{ hash: string | null }, [number]>("SELECT hash FROM audit_events WHERE seq < ? ORDER BY seq DESC LIMIT 1").get(seq)
          ?.hash ?? null
      );
    },

    /** The first seq of a row at or after `at` (null: none). */
    async auditSeqSince(at: number): Promise<number | null> {
      return client.query<{ seq: number | null }, [number]>("SELECT min(seq) AS seq FROM audit_events WHERE at >= ?").get(at)?.seq ?? null;
    },

    async listAudit(f: AuditFilter): Promise<Page<AuditRow>> {
      const where = auditPageFilter(auditEvents, vaultKeys, f, labelHasPrefix);
      return newestFirst(db.select().from(auditEvents), auditEvents.seq, where, f.limit, toAuditRow);
    },

    /**
     * Spend is the sum of audit costs, which the ledger writes in the same transaction: the two agree exactly.
     * The biggest spender first (days in order); `ambiguousMicros` is the part of it still ambiguous. Read from
     * the rollup when the filter allows, else from the audit rows: the same answer either way.
     */
    async spendBy(group: SpendGroup, f: SpendFilter): Promise<SpendRow[]> {
      return spendFromRollup(db, group, f) ?? spendFromScan(db, group, f);
    },

    async pruneAudit(before: number, batch: number) {
      return prune.immediate(before, batch, Date.now());
    },
  };
}

/**
 * spendBy from the rollup (audit_days): a row per key, label, vendor and day instead of one per call, with the
 * same sums, groups (a group exists while one of its rows does) and order as spendFromScan. Null when the filter
 * selects rows the rollup cannot tell apart (see rollupConditions).
 *
 * The rows are summed and ordered here rather than by GROUP BY and ORDER BY: SQLite sorts every row to group them
 * (it has no hash aggregation), ~4x slower than a Map for 100 k keys. The order is SQLite's exactly (bytewise).
 */
export function spendFromRollup(db: Db, group: SpendGroup, f: SpendFilter): SpendRow[] | null {
  const where = rollupConditions(f);
  if (where === null) return null;
  const query = db
    .select({
      group: ROLLUP_GROUPS[group],
      calls: auditDays.calls,
      allowed: auditDays.allowed,
      denied: auditDays.denied,
      spendMicros: auditDays.spendMicros,
    })
    .from(auditDays)
    .where(and(...where))
    .toSQL();
  const values = db.$client.query(query.sql).values(...(query.params as (string | number)[])) as [
    string | null,
    number,
    number,
    number,
    number,
  ][];
  const byGroup = new Map<string | null, Omit<SpendRow, "ambiguousMicros">>();
  for (const [g, calls, allowed, denied, spendMicros] of values) {
    const sum = byGroup.get(g);
    if (sum) {
      sum.calls += calls;
      sum.allowed += allowed;
      sum.denied += denied;
      sum.spendMicros += spendMicros;
    } else byGroup.set(g, { group: g, calls, allowed, denied, spendMicros });
  }
  const rows = [...byGroup.values()];
  // Without a surrogate among the groups, UTF-16 order is SQLite's: the engine's own comparison is enough.
  const text = rows.some((r) => r.group !== null && SURROGATE.test(r.group)) ? binary : nativeOrder;
  rows.sort(group === "day" ? (a, b) => text(a.group, b.group) : (a, b) => b.spendMicros - a.spendMicros || text(a.group, b.group));
  return withAmbiguous(rows, ambiguousBy(db, group, f));
}

const SURROGATE = /[\uD800-\uDFFF]/;

/** NULL first, then the strings' UTF-16 order: SQLite's order when no string holds a surrogate. */
const nativeOrder = (a: string | null, b: string | null): number => (a === b ? 0 : a === null ? -1 : b === null ? 1 : a < b ? -1 : 1);

/**
 * SQLite's BINARY collation (as ORDER BY sorts text): UTF-8 bytes, which is code point order; NULL first. UTF-16
 * code units sort the same but for a surrogate (a code point past U+FFFF) against U+E000..U+FFFF.
 */
export function binary(a: string | null, b: string | null): number {
  if (a === null || b === null) return a === b ? 0 : a === null ? -1 : 1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const xSurrogate = x >= 0xd800 && x <= 0xdfff;
    if (xSurrogate !== (y >= 0xd800 && y <= 0xdfff)) return xSurrogate ? 1 : -1;
    return x - y;
  }
  return a.length - b.length;
}

/** spendBy over every audit row the filter selects. */
export function spendFromScan(db: Db, group: SpendGroup, f: SpendFilter): SpendRow[] {
  const g = GROUPS[group];
  const rows = db
    .select({ group: sql<string | null>`${g}`, ...spendSums(auditEvents) })
    .from(auditEvents)
    .where(spendFilter(f))
    .groupBy(g)
    .orderBy(group === "day" ? sql`${g}` : sql`sum(${auditEvents.costMicros}) DESC, ${g}`)
    .all();
  return withAmbiguous(rows, ambiguousBy(db, group, f));
}

import { type SQL, sql } from "drizzle-orm";
import {
  ambiguousSpend,
  auditFilter,
  auditPageFilter,
  newestFirst,
  type SpendFilter,
  spendSums,
  toAuditRow,
  withAmbiguous,
} from "../admin-reads";
import { type ChainHead, type ChainRow, type Checkpoint, PRE_CHAIN, pruneCut } from "../audit-chain";
import type { AuditFilter, AuditRow, Page, SpendGroup, SpendRow } from "../types";
import { CHAIN_ROWS, insertAuditRows, PRUNE_LOCK, registerChain, toChainRow, toCheckpoint } from "./audit-chain";
import type { PgBatch } from "./batch";
import { type Pg, num, numOrNull } from "./client";
import { labelHasPrefix } from "./keys";
import { orm } from "./orm";
import { auditEvents, ledgerEntries, vaultKeys } from "./schema";

export { insertAuditRows };

/**
 * The groups over audit rows. Fixed expressions without parameters, so each may stand in both SELECT and GROUP BY.
 */
const GROUPS: Record<SpendGroup, SQL<string | null>> = {
  label: sql`${auditEvents.label}`,
  key: sql`${auditEvents.keyId}`,
  vendor: sql`${auditEvents.vendor}`,
  day: sql`to_char(to_timestamp(${auditEvents.at} / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')`,
};

/** The biggest spender first, tie-broken as SQLite orders groups (bytewise, no group first); days in order. */
const spendOrder = (group: SpendGroup): SQL[] =>
  group === "day" ? [GROUPS.day] : [sql`sum(${auditEvents.costMicros}) DESC`, sql`${GROUPS[group]} COLLATE "C" NULLS FIRST`];

const spendFilter = (f: SpendFilter) => auditFilter(auditEvents, vaultKeys, f, labelHasPrefix);

/** `chain`: this instance's, which every audit row it writes is appended to (see registerChain). */
export function pgAuditQueries(sql: Pg, batch: PgBatch, chain: string) {
  registerChain(sql, chain);
  const db = orm(sql);

  /** What is still ambiguous per group, under the same filters as the spend it is part of (see ambiguousSpend). */
  const ambiguousBy = async (group: SpendGroup, f: SpendFilter) => {
    const query = ambiguousSpend(ledgerEntries, vaultKeys, group, f, labelHasPrefix);
    if (query === null) return [];
    return db.select(query.fields).from(ledgerEntries).innerJoin(vaultKeys, query.join).where(query.where).groupBy(query.group);
  };

  return {
    async recordAudit(row: AuditRow) {
      await batch.submit(null, (tx) => insertAuditRows(tx, [row]));
    },

    async listAudit(f: AuditFilter): Promise<Page<AuditRow>> {
      const where = auditPageFilter(auditEvents, vaultKeys, f, labelHasPrefix);
      return newestFirst(db.select().from(auditEvents), auditEvents.seq, where, f.limit, toAuditRow);
    },

    /**
     * Spend is the sum of audit costs, which the ledger writes in the same transaction: the two agree exactly.
     * `ambiguousMicros` is the part of it still ambiguous.
     */
    async spendBy(group: SpendGroup, f: SpendFilter): Promise<SpendRow[]> {
      const g = GROUPS[group];
      const [rows, ambiguous] = await Promise.all([
        db
          .select({ group: g, ...spendSums(auditEvents) })
          .from(auditEvents)
          .where(spendFilter(f))
          .groupBy(g)
          .orderBy(...spendOrder(group)),
        ambiguousBy(group, f),
      ]);
      return withAmbiguous(rows, ambiguous);
    },

    /**
     * Retention (SPEC §19): the oldest rows by seq, as long as they are older than `before`, so what goes is the
     * start of every chain, each leaving a `pruned` checkpoint with the hash of its last deleted row (older
     * checkpoints of it, now of no row, go). One instance prunes at a time; the others skip their turn.
     */
    async pruneAudit(before: number, batchSize: number): Promise<number> {
      return sql.begin(async (tx) => {
        const [{ locked }] = await tx`SELECT pg_try_advisory_xact_lock(${PRUNE_LOCK}) AS locked`;
        if (!locked) return 0;
        const [rows, checkpoints] = await Promise.all([
          tx.unsafe(`${CHAIN_ROWS} ORDER BY seq LIMIT $1`, [batchSize]).values(),
          tx`SELECT chain, seq, hash, at, reason FROM audit_checkpoints`,
        ]);
        const cut = pruneCut(rows.map(toChainRow), before, checkpoints.map(toCheckpoint));
        if (cut.lastSeq === null) return 0;
        const now = Date.now();
        // Sent together; a transaction's statements run in the order sent.
        await Promise.all([
          tx`DELETE FROM audit_events WHERE seq <= ${cut.lastSeq}`,
          ...cut.checkpoints.flatMap((c) => [
            tx`DELETE FROM audit_checkpoints WHERE chain = ${c.chain} AND seq <= ${c.seq}`,
            tx`INSERT INTO audit_checkpoints (chain, seq, hash, at, reason) VALUES (${c.chain}, ${c.seq}, ${c.hash}, ${now}, 'pruned')`,
          ]),
        ]);
        return cut.count;
      });
    },

    /** Every chain's head (an instance's newest row, kept in audit_heads), by chain. */
    async auditHeads(): Promise<ChainHead[]> {
      const rows = await sql`SELECT chain, seq, hash FROM audit_heads WHERE seq > 0 ORDER BY chain`;
      return rows.map((r: Record<string, unknown>) => ({ chain: r.chain as string, seq: num(r.seq), hash: r.hash as string }));
    },

    async auditCheckpoints(): Promise<Checkpoint[]> {
      return (await sql`SELECT chain, seq, hash, at, reason FROM audit_checkpoints ORDER BY seq`).map(toCheckpoint);
    },

    async auditChainPage(afterSeq: number, limit: number): Promise<ChainRow[]> {
      return (await sql.unsafe(`${CHAIN_ROWS} WHERE seq > $1 ORDER BY seq LIMIT $2`, [afterSeq, limit]).values()).map(toChainRow);
    },

    async auditHashBefore(chain: string, seq: number): Promise<string | null> {
      const [row] = await sql`SELECT hash FROM audit_events WHERE chain IS NOT DISTINCT FROM ${chain === PRE_CHAIN ? null : chain}
                                 AND seq < ${seq} ORDER BY seq DESC LIMIT 1`;
      return row?.hash ?? null;
    },

    async auditSeqSince(at: number): Promise<number | null> {
      const [row] = await sql`SELECT min(seq) AS seq FROM audit_events WHERE at >= ${at}`;
      return numOrNull(row?.seq);
    },
  };
}

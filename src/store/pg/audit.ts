import type { SQL } from "bun";
import { HOLD_EVENT_DECISIONS } from "../audit";
import { type ChainHead, type ChainRow, type Checkpoint, PRE_CHAIN, pruneCut } from "../audit-chain";
import type { AuditFilter, AuditRow, Page, SpendGroup, SpendRow } from "../types";
import { CHAIN_ROWS, fromColumns, insertAuditRows, PRUNE_LOCK, registerChain, toChainRow, toCheckpoint } from "./audit-chain";
import type { PgBatch } from "./batch";
import { type Pg, num, numOrNull } from "./client";

export { insertAuditRows };

type Filter = Omit<AuditFilter, "limit" | "cursor">;
/** A piece of a query (a condition, a group's expression), embedded in another with its parameters. */
type Fragment = SQL.Query<unknown>;

/** A LIKE pattern for labels starting with `prefix`: `%`, `_` and `\` in it are plain characters. */
function likePrefix(prefix: string): string {
  return `${prefix.replace(/[\\%_]/g, "\\$&")}%`;
}

/** `chain`: this instance's, which every audit row it writes is appended to (see registerChain). */
export function pgAuditQueries(sql: Pg, batch: PgBatch, chain: string) {
  registerChain(sql, chain);
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

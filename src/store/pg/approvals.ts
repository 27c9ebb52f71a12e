import { type ApprovalState, decideApproval } from "../../ledger/rules";
import { approvalFields, approvalFilter, newestFirst, withoutSeq } from "../admin-reads";
import { APPROVAL_COLUMNS } from "../approvals";
import type { ApprovalFilter, ApprovalRecord, Page } from "../types";
import type { PgAlertOutbox } from "./alerts";
import type { PgBatch } from "./batch";
import { type Pg, num, numOrNull } from "./client";
import { ENTRY_COLUMNS, pgLedgerWriter, pgMoneyLocks, toEntry } from "./ledger-writes";
import { orm } from "./orm";
import { approvals, vaultKeys } from "./schema";

/** An approval's row, its bigints as numbers. */
const toRecord = (r: Record<string, unknown>): ApprovalRecord & { seq: number } => ({
  ...(r as unknown as ApprovalRecord),
  seq: num(r.seq),
  priceMicros: num(r.priceMicros),
  requestedAt: num(r.requestedAt),
  expiresAt: num(r.expiresAt),
  decidedAt: numOrNull(r.decidedAt),
});

/**
 * Approvals (SPEC §15) on PostgreSQL, shared by every instance: a decision locks the key's money (its budgets'
 * root first, then the key, as every hold does) before reading the approval, so of two people deciding at two
 * instances the second finds it decided; a request made at one instance is decided at another and honoured at a
 * third. The decision is the rule book's (`decideApproval`).
 */
export function pgApprovalQueries(sql: Pg, batch: PgBatch, alerts: PgAlertOutbox, instanceId: string) {
  const apply = pgLedgerWriter(alerts, instanceId);
  const locks = pgMoneyLocks(sql);

  async function decide(
    id: string,
    decision: Parameters<typeof decideApproval>[3],
    now: number,
  ): Promise<"decided" | "not_pending" | "not_found"> {
    const [found] = await sql`SELECT key_id AS "keyId" FROM approvals WHERE id = ${id}`;
    if (!found) return "not_found";
    const keyId = found.keyId as string;
    const chain = await locks.chainOf(keyId);
    return batch.submit(locks.lockOrder(keyId, chain), async (tx) => {
      const [, [row]] = await Promise.all([
        locks.lockMoney(tx, keyId, chain),
        tx`SELECT id, key_id AS "keyId", status, fingerprint, hold_id AS "holdId", expires_at AS "expiresAt" FROM approvals WHERE id = ${id}`,
      ]);
      const approval: ApprovalState = { ...(row as ApprovalState), expiresAt: num(row.expiresAt) };
      const [entryRow] = await tx.unsafe(`SELECT ${ENTRY_COLUMNS} FROM ledger_entries e WHERE e.id = $1`, [approval.holdId]);
      const d = decideApproval(approval, entryRow ? toEntry(entryRow) : null, chain, decision, now);
      await apply(tx, d.writes, now);
      return d.result ? "decided" : "not_pending";
    });
  }

  return {
    async approvalsOfCalls(calls: { keyId: string; idempotencyKey: string }[]): Promise<ApprovalRecord[]> {
      if (calls.length === 0) return [];
      const rows = await sql.unsafe(
        `SELECT ${APPROVAL_COLUMNS} FROM approvals a LEFT JOIN vault_keys k ON k.id = a.key_id
          WHERE (a.key_id, a.idempotency_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
        [calls.map((c) => c.keyId), calls.map((c) => c.idempotencyKey)],
      );
      return (rows as Record<string, unknown>[]).map((row) => {
        const { seq: _seq, ...record } = toRecord(row);
        return record;
      });
    },

    async findApproval(id: string): Promise<ApprovalRecord | null> {
      const [row] = await sql.unsafe(
        `SELECT ${APPROVAL_COLUMNS} FROM approvals a LEFT JOIN vault_keys k ON k.id = a.key_id WHERE a.id = $1`,
        [id],
      );
      if (!row) return null;
      const { seq: _seq, ...record } = toRecord(row);
      return record;
    },

    /** Newest first. */
    async listApprovals(f: ApprovalFilter): Promise<Page<ApprovalRecord>> {
      const approval = approvalFields(approvals, vaultKeys);
      const from = orm(sql).select(approval.fields).from(approvals).leftJoin(vaultKeys, approval.join);
      return newestFirst(from, approvals.seq, approvalFilter(approvals, vaultKeys, f), f.limit, withoutSeq);
    },

    decideApproval: (id: string, status: "approved" | "denied", by: string, reason: string | null, now: number) =>
      decide(id, { status, by, reason }, now),

    async expireApprovals(now: number, limit: number): Promise<number> {
      const due = await sql`SELECT id FROM approvals WHERE status IN ('pending', 'approved') AND expires_at <= ${now}
                             ORDER BY expires_at LIMIT ${limit}`;
      let lapsed = 0;
      for (const { id } of due) if ((await decide(id, { status: "expired", by: null, reason: null }, now)) === "decided") lapsed++;
      return lapsed;
    },
  };
}

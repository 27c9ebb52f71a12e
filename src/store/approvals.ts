import type { Database } from "bun:sqlite";
import { drizzle } from "drizzle-orm/bun-sqlite";
import { type ApprovalState, decideApproval, type Entry } from "../ledger/rules";
import { approvalFields, approvalFilter, newestFirst, withoutSeq } from "./admin-reads";
import type { AlertOutbox } from "./alerts";
import type { GroupCommit } from "./group-commit";
import { sqliteBudgetChain, sqliteLedgerWriter } from "./ledger-writes";
import { approvals, vaultKeys } from "./schema";
import type { ApprovalFilter, ApprovalRecord, Page } from "./types";

/** The approvals' columns as the API shows them, with the key's label and vendor. */
export const APPROVAL_COLUMNS = `a.seq, a.id, a.key_id AS "keyId", k.label, k.vendor, a.idempotency_key AS "idempotencyKey", a.method, a.path,
  a.price_micros AS "priceMicros", a.status, a.requested_at AS "requestedAt", a.requested_by AS "requestedBy",
  a.expires_at AS "expiresAt", a.decided_at AS "decidedAt", a.decided_by AS "decidedBy", a.reason`;

type Row = ApprovalRecord & { seq: number };

/**
 * Approvals (SPEC §15) on SQLite: read for the API, decided by a person, lapsed by the sweep. A decision is the
 * rule book's (`decideApproval`), in the ledger's own write transaction: denying or lapsing gives the reserved
 * hold back at every level with it.
 */
export function approvalQueries(client: Database, commits: GroupCommit, alerts: AlertOutbox) {
  const apply = sqliteLedgerWriter(client, alerts);
  const { chainIds } = sqliteBudgetChain(client);
  const byId = client.prepare<Row, [string]>(
    `SELECT ${APPROVAL_COLUMNS} FROM approvals a LEFT JOIN vault_keys k ON k.id = a.key_id WHERE a.id = ?`,
  );
  const stateById = client.prepare<ApprovalState, [string]>(
    `SELECT id, key_id AS keyId, status, fingerprint, hold_id AS holdId, expires_at AS expiresAt FROM approvals WHERE id = ?`,
  );
  const entryById = client.prepare<Entry, [string]>(
    `SELECT id, key_id AS keyId, state, hold_micros AS hold, cost_micros AS cost, day, counterparty FROM ledger_entries WHERE id = ?`,
  );
  const lapsing = client.prepare<{ id: string }, [number, number]>(
    `SELECT id FROM approvals WHERE status IN ('pending', 'approved') AND expires_at <= ? ORDER BY expires_at LIMIT ?`,
  );

  /** The rule book's decision on one approval, applied in the caller's write transaction. */
  function decide(id: string, decision: Parameters<typeof decideApproval>[3], now: number): "decided" | "not_pending" | "not_found" {
    const approval = stateById.get(id);
    if (!approval) return "not_found";
    const d = decideApproval(approval, entryById.get(approval.holdId), chainIds(approval.keyId), decision, now);
    apply(d.writes, now);
    return d.result ? "decided" : "not_pending";
  }

  const toRecord = ({ seq: _seq, ...r }: Row): ApprovalRecord => r;

  return {
    async findApproval(id: string): Promise<ApprovalRecord | null> {
      const row = byId.get(id);
      return row ? toRecord(row) : null;
    },

    async approvalsOfCalls(calls: { keyId: string; idempotencyKey: string }[]): Promise<ApprovalRecord[]> {
      if (calls.length === 0) return [];
      const rows = client
        .prepare<Row, string[]>(
          `SELECT ${APPROVAL_COLUMNS} FROM approvals a LEFT JOIN vault_keys k ON k.id = a.key_id
            WHERE (a.key_id, a.idempotency_key) IN (VALUES ${calls.map(() => "(?, ?)").join(", ")})`,
        )
        .all(...calls.flatMap((c) => [c.keyId, c.idempotencyKey]));
      return rows.map(toRecord);
    },

    /** Newest first. */
    async listApprovals(f: ApprovalFilter): Promise<Page<ApprovalRecord>> {
      const approval = approvalFields(approvals, vaultKeys);
      const from = drizzle({ client }).select(approval.fields).from(approvals).leftJoin(vaultKeys, approval.join);
      return newestFirst(from, approvals.seq, approvalFilter(approvals, vaultKeys, f), f.limit, withoutSeq);
    },

    decideApproval: (id: string, status: "approved" | "denied", by: string, reason: string | null, now: number) =>
      commits.submit(() => decide(id, { status, by, reason }, now)),

    expireApprovals: (now: number, limit: number) =>
      commits.submit(
        () => lapsing.all(now, limit).filter((a) => decide(a.id, { status: "expired", by: null, reason: null }, now) === "decided").length,
      ),
  };
}

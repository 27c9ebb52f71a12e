import type { Database } from "bun:sqlite";
import { getTableColumns } from "drizzle-orm";
import {
  CHAIN_FIELDS,
  type ChainRow,
  type ChainValue,
  GENESIS_HASH,
  SQLITE_CHAIN,
  canonicalForm,
  chainHash,
  chainValues,
} from "./audit-chain";
import { auditEvents } from "./schema";
import type { AuditRow } from "./types";

/** The SQLite audit's chain (SPEC §19): how rows are appended, read back as the chain reads them, and sealed. */

const COLUMNS = getTableColumns(auditEvents);
/** The columns of the canonical form (CHAIN_FIELDS), in its order: the insert's (with `hash`), and what the chain reads back. */
export const CHAIN_COLUMN_NAMES = CHAIN_FIELDS.map((field) => COLUMNS[field].name);
const CHAIN_COLUMNS = CHAIN_COLUMN_NAMES.join(", ");

/**
 * Appends audit rows to the chain (SPEC §19): the one way an audit row is written. Call it inside the caller's
 * write transaction (a group commit's, or `db.transaction`): the previous hash is read there, from the newest
 * row (or, with none or one from before the chain, the newest checkpoint), so it is whatever that transaction
 * sees, a write rolled back to its savepoint and the CLI's writes included, and nothing is kept in memory that
 * a rollback could leave wrong. SQLite has one writer at a time, so rows are hashed in seq order.
 */
export function auditAppender(client: Database): (row: AuditRow) => void {
  const insert = client.prepare<unknown, ChainValue[]>(
    `INSERT INTO audit_events (${CHAIN_COLUMNS}, hash) VALUES (${CHAIN_FIELDS.map(() => "?").join(", ")}, ?)`,
  );
  const newestRow = client.prepare<{ hash: string | null }, []>("SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1");
  const newestCheckpoint = client.prepare<{ hash: string }, []>("SELECT hash FROM audit_checkpoints ORDER BY seq DESC LIMIT 1");
  return (row) => {
    const prev = newestRow.get()?.hash ?? newestCheckpoint.get()?.hash ?? GENESIS_HASH;
    const values = chainValues(row);
    insert.run(...values, chainHash(prev, canonicalForm(values)));
  };
}

/** Rows as the chain reads them: seq, hash, then the canonical columns (and `at` once more, for retention). */
export const chainRowsSql = (where: string) => `SELECT seq, hash, at, ${CHAIN_COLUMNS} FROM audit_events ${where} ORDER BY seq LIMIT ?`;

export const toChainRow = ([seq, hash, at, ...values]: unknown[]): ChainRow & { at: number } => ({
  seq: seq as number,
  chain: SQLITE_CHAIN,
  hash: hash as string | null,
  at: at as number,
  values: values as ChainValue[],
});

const SEAL_PAGE_ROWS = 5000;

/**
 * Seals the rows from before the chain (SPEC §19), once, when the migration that adds it has run: hashes them
 * in seq order from the genesis, as if they had been chained, and records where that ends as a `sealed`
 * checkpoint, to which the first chained row links. The rows keep no hash of their own; `keybrake audit verify`
 * recomputes them and compares at the checkpoint. They are the first rows of the table (every row written since
 * has a hash), read a page at a time.
 */
export function sealPreChainRows(client: Database, now: number) {
  client
    .transaction(() => {
      const first = client.query<{ hash: string | null }, []>("SELECT hash FROM audit_events ORDER BY seq LIMIT 1").get();
      if (!first || first.hash !== null) return;
      if (client.query("SELECT 1 FROM audit_checkpoints WHERE reason = 'sealed'").get()) return;
      const page = client.prepare<ChainValue[], [number, number]>(chainRowsSql("WHERE seq > ?"));
      let prev = GENESIS_HASH;
      let last = 0;
      for (;;) {
        const rows = page.values(last, SEAL_PAGE_ROWS).map(toChainRow);
        const chained = rows.findIndex((r) => r.hash !== null);
        for (const r of chained === -1 ? rows : rows.slice(0, chained)) {
          prev = chainHash(prev, canonicalForm(r.values));
          last = r.seq;
        }
        if (chained !== -1 || rows.length < SEAL_PAGE_ROWS) break;
      }
      client
        .prepare("INSERT INTO audit_checkpoints (chain, seq, hash, at, reason) VALUES (?, ?, ?, ?, 'sealed')")
        .run(SQLITE_CHAIN, last, prev, now);
    })
    .immediate();
}

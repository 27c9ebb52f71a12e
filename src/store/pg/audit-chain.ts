import { hostname } from "node:os";
import { getTableColumns } from "drizzle-orm";
import {
  CHAIN_FIELDS,
  type ChainRow,
  type ChainValue,
  type Checkpoint,
  GENESIS_HASH,
  PRE_CHAIN,
  canonicalForm,
  chainHash,
  chainValues,
} from "../audit-chain";
import type { AuditRow } from "../types";
import { type Pg, num, numOrNull } from "./client";
import { auditEvents } from "./schema";

/** The PostgreSQL audit's chains (SPEC §19): one per instance, appended to at the end of each transaction. */

const TABLE = getTableColumns(auditEvents);

/** How a column is read back: bigint columns (times, money) arrive as strings. */
const reader = (field: keyof typeof TABLE) => {
  const column = TABLE[field];
  return column.getSQLType() !== "bigint" ? (v: unknown) => v : column.notNull ? num : numOrNull;
};

/**
 * An audit row's columns, each with how to read it back: the canonical form's (CHAIN_FIELDS), in its order, which
 * is every column but seq and the chain's own two.
 */
const COLUMNS = CHAIN_FIELDS.map((field) => ({ field, name: TABLE[field].name, read: reader(field) }));

const COLUMN_NAMES = COLUMNS.map((c) => c.name);
const INSERTED_NAMES = [...COLUMN_NAMES, "chain", "hash"];

/** PostgreSQL takes at most 65,535 parameters per statement: rows per INSERT that stay well below it. */
const ROWS_PER_INSERT = 1000;

/**
 * The chain each connection pool writes (its store's instance id), found from any transaction or connection of
 * the pool: Bun's SQL client hands them all the pool's own options object. A pool no store registered (tests
 * that build the ledger's queries by hand) writes the chain of this process.
 */
const chains = new WeakMap<object, string>();
const processChain = `${hostname()}:${process.pid}`;

export function registerChain(sql: Pg, chain: string) {
  chains.set(sql.options, chain);
}

const chainOf = (tx: Pg) => chains.get(tx.options) ?? processChain;

/**
 * The audit rows each group commit's transaction has written so far (by its connection: see batch.ts), to be
 * appended to the chain at its end, after every op, because the chain's lock must be taken after every key's
 * (see `appendToChain`).
 */
const deferred = new WeakMap<Pg, AuditRow[]>();

/** From now on, audit rows written on `conn` are queued in the list returned, until `stopDeferring`. */
export function deferAuditRows(conn: Pg): AuditRow[] {
  const rows: AuditRow[] = [];
  deferred.set(conn, rows);
  return rows;
}

export function stopDeferring(conn: Pg) {
  deferred.delete(conn);
}

/**
 * Writes audit rows within `tx` (the caller's transaction), appended to this instance's chain (SPEC §19). In a
 * group commit's transaction they are appended at its end (see `deferAuditRows`); in a transaction of the
 * caller's own, now, so call it after the transaction's last row lock.
 */
export async function insertAuditRows(tx: Pg, rows: AuditRow[]): Promise<void> {
  const queue = deferred.get(tx);
  if (queue) queue.push(...rows);
  else await appendToChain(tx, rows);
}

/**
 * Appends rows to the chain of `tx`'s pool: locks the chain's head (audit_heads, FOR UPDATE), hashes the rows
 * after it, inserts them and moves the head, in `tx`. The lock puts the chain's transactions one after another,
 * whichever process writes them, so its rows' seqs (taken under the lock) follow the chain. It is taken last in
 * a transaction: one holding it never waits for a key's row lock, so it closes no cycle with a transaction
 * holding a key and waiting for it.
 */
export async function appendToChain(tx: Pg, rows: AuditRow[]): Promise<void> {
  if (rows.length === 0) return;
  const chain = chainOf(tx);
  const lockHead = () => tx`SELECT hash FROM audit_heads WHERE chain = ${chain} FOR UPDATE`;
  let [head] = await lockHead();
  if (!head) {
    // The chain's first row: its head starts where its checkpoints (if retention took all its rows) or the genesis say.
    await tx`INSERT INTO audit_heads (chain, seq, hash)
             VALUES (${chain}, 0, coalesce((SELECT hash FROM audit_checkpoints WHERE chain = ${chain} ORDER BY seq DESC LIMIT 1), ${GENESIS_HASH}))
             ON CONFLICT (chain) DO NOTHING`;
    [head] = await lockHead();
  }
  let prev: string = head.hash;
  for (let i = 0; i < rows.length; i += ROWS_PER_INSERT) {
    const values = rows.slice(i, i + ROWS_PER_INSERT).map((row) => {
      const chained = chainValues(row);
      prev = chainHash(prev, canonicalForm(chained));
      return Object.fromEntries([...COLUMN_NAMES.map((name, c) => [name, chained[c]]), ["chain", chain], ["hash", prev]]);
    });
    await tx`WITH added AS (INSERT INTO audit_events ${tx(values, ...INSERTED_NAMES)} RETURNING seq)
             UPDATE audit_heads SET seq = (SELECT max(seq) FROM added), hash = ${prev} WHERE chain = ${chain}`;
  }
}

/** The advisory lock of retention: one instance prunes at a time ("kbprun" in ASCII). */
export const PRUNE_LOCK = 0x6b_62_70_72_75_6e;

/** Rows as the chain reads them: seq, chain, hash, at, then the canonical columns. */
export const CHAIN_ROWS = `SELECT seq, chain, hash, at, ${COLUMN_NAMES.join(", ")} FROM audit_events`;

export function toChainRow([seq, chain, hash, at, ...values]: unknown[]): ChainRow & { at: number } {
  return {
    seq: num(seq),
    chain: (chain as string | null) ?? PRE_CHAIN,
    hash: hash as string | null,
    at: num(at),
    values: values.map((v, i) => COLUMNS[i]!.read(v) as ChainValue),
  };
}

export const toCheckpoint = (r: Record<string, unknown>): Checkpoint => ({
  chain: r.chain as string,
  seq: num(r.seq),
  hash: r.hash as string,
  at: num(r.at),
  reason: r.reason as Checkpoint["reason"],
});

/**
 * Seals the rows without a chain (SPEC §19): those from before it, and any an older binary wrote during a rolling
 * upgrade. They form the pre-chain (""): hashed in seq order on from its newest checkpoint (or the genesis), and
 * a `sealed` checkpoint records where that ends. Run at every migration, under its lock (one instance seals); the partial index on
 * unchained rows finds them (none, after the first time) without reading the audit.
 */
export async function sealPreChainRows(sql: Pg, now: number): Promise<void> {
  await sql.begin(async (tx) => {
    const [last] = await tx`SELECT seq, hash FROM audit_checkpoints WHERE chain = ${PRE_CHAIN} ORDER BY seq DESC LIMIT 1`;
    let prev: string = last?.hash ?? GENESIS_HASH;
    let seq = last ? num(last.seq) : 0;
    const start = seq;
    for (;;) {
      const page = (await tx.unsafe(`${CHAIN_ROWS} WHERE chain IS NULL AND seq > $1 ORDER BY seq LIMIT 5000`, [seq]).values()).map(
        toChainRow,
      );
      for (const row of page) {
        prev = chainHash(prev, canonicalForm(row.values));
        seq = row.seq;
      }
      if (page.length < 5000) break;
    }
    if (seq !== start) {
      await tx`INSERT INTO audit_checkpoints (chain, seq, hash, at, reason) VALUES (${PRE_CHAIN}, ${seq}, ${prev}, ${now}, 'sealed')`;
    }
  });
}

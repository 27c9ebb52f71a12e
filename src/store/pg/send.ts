import type { SQL } from "bun";
import type { Pg } from "./client";

/**
 * Locks a key's row: the first statement of every transaction that moves the key's money (see batch.ts). Sent at
 * once, so that statements started after it travel in the same round trip and run once the lock is granted.
 */
export function lockKey(tx: Pg, keyId: string): Promise<unknown> {
  return sendNow(tx`SELECT 1 FROM vault_keys WHERE id = ${keyId} FOR UPDATE`);
}

/**
 * Starts a statement now (queries are lazy), to be awaited later: what is sent after it on the connection runs
 * after it. A failure is reported where it is awaited, never as an unhandled rejection.
 */
export function sendNow(query: SQL.Query<unknown>): Promise<unknown> {
  const sent = query.execute();
  sent.catch(() => {});
  return sent;
}

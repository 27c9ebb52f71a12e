import { closeSync, openSync, rmSync } from "node:fs";
import { adminQueries } from "./admin";
import { alertOutbox, alertQueries } from "./alerts";
import { auditQueries } from "./audit";
import { approvalQueries } from "./approvals";
import { budgetQueries } from "./budgets";
import { GroupCommit } from "./group-commit";
import { OPEN_HOLDS } from "./schema";
import { startBackgroundCheckpoints } from "./wal";
import { keyQueries } from "./keys";
import { tokenQueries } from "./tokens";
import { ledgerQueries } from "./ledger";
import { committingQueuedWritesFirst } from "./read-your-writes";
import { reconcileQueries } from "./reconcile";
import { openDatabase, type OpenOptions } from "./sqlite";
import { applyMigrations } from "./migrate";
import { sealPreChainRows } from "./audit-append";
import type { AdminStore, CallPathStore, SqliteStore } from "./types";

export type * from "./types";
export { auditRow } from "./audit-row";
export { describeStoreOutage, isStoreOutage, storeUnavailable } from "./outage";

/** The SQLite store: the default, one process owning one file. The PostgreSQL store is pg/index.ts. */
export function openStore(path: string, opts: OpenOptions = {}): SqliteStore {
  const db = openDatabase(path, opts);
  const client = db.$client;
  const commits = new GroupCommit(client);
  let checkpoints: { stop(): Promise<void> } | undefined;
  const openHolds = client.prepare<{ n: number }, []>(
    `SELECT count(*) AS n FROM ledger_entries WHERE ${OPEN_HOLDS} AND state IN ('held', 'orphaned')`,
  );
  const probe = client.prepare("INSERT INTO settings (name, value) VALUES ('healthz', ?1) ON CONFLICT (name) DO UPDATE SET value = ?1");
  // Alert events are written by the ledger, key and reconciliation writes that cause them, in their transactions.
  const outbox = alertOutbox(client);
  const { findKeyByHash, ...keys } = keyQueries(db, outbox);
  const { idempotencyFingerprint, holdSpend, settleCall, ...ledger } = ledgerQueries(db, commits, outbox);
  const { recordAudit, ...audit } = auditQueries(db, commits);
  const callPath: CallPathStore = { findKeyByHash, idempotencyFingerprint, holdSpend, settleCall, recordAudit };
  const admin: AdminStore = {
    ...budgetQueries(db),
    ...approvalQueries(client, commits, outbox),
    ...keys,
    ...ledger,
    ...reconcileQueries(client, commits, outbox),
    ...alertQueries(client, commits),
    ...audit,
    ...adminQueries(db),
    ...tokenQueries(db),
    async countOpenHolds() {
      return openHolds.get()!.n;
    },
    async checkWritable() {
      try {
        probe.run(String(Date.now()));
        return true;
      } catch {
        return false;
      }
    },
    async close() {
      commits.flush();
      await checkpoints?.stop();
      // Fold the WAL back into the main file so a stopped server leaves one self-contained database. A reader
      // still finishing (the checkpoint worker's last tick, a CLI) can keep it busy for a moment: try for a second.
      for (let attempt = 0; attempt < 20; attempt++) {
        try {
          if (client.query<{ busy: number }, []>("PRAGMA wal_checkpoint(TRUNCATE)").get()?.busy === 0) break;
        } catch {
          // Locked: the WAL is replayed on next open if it stays.
        }
        await Bun.sleep(50);
      }
      client.close(false);
    },
  };
  return {
    kind: "sqlite",
    ...callPath,
    ...committingQueuedWritesFirst(admin, () => commits.flush()),
    async backupTo(path: string) {
      commits.flush();
      // SQLite would create the copy 0644 whatever the umask. VACUUM INTO also fills an existing empty file and
      // keeps its mode, so the file is created first, owner-only: never readable by others, not even while written.
      closeSync(openSync(path, "wx", 0o600));
      try {
        client.prepare("VACUUM INTO ?").run(path);
      } catch (error) {
        rmSync(path, { force: true });
        throw error;
      }
    },
    checkpointInBackground(log?: (message: string) => void) {
      checkpoints ??= startBackgroundCheckpoints(client, path, { log });
    },
  };
}

/** `keybrake migrate`: brings the database at `path` to the latest schema (creating it); the tags applied. */
export function migrateDatabase(path: string, opts: Pick<OpenOptions, "synchronous"> = {}): string[] {
  const db = openDatabase(path, { ...opts, migrate: false });
  try {
    const applied = applyMigrations(db.$client);
    sealPreChainRows(db.$client, Date.now());
    return applied;
  } finally {
    db.$client.close();
  }
}

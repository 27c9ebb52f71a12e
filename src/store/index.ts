import { closeSync, openSync, rmSync } from "node:fs";
import { adminQueries } from "./admin";
import { auditQueries } from "./audit";
import { GroupCommit } from "./group-commit";
import { OPEN_HOLDS } from "./schema";
import { startBackgroundCheckpoints } from "./wal";
import { keyQueries } from "./keys";
import { ledgerQueries } from "./ledger";
import { reconcileQueries } from "./reconcile";
import { openDatabase, type OpenOptions } from "./sqlite";
import type { Store } from "./types";

export type * from "./types";
export { auditRow } from "./audit-row";

/** The SQLite store: the only implementation today, and the only module with SQL in it. */
export function openStore(path: string, opts: OpenOptions = {}): Store {
  const db = openDatabase(path, opts);
  const client = db.$client;
  const commits = new GroupCommit(client);
  let checkpoints: { stop(): Promise<void> } | undefined;
  const openHolds = client.prepare<{ n: number }, []>(`SELECT count(*) AS n FROM ledger_entries WHERE ${OPEN_HOLDS} AND state IN ('held', 'orphaned')`);
  const probe = client.prepare("INSERT INTO settings (name, value) VALUES ('healthz', ?1) ON CONFLICT (name) DO UPDATE SET value = ?1");
  const store: Store = {
    ...keyQueries(db),
    ...ledgerQueries(db, commits),
    ...reconcileQueries(client, commits),
    ...auditQueries(db, commits),
    ...adminQueries(db),
    async countOpenHolds() {
      return openHolds.get()!.n;
    },
    async backupTo(path: string) {
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
    async checkWritable() {
      try {
        probe.run(String(Date.now()));
        return true;
      } catch {
        return false;
      }
    },
    checkpointInBackground() {
      checkpoints ??= startBackgroundCheckpoints(client, path);
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
  return committingQueuedWritesFirst(store, commits);
}

/**
 * What a proxied call runs on its own path. These neither need the queued writes committed first nor may force
 * it: that would end every group commit after one call.
 */
const CALL_PATH: ReadonlySet<string> = new Set(["findKeyByHash", "idempotencyFingerprint", "holdSpend", "settleCall", "recordAudit"] satisfies (keyof Store)[]);

/**
 * Read-your-writes. A call's settlement is queued and commits right after its answer leaves (see pipeline.ts),
 * so every other operation first commits what is queued: an admin read, a spend query, the pricing of a
 * confirm right after its create all see every answered call settled.
 */
function committingQueuedWritesFirst(store: Store, commits: GroupCommit): Store {
  const wrapped: Record<string, unknown> = { ...store };
  for (const [name, op] of Object.entries(store) as [string, (...args: unknown[]) => unknown][]) {
    if (CALL_PATH.has(name)) continue;
    wrapped[name] = (...args: unknown[]) => {
      commits.flush();
      return op(...args);
    };
  }
  return wrapped as unknown as Store;
}

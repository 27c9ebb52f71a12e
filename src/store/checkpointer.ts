/**
 * A worker thread that folds the WAL back into the database with its own connection, so the fsync a checkpoint
 * does stays off the serving thread (which, once this worker says "ready", checkpoints only as a backstop: wal.ts).
 * Built into the binary as a second entry point (see package.json "build" and wal.ts).
 *
 * Every tick a PASSIVE checkpoint copies what it can without waiting for or blocking a writer. That alone never
 * shrinks the WAL under steady traffic: SQLite rewinds the WAL only when a write begins with every frame already
 * copied, and a busy server always commits again before that. So once the WAL passes RESTART_AFTER_BYTES, a
 * RESTART checkpoint takes the write lock for the few frames left, and the next commit starts the WAL over.
 * It waits for nobody (busy_timeout 0): if a writer or a long reader is busy, the next tick tries again.
 */
import { Database } from "bun:sqlite";

declare const self: Worker;

const TICK_MS = 100;
const RESTART_AFTER_BYTES = 1024 * 1024;

let timer: ReturnType<typeof setInterval> | undefined;
let db: Database | undefined;

self.onmessage = (event: MessageEvent<{ path: string } | "stop">) => {
  if (event.data === "stop") {
    clearInterval(timer);
    db?.close();
    postMessage("stopped");
    return;
  }
  db = new Database(event.data.path);
  db.run("PRAGMA busy_timeout = 0");
  const pageSize = db.query<{ page_size: number }, []>("PRAGMA page_size").get()!.page_size;
  const restartAfterFrames = Math.ceil(RESTART_AFTER_BYTES / pageSize);
  const passive = db.prepare<{ log: number }, []>("PRAGMA wal_checkpoint(PASSIVE)");
  const restart = db.prepare<{ busy: number; log: number }, []>("PRAGMA wal_checkpoint(RESTART)");
  // The WAL's length at the last RESTART. It stays so until a commit starts the WAL over: an idle server is not
  // RESTARTed every tick.
  let restartedAt = -1;
  timer = setInterval(() => {
    try {
      const { log } = passive.get()!;
      if (log < restartAfterFrames || log === restartedAt) return;
      const done = restart.get()!;
      if (done.busy === 0) restartedAt = done.log;
    } catch {
      // Busy or locked: the next tick tries again; the WAL only grows meanwhile.
    }
  }, TICK_MS);
  postMessage("ready");
};

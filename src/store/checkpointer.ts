/**
 * A worker thread that folds the WAL back into the database every 250 ms with its own connection
 * (`PRAGMA wal_checkpoint(PASSIVE)`: never waits for or blocks a writer). The server's own connection has
 * auto-checkpoints off, so the fsync a checkpoint does never stalls a proxied call. Built into the binary as a
 * second entry point (see package.json "build").
 */
import { Database } from "bun:sqlite";

declare const self: Worker;

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
  db.run("PRAGMA busy_timeout = 1000");
  const checkpoint = db.prepare("PRAGMA wal_checkpoint(PASSIVE)");
  timer = setInterval(() => {
    try {
      checkpoint.run();
    } catch {
      // Busy or locked: the next tick tries again; the WAL only grows meanwhile.
    }
  }, 250);
};

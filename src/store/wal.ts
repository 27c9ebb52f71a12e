import type { Database } from "bun:sqlite";

/**
 * Moves WAL checkpoints off the serving thread: auto-checkpoints off on this connection, a worker with its own
 * connection checkpoints instead. `stop` ends the worker; the caller then does the final TRUNCATE checkpoint.
 */
export function startBackgroundCheckpoints(client: Database, path: string): { stop(): Promise<void> } {
  if (path === ":memory:") return { stop: async () => {} };
  const worker = new Worker(new URL("./checkpointer.ts", import.meta.url).href);
  worker.postMessage({ path });
  client.run("PRAGMA wal_autocheckpoint = 0");
  return {
    stop: () =>
      new Promise<void>((resolve) => {
        const done = () => {
          worker.terminate();
          resolve();
        };
        worker.onmessage = done;
        setTimeout(done, 1000).unref();
        worker.postMessage("stop");
      }),
  };
}

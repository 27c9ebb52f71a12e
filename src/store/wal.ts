import type { Database } from "bun:sqlite";

/**
 * The worker's entry point, next to this file. In dist/keybrake every module's `import.meta.url` is the binary's
 * own (`/$bunfs/root/keybrake`), so this resolves to `/$bunfs/root/checkpointer.ts`: the build names its extra
 * entry point flat (`--entry-naming "[name].[ext]"`, package.json "build") to be found there too.
 */
const CHECKPOINTER = new URL("./checkpointer.ts", import.meta.url).href;

/** SQLite's own default: the commit that takes the WAL past 1,000 pages checkpoints it. */
const AUTOCHECKPOINT_PAGES = 1000;

/**
 * With the worker running, the serving connection still checkpoints on a commit that takes the WAL past this
 * size: only under more writes than the worker keeps up with, so the WAL stays bounded even then.
 */
const BACKSTOP_BYTES = 3 * 1024 * 1024;

export interface CheckpointOptions {
  /** The worker's entry point (tests point it at a missing file). */
  entry?: string;
  log?: (line: string) => void;
}

/**
 * Moves WAL checkpoints off the serving thread: a worker with its own connection checkpoints, and once it runs,
 * the serving connection checkpoints on commit only past BACKSTOP_BYTES. Until then, and for good if the worker
 * fails, SQLite's own auto-checkpoint stays on: nothing may leave the WAL to grow without bound. `stop` ends
 * the worker; the caller then does the final TRUNCATE checkpoint.
 */
export function startBackgroundCheckpoints(client: Database, path: string, opts: CheckpointOptions = {}): { stop(): Promise<void> } {
  if (path === ":memory:") return { stop: async () => {} };
  const log = opts.log ?? ((line: string) => console.error(line));
  let stopped = false;
  let failed = false;
  const worker = new Worker(opts.entry ?? CHECKPOINTER);
  worker.addEventListener("message", (event: MessageEvent) => {
    if (event.data === "ready" && !stopped) client.run(`PRAGMA wal_autocheckpoint = ${Math.floor(BACKSTOP_BYTES / pageSize(client))}`);
  });
  worker.addEventListener("error", (event: ErrorEvent) => {
    failed = true;
    log(`keybrake: ERROR: the WAL checkpoint worker failed (${firstLine(event.message)}); checkpointing on commit instead`);
    if (!stopped) client.run(`PRAGMA wal_autocheckpoint = ${AUTOCHECKPOINT_PAGES}`);
  });
  worker.postMessage({ path });
  return {
    stop: () =>
      new Promise<void>((resolve) => {
        stopped = true;
        const done = () => {
          worker.terminate();
          resolve();
        };
        if (failed) return done();
        worker.addEventListener("message", (event: MessageEvent) => event.data === "stopped" && done());
        setTimeout(done, 1000).unref();
        worker.postMessage("stop");
      }),
  };
}

/** A worker's error message can carry a code frame; the log line wants the error itself. */
function firstLine(message: string): string {
  return /^error: (.*)$/m.exec(message)?.[1] ?? message.split("\n")[0]!;
}

function pageSize(client: Database): number {
  return client.query<{ page_size: number }, []>("PRAGMA page_size").get()!.page_size;
}

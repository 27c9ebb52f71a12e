import { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startBackgroundCheckpoints } from "../src/store/wal";

let dir: string;
let client: Database;
afterEach(() => {
  client.close();
  rmSync(dir, { recursive: true, force: true });
});

function open() {
  dir = mkdtempSync(join(tmpdir(), "keybrake-wal-"));
  const path = join(dir, "k.db");
  client = new Database(path);
  client.run("PRAGMA page_size = 1024");
  client.run("PRAGMA journal_mode = WAL");
  return path;
}

const autocheckpoint = () => client.query<{ wal_autocheckpoint: number }, []>("PRAGMA wal_autocheckpoint").get()!.wal_autocheckpoint;

async function until(predicate: () => boolean) {
  for (let i = 0; i < 200 && !predicate(); i++) await Bun.sleep(10);
}

describe("background WAL checkpoints", () => {
  test("once the worker runs, the serving connection checkpoints on commit only as a backstop (~3 MiB)", async () => {
    const path = open();
    const checkpoints = startBackgroundCheckpoints(client, path, { log: () => {} });
    await until(() => autocheckpoint() !== 1000);
    expect(autocheckpoint()).toBe(3072);
    await checkpoints.stop();
  });

  test("a worker that cannot start is logged loudly, and SQLite's own auto-checkpoint stays on", async () => {
    const logs: string[] = [];
    const path = open();
    const checkpoints = startBackgroundCheckpoints(client, path, { entry: join(dir, "missing-checkpointer.ts"), log: (l) => logs.push(l) });
    await until(() => logs.length > 0);
    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatch(
      /^keybrake: ERROR: the WAL checkpoint worker failed \(.*missing-checkpointer\.ts.*\); checkpointing on commit instead$/,
    );
    expect(autocheckpoint()).toBe(1000);
    await checkpoints.stop();
  });
});

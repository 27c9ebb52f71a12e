import { Database } from "bun:sqlite";
import { drizzle, type BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import { applyMigrations } from "./migrate";
import * as schema from "./schema";

export type Db = BunSQLiteDatabase<typeof schema> & { $client: Database };

export interface OpenOptions {
  synchronous?: "normal" | "full";
  migrate?: boolean;
}

/**
 * Opens the ledger database. Pragmas (see README "Storage"):
 * - journal_mode=WAL: readers (admin, audit queries) never block the proxy's writers.
 * - synchronous=NORMAL (default) or FULL: in WAL mode NORMAL makes every commit survive a crash or SIGKILL of
 *   Keybrake; only an OS crash or power loss can lose the last commits. FULL also survives that, at ~200 µs
 *   of fsync per commit.
 * - busy_timeout=5000: the CLI and the server share the file; a writer waits for the other instead of failing.
 * - foreign_keys=ON: declared for future references; cheap.
 * - page_size=1024 for new files (see below).
 */
export function openDatabase(path: string, opts: OpenOptions = {}): Db {
  const client = new Database(path, { create: true, strict: true });
  // Takes effect only when the file is new. Every commit copies each page it touched into the WAL; a call
  // touches ~10 pages for a few hundred bytes of rows, so 1 KiB pages make commits ~40% cheaper than 4 KiB.
  client.run("PRAGMA page_size = 1024");
  client.run("PRAGMA journal_mode = WAL");
  client.run(`PRAGMA synchronous = ${opts.synchronous === "full" ? "FULL" : "NORMAL"}`);
  client.run("PRAGMA busy_timeout = 5000");
  client.run("PRAGMA foreign_keys = ON");
  if (opts.migrate !== false) applyMigrations(client);
  return drizzle({ client, schema }) as Db;
}

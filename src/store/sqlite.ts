import { Database } from "bun:sqlite";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { drizzle, type BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import { ConfigError } from "../config";
import { applyMigrations } from "./migrate";
import * as schema from "./schema";

export type Db = BunSQLiteDatabase<typeof schema> & { $client: Database };

export interface OpenOptions {
  synchronous?: "normal" | "full";
  migrate?: boolean;
  /** false: a missing file is an error, never a new empty ledger (the CLI's commands other than serve and migrate). */
  create?: boolean;
}

/**
 * Opens the ledger database. Pragmas (see README "Storage"):
 * - journal_mode=WAL: readers (admin, audit queries) never block the proxy's writers.
 * - synchronous=FULL (default) or NORMAL: FULL syncs the WAL on every commit, so a hold is on disk before its
 *   call is forwarded and survives power loss; group commit shares that fsync among the calls of one event-loop
 *   turn. NORMAL survives a crash or SIGKILL of Keybrake only: power loss can take the last commits.
 * - busy_timeout=5000: the CLI and the server share the file; a writer waits for the other instead of failing.
 * - foreign_keys=ON: declared for future references; cheap.
 * - page_size=1024 for new files (see below).
 */
export function openDatabase(path: string, opts: OpenOptions = {}): Db {
  const create = opts.create !== false;
  if (!create && !existsSync(path)) {
    throw new ConfigError(`KEYBRAKE_DB: no database at ${resolve(path)}; keybrake serve or keybrake migrate creates one`);
  }
  const client = new Database(path, { create, strict: true });
  // Takes effect only when the file is new. Every commit copies each page it touched into the WAL; a call
  // touches ~10 pages for a few hundred bytes of rows, so 1 KiB pages make commits ~40% cheaper than 4 KiB.
  client.run("PRAGMA page_size = 1024");
  client.run("PRAGMA journal_mode = WAL");
  client.run(`PRAGMA synchronous = ${opts.synchronous === "normal" ? "NORMAL" : "FULL"}`);
  client.run("PRAGMA busy_timeout = 5000");
  client.run("PRAGMA foreign_keys = ON");
  if (opts.migrate !== false) applyMigrations(client);
  return drizzle({ client, schema }) as Db;
}

import { Database } from "bun:sqlite";
import { accessSync, constants, existsSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { drizzle, type BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import { ConfigError } from "../config";
import { sealPreChainRows } from "./audit-append";
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
  let client: Database | undefined;
  try {
    client = new Database(path, { create, strict: true });
    // Takes effect only when the file is new. Every commit copies each page it touched into the WAL; a call
    // touches ~10 pages for a few hundred bytes of rows, so 1 KiB pages make commits ~40% cheaper than 4 KiB.
    client.run("PRAGMA page_size = 1024");
    client.run("PRAGMA busy_timeout = 5000");
    client.run("PRAGMA journal_mode = WAL");
    client.run(`PRAGMA synchronous = ${opts.synchronous === "normal" ? "NORMAL" : "FULL"}`);
    client.run("PRAGMA foreign_keys = ON");
    if (opts.migrate !== false) {
      applyMigrations(client);
      sealPreChainRows(client, Date.now());
    }
  } catch (err) {
    client?.close(false);
    throw new ConfigError(`KEYBRAKE_DB: cannot open database ${resolve(path)}: ${whyUnopenable(path, err)}`);
  }
  return drizzle({ client, schema }) as Db;
}

/** What stands between Keybrake and the database file, in an operator's words. */
function whyUnopenable(path: string, err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const file = resolve(path);
  const folder = dirname(file);
  if (!existsSync(folder)) return `the folder ${folder} does not exist`;
  if (!statSync(folder).isDirectory()) return `${folder} is not a folder`;
  if (existsSync(file) && statSync(file).isDirectory()) return "it is a folder, not a file";
  if (!canWrite(folder)) return `read-only folder ${folder} (SQLite's WAL needs to create files next to the database)`;
  if (existsSync(file) && !canWrite(file)) return "read-only file";
  if (/not a database|malformed/i.test(message)) return `not a Keybrake database (${message})`;
  return message;
}

const canWrite = (p: string) => {
  try {
    accessSync(p, constants.W_OK);
    return true;
  } catch {
    return false;
  }
};

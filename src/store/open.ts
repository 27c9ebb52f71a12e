import { type Config, ConfigError } from "../config";
import { openStore, migrateDatabase } from "./index";
import type { PgStore } from "./pg/index";
import type { Pg } from "./pg/client";
import { parsePostgresUrl } from "../postgres-url";
import type { SqliteStore } from "./types";

export type AnyStore = SqliteStore | PgStore;
type StoreConfig = Pick<Config, "dbPath" | "dbSynchronous" | "postgres">;

/**
 * The ledger the configuration names: PostgreSQL when KEYBRAKE_DATABASE_URL is set (SPEC §13), else the SQLite
 * file. `create: false` (the CLI's commands other than serve and migrate): never a new ledger, never a migration.
 * `connections`: PostgreSQL's pool size, for a one-shot command; else KEYBRAKE_DATABASE_URL's `pool_max_conns`, else
 * the store's default (16; see PgOptions).
 */
export async function openConfiguredStore(
  config: StoreConfig,
  opts: { create?: boolean; connections?: number; onPrimaryMoved?: (where: string) => void } = {},
): Promise<AnyStore> {
  const pg = config.postgres;
  if (!pg) return openStore(config.dbPath, { synchronous: config.dbSynchronous, create: opts.create });
  try {
    // PostgreSQL's store is loaded only when configured: a SQLite start does not evaluate it.
    const { openPgStore } = await import("./pg/index");
    return await openPgStore(pg.url, {
      instanceId: pg.instanceId,
      leaseMs: pg.leaseMs,
      migrate: opts.create !== false,
      connections: opts.connections ?? pg.poolSize,
      onPrimaryMoved: opts.onPrimaryMoved,
    });
  } catch (error) {
    throw unreachable(pg.url, error);
  }
}

/** `keybrake migrate`: the tags applied to the configured ledger. */
export async function migrateConfiguredStore(config: StoreConfig): Promise<string[]> {
  if (!config.postgres) return migrateDatabase(config.dbPath, { synchronous: config.dbSynchronous });
  let sql: Pg | undefined;
  try {
    const [{ connectPg }, { applyPgMigrations }] = await Promise.all([import("./pg/client"), import("./pg/migrate")]);
    sql = await connectPg(config.postgres.url, 1);
    return await applyPgMigrations(sql);
  } catch (error) {
    throw unreachable(config.postgres.url, error);
  } finally {
    await sql?.close({ timeout: 5 });
  }
}

/** Where the ledger is, for log lines: the file, or the PostgreSQL server(s) and database without credentials. */
export function ledgerLocation(config: StoreConfig, resolvePath: (path: string) => string): string {
  return config.postgres ? `postgres ${redactedUrl(config.postgres.url)}` : resolvePath(config.dbPath);
}

const redactedUrl = (url: string) => parsePostgresUrl(url)?.where ?? "(an invalid URL)";

/** The URL's password never reaches a log line or an error. */
function unreachable(url: string, error: unknown): ConfigError {
  const message = error instanceof Error ? error.message : String(error);
  const password = parsePostgresUrl(url)?.password ?? "";
  const said = password ? message.split(password).join("***") : message;
  return new ConfigError(`KEYBRAKE_DATABASE_URL: cannot use the PostgreSQL ledger at ${redactedUrl(url)}: ${said}`);
}

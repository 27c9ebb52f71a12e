import { type Migration, migrationsOf } from "../migrate";
import { sealPreChainRows } from "./audit-chain";
import type { Pg } from "./client";
import { embeddedJournal, embeddedSql } from "./migrations.gen";

/** The PostgreSQL migrations embedded in this build (drizzle/pg), in journal order. */
export function embeddedPgMigrations(): Migration[] {
  return migrationsOf(embeddedJournal, embeddedSql);
}

/** The advisory lock every instance takes to migrate: an arbitrary constant of Keybrake's ("kbmigr" in ASCII). */
const MIGRATION_LOCK = 0x6b_62_6d_69_67_72;

/**
 * Applies what the database lacks, each migration in its own transaction, and returns their tags. Uses drizzle's
 * own bookkeeping (`drizzle.__drizzle_migrations`), so drizzle-kit and this runner agree on what is applied.
 * Several instances may start at once: a session advisory lock lets one migrate while the others wait, then find
 * nothing left to do. Then seals audit rows without a chain (SPEC §19), which an older binary may still write.
 */
export async function applyPgMigrations(sql: Pg, migrations = embeddedPgMigrations()): Promise<string[]> {
  // A session lock belongs to one connection: hold one for the lock and all the work under it.
  const conn = await sql.reserve();
  try {
    await conn`SELECT pg_advisory_lock(${MIGRATION_LOCK})`;
    try {
      const applied = await applyPending(conn, migrations);
      await sealPreChainRows(conn, Date.now());
      return applied;
    } finally {
      await conn`SELECT pg_advisory_unlock(${MIGRATION_LOCK})`;
    }
  } finally {
    await conn.release();
  }
}

async function applyPending(conn: Pg, migrations: Migration[]): Promise<string[]> {
  await conn`CREATE SCHEMA IF NOT EXISTS drizzle`;
  await conn`CREATE TABLE IF NOT EXISTS drizzle.__drizzle_migrations (id serial PRIMARY KEY, hash text NOT NULL, created_at bigint)`;
  const [last] = await conn`SELECT created_at FROM drizzle.__drizzle_migrations ORDER BY created_at DESC LIMIT 1`;
  const pending = migrations.filter((m) => !last || m.when > Number(last.created_at));
  for (const m of pending) {
    await conn.begin(async (tx) => {
      // Fixed SQL text: the statements drizzle-kit wrote, embedded in the build.
      for (const statement of m.statements) await tx.unsafe(statement);
      await tx`INSERT INTO drizzle.__drizzle_migrations (hash, created_at) VALUES (${m.hash}, ${m.when})`;
    });
  }
  return pending.map((m) => m.tag);
}

/** The tags of embedded migrations the database lacks (all of them when it has none); connects to find out. */
export async function pendingPgMigrations(sql: Pg, migrations = embeddedPgMigrations()): Promise<string[]> {
  const [table] = await sql`SELECT to_regclass('drizzle.__drizzle_migrations') AS name`;
  if (!table?.name) return migrations.map((m) => m.tag);
  const [last] = await sql`SELECT created_at FROM drizzle.__drizzle_migrations ORDER BY created_at DESC LIMIT 1`;
  return migrations.filter((m) => !last || m.when > Number(last.created_at)).map((m) => m.tag);
}

import type { Database } from "bun:sqlite";
import { embeddedJournal, embeddedSql } from "./migrations.gen";

export interface Migration {
  tag: string;
  when: number;
  statements: string[];
  hash: string;
}

/** The migrations embedded in this build, in journal order. Throws if a journal entry has no embedded SQL. */
export function embeddedMigrations(): Migration[] {
  return migrationsOf(embeddedJournal, embeddedSql);
}

/**
 * A drizzle-kit journal's migrations, in its order, with the statements of each and the hash drizzle's own
 * migrator records (SHA-256 of the file). Throws if a journal entry has no SQL.
 */
export function migrationsOf(journal: { entries: { tag: string; when: number }[] }, sqlByTag: Record<string, string>): Migration[] {
  return journal.entries.map((entry) => {
    const sql = sqlByTag[entry.tag];
    if (sql === undefined) throw new Error(`migration ${entry.tag} is in the journal but not embedded`);
    return {
      tag: entry.tag,
      when: entry.when,
      statements: sql
        .split("--> statement-breakpoint")
        .map((s) => s.trim())
        .filter(Boolean),
      hash: new Bun.CryptoHasher("sha256").update(sql).digest("hex"),
    };
  });
}

/**
 * Applies what the database lacks, each migration in its own transaction. Uses drizzle's own bookkeeping table
 * (`__drizzle_migrations`), so drizzle-kit and this runner agree on what is applied.
 */
export function applyMigrations(db: Database, migrations = embeddedMigrations()): string[] {
  db.run(
    `CREATE TABLE IF NOT EXISTS "__drizzle_migrations" (id INTEGER PRIMARY KEY AUTOINCREMENT, hash text NOT NULL, created_at numeric)`,
  );
  const last = db.query<{ created_at: number }, []>(`SELECT created_at FROM "__drizzle_migrations" ORDER BY created_at DESC LIMIT 1`).get();
  const pending = migrations.filter((m) => !last || m.when > Number(last.created_at));
  for (const m of pending) {
    db.transaction(() => {
      for (const statement of m.statements) db.run(statement);
      db.run(`INSERT INTO "__drizzle_migrations" (hash, created_at) VALUES (?, ?)`, [m.hash, m.when]);
    }).immediate();
  }
  return pending.map((m) => m.tag);
}

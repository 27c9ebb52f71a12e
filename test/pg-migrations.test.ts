import { SQL } from "bun";
import { afterAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { getTableConfig as pgTableConfig, PgTable } from "drizzle-orm/pg-core";
import { getTableConfig as sqliteTableConfig, SQLiteTable } from "drizzle-orm/sqlite-core";
import { applyPgMigrations, embeddedPgMigrations } from "../src/store/pg/migrate";
import { embeddedJournal, embeddedSql } from "../src/store/pg/migrations.gen";
import * as pgSchema from "../src/store/pg/schema";
import * as sqliteSchema from "../src/store/schema";
import { dropTestDatabase, testDatabaseUrl } from "./helpers/postgres";

const drizzleDir = join(import.meta.dir, "../drizzle/pg");
const journalOnDisk = JSON.parse(readFileSync(join(drizzleDir, "meta/_journal.json"), "utf8")) as { entries: { tag: string }[] };

/** Each schema's tables by name, with their column and index names. */
function shapeOf(tables: { name: string; columns: { name: string }[]; indexes: { config: { name?: string } }[] }[]) {
  return new Map(tables.map((t) => [t.name, { columns: t.columns.map((c) => c.name), indexes: t.indexes.map((i) => i.config.name) }]));
}
const pgTables = shapeOf(
  Object.values(pgSchema)
    .filter((v) => v instanceof PgTable)
    .map((t) => pgTableConfig(t)),
);
const sqliteTables = shapeOf(
  Object.values(sqliteSchema)
    .filter((v) => v instanceof SQLiteTable)
    .map((t) => sqliteTableConfig(t)),
);

describe("embedded PostgreSQL migrations", () => {
  test("every migration drizzle-kit wrote to drizzle/pg is embedded, byte for byte (run `bun run db:generate` if not)", () => {
    const sqlFiles = readdirSync(drizzleDir)
      .filter((f) => f.endsWith(".sql"))
      .map((f) => f.replace(/\.sql$/, ""));
    expect(journalOnDisk.entries.map((e) => e.tag)).toEqual(sqlFiles.sort());
    expect(embeddedJournal.entries.map((e) => e.tag)).toEqual(journalOnDisk.entries.map((e) => e.tag));
    for (const tag of sqlFiles) expect(embeddedSql[tag]).toBe(readFileSync(join(drizzleDir, `${tag}.sql`), "utf8"));
    expect(embeddedPgMigrations()).toHaveLength(sqlFiles.length);
  });

  test("the PostgreSQL schema has every table, column and index of the SQLite one, by the same names", () => {
    for (const [name, sqlite] of sqliteTables) {
      const pg = pgTables.get(name);
      expect(pg, name).toBeDefined();
      expect(pg!.columns, name).toEqual(expect.arrayContaining(sqlite.columns));
      expect(pg!.indexes, name).toEqual(expect.arrayContaining(sqlite.indexes));
    }
  });
});

const url = await testDatabaseUrl();

describe.skipIf(!url)("applying PostgreSQL migrations", () => {
  afterAll(async () => {
    if (url) await dropTestDatabase(url);
  });

  test("two instances starting at once on a fresh database: one applies everything, once; again is a no-op", async () => {
    const all = embeddedPgMigrations();
    const first = new SQL({ url: url!, max: 2 });
    const second = new SQL({ url: url!, max: 2 });
    try {
      const applied = await Promise.all([applyPgMigrations(first), applyPgMigrations(second)]);
      expect(applied.toSorted((a, b) => b.length - a.length)).toEqual([all.map((m) => m.tag), []]);
      expect(await applyPgMigrations(second)).toEqual([]);

      // drizzle's own migrator reads the same bookkeeping: the file's SHA-256 and the journal's time.
      const recorded = await first`SELECT hash, created_at FROM drizzle.__drizzle_migrations ORDER BY id`;
      expect(recorded.map((r: { hash: string; created_at: string }) => [r.hash, Number(r.created_at)])).toEqual(
        all.map((m) => [m.hash, m.when]),
      );
      const tables = await first`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`;
      expect(tables.map((t: { table_name: string }) => t.table_name).sort()).toEqual([...pgTables.keys()].sort());
    } finally {
      await Promise.all([first.close(), second.close()]);
    }
  });
});

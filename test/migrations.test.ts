import { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { embeddedMigrations, applyMigrations } from "../src/store/migrate";
import { embeddedJournal, embeddedSql } from "../src/store/migrations.gen";
import { OPEN_HOLDS } from "../src/store/schema";

const drizzleDir = join(import.meta.dir, "../drizzle");
const journalOnDisk = JSON.parse(readFileSync(join(drizzleDir, "meta/_journal.json"), "utf8")) as { entries: { tag: string }[] };

function schemaOf(db: Database) {
  return db
    .query<{ type: string; name: string; sql: string }, []>(
      "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name != '__drizzle_migrations' ORDER BY type, name",
    )
    .all();
}

describe("embedded migrations", () => {
  test("every migration drizzle-kit wrote is embedded, byte for byte (run `bun run db:generate` if not)", () => {
    const sqlFiles = readdirSync(drizzleDir)
      .filter((f) => f.endsWith(".sql"))
      .map((f) => f.replace(/\.sql$/, ""));
    expect(journalOnDisk.entries.map((e) => e.tag)).toEqual(sqlFiles.sort());
    expect(embeddedJournal.entries.map((e) => e.tag)).toEqual(journalOnDisk.entries.map((e) => e.tag));
    for (const tag of sqlFiles) expect(embeddedSql[tag]).toBe(readFileSync(join(drizzleDir, `${tag}.sql`), "utf8"));
    expect(embeddedMigrations()).toHaveLength(sqlFiles.length);
  });

  test("a fresh database and one at the previous migration both end at the latest schema", () => {
    const all = embeddedMigrations();
    expect(all.length).toBeGreaterThanOrEqual(2);
    const fresh = new Database(":memory:");
    expect(applyMigrations(fresh)).toEqual(all.map((m) => m.tag));

    const old = new Database(":memory:");
    applyMigrations(old, all.slice(0, -1));
    old.run(
      "INSERT INTO vault_keys (id, key_hash, key_hint, vendor, mode, daily_cap_micros, allowed_endpoints, metadata, created_at, expires_at) VALUES ('vk_old', 'h', 'kb_live_…x', 'stripe', 'live', 1, '[]', '{}', 1, 2)",
    );
    expect(applyMigrations(old)).toEqual([all.at(-1)!.tag]);
    expect(schemaOf(old)).toEqual(schemaOf(fresh));
    expect(old.query("SELECT id FROM vault_keys").all()).toEqual([{ id: "vk_old" }]);
    expect(applyMigrations(old)).toEqual([]); // idempotent
  });

  test("queries for open holds use the partial index (the ledger is never pruned, so a scan would grow forever)", () => {
    const db = new Database(":memory:");
    applyMigrations(db);
    const plan = (q: string) =>
      db
        .query<{ detail: string }, []>(`EXPLAIN QUERY PLAN ${q}`)
        .all()
        .map((r) => r.detail)
        .join(" | ");
    expect(plan(`SELECT id FROM ledger_entries WHERE ${OPEN_HOLDS} AND state = 'orphaned'`)).toContain("ledger_entries_open");
    expect(plan(`SELECT count(*) FROM ledger_entries WHERE ${OPEN_HOLDS} AND state IN ('held', 'orphaned')`)).toContain(
      "ledger_entries_open",
    );
    expect(plan("SELECT id FROM ledger_entries WHERE state = 'orphaned'")).not.toContain("ledger_entries_open");
  });
});

import { Database, type Statement } from "bun:sqlite";
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore } from "../src/store/index";

/**
 * The ledger is never pruned: a statement that scans it grows with every call ever made. A restart's recovery once
 * did (10 M audit rows: 9 s to start). Every statement the SQLite store prepares that reads or writes
 * ledger_entries reads it through an index (or by rowid).
 */
test("no statement the SQLite store prepares scans the ledger", () => {
  const dir = mkdtempSync(join(tmpdir(), "keybrake-plans-"));
  const prepared: string[] = [];
  const { prepare, query } = Database.prototype;
  const watch = (f: typeof prepare) =>
    function (this: Database, sql: string, ...rest: unknown[]) {
      prepared.push(sql);
      return (f as (...a: unknown[]) => Statement).call(this, sql, ...rest);
    } as typeof prepare;
  Database.prototype.prepare = watch(prepare);
  Database.prototype.query = watch(query);
  let store: ReturnType<typeof openStore> | undefined;
  try {
    store = openStore(join(dir, "kb.db"));
  } finally {
    Database.prototype.prepare = prepare;
    Database.prototype.query = query;
  }
  try {
    const db = new Database(join(dir, "kb.db"), { readonly: true });
    const ledgerStatements = [...new Set(prepared)].filter(
      (sql) => /\bledger_entries\b/.test(sql) && !/^\s*(CREATE|DROP|PRAGMA)/i.test(sql),
    );
    expect(ledgerStatements.length).toBeGreaterThan(10);
    const scans = ledgerStatements
      .map((sql) => ({
        sql,
        plan: db
          .query<{ detail: string }, []>(`EXPLAIN QUERY PLAN ${sql}`)
          .all()
          .map((r) => r.detail),
      }))
      .filter(({ plan }) => plan.some((step) => /^SCAN (ledger_entries|e)\b/.test(step)));
    db.close();
    expect(scans).toEqual([]);
  } finally {
    store?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

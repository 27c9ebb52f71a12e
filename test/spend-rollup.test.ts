import { Database, type Statement } from "bun:sqlite";
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import fc from "fast-check";
import { auditQueries, binary, HOLD_EVENT_DECISIONS, spendFromRollup, spendFromScan } from "../src/store/audit";
import { CHAIN_COLUMN_NAMES } from "../src/store/audit-append";
import { chainValues } from "../src/store/audit-chain";
import { type AuditFilter, type AuditRow, auditRow, openStore, type SpendGroup, type SqliteStore } from "../src/store/index";
import { GroupCommit } from "../src/store/group-commit";
import { applyMigrations, embeddedMigrations } from "../src/store/migrate";
import { type Db, openDatabase } from "../src/store/sqlite";

// The spend views read the rollup (audit_days, kept by triggers on audit_events) whenever the filter allows, and
// the audit rows otherwise. Both must give the same answer, row for row, for any history of writes and prunes.

type Filter = Omit<AuditFilter, "limit" | "cursor">;

const DAY = 86_400_000;
const USD = 1_000_000;
const day0 = Date.UTC(2026, 10, 20);
const GROUPS: SpendGroup[] = ["label", "key", "vendor", "day"];

/** Keys of a few labels (two keys share one; one has none; LIKE's wildcards and non-ASCII are plain text). */
const KEYS = [
  { id: "vk_1", label: "airflow-billing/run-1", vendor: "stripe", mintedBy: "tok_a" },
  { id: "vk_2", label: "airflow-billing/run-2", vendor: "twilio", mintedBy: "tok_b" },
  { id: "vk_3", label: "airflow-billing/run-2", vendor: "stripe", mintedBy: "tok_a" },
  { id: "vk_4", label: "n%ght_ly/ü", vendor: "resend", mintedBy: "admin" },
  { id: "vk_5", label: null, vendor: "stripe", mintedBy: "tok_b" },
  // UTF-16 puts the rocket (a surrogate pair) before the fullwidth A; SQLite's bytes and code points, after.
  { id: "vk_6", label: "\u{1F680}/run", vendor: "twilio", mintedBy: "tok_a" },
  { id: "vk_7", label: "\uFF21/run", vendor: "resend", mintedBy: "tok_b" },
] as const;
const LABELS = [...new Set(KEYS.map((k) => k.label))];
const PREFIXES = ["", "airflow-billing/", "airflow-billing/run-2", "n%", "n_", "nope"];
const VENDORS = ["stripe", "twilio", "resend"] as const;
const DENIALS = ["cap_exhausted", "endpoint_not_allowed", "key_revoked", "rate_limited"];

/** A time in one of the first days: often right on a day's edge, where since/until cut. */
const time = fc.tuple(fc.integer({ min: 0, max: 2 }), fc.oneof(fc.constantFrom(0, 1, DAY - 1), fc.integer({ min: 0, max: DAY - 1 })));
const at = time.map(([d, ms]) => day0 + d * DAY + ms);
const key = fc.integer({ min: 0, max: KEYS.length - 1 });
const cost = fc.integer({ min: 0, max: 20 * USD });

/** What happens to a ledger: proxied calls, denials, hold events, crashes and their resolution, retention. */
const op = fc.oneof(
  { depthSize: "small", withCrossShrink: true },
  fc.record({
    kind: fc.constant("call" as const),
    key,
    at,
    hold: cost,
    outcome: fc.constantFrom("settled" as const, "released" as const, "ambiguous" as const),
    cost,
  }),
  fc.record({ kind: fc.constant("denied" as const), key, at, decision: fc.constantFrom(...DENIALS), cost: fc.constantFrom(0, 0, 7) }),
  fc.record({
    kind: fc.constant("unauthenticated" as const),
    at,
    vendor: fc.constantFrom(...VENDORS, null),
    requests: fc.integer({ min: 1, max: 50 }),
  }),
  fc.record({
    kind: fc.constant("holdEvent" as const),
    key,
    at,
    decision: fc.constantFrom(...HOLD_EVENT_DECISIONS),
    cost: fc.integer({ min: -5 * USD, max: 5 * USD }),
  }),
  fc.record({ kind: fc.constant("crash" as const), key, at, hold: cost }),
  fc.record({ kind: fc.constant("resolve" as const), at, outcome: fc.constantFrom("settled" as const, "released" as const), cost }),
  fc.record({ kind: fc.constant("prune" as const), before: at, batch: fc.integer({ min: 1, max: 30 }) }),
  // Rows written in one turn of the event loop: one group commit, each in its own savepoint.
  fc.record({
    kind: fc.constant("burst" as const),
    rows: fc.array(fc.record({ key, at, decision: fc.constantFrom("allowed", ...DENIALS, ...HOLD_EVENT_DECISIONS), cost }), {
      minLength: 2,
      maxLength: 8,
    }),
  }),
);
type Op = typeof op extends fc.Arbitrary<infer T> ? T : never;

/**
 * The history with its writes in time order: the times drawn, sorted, given back to the writes in the order they
 * happen (a burst's rows in theirs), so each audit row is at or after the one before it, as the proxy writes them.
 * Retention deletes only a prefix by seq (the rows up to the first one not older than its cutoff): out of time
 * order, one recent row would stop every prune behind it. The cutoffs stay as drawn, anywhere in the rows' days.
 */
function inTimeOrder(ops: Op[]): Op[] {
  const times = ops.flatMap((o) => (o.kind === "prune" ? [] : o.kind === "burst" ? o.rows.map((r) => r.at) : [o.at])).sort((a, b) => a - b);
  let next = 0;
  return ops.map((o) =>
    o.kind === "prune"
      ? o
      : o.kind === "burst"
        ? { ...o, rows: o.rows.map((r) => ({ ...r, at: times[next++]! })) }
        : { ...o, at: times[next++]! },
  );
}

/** Filters the rollup answers exactly: since and until, when given, start a UTC day. */
const rollupFilter: fc.Arbitrary<Filter> = fc.record(
  {
    keyId: fc.constantFrom(...KEYS.map((k) => k.id), "vk_none"),
    mintedBy: fc.constantFrom("tok_a", "tok_b", "admin"),
    label: fc.constantFrom(...LABELS.filter((l) => l !== null)),
    labelPrefix: fc.constantFrom(...PREFIXES),
    vendor: fc.constantFrom(...VENDORS),
    since: fc.integer({ min: -1, max: 3 }).map((d) => day0 + d * DAY),
    until: fc.integer({ min: -1, max: 3 }).map((d) => day0 + d * DAY),
  },
  { requiredKeys: [] },
);

/** Filters only the audit rows answer: a decision, a request id, or since/until inside a day. */
const scanFilter: fc.Arbitrary<Filter> = fc.oneof(
  rollupFilter.chain((f) =>
    fc.constantFrom("allowed", "cap_exhausted", "invalid_key", "hold_settled").map((decision) => ({ ...f, decision })),
  ),
  rollupFilter.map((f) => ({ ...f, requestId: "kbr_1" })),
  fc.tuple(rollupFilter, at).map(([f, since]) => ({ ...f, since: since % DAY === 0 ? since + 1 : since })),
  fc.tuple(rollupFilter, at).map(([f, until]) => ({ ...f, until: until % DAY === 0 ? until + 1 : until })),
);

function keyAudit(k: (typeof KEYS)[number], id: string, when: number, decision: string, costMicros: number): AuditRow {
  return auditRow({
    id,
    at: when,
    keyId: k.id,
    label: k.label,
    vendor: k.vendor,
    mode: "live",
    method: "POST",
    path: "/v1/payment_intents",
    status: decision === "allowed" ? 200 : 402,
    decision,
    costMicros,
  });
}

/** A ledger with the keys in it, made once: each run of a property starts from a copy (a migration a run is ~15 ms). */
let template: string | undefined;
async function keyedTemplate(): Promise<string> {
  if (template) return template;
  const path = join(mkdtempSync(join(tmpdir(), "keybrake-rollup-template-")), "keybrake.db");
  const store = openStore(path);
  const now = Date.now();
  for (const k of KEYS) {
    await store.insertKey({
      id: k.id,
      keyHash: `hash_${k.id}`,
      keyHint: "kb_live_…",
      vendor: k.vendor,
      mode: "live",
      mintedBy: k.mintedBy,
      label: k.label,
      dailyCapMicros: 1e12,
      totalCapMicros: null,
      allowedEndpoints: ["POST /v1/payment_intents"],
      maxRequestsPerMinute: null,
      requireIdempotencyKey: false,
      metadata: {},
      createdAt: now,
      expiresAt: now + 1000 * DAY,
    });
  }
  await store.close(); // folds the WAL in: the file alone is the whole ledger
  template = path;
  return path;
}
afterAll(() => {
  if (template) rmSync(dirname(template), { recursive: true, force: true });
});

async function withStore(run: (store: SqliteStore, db: Db) => Promise<void>) {
  const dir = mkdtempSync(join(tmpdir(), "keybrake-rollup-"));
  const path = join(dir, "keybrake.db");
  copyFileSync(await keyedTemplate(), path);
  const store = openStore(path);
  // A second connection, as the CLI has: it reads what the store committed.
  const db = openDatabase(path);
  try {
    await run(store, db);
  } finally {
    db.$client.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function apply(store: SqliteStore, ops: Op[]) {
  let n = 0;
  const dayOf = (t: number) => new Date(t).toISOString().slice(0, 10);
  for (const o of ops) {
    n++;
    if (o.kind === "call" || o.kind === "crash") {
      const k = KEYS[o.key]!;
      const hold = await store.holdSpend({
        holdId: `hold_${n}`,
        keyId: k.id,
        day: dayOf(o.at),
        micros: o.hold,
        ledger: true,
        reuseAmbiguous: true,
        now: o.at,
        call: { requestId: `kbr_${n}`, method: "POST", path: "/v1/payment_intents" },
      });
      if (hold.kind !== "admitted") throw new Error(`not admitted: ${JSON.stringify(hold)}`);
      if (o.kind === "crash") {
        // What a restart finds: the hold orphaned, with its orphaned_hold audit row.
        await store.recoverOrphanedHolds(o.at);
        continue;
      }
      await store.settleCall({
        keyId: k.id,
        day: dayOf(o.at),
        holdId: hold.holdId!,
        outcome: o.outcome,
        costMicros: o.outcome === "released" ? 0 : o.cost,
        now: o.at,
        audit: keyAudit(k, `kbr_${n}`, o.at, "allowed", 0),
      });
    } else if (o.kind === "denied") {
      await store.recordAudit(keyAudit(KEYS[o.key]!, `kbr_${n}`, o.at, o.decision, o.cost));
    } else if (o.kind === "holdEvent") {
      await store.recordAudit(keyAudit(KEYS[o.key]!, `kbr_${n}`, o.at, o.decision, o.cost));
    } else if (o.kind === "unauthenticated") {
      await store.recordAudit(
        auditRow({
          id: `kbr_${n}`,
          at: o.at,
          vendor: o.vendor,
          method: "POST",
          path: "/v1/charges",
          status: 401,
          decision: "invalid_key",
          requests: o.requests,
        }),
      );
    } else if (o.kind === "resolve") {
      const open = [...(await store.listHolds("orphaned", 10)), ...(await store.listHolds("ambiguous", 10))];
      if (open.length > 0) await store.resolveHold(open[n % open.length]!.id, o.outcome, o.cost, o.at);
    } else if (o.kind === "burst") {
      await Promise.all(o.rows.map((r, i) => store.recordAudit(keyAudit(KEYS[r.key]!, `kbr_${n}_${i}`, r.at, r.decision, r.cost))));
    } else {
      await store.pruneAudit(o.before, o.batch);
    }
  }
}

describe("the spend rollup (audit_days)", () => {
  test("answers every filter it can exactly as the scan of the audit rows does, through any history of writes and prunes", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(op, { minLength: 1, maxLength: 60, size: "max" }).map(inTimeOrder),
        fc.array(rollupFilter, { minLength: 1, maxLength: 4 }),
        fc.array(scanFilter, { maxLength: 2 }),
        async (ops, filters, scanOnly) => {
          await withStore(async (store, db) => {
            await apply(store, ops);
            // The premise of the time order: the rows by seq are in time order, so a prune deletes what it reaches.
            const times = db.$client.query<{ at: number }, []>("SELECT at FROM audit_events ORDER BY seq").all();
            expect(times.map((r) => r.at)).toEqual(times.map((r) => r.at).toSorted((a, b) => a - b));
            for (const group of GROUPS) {
              for (const f of [{}, ...filters]) {
                const scanned = spendFromScan(db, group, f);
                expect(spendFromRollup(db, group, f)).toEqual(scanned);
                expect(await store.spendBy(group, f)).toEqual(scanned);
              }
              for (const f of scanOnly) {
                expect(spendFromRollup(db, group, f)).toBeNull();
                expect(await store.spendBy(group, f)).toEqual(spendFromScan(db, group, f));
              }
            }
          });
        },
      ),
      // A failure's shrinking reopens a store per step: it stops in time to report the counterexample found so far.
      { numRuns: 80, interruptAfterTimeLimit: 40_000 },
    );
  }, 60_000);

  test("holds a row per key, label, vendor and day, and none for a group whose rows were all pruned", async () => {
    await withStore(async (store, db) => {
      const k = KEYS[0]!;
      // In seq order; the last is older than the one before it, and is the newest row all the same.
      let rows = [
        ...Array.from({ length: 5 }, (_, i) => keyAudit(k, `kbr_a${i}`, day0 + i * 1000, "allowed", USD)),
        keyAudit(k, "kbr_b", day0 + DAY, "cap_exhausted", 0),
        keyAudit(KEYS[4]!, "kbr_c", day0, "allowed", 2 * USD),
      ];
      for (const r of rows) await store.recordAudit(r);
      /** Retention's rule: the rows from the first by seq up to the first one not older than `before`, never the newest. */
      const prunable = (before: number) => {
        const kept = rows.findIndex((r) => r.at >= before);
        return Math.min(kept === -1 ? rows.length : kept, rows.length - 1);
      };
      const rollup = () =>
        db.$client
          .query("SELECT day, key_id, label, vendor, row_count, calls, allowed, denied, spend_micros FROM audit_days ORDER BY day, key_id")
          .all();
      const vk1Day1 = {
        day: "2026-11-20",
        key_id: "vk_1",
        label: k.label,
        vendor: "stripe",
        row_count: 5,
        calls: 5,
        allowed: 5,
        denied: 0,
        spend_micros: 5 * USD,
      };
      const vk5Day1 = {
        day: "2026-11-20",
        key_id: "vk_5",
        label: null,
        vendor: "stripe",
        row_count: 1,
        calls: 1,
        allowed: 1,
        denied: 0,
        spend_micros: 2 * USD,
      };
      const vk1Day2 = {
        day: "2026-11-21",
        key_id: "vk_1",
        label: k.label,
        vendor: "stripe",
        row_count: 1,
        calls: 1,
        allowed: 0,
        denied: 1,
        spend_micros: 0,
      };
      expect(rollup()).toEqual([vk1Day1, vk5Day1, vk1Day2]);
      // kbr_b (day 2) stops the prune: kbr_c stays though it is of day 1, and so does its group.
      let expected = prunable(day0 + DAY);
      expect(expected).toBe(5);
      expect(await store.pruneAudit(day0 + DAY, 100)).toBe(expected);
      rows = rows.slice(expected);
      expect(rollup()).toEqual([vk5Day1, vk1Day2]);
      // Every row is older now, but the newest (kbr_c) stays.
      expected = prunable(day0 + 2 * DAY);
      expect(expected).toBe(1);
      expect(await store.pruneAudit(day0 + 2 * DAY, 100)).toBe(expected);
      expect(rollup()).toEqual([vk5Day1]);
    });
  });

  test("the migration that adds it rolls up the audit rows already there", async () => {
    const dir = mkdtempSync(join(tmpdir(), "keybrake-rollup-migration-"));
    try {
      const path = join(dir, "keybrake.db");
      const all = embeddedMigrations();
      const before = all.findIndex((m) => m.tag.endsWith("_audit_days"));
      const old = new Database(path);
      applyMigrations(old, all.slice(0, before));
      // The rows as that version's table has them (the schema's columns, as the chain orders them and their values):
      // columns added by later migrations are left out.
      const present = new Set(
        old
          .query<{ name: string }, []>("SELECT name FROM pragma_table_info('audit_events')")
          .all()
          .map((c) => c.name),
      );
      const kept = CHAIN_COLUMN_NAMES.map((name) => present.has(name));
      const columns = CHAIN_COLUMN_NAMES.filter((_, i) => kept[i]);
      expect(columns).toContain("cost_micros");
      const insert = old.prepare(`INSERT INTO audit_events (${columns.join(", ")}) VALUES (${columns.map(() => "?").join(", ")})`);
      const rows = fc.sample(
        fc.record({
          key: fc.integer({ min: 0, max: KEYS.length }),
          at,
          decision: fc.constantFrom("allowed", ...DENIALS, ...HOLD_EVENT_DECISIONS, "invalid_key"),
          cost: fc.integer({ min: -USD, max: 5 * USD }),
          requests: fc.integer({ min: 1, max: 9 }),
        }),
        { numRuns: 2000, seed: 19 },
      );
      old.transaction(() => {
        for (const [i, r] of rows.entries()) {
          const k = KEYS[r.key];
          const row = k
            ? keyAudit(k, `kbr_${i}`, r.at, r.decision, r.cost)
            : auditRow({
                id: `kbr_${i}`,
                at: r.at,
                vendor: "stripe",
                method: "POST",
                path: "/",
                decision: r.decision,
                requests: r.requests,
              });
          insert.run(...chainValues(row).filter((_, i) => kept[i]));
        }
      })();
      old.close();
      const db = openDatabase(path);
      try {
        for (const group of GROUPS) {
          for (const f of [{}, { since: day0 + DAY }, { labelPrefix: "airflow-billing/", until: day0 + 3 * DAY }, { vendor: "stripe" }]) {
            expect(spendFromRollup(db, group, f)).toEqual(spendFromScan(db, group, f));
          }
        }
        expect(spendFromScan(db, "day", {}).reduce((n, r) => n + r.calls + r.allowed, 0)).toBeGreaterThan(2000);
      } finally {
        db.$client.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the spend view and retention read what they answer, not the whole audit or ledger (both only grow)", async () => {
    await withStore(async (_store, db) => {
      const client = db.$client;
      const plan = (query: string) =>
        client
          .query<{ detail: string }, []>(`EXPLAIN QUERY PLAN ${query}`)
          .all()
          .map((r) => r.detail)
          .join(" | ");
      /** What `run` returns, and every statement it prepares on the connection, with its SQL. */
      const preparedBy = <T>(run: () => T) => {
        const statements: { sql: string; statement: Statement }[] = [];
        const { prepare, query } = client;
        const seen =
          (f: unknown) =>
          (sql: string, ...rest: unknown[]) => {
            const statement = (f as (...a: unknown[]) => Statement).call(client, sql, ...rest);
            statements.push({ sql, statement });
            return statement;
          };
        client.prepare = seen(prepare) as typeof prepare;
        client.query = seen(query) as typeof query;
        try {
          return { result: run(), statements };
        } finally {
          client.prepare = prepare;
          client.query = query;
        }
      };
      /** The plans of every statement `run` prepares on the connection. */
      const plansOf = (run: () => unknown) =>
        preparedBy(run)
          .statements.map((s) => s.sql)
          .filter((q) => /^\s*select/i.test(q))
          .map(plan);
      const unfiltered = plansOf(() => spendFromRollup(db, "label", {}));
      expect(unfiltered).toHaveLength(2);
      for (const p of unfiltered) expect(p).not.toContain("audit_events");
      expect(unfiltered.join()).toContain("ledger_entries_open");
      expect(plansOf(() => spendFromRollup(db, "day", { keyId: "vk_1" })).join()).toContain("USING INDEX audit_days_group (key_id=?)");
      // The store prepares its statements once, when built: retention's plans are those of the ones a prune runs.
      const { result: audit, statements } = preparedBy(() => auditQueries(db, new GroupCommit(client)));
      for (let i = 0; i < 5; i++) await audit.recordAudit(keyAudit(KEYS[0]!, `kbr_p${i}`, day0 + i, "allowed", USD));
      const ran: string[] = [];
      const unwatch = statements.map(({ sql, statement }) => {
        const methods = (["run", "get", "all", "values"] as const).map((m) => [m, statement[m]] as const);
        for (const [m, f] of methods) {
          statement[m] = ((...args: never[]) => {
            ran.push(sql);
            return (f as (...a: never[]) => unknown).apply(statement, args);
          }) as never;
        }
        return () => {
          for (const [m, f] of methods) statement[m] = f as never;
        };
      });
      try {
        expect(await audit.pruneAudit(day0 + 3, 100)).toBe(3);
      } finally {
        for (const u of unwatch) u();
      }
      // The newest row, then the oldest batch, each read from one end of the table in seq (rowid) order with no sort,
      // so the LIMIT ends the scan after its rows; then the rows up to the cut, deleted by seq.
      expect(ran.map((q) => [q, plan(q)]).filter(([, p]) => p!.includes("audit_events"))).toEqual([
        [expect.stringMatching(/ FROM audit_events ORDER BY seq DESC LIMIT 1$/), "SCAN audit_events"],
        [expect.stringMatching(/ FROM audit_events +ORDER BY seq LIMIT \?$/), "SCAN audit_events"],
        ["DELETE FROM audit_events WHERE seq <= ?", "SEARCH audit_events USING INTEGER PRIMARY KEY (rowid<?)"],
      ]);
      // A denial's decision is found in the denials' index, not by reading every row from the newest.
      expect(plansOf(() => audit.listAudit({ decision: "key_revoked", limit: 50 }))[0]).toContain(
        "USING INDEX audit_events_denied (decision=?)",
      );
      expect(plansOf(() => spendFromScan(db, "key", { decision: "key_revoked" }))[0]).toContain(
        "USING INDEX audit_events_denied (decision=?)",
      );
      // What the rollup cannot answer (the last hour) reads the hour's rows by time, not every row in label order.
      for (const group of ["label", "key"] as const) {
        expect(plansOf(() => spendFromScan(db, group, { since: Date.now() - 3_600_000 }))[0]).toContain(
          "SEARCH audit_events USING INDEX audit_events_at (at>?)",
        );
      }
    });
  });

  test("groups are ordered as SQLite orders text: by UTF-8 bytes, NULL first", () => {
    const db = new Database(":memory:");
    const texts = fc.sample(
      fc.oneof(fc.string({ unit: "grapheme" }), fc.string({ unit: "binary" }), fc.constantFrom("a", "A", "\uFF21", "\u{1F680}", "")),
      {
        numRuns: 200,
        seed: 19,
      },
    );
    const all = [null, ...new Set(texts)];
    db.run("CREATE TABLE t (x TEXT)");
    const insert = db.prepare("INSERT INTO t VALUES (?)");
    for (const x of all) insert.run(x);
    const sqlite = db
      .query<{ x: string | null }, []>("SELECT x FROM t ORDER BY x")
      .all()
      .map((r) => r.x);
    expect(all.toSorted(binary)).toEqual(sqlite);
  });
});

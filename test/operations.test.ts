import { Database } from "bun:sqlite";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { parse } from "csv-parse/sync";
import { join } from "node:path";
import { csvField, exportStream } from "../src/audit/service";
import { startMaintenance } from "../src/ops/maintenance";
import type { Store } from "../src/store/index";
import { testClock, type TestClock } from "./helpers/clock";
import { startKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, type MockStripe } from "./helpers/mock-stripe";
import { cliInProcess } from "./helpers/cli";
import { CONFIGURED_SECRETS, rawBytes, secretsIn } from "./helpers/secrets";

type Json = Record<string, any>;
let stripe: MockStripe;
// Each test has a Keybrake and a clock of its own, the clock starting one minute before a UTC midnight: no test
// moves another's time or counts another's rows.
let clock: TestClock;
let kb: Harness;

beforeAll(async () => {
  stripe = await mockStripe().start();
});
afterAll(() => stripe.stop());
beforeEach(async () => {
  stripe.reset();
  clock = testClock(Date.UTC(2026, 10, 26, 23, 59, 0));
  kb = await startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url }, { now: clock.now });
});
afterEach(() => kb.stop());

const charge = (vaultKey: string, cents: number, path = "/v1/payment_intents") =>
  fetch(kb.url + path, {
    method: "POST",
    headers: { authorization: `Bearer ${vaultKey}`, "content-type": "application/x-www-form-urlencoded" },
    body: `amount=${cents}&currency=usd`,
  });
const stripeKey = (label: string, extra: Json = {}) =>
  kb.issueKey({
    vendor: "stripe",
    total_usd_cap: 10_000,
    allowed_endpoints: ["POST /v1/payment_intents"],
    agent_run_label: label,
    expires_in: "2d",
    ...extra,
  });
const ledgerTotal = (where = "1=1") =>
  kb.readDb((db) => db.query<{ t: number }, []>(`SELECT coalesce(sum(cost_micros), 0) AS t FROM ledger_entries WHERE ${where}`).get()!.t);

describe("per-run spend views", () => {
  test("spend per label for three runs equals the known charges, and agrees with the ledger to the micro-dollar", async () => {
    const runs = { "airflow-billing/run_1": [2900, 2900, 1234], "airflow-billing/run_2": [99_999], "airflow-billing/run_3": [1, 2, 3, 5] };
    for (const [label, amounts] of Object.entries(runs)) {
      const key = await stripeKey(label);
      for (const cents of amounts) expect((await charge(key.vault_key, cents)).status).toBe(200);
      await charge(key.vault_key, 1, "/v1/refunds"); // denied: not allowed, counted, costs nothing
    }
    const res = (await (await kb.admin("/audit/spend?group_by=label&label_prefix=airflow-billing/")).json()) as Json;
    // The biggest spender first.
    expect(res.data).toEqual([
      { group: "airflow-billing/run_2", calls: 2, allowed: 1, denied: 1, spend_usd: 999.99, ambiguous_usd: 0 },
      { group: "airflow-billing/run_1", calls: 4, allowed: 3, denied: 1, spend_usd: 70.34, ambiguous_usd: 0 },
      { group: "airflow-billing/run_3", calls: 5, allowed: 4, denied: 1, spend_usd: 0.11, ambiguous_usd: 0 },
    ]);
    const total = res.data.reduce((sum: number, r: Json) => sum + Math.round(r.spend_usd * 1e6), 0);
    expect(total).toBe(await ledgerTotal("key_id IN (SELECT id FROM vault_keys WHERE label LIKE 'airflow-billing/%')"));
  });

  test("group_by=day splits at UTC midnight; key and vendor groupings work", async () => {
    const key = await stripeKey("day-split/run");
    clock.set(Date.UTC(2026, 10, 26, 23, 59, 30));
    await charge(key.vault_key, 1000);
    clock.set(Date.UTC(2026, 10, 27, 0, 0, 30));
    await charge(key.vault_key, 2000);
    await charge(key.vault_key, 500);
    const days = (await (await kb.admin(`/audit/spend?group_by=day&key_id=${key.id}`)).json()) as Json;
    expect(days.data).toEqual([
      { group: "2026-11-26", calls: 1, allowed: 1, denied: 0, spend_usd: 10, ambiguous_usd: 0 },
      { group: "2026-11-27", calls: 2, allowed: 2, denied: 0, spend_usd: 25, ambiguous_usd: 0 },
    ]);
    const byKey = (await (await kb.admin(`/audit/spend?group_by=key&key_id=${key.id}`)).json()) as Json;
    expect(byKey.data).toEqual([{ group: key.id, calls: 3, allowed: 3, denied: 0, spend_usd: 35, ambiguous_usd: 0 }]);
    const byVendor = (await (await kb.admin("/audit/spend?group_by=vendor&vendor=stripe")).json()) as Json;
    expect(byVendor.data[0].group).toBe("stripe");
    expect(Math.round(byVendor.data[0].spend_usd * 1e6)).toBe(await ledgerTotal());
    const bad = await kb.admin("/audit/spend?group_by=colour");
    expect(bad.status).toBe(400);
  });
});

describe("export", () => {
  const TRICKY = 'export/run, with "quotes"\nand a newline';
  const PAGE_ROWS = 100;
  const ROWS = 2_050; // 21 pages

  /** Audit rows of key vk_export written straight into the database; every 100th has a label a CSV must quote. */
  function seedAuditRows(count: number) {
    const db = new Database(kb.dbPath);
    const insert =
      db.prepare(`INSERT INTO audit_events (id, at, key_id, label, vendor, mode, method, path, status, decision, hold_micros, cost_micros, cost_source, currency, amount_minor, vendor_request_id, upstream_ms, overhead_ms, client_ip)
      VALUES (?1, ?2, 'vk_export', ?3, 'stripe', 'live', 'POST', '/v1/payment_intents', 200, 'allowed', 100, 100, 'request', 'usd', 10, ?4, 1.5, 0.1, '127.0.0.1')`);
    db.transaction(() => {
      for (let i = 0; i < count; i++) insert.run(`kbr_export_${i}`, clock.now() + i, i % 100 === 0 ? TRICKY : "export/run", `req_${i}`);
    })();
    db.close();
  }

  /** The harness's store as an export sees it (audit pages only), counting the pages read so far. */
  function countingStore() {
    let pagesRead = 0;
    const listAudit: Store["listAudit"] = (filter) => {
      pagesRead++;
      return kb.store.listAudit(filter);
    };
    return { store: { listAudit } as Pick<Store, "listAudit"> as Store, pagesRead: () => pagesRead };
  }

  for (const format of ["ndjson", "csv"] as const) {
    test(`${format}: one chunk per page, the first out before the later pages are read; the route streams the same rows, which parse back`, async () => {
      seedAuditRows(ROWS);
      const counted = countingStore();
      const reader = exportStream(counted.store, { key_id: "vk_export" }, format, PAGE_ROWS).getReader();
      const decoder = new TextDecoder();
      let text = "";
      let chunks = 0;
      for (let next = await reader.read(); !next.done; next = await reader.read()) {
        if (chunks++ === 0) expect(counted.pagesRead()).toBeLessThanOrEqual(2); // of 21
        text += decoder.decode(next.value, { stream: true });
      }
      const pages = Math.ceil(ROWS / PAGE_ROWS);
      expect(counted.pagesRead()).toBe(pages);
      expect(chunks).toBe(format === "csv" ? pages + 1 : pages); // the CSV header is a chunk of its own

      const res = await kb.admin(`/audit/export?format=${format}&key_id=vk_export`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-length")).toBeNull(); // streamed, not buffered
      expect(await res.text()).toBe(text); // the route's page size changes the chunks, never the bytes

      const rows =
        format === "ndjson"
          ? text
              .trimEnd()
              .split("\n")
              .map((l) => JSON.parse(l) as Json)
          : parseCsv(text);
      expect(rows).toHaveLength(ROWS);
      expect(new Set(rows.map((r) => r.id)).size).toBe(ROWS);
      const tricky = rows.find((r) => r.id === "kbr_export_1000")!;
      expect(tricky.label).toBe(TRICKY);
      expect(String(tricky.cost_usd)).toBe("0.0001");
      expect(String(tricky.vendor_request_id)).toBe("req_1000");
    });
  }

  test("CSV quoting: commas, quotes, CR and LF", () => {
    expect(csvField("plain")).toBe("plain");
    expect(csvField("a,b")).toBe('"a,b"');
    expect(csvField('say "hi"')).toBe('"say ""hi"""');
    expect(csvField("line\nbreak")).toBe('"line\nbreak"');
    expect(csvField(null)).toBe("");
  });
});

/** CSV read by csv-parse: RFC 4180, strict (every record has the header's columns), rows keyed by the header. */
const parseCsv = (text: string) => parse(text, { columns: true }) as Json[];

describe("per-key rate limit", () => {
  test("the 61st request in a minute is 429 rate_limited with Retry-After, no cap hit, nothing held or forwarded", async () => {
    const key = await stripeKey("rate/run", { max_requests_per_minute: 60 });
    for (let i = 0; i < 60; i++) expect((await charge(key.vault_key, 1)).status).toBe(200);
    const res = await charge(key.vault_key, 1);
    expect(res.status).toBe(429);
    expect(res.headers.get("x-keybrake-error")).toBe("rate_limited");
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(res.headers.get("x-keybrake-cap-hit")).toBeNull();
    expect(stripe.received).toHaveLength(60);
    expect(await ledgerTotal(`key_id = '${key.id}'`)).toBe(60 * 10_000);
    clock.advance(61_000);
    expect((await charge(key.vault_key, 1)).status).toBe(200);
  });
});

describe("metrics", () => {
  test("/metrics is Prometheus text, moves with traffic, and needs the admin token", async () => {
    expect((await fetch(`${kb.url}/metrics`)).status).toBe(401);
    const scrape = async () => await (await kb.admin("/metrics")).text();
    const value = (text: string, series: string) =>
      Number(new RegExp(`^${series.replace(/[{}"\\[\].+]/g, "\\$&")} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
    const before = await scrape();
    const key = await stripeKey("metrics/run", { total_usd_cap: 30 });
    await charge(key.vault_key, 2900);
    await charge(key.vault_key, 2900);
    const after = await scrape();
    for (const line of after.split("\n").filter(Boolean)) {
      expect(line).toMatch(
        /^(# (HELP|TYPE) [a-z_]+ .+|[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+|[a-z_]+(\{.*\})? \+?Inf)$/,
      );
    }
    expect(
      value(after, 'keybrake_requests_total{vendor="stripe",decision="allowed"}') -
        value(before, 'keybrake_requests_total{vendor="stripe",decision="allowed"}'),
    ).toBe(1);
    expect(value(after, 'keybrake_cap_hits_total{vendor="stripe"}') - value(before, 'keybrake_cap_hits_total{vendor="stripe"}')).toBe(1);
    expect(
      value(after, 'keybrake_spend_usd_total{vendor="stripe"}') - value(before, 'keybrake_spend_usd_total{vendor="stripe"}'),
    ).toBeCloseTo(29, 6);
    expect(value(after, "keybrake_overhead_duration_seconds_count")).toBeGreaterThan(
      value(before, "keybrake_overhead_duration_seconds_count"),
    );
    expect(after).toContain('keybrake_upstream_duration_seconds_bucket{vendor="stripe",le="+Inf"}');
    expect(after).toMatch(/^keybrake_open_holds 0$/m);
  });

  test("KEYBRAKE_METRICS_PUBLIC=1 serves /metrics without the token", async () => {
    const open = await startKeybrake({ KEYBRAKE_METRICS_PUBLIC: "1" });
    try {
      const res = await fetch(`${open.url}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toContain("text/plain");
    } finally {
      await open.stop();
    }
  });
});

describe("retention", () => {
  test("audit and idempotency rows past retention are pruned in batches; newer rows and the ledger stay", async () => {
    const clockNow = Date.UTC(2026, 10, 27, 12);
    const local = await startKeybrake(
      { KEYBRAKE_STRIPE_BASE_URL: stripe.url, KEYBRAKE_AUDIT_RETENTION_DAYS: "90" },
      { now: () => clockNow },
    );
    try {
      const db = new Database(local.dbPath);
      const day = 86_400_000;
      const insert = db.prepare(
        `INSERT INTO audit_events (id, at, method, path, status, decision) VALUES (?, ?, 'POST', '/v1/x', 200, 'allowed')`,
      );
      db.transaction(() => {
        for (let i = 0; i < 1200; i++) insert.run(`old_${i}`, clockNow - 91 * day - i);
        for (let i = 0; i < 10; i++) insert.run(`new_${i}`, clockNow - 89 * day);
      })();
      db.run(
        `INSERT INTO ledger_entries (id, key_id, day, hold_micros, cost_micros, state, created_at) VALUES ('hold_old', 'vk_x', '2026-01-01', 5, 5, 'settled', ?)`,
        [clockNow - 400 * day],
      );
      db.run(
        `INSERT INTO idempotency_entries (key_id, idempotency_key, fingerprint, state, day, created_at, expires_at) VALUES ('vk_x', 'old', 'f', 'completed', '2026-01-01', 0, ?), ('vk_x', 'fresh', 'f', 'completed', '2026-01-01', 0, ?)`,
        [clockNow - 1, clockNow + day],
      );
      db.close();

      // Its timer stopped at once: a minute on, it would prune a store this test has closed.
      const maintenance = startMaintenance(local.store, 90, () => clockNow);
      maintenance.stop();
      await maintenance.tick();
      const check = new Database(local.dbPath, { readonly: true });
      expect(check.query<{ n: number }, []>("SELECT count(*) AS n FROM audit_events WHERE id LIKE 'old_%'").get()!.n).toBe(0);
      expect(check.query<{ n: number }, []>("SELECT count(*) AS n FROM audit_events WHERE id LIKE 'new_%'").get()!.n).toBe(10);
      expect(check.query<{ n: number }, []>("SELECT count(*) AS n FROM ledger_entries WHERE id = 'hold_old'").get()!.n).toBe(1);
      expect(check.query<{ k: string }, []>("SELECT idempotency_key AS k FROM idempotency_entries").all()).toEqual([{ k: "fresh" }]);
      check.close();
    } finally {
      await local.stop();
    }
  });
});

describe("CLI on the database the server is using", () => {
  const cli = (...args: string[]) => cliInProcess(args, { KEYBRAKE_DB: kb.dbPath });

  test("keybrake audit (table, ndjson, csv) and keybrake spend --group-by label", async () => {
    const key = await stripeKey("cli-ops/run_1");
    await charge(key.vault_key, 4200);
    await kb.readDb(() => null); // the call's settlement is committed before the CLI reads
    // Read-only commands on one database: run side by side.
    const [table, ndjson, csv, spend, badGroup] = await Promise.all([
      cli("audit", "--label-prefix", "cli-ops/"),
      cli("audit", "--label-prefix", "cli-ops/", "--format", "ndjson"),
      cli("audit", "--label-prefix", "cli-ops/", "--format", "csv"),
      cli("spend", "--group-by", "label", "--label-prefix", "cli-ops/", "--json"),
      cli("spend", "--group-by", "week"),
    ]);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain("cli-ops/run_1");
    const ndjsonRows = ndjson.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Json);
    expect(ndjsonRows).toHaveLength(1);
    expect(ndjsonRows[0]).toMatchObject({ label: "cli-ops/run_1", cost_usd: 42 });
    expect(parseCsv(csv.stdout)).toEqual([expect.objectContaining({ label: "cli-ops/run_1", cost_usd: "42" })]);
    expect(JSON.parse(spend.stdout)).toEqual([
      { group: "cli-ops/run_1", calls: 1, allowed: 1, denied: 0, spend_usd: 42, ambiguous_usd: 0 },
    ]);
    expect(badGroup.code).toBe(2);
  });

  test("keybrake backup during load: the copy opens, passes integrity_check and has every row committed before it", async () => {
    const key = await stripeKey("backup/run");
    for (let i = 0; i < 20; i++) await charge(key.vault_key, 100);
    const committed = new Database(kb.dbPath, { readonly: true });
    const before = committed
      .query<{ id: string }, []>("SELECT id FROM audit_events")
      .all()
      .map((r) => r.id);
    committed.close();

    let loading = true;
    const load = (async () => {
      while (loading) await charge(key.vault_key, 100);
    })();
    const file = join(kb.dir, `backup-${Date.now()}.db`);
    const result = await cli("backup", file);
    loading = false;
    await load;
    expect(result.code).toBe(0);
    const copy = new Database(file, { readonly: true });
    expect(copy.query<{ integrity_check: string }, []>("PRAGMA integrity_check").get()!.integrity_check).toBe("ok");
    const copied = new Set(
      copy
        .query<{ id: string }, []>("SELECT id FROM audit_events")
        .all()
        .map((r) => r.id),
    );
    copy.close();
    for (const id of before) expect(copied.has(id)).toBe(true);
    expect((await cli("backup", file)).code).toBe(2); // never overwrites
  });

  test("a backup carries the keys and their calls but no secret: not the admin token, a vendor secret or a vault key", async () => {
    const key = await stripeKey("backup-secrets/run");
    expect((await charge(key.vault_key, 100)).status).toBe(200);
    const file = join(kb.dir, "backup-secrets.db");
    expect((await cli("backup", file)).code).toBe(0);
    const bytes = rawBytes(file);
    expect(bytes).toContain("backup-secrets/run"); // the scan reads the bytes the key and its call were copied to
    expect(secretsIn(bytes, [...CONFIGURED_SECRETS, key.vault_key])).toEqual([]);
  });
});

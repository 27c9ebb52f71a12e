/**
 * The growth bench (issue 19): does Keybrake stay flat as the ledger grows? A SQLite ledger is seeded through the
 * store (openStore and its methods, as the proxy writes: a hold and its settlement per allowed call, an audit
 * row per denial) with 0, 1 M and 10 M audit rows and 100 k keys; then, for each, the built dist/keybrake on
 * that file: start-up (spawn to the "listening on" line, and to the first 200 from /healthz), the hot path (a
 * priced POST through the whole pipeline to the local upstream, wrk at c=1 with post.lua, the sizes taken in
 * turn for several rounds) and `GET /audit/spend?group_by=label` (the rollup), with the scan it replaced beside it.
 *
 * Seeded files are kept in BENCH_GROWTH_CACHE (default: <tmp>/keybrake-growth-cache), named by the seed's shape
 * and version, migrated when the schema has moved on, and copied for each run: the server writes to its copy. `bun run bench` calls
 * runGrowth at its end; alone: `bun bench/growth.ts` (builds dist/keybrake, starts its own upstream).
 *
 * BENCH_GROWTH_ROWS (default "0,1000000,10000000"), BENCH_GROWTH_KEYS (100000), BENCH_GROWTH_SECONDS (wrk seconds
 * per round, 5), BENCH_GROWTH_ROUNDS (3), BENCH_GROWTH_STARTS (start-ups per size, 7), BENCH_GROWTH_BATCH (rows
 * per group commit while seeding, 8192), BENCH_GROWTH_BIN (the binary measured, dist/keybrake).
 *
 * Seeding is bound by the store's own write path (a hold and a settlement per allowed call, ~18 statements): on a
 * 2-vCPU VM ~10 k audit rows/s, so 10 M rows take ~16 min when the machine is otherwise idle; paid once, cached.
 */
import { Database } from "bun:sqlite";
import {
  closeSync,
  copyFileSync,
  existsSync,
  fsyncSync,
  openSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { auditAppender } from "../src/store/audit-append";
import { type AuditRow, auditRow, migrateDatabase, openStore, type SqliteStore } from "../src/store/index";
import { embeddedMigrations } from "../src/store/migrate";
import { freePort } from "./processes";
import { growthTargets, targetsTable } from "./targets";

const root = join(import.meta.dir, "..");
const BIN = process.env.BENCH_GROWTH_BIN ?? join(root, "dist/keybrake");
const ADMIN_TOKEN = "bench-growth-admin-token-0123456789abcdefghij";
const DAY = 86_400_000;
/** The seeded days end yesterday, well inside the default 90-day retention: nothing is pruned while measuring. */
const SEED_DAYS = 60;
/** Bump when the seed's content changes: cached files of another version are not reused. */
const SEED_VERSION = 1;
/** The spend view's top N, as the dashboard's top runs ask for it (`limit`). */
const SPEND_TOP = 20;
/** Rows per group commit while seeding: one transaction, a savepoint per store call. */
const BATCH = Number(process.env.BENCH_GROWTH_BATCH ?? 8192);

const env = (name: string, fallback: string) => process.env[name] ?? fallback;

export interface GrowthOptions {
  /** Audit rows per ledger (0: the empty ledger every other is compared with). */
  sizes?: number[];
  keys?: number;
  /** The bench upstream's port (bench/upstream.ts); one is started when absent. */
  upstreamPort?: number;
  workDir?: string;
  cacheDir?: string;
  seconds?: number;
  rounds?: number;
  starts?: number;
  log?: (line: string) => void;
}

export interface Percentiles {
  p50_us: number;
  p99_us: number;
}

export interface GrowthRow {
  audit_rows: number;
  keys: number;
  ledger_entries: number;
  db_bytes: number;
  /** Seconds to seed it (this run, or the run that cached it). */
  seed_s: number;
  seed_cached: boolean;
  /** Spawn to the "listening on" line, and to the first 200 from /healthz: medians of `starts`. */
  startup_listening_ms: number;
  startup_healthz_ms: number;
  /** wrk c=1: the medians over the rounds of each round's p50 and p99, and each round's. */
  hot: Percentiles & { rounds: Percentiles[]; requests: number; errors: number };
  /** GET /audit/spend?group_by=label, from the rollup: median ms, groups and body bytes. */
  spend_ms: number;
  spend_groups: number;
  spend_bytes: number;
  /** Its top 20 (`&limit=20`, the biggest spenders), as a dashboard asks for them: median ms. */
  spend_top_ms: number;
  /** The same view made to scan every audit row (since=1 ms after the epoch: not a whole day), as before the rollup. */
  spend_scan_ms: number;
  /** The server's resident memory after the measurements. */
  rss_mb: number;
}

export interface GrowthResult {
  method: string;
  rows: GrowthRow[];
  /** The rollup trigger's cost per audit insert, measured on the largest ledger. */
  trigger: TriggerCost | null;
}

// ---------------------------------------------------------------------------------------------------------------
// Seeding

const B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/** A random id in the proxy's alphabet and length; Math.random is enough for a seed and 20x faster than the CSPRNG. */
function rid(length = 22): string {
  let s = "";
  for (let i = 0; i < length; i++) s += B62[(Math.random() * 62) | 0];
  return s;
}
/**
 * A call's id as the proxy makes it (src/proxy/ids.ts): 8 base62 characters of the time in ms, then 14 random
 * ones. Ids of one moment sort together, so the id indexes take the seed's rows at their end, as the server's.
 */
function callIdAt(prefix: string, at: number): string {
  let time = "";
  for (let i = 0, t = at; i < 8; i++, t = Math.floor(t / 62)) time = B62[t % 62] + time;
  return `${prefix}${time}${rid(14)}`;
}
const pick = <T>(list: readonly T[]): T => list[(Math.random() * list.length) | 0]!;

const PIPELINES = [
  "airflow-billing",
  "airflow-invoices",
  "dagster-payouts",
  "cron-dunning",
  "celery-notify",
  "agent-support",
  "agent-sales-outreach",
  "etl-receipts",
];
const VENDORS = {
  stripe: { path: "/v1/payment_intents", micros: () => (100 + ((Math.random() * 49_900) | 0)) * 10_000 },
  twilio: { path: "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json", micros: () => 7_900 },
  resend: { path: "/emails", micros: () => 400 },
} as const;
type VendorName = keyof typeof VENDORS;
const VENDOR_NAMES = Object.keys(VENDORS) as VendorName[];

interface SeedKey {
  id: string;
  label: string;
  vendor: VendorName;
}

/** Key i: a run's key, its label the run's (half the runs have two keys, of two vendors). */
function seedKey(i: number): SeedKey {
  const run = Math.floor((i * 2) / 3);
  return { id: `vk_${rid(22)}`, label: `${PIPELINES[run % PIPELINES.length]}/run-${run}`, vendor: VENDOR_NAMES[i % 3]! };
}

export interface SeedStats {
  seconds: number;
  auditRows: number;
  ledgerEntries: number;
  keys: number;
}

/**
 * A ledger of `rows` audit rows and `keys` keys, written through the store as the proxy writes it: each key's
 * calls fall on the day it was minted (a run), in time order across keys. About 94% of rows are allowed calls
 * (a hold, then its settlement: 97% settled at the price, 3% released, 0.05% left ambiguous), 5% denials of a
 * key (cap, allowlist, rate) and 1% unauthenticated denials (no key, a minute's requests counted together).
 */
export async function seedLedger(path: string, rows: number, keys: number, log: (line: string) => void = () => {}): Promise<SeedStats> {
  const started = performance.now();
  const { store, client } = openSeedStore(path);
  const today = Math.floor(Date.now() / DAY) * DAY;
  const firstDay = today - SEED_DAYS * DAY;
  const all: SeedKey[] = [];
  const byDay: SeedKey[][] = Array.from({ length: SEED_DAYS }, () => []);
  try {
    client.run("BEGIN IMMEDIATE");
    for (let i = 0; i < keys; i++) {
      const key = seedKey(i);
      const d = Math.floor((i * SEED_DAYS) / keys);
      const createdAt = firstDay + d * DAY;
      await store.insertKey({
        id: key.id,
        keyHash: rid(64),
        keyHint: `kb_live_…${rid(4)}`,
        vendor: key.vendor,
        mode: "live",
        mintedBy: "admin",
        label: key.label,
        dailyCapMicros: 1e12,
        totalCapMicros: null,
        allowedEndpoints: [`POST ${VENDORS[key.vendor].path}`],
        maxRequestsPerMinute: null,
        requireIdempotencyKey: false,
        metadata: { team: PIPELINES[i % PIPELINES.length]! },
        createdAt,
        expiresAt: createdAt + 7 * DAY,
      });
      all.push(key);
      byDay[d]!.push(key);
    }
    client.run("COMMIT");
    log(`  ${keys} keys in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    let written = 0;
    let entries = 0;
    let lastLog = performance.now();
    for (let d = 0; d < SEED_DAYS && rows > 0; d++) {
      const dayRows = Math.floor(((d + 1) * rows) / SEED_DAYS) - Math.floor((d * rows) / SEED_DAYS);
      const dayStart = firstDay + d * DAY;
      const dayKeys = byDay[d]!.length > 0 ? byDay[d]! : all;
      const times = Array.from({ length: dayRows }, () => dayStart + Math.floor(Math.random() * DAY)).sort((a, b) => a - b);
      for (let i = 0; i < dayRows; i += BATCH) {
        const writes: Promise<unknown>[] = [];
        for (const at of times.slice(i, i + BATCH)) {
          const ledgerWrite = seedCall(store, pick(dayKeys), at);
          if (ledgerWrite.entry) entries++;
          writes.push(...ledgerWrite.writes);
        }
        // Every store call above was submitted in this turn: one group commit writes them all.
        await Promise.all(writes);
        written += Math.min(BATCH, dayRows - i);
        if (performance.now() - lastLog > 30_000) {
          lastLog = performance.now();
          const s = (lastLog - started) / 1000;
          log(`  ${written} / ${rows} audit rows, ${s.toFixed(0)} s (${(written / s).toFixed(0)} rows/s)`);
        }
      }
    }
    return { seconds: (performance.now() - started) / 1000, auditRows: written, ledgerEntries: entries, keys };
  } finally {
    await store.close();
  }
}

/**
 * The store for seeding, and its connection. The store sets its own pragmas and keeps its connection to itself;
 * the seed needs two things of it: a 1 GiB page cache (SQLite's default is 2 MiB), so a batch's pages stay in
 * memory until its commit, and a transaction around the keys (the store has no batch insert, and each insertKey
 * would commit alone: ~0.3 ms apiece here). Only the seed does this; the server is left as it is.
 */
function openSeedStore(path: string): { store: SqliteStore; client: Database } {
  const run = Database.prototype.run;
  let client: Database | undefined;
  Database.prototype.run = function (this: Database, ...args: Parameters<Database["run"]>) {
    const result = run.apply(this, args);
    if (args[0] === "PRAGMA journal_mode = WAL") {
      client = this;
      run.call(this, "PRAGMA cache_size = -1048576");
    }
    return result;
  } as Database["run"];
  try {
    // Durability does not matter while seeding: commits skip the fsync.
    const store = openStore(path, { synchronous: "normal" });
    if (!client) throw new Error("the store opened no connection the seed could see");
    return { store, client };
  } finally {
    Database.prototype.run = run;
  }
}

/** One call's writes as the proxy makes them, submitted without waiting (the caller awaits the batch). */
function seedCall(store: SqliteStore, key: SeedKey, at: number): { writes: Promise<unknown>[]; entry: boolean } {
  const vendor = VENDORS[key.vendor];
  const requestId = callIdAt("kbr_", at);
  const r = Math.random();
  const base = {
    id: requestId,
    at,
    keyId: key.id,
    label: key.label,
    vendor: key.vendor,
    mode: "live",
    method: "POST",
    path: vendor.path,
    clientIp: `10.0.${(Math.random() * 4) | 0}.${(Math.random() * 250) | 0}`,
    overheadMs: 0.2 + Math.random() * 0.3,
  } satisfies Partial<AuditRow>;
  if (r < 0.01) {
    const unauthenticated = auditRow({
      ...base,
      keyId: null,
      label: null,
      mode: null,
      status: 401,
      decision: "invalid_key",
      requests: 1 + ((Math.random() * 20) | 0),
    });
    return { writes: [store.recordAudit(unauthenticated)], entry: false };
  }
  if (r < 0.06) {
    const decision = r < 0.03 ? "cap_exhausted" : r < 0.045 ? "endpoint_not_allowed" : "rate_limited";
    const status = decision === "cap_exhausted" ? 402 : decision === "rate_limited" ? 429 : 403;
    return { writes: [store.recordAudit(auditRow({ ...base, status, decision }))], entry: false };
  }
  const micros = vendor.micros();
  const holdId = callIdAt("hold_", at);
  const day = new Date(at).toISOString().slice(0, 10);
  const outcome = r < 0.9995 - 0.03 ? "settled" : r < 0.9995 ? "released" : "ambiguous";
  const hold = store.holdSpend({
    holdId,
    keyId: key.id,
    day,
    micros,
    ledger: true,
    reuseAmbiguous: key.vendor === "stripe",
    now: at,
    call: { requestId, method: "POST", path: vendor.path },
  });
  const upstreamMs = 80 + Math.random() * 400;
  const settle = store.settleCall({
    keyId: key.id,
    day,
    holdId,
    outcome,
    costMicros: outcome === "released" ? 0 : micros,
    now: at + Math.ceil(upstreamMs),
    audit: auditRow({
      ...base,
      status: outcome === "settled" ? 200 : outcome === "released" ? 402 : 504,
      decision: "allowed",
      holdMicros: micros,
      costSource: outcome === "ambiguous" ? "hold" : "request",
      currency: "usd",
      amountMinor: Math.round(micros / 10_000),
      vendorRequestId: outcome === "ambiguous" ? null : `req_${rid(14)}`,
      idempotencyKey: Math.random() < 0.3 ? `job-${rid(12)}` : null,
      upstreamMs,
    }),
  });
  return { writes: [hold, settle], entry: true };
}

/**
 * Whether a cached ledger can be brought to this build's schema: the migrations it has are the first of this
 * build's, unchanged (a migration edited since would leave it with another schema). Then it gets the rest.
 */
function migratable(file: string): boolean {
  const db = new Database(file, { readonly: true });
  let applied: string[];
  try {
    applied = db
      .query<{ hash: string }, []>(`SELECT hash FROM "__drizzle_migrations" ORDER BY id`)
      .all()
      .map((r) => r.hash);
  } finally {
    db.close();
  }
  const embedded = embeddedMigrations().map((m) => m.hash);
  if (applied.length > embedded.length || applied.some((hash, i) => hash !== embedded[i])) return false;
  migrateDatabase(file);
  return true;
}

/**
 * A seeded file from the cache, or seeded now into it; the stats say how long seeding took (when it was done). A
 * cached file written before newer migrations is migrated, as an upgrade would; one of another seed version, or
 * written under a migration since edited, is seeded again.
 */
export async function cachedLedger(cacheDir: string, rows: number, keys: number, log: (line: string) => void) {
  mkdirSync(cacheDir, { recursive: true });
  const stem = `ledger-${rows}-${keys}-`;
  const name = `${stem}v${SEED_VERSION}`;
  const file = join(cacheDir, `${name}.db`);
  const statsFile = join(cacheDir, `${name}.json`);
  if (existsSync(file) && existsSync(statsFile) && migratable(file)) {
    return { file, stats: (await Bun.file(statsFile).json()) as SeedStats, cached: true };
  }
  // Other versions' files of this size are stale: they would only fill the disk.
  for (const f of readdirSync(cacheDir)) if (f.startsWith(stem)) rmSync(join(cacheDir, f), { force: true });
  const partial = join(cacheDir, `${name}.partial.db`);
  log(`seeding ${rows} audit rows and ${keys} keys through the store ...`);
  const stats = await seedLedger(partial, rows, keys, log);
  log(`  seeded in ${stats.seconds.toFixed(1)} s (${(rows / stats.seconds).toFixed(0)} audit rows/s)`);
  renameSync(partial, file);
  for (const suffix of ["-wal", "-shm"]) rmSync(`${partial}${suffix}`, { force: true });
  await Bun.write(statsFile, JSON.stringify(stats));
  return { file, stats, cached: false };
}

// ---------------------------------------------------------------------------------------------------------------
// Measuring

export interface TriggerCost {
  /** µs per audit insert committed alone (as a call's settlement at c=1), with the rollup's triggers and without. */
  commit_with_us: number;
  commit_without_us: number;
  /** µs per audit insert inside one transaction (the CPU alone, as in a group commit of many calls). */
  batched_with_us: number;
  batched_without_us: number;
}

/**
 * What the rollup's trigger adds to an audit insert, on `file` (a seeded ledger, before the server opens it): the
 * same rows inserted with the triggers and without (dropped, then created again), alternately, medians of each.
 * synchronous=NORMAL, so no fsync hides the difference. The rows are deleted again as they were inserted, so the
 * ledger and its rollup are left as they were.
 */
export function measureTrigger(file: string, inserts = 2000, repeats = 5): TriggerCost {
  const db = new Database(file);
  try {
    db.run("PRAGMA synchronous = NORMAL");
    const triggers = db
      .query<{ name: string; sql: string }, []>("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events'")
      .all();
    const append = auditAppender(db);
    const remove = db.prepare("DELETE FROM audit_events WHERE id LIKE 'kbr_trigger_bench_%'");
    const at = Date.now();
    // A call of one key today, as the bench key's: after the first, each updates the key's rollup row for the day.
    const row = (i: number) =>
      auditRow({
        id: `kbr_trigger_bench_${i}`,
        at: at + i,
        keyId: "vk_trigger_bench",
        label: "bench-growth/trigger",
        vendor: "stripe",
        mode: "live",
        method: "POST",
        path: "/v1/payment_intents",
        status: 200,
        decision: "allowed",
        holdMicros: 1_000_000,
        costMicros: 1_000_000,
      });
    const timed = (batched: boolean) => {
      const t0 = performance.now();
      if (batched)
        db.transaction(() => {
          for (let i = 0; i < inserts; i++) append(row(i));
        })();
      else for (let i = 0; i < inserts; i++) append(row(i));
      const us = ((performance.now() - t0) * 1000) / inserts;
      remove.run();
      return us;
    };
    const samples = {
      commit_with_us: [] as number[],
      commit_without_us: [] as number[],
      batched_with_us: [] as number[],
      batched_without_us: [] as number[],
    };
    for (let r = 0; r < repeats; r++) {
      samples.commit_with_us.push(timed(false));
      samples.batched_with_us.push(timed(true));
      for (const t of triggers) db.run(`DROP TRIGGER ${t.name}`);
      try {
        samples.commit_without_us.push(timed(false));
        samples.batched_without_us.push(timed(true));
      } finally {
        for (const t of triggers) db.run(t.sql);
      }
    }
    return {
      commit_with_us: median(samples.commit_with_us),
      commit_without_us: median(samples.commit_without_us),
      batched_with_us: median(samples.batched_with_us),
      batched_without_us: median(samples.batched_without_us),
    };
  } finally {
    db.close();
  }
}

function serverEnv(db: string, port: number, upstreamPort: number): Record<string, string> {
  return {
    PATH: process.env.PATH ?? "",
    KEYBRAKE_PORT: String(port),
    KEYBRAKE_HOST: "127.0.0.1",
    KEYBRAKE_DB: db,
    KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
    KEYBRAKE_STRIPE_SECRET_KEY: "sk_live_bench",
    KEYBRAKE_STRIPE_BASE_URL: `http://127.0.0.1:${upstreamPort}`,
  };
}

const median = (values: number[]) => {
  const sorted = values.toSorted((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/** One start of dist/keybrake on `db`: ms from spawn to its "listening on" line and to its first 200 from /healthz. */
export async function startOnce(db: string, upstreamPort: number, bin = BIN): Promise<{ listening: number; healthz: number }> {
  const port = await freePort();
  const t0 = performance.now();
  const p = Bun.spawn([bin, "serve"], { env: serverEnv(db, port, upstreamPort), stdout: "ignore", stderr: "pipe" });
  let listening = Number.NaN;
  const lines = (async () => {
    const decoder = new TextDecoder();
    let text = "";
    for await (const chunk of p.stderr) {
      text += decoder.decode(chunk);
      if (Number.isNaN(listening) && text.includes("listening on")) listening = performance.now() - t0;
    }
    return text;
  })();
  let healthz = Number.NaN;
  for (let i = 0; i < 20_000 && Number.isNaN(healthz); i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).status === 200) healthz = performance.now() - t0;
    } catch {
      await Bun.sleep(1);
    }
  }
  p.kill("SIGTERM");
  await p.exited;
  const stderr = await lines;
  if (Number.isNaN(healthz) || Number.isNaN(listening)) throw new Error(`keybrake did not start on ${db}: ${stderr}`);
  return { listening, healthz };
}

interface Server {
  url: string;
  pid: number;
  key: string;
  stop(): Promise<void>;
}

export async function startServer(db: string, upstreamPort: number, bin = BIN): Promise<Server> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const p = Bun.spawn([bin, "serve"], { env: serverEnv(db, port, upstreamPort), stdout: "ignore", stderr: "ignore" });
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      if (i > 2000) throw new Error(`keybrake did not start on ${db}`);
      await Bun.sleep(5);
    }
  }
  const res = await fetch(`${url}/vault/keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({
      vendor: "stripe",
      daily_usd_cap: 10_000_000,
      allowed_endpoints: ["POST /v1/payment_intents"],
      expires_in: "1d",
      agent_run_label: "bench-growth/run",
    }),
  });
  const key = ((await res.json()) as { vault_key: string }).vault_key;
  return {
    url,
    pid: p.pid,
    key,
    stop: async () => {
      p.kill("SIGTERM");
      await p.exited;
    },
  };
}

interface WrkRound extends Percentiles {
  requests: number;
  errors: number;
}

export function wrkRound(url: string, key: string, seconds: number): WrkRound {
  const r = Bun.spawnSync(["wrk", "-t", "1", "-c", "1", "-d", `${seconds}s`, "-s", join(import.meta.dir, "post.lua"), url], {
    env: { ...process.env, BENCH_KEY: key },
    stdout: "pipe",
    stderr: "pipe",
  });
  const line = r.stdout
    .toString()
    .split("\n")
    .find((l) => l.startsWith("RESULT "));
  if (!line) throw new Error(`wrk printed no result: ${r.stdout} ${r.stderr}`);
  const result = JSON.parse(line.slice(7)) as { requests: number; errors: number; p50_us: number; p99_us: number };
  return { requests: result.requests, errors: result.errors, p50_us: result.p50_us, p99_us: result.p99_us };
}

/** ms for one GET of `path` with the admin token, the body read; and the body. */
export async function timedGet(url: string): Promise<{ ms: number; body: string }> {
  const t0 = performance.now();
  const res = await fetch(url, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  const body = await res.text();
  const ms = performance.now() - t0;
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${body.slice(0, 200)}`);
  return { ms, body };
}

function rssMb(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

function ensureWrk() {
  if (Bun.which("wrk")) return;
  const r = Bun.spawnSync(["sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk"]);
  if (r.exitCode !== 0) throw new Error("wrk is missing and apt-get could not install it");
}

export async function runGrowth(opts: GrowthOptions = {}): Promise<GrowthResult> {
  const log = opts.log ?? ((line: string) => console.error(line));
  const sizes = opts.sizes ?? env("BENCH_GROWTH_ROWS", "0,1000000,10000000").split(",").map(Number);
  const keys = opts.keys ?? Number(env("BENCH_GROWTH_KEYS", "100000"));
  const seconds = opts.seconds ?? Number(env("BENCH_GROWTH_SECONDS", "5"));
  const rounds = opts.rounds ?? Number(env("BENCH_GROWTH_ROUNDS", "3"));
  const starts = opts.starts ?? Number(env("BENCH_GROWTH_STARTS", "7"));
  const cacheDir = opts.cacheDir ?? env("BENCH_GROWTH_CACHE", join(tmpdir(), "keybrake-growth-cache"));
  const work = opts.workDir ?? mkdtempSync(join(tmpdir(), "keybrake-growth-"));
  ensureWrk();
  let upstream: ReturnType<typeof Bun.spawn> | undefined;
  let upstreamPort = opts.upstreamPort;
  if (upstreamPort === undefined) {
    upstreamPort = await freePort();
    upstream = Bun.spawn(["bun", join(import.meta.dir, "upstream.ts"), String(upstreamPort)], { stdout: "ignore", stderr: "inherit" });
    await Bun.sleep(300);
  }
  const servers: Server[] = [];
  try {
    // Each size's file: seeded (or from the cache), copied for this run, then started and stopped `starts` times.
    let trigger: TriggerCost | null = null;
    const ledgers: { rows: number; db: string; stats: SeedStats; cached: boolean; startups: { listening: number; healthz: number }[] }[] =
      [];
    for (const rows of sizes) {
      const db = join(work, `growth-${rows}.db`);
      let stats: SeedStats = { seconds: 0, auditRows: 0, ledgerEntries: 0, keys: 0 };
      let cached = false;
      if (rows > 0) {
        const seeded = await cachedLedger(cacheDir, rows, keys, log);
        if (seeded.cached) log(`using the cached ledger of ${rows} audit rows (seeded in ${seeded.stats.seconds.toFixed(0)} s)`);
        copyFileSync(seeded.file, db);
        // The copy's gigabytes on disk before anything is timed: their writeback would slow every fsync meanwhile.
        const fd = openSync(db, "r+");
        fsyncSync(fd);
        closeSync(fd);
        ({ stats, cached } = seeded);
      }
      if (rows === Math.max(...sizes) && rows > 0) {
        log(`the rollup trigger's cost per audit insert, on ${rows} audit rows ...`);
        trigger = measureTrigger(db);
      }
      log(`start-up on ${rows} audit rows x${starts} ...`);
      const startups: { listening: number; healthz: number }[] = [];
      for (let i = 0; i < starts; i++) startups.push(await startOnce(db, upstreamPort));
      ledgers.push({ rows, db, stats, cached, startups });
    }
    for (const l of ledgers) servers.push(await startServer(l.db, upstreamPort));
    // The hot path, the sizes in turn each round, so drift on the machine spreads over all of them.
    const hot: WrkRound[][] = ledgers.map(() => []);
    for (let round = 0; round < rounds; round++) {
      for (const [i, s] of servers.entries()) {
        log(`wrk c=1 round ${round + 1}/${rounds} on ${ledgers[i]!.rows} audit rows ...`);
        wrkRound(`${s.url}/v1/payment_intents`, s.key, 1);
        hot[i]!.push(wrkRound(`${s.url}/v1/payment_intents`, s.key, seconds));
      }
    }
    const rows: GrowthRow[] = [];
    for (const [i, l] of ledgers.entries()) {
      const s = servers[i]!;
      const spendUrl = `${s.url}/audit/spend?group_by=label`;
      await timedGet(spendUrl);
      const spend = [];
      for (let j = 0; j < 7; j++) spend.push(await timedGet(spendUrl));
      const scan: number[] = [];
      for (let j = 0; j < 3; j++) {
        scan.push((await timedGet(`${spendUrl}&since=1970-01-01T00:00:00.001Z`)).ms);
        if (scan[0]! > 3000) break;
      }
      const top: number[] = [];
      for (let j = 0; j < 7; j++) top.push((await timedGet(`${spendUrl}&limit=${SPEND_TOP}`)).ms);
      const body = spend[0]!.body;
      rows.push({
        audit_rows: l.rows,
        keys: l.stats.keys,
        ledger_entries: l.stats.ledgerEntries,
        db_bytes: statSync(l.db).size,
        seed_s: l.stats.seconds,
        seed_cached: l.cached,
        startup_listening_ms: median(l.startups.map((x) => x.listening)),
        startup_healthz_ms: median(l.startups.map((x) => x.healthz)),
        hot: {
          p50_us: median(hot[i]!.map((r) => r.p50_us)),
          p99_us: median(hot[i]!.map((r) => r.p99_us)),
          rounds: hot[i]!.map(({ p50_us, p99_us }) => ({ p50_us, p99_us })),
          requests: hot[i]!.reduce((n, r) => n + r.requests, 0),
          errors: hot[i]!.reduce((n, r) => n + r.errors, 0),
        },
        spend_ms: median(spend.map((x) => x.ms)),
        spend_groups: (JSON.parse(body) as { data: unknown[] }).data.length,
        spend_bytes: body.length,
        spend_top_ms: median(top),
        spend_scan_ms: median(scan),
        rss_mb: rssMb(s.pid),
      });
    }
    return {
      method: `wrk -t1 -c1, ${rounds} rounds of ${seconds} s per size (sizes in turn, 1 s warm-up each); p50/p99: medians over the rounds`,
      rows,
      trigger,
    };
  } finally {
    for (const s of servers) await s.stop();
    upstream?.kill("SIGTERM");
    if (!opts.workDir) rmSync(work, { recursive: true, force: true });
    else for (const rows of sizes) rmSync(join(work, `growth-${rows}.db`), { force: true });
  }
}

const count = (n: number) => (n >= 1e6 ? `${n / 1e6} M` : n >= 1e3 ? `${n / 1e3} k` : String(n));

export function growthTable(result: GrowthResult): string {
  const empty = result.rows.find((r) => r.audit_rows === 0);
  const vs = (r: GrowthRow, p: "p50_us" | "p99_us") =>
    empty && r !== empty ? ` (${((r.hot[p] / empty.hot[p] - 1) * 100).toFixed(0)}%)` : "";
  const lines = [
    "| audit rows | keys | db | seed | start-up: listening / first 200 | hot p50 | hot p99 | spend view (rollup) | its top 20 | same view by scan | RSS |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
    ...result.rows.map(
      (r) =>
        `| ${count(r.audit_rows)} | ${count(r.keys)} | ${(r.db_bytes / 2 ** 20).toFixed(0)} MiB | ${r.audit_rows ? `${r.seed_s.toFixed(0)} s${r.seed_cached ? " (cached)" : ""}` : "-"} | ` +
        `${r.startup_listening_ms.toFixed(0)} / ${r.startup_healthz_ms.toFixed(0)} ms | ${r.hot.p50_us} µs${vs(r, "p50_us")} | ${r.hot.p99_us} µs${vs(r, "p99_us")} | ` +
        `${r.spend_ms.toFixed(1)} ms (${r.spend_groups} groups) | ${r.spend_top_ms.toFixed(1)} ms | ${r.spend_scan_ms.toFixed(0)} ms | ${r.rss_mb.toFixed(0)} MiB |`,
    ),
    "",
    `hot path: a priced POST through the whole pipeline to the local upstream, ${result.method}`,
    ...(result.trigger
      ? [
          `rollup trigger per audit insert (largest ledger, synchronous=normal): committed alone ${result.trigger.commit_with_us.toFixed(1)} µs ` +
            `vs ${result.trigger.commit_without_us.toFixed(1)} µs without; in one transaction ${result.trigger.batched_with_us.toFixed(1)} µs vs ${result.trigger.batched_without_us.toFixed(1)} µs`,
        ]
      : []),
  ];
  return lines.join("\n");
}

if (import.meta.main) {
  const built = Bun.spawnSync(["bun", "run", "build"], { cwd: root, stdout: "ignore", stderr: "pipe" });
  if (built.exitCode !== 0) throw new Error(`build failed: ${built.stderr}`);
  const result = await runGrowth();
  console.log(`\n${growthTable(result)}\n\n${targetsTable(growthTargets(result))}`);
  console.log(JSON.stringify(result, null, 2));
}

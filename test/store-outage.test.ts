import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { SQL } from "bun";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { drizzle } from "drizzle-orm/bun-sqlite";
import { sql as drizzleSql } from "drizzle-orm";
import { errorResponse, KeybrakeError } from "../src/errors";
import { ledgerWritable } from "../src/ops/health";
import { createLogger } from "../src/ops/log";
import { logStoreOutage } from "../src/ops/log";
import { describeStoreOutage, isStoreOutage, openStore, storeUnavailable } from "../src/store/index";
import { ensureBinary } from "./helpers/binary";
import { ADMIN_TOKEN } from "./helpers/harness";
import { mockStripe, STRIPE_LIVE_SECRET, type MockStripe } from "./helpers/mock-stripe";
import { type OwnCluster, ownPostgresCluster } from "./helpers/postgres";
import { type Started, startProcess } from "./helpers/process";
import { waitFor } from "./helpers/receiver";

/**
 * SPEC §4, §9, §13: when the ledger cannot be reached (PostgreSQL down, a disk full or read-only), Keybrake
 * answers 503 `store_unavailable` with Retry-After, forwards nothing, reports /healthz 503, and once the store is
 * back carries on by itself with nothing lost. The PostgreSQL part runs the real server (the built binary)
 * on a cluster of the test's own, stopped (`pg_ctl stop -m immediate`, a crash) and started again mid-test.
 */

type Json = Record<string, any>;
const PASSWORD = "outage-pw-7f3a9c";
const cluster: OwnCluster | null = ownPostgresCluster();
afterAll(() => cluster?.remove());

/** The contract's error body and headers for a store outage (SPEC §4). */
async function expectStoreUnavailable(res: Response) {
  expect(res.status).toBe(503);
  expect(res.headers.get("x-keybrake-error")).toBe("store_unavailable");
  expect(res.headers.get("retry-after")).toBe("5");
  const body = (await res.json()) as Json;
  expect(body).toMatchObject({ code: "store_unavailable", error: { type: "keybrake_error", code: "store_unavailable" } });
  expect(body.message).toBe(body.error.message);
}

describe("isStoreOutage on real driver errors", () => {
  test("bun:sqlite: a read-only file written to, a full database and a locked one are outages; a bug is not", () => {
    const dir = mkdtempSync(join(tmpdir(), "keybrake-outage-"));
    try {
      const path = join(dir, "ro.db");
      const setup = new Database(path);
      setup.run("CREATE TABLE t (x TEXT PRIMARY KEY)");
      setup.run("INSERT INTO t VALUES ('a')");
      setup.close();

      const ro = new Database(path, { readonly: true });
      const readonly = caught(() => ro.run("INSERT INTO t VALUES ('b')"));
      expect((readonly as { code?: string }).code).toBe("SQLITE_READONLY");
      expect(isStoreOutage(readonly)).toBe(true);
      // drizzle wraps the driver's error (its message repeats the query): the cause is what counts.
      const wrapped = caught(() => drizzle(ro).run(drizzleSql`INSERT INTO t VALUES (${"secret-param"})`));
      expect((wrapped as Error).name).not.toBe("SQLiteError");
      expect(isStoreOutage(wrapped)).toBe(true);
      expect(describeStoreOutage(wrapped)).toBe("SQLITE_READONLY: attempt to write a readonly database");
      ro.close();

      const full = new Database(join(dir, "full.db"));
      full.run("CREATE TABLE t (x TEXT)");
      full.run("PRAGMA max_page_count = 3");
      const fullError = caught(() => {
        for (let i = 0; i < 100; i++) full.run("INSERT INTO t VALUES (?)", ["x".repeat(3000)]);
      });
      expect((fullError as { code?: string }).code).toBe("SQLITE_FULL");
      expect(isStoreOutage(fullError)).toBe(true);
      full.close();

      const a = new Database(path);
      const b = new Database(path);
      b.run("PRAGMA busy_timeout = 0");
      a.run("BEGIN IMMEDIATE");
      const busy = caught(() => b.run("BEGIN IMMEDIATE"));
      expect((busy as { code?: string }).code).toBe("SQLITE_BUSY");
      expect(isStoreOutage(busy)).toBe(true);
      a.run("ROLLBACK");

      // Not outages: a constraint, a syntax error (bugs or bad input), and anything that is not a driver's error.
      const unique = caught(() => a.run("INSERT INTO t VALUES ('a')"));
      expect((unique as { code?: string }).code).toBe("SQLITE_CONSTRAINT_PRIMARYKEY");
      expect(isStoreOutage(unique)).toBe(false);
      expect(isStoreOutage(caught(() => a.run("SELEC 1")))).toBe(false);
      expect(isStoreOutage(new Error("database or disk is full"))).toBe(false);
      expect(isStoreOutage(new KeybrakeError("internal_error"))).toBe(false);
      expect(isStoreOutage(null)).toBe(false);
      expect(isStoreOutage("SQLITE_FULL")).toBe(false);
      a.close();
      b.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("storeUnavailable() is the contract's 503 with Retry-After", async () => {
    await expectStoreUnavailable(errorResponse(storeUnavailable()));
  });

  test("an outage is logged as one warning line a minute, naming the driver's error and never a URL", () => {
    const lines: string[] = [];
    const log = createLogger("text", (line) => lines.push(line));
    // An error shaped as Bun's, whose message (as some drivers' do) carries the URL and its password.
    const err = Object.assign(new Error(`could not reach postgres://kb:${PASSWORD}@db.internal:5432/keybrake`), {
      name: "PostgresError",
      code: "ERR_POSTGRES_CONNECTION_REFUSED",
    });
    expect(isStoreOutage(err)).toBe(true);
    const t = Date.UTC(2026, 0, 1);
    for (let i = 0; i < 50; i++) logStoreOutage(log, err, t + i * 1000);
    expect(lines).toEqual([
      "keybrake: warning: the ledger cannot be reached: ERR_POSTGRES_CONNECTION_REFUSED: could not reach <url>; answering 503 store_unavailable",
    ]);
    logStoreOutage(log, err, t + 60_000);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toEndWith("answering 503 store_unavailable (49 more since the last such line)");
    // Another logger (another app) has its own line.
    const other: string[] = [];
    logStoreOutage(
      createLogger("json", (line) => other.push(line)),
      err,
      t,
    );
    expect(JSON.parse(other[0]!)).toMatchObject({ level: "warn", event: "store_unavailable", count: 1 });
    expect([...lines, ...other].join("\n")).not.toContain(PASSWORD);
  });

  test("/healthz's check: a store outage or no answer in time is unwritable; another error is thrown", async () => {
    const dir = mkdtempSync(join(tmpdir(), "keybrake-outage-"));
    try {
      const store = openStore(join(dir, "kb.db"));
      expect(await ledgerWritable(store)).toBe(true);
      await store.close();
      const readonlyError = caught(() => new Database(join(dir, "kb.db"), { readonly: true }).run("DELETE FROM settings"));
      expect(await ledgerWritable({ checkWritable: () => Promise.reject(readonlyError) })).toBe(false);
      expect(
        await ledgerWritable({
          checkWritable: () => {
            throw readonlyError;
          },
        }),
      ).toBe(false);
      const started = performance.now();
      expect(await ledgerWritable({ checkWritable: () => new Promise<boolean>(() => {}) }, 50)).toBe(false);
      expect(performance.now() - started).toBeLessThan(1_000);
      await expect(ledgerWritable({ checkWritable: () => Promise.reject(new TypeError("a bug")) })).rejects.toThrow("a bug");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test.skipIf(cluster === null)(
    "Bun SQL: refused, timed out, terminated, shutting down, cut mid-query, read-only are outages; SQL errors are not",
    async () => {
      const url = cluster!.url;
      const sql = new SQL({ url, max: 2 });
      const other = new SQL({ url, max: 1 });
      try {
        const syntax = await rejection(sql`SELEC 1`);
        expect(syntax).toMatchObject({ code: "ERR_POSTGRES_SYNTAX_ERROR", errno: "42601" });
        expect(isStoreOutage(syntax)).toBe(false);
        await sql`CREATE TABLE IF NOT EXISTS outage_probe (x int PRIMARY KEY)`;
        await sql`INSERT INTO outage_probe VALUES (1) ON CONFLICT DO NOTHING`;
        const unique = await rejection(sql`INSERT INTO outage_probe VALUES (1)`);
        expect(unique).toMatchObject({ code: "ERR_POSTGRES_SERVER_ERROR", errno: "23505" });
        expect(isStoreOutage(unique)).toBe(false);

        // A standby (or a demoted primary) refuses writes with 25006.
        const readOnly = await rejection(
          sql.begin(async (tx) => {
            await tx`SET TRANSACTION READ ONLY`;
            await tx`INSERT INTO outage_probe VALUES (2)`;
          }),
        );
        expect(readOnly).toMatchObject({ code: "ERR_POSTGRES_SERVER_ERROR", errno: "25006" });
        expect(isStoreOutage(readOnly)).toBe(true);

        // A backend terminated by an administrator (what a fast shutdown does to every one): 57P01.
        const sleeping = rejection(sql`SELECT pg_sleep(10), 'outage-terminate' AS tag`);
        await waitFor(
          async () =>
            (
              await other`SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%outage-terminate%' AND pid <> pg_backend_pid()`
            )[0].n > 0,
          5_000,
          "the sleeping query",
        );
        await other`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%outage-terminate%' AND pid <> pg_backend_pid()`;
        const terminated = await sleeping;
        expect(terminated).toMatchObject({ code: "ERR_POSTGRES_SERVER_ERROR", errno: "57P01" });
        expect(isStoreOutage(terminated)).toBe(true);

        // Nothing listening: refused at once.
        const closedPort = new SQL({
          url: `postgres://postgres:${PASSWORD}@127.0.0.1:${unusedPort()}/postgres`,
          max: 1,
          connectionTimeout: 2,
        });
        const refused = await rejection(closedPort`SELECT 1`);
        expect(refused).toMatchObject({ code: "ERR_POSTGRES_CONNECTION_REFUSED" });
        expect(isStoreOutage(refused)).toBe(true);
        expect(describeStoreOutage(refused)).not.toContain(PASSWORD);
        await closedPort.close();

        // A server that accepts the connection and never answers: the pool's connection timeout (in seconds; a
        // fraction is honoured, and the error is the same whatever the length).
        const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
        const hung = new SQL({ url: `postgres://postgres@127.0.0.1:${silent.port}/postgres`, max: 1, connectionTimeout: 0.25 });
        const timedOut = await rejection(hung`SELECT 1`);
        expect(timedOut).toMatchObject({ code: "ERR_POSTGRES_CONNECTION_TIMEOUT" });
        expect(isStoreOutage(timedOut)).toBe(true);
        await hung.close();
        silent.stop(true);

        // A server shutting down (or starting up) refuses new sessions with 57P03 while an open one finishes.
        const [{ data }] = await other`SELECT current_setting('data_directory') AS data`;
        const stopping = cluster!.stop("smart");
        // The postmaster has the request once it marks its pid file (line 8) "stopping": new sessions are refused.
        await waitFor(() => pmStatus(data) === "stopping", 10_000, "the smart shutdown to begin");
        const fresh = new SQL({ url, max: 1, connectionTimeout: 2 });
        const shuttingDown = await rejection(fresh`SELECT 1`);
        expect(shuttingDown).toMatchObject({ code: "ERR_POSTGRES_SERVER_ERROR", errno: "57P03" });
        expect(isStoreOutage(shuttingDown)).toBe(true);
        await fresh.close();
        await sql.close({ timeout: 1 });
        await other.close({ timeout: 1 });
        await stopping;
        await cluster!.start();

        // A query in flight when the server crashes: the connection is gone under it.
        const pool = new SQL({ url, max: 1 });
        const inFlight = rejection(pool`SELECT pg_sleep(10)`);
        const watcher = new SQL({ url, max: 1 });
        await waitFor(
          async () =>
            (
              await watcher`SELECT count(*)::int AS n FROM pg_stat_activity
                            WHERE state = 'active' AND query LIKE '%pg_sleep(10)%' AND pid <> pg_backend_pid()`
            )[0].n > 0,
          5_000,
          "the query in flight",
        );
        await watcher.close();
        await cluster!.stop("immediate");
        const cut = await inFlight;
        expect(cut).toMatchObject({ code: "ERR_POSTGRES_CONNECTION_CLOSED" });
        expect(isStoreOutage(cut)).toBe(true);
        // And while it is down, the same pool is refused at once.
        const down = await rejection(pool`SELECT 1`);
        expect(down).toMatchObject({ code: "ERR_POSTGRES_CONNECTION_REFUSED" });
        expect(isStoreOutage(down)).toBe(true);
        await cluster!.start();
        // Back: the pool reconnects by itself.
        expect(await pool`SELECT 1 AS one`).toEqual([{ one: 1 }]);
        await pool.close();
      } finally {
        await sql.close({ timeout: 1 });
        await other.close({ timeout: 1 });
      }
    },
  );
});

describe.skipIf(cluster === null)("PostgreSQL stopped under a running Keybrake (SPEC §13)", () => {
  let stripe: MockStripe;
  let server: Started;
  let dir: string;
  let pgDown = false;
  /** The key charged before the outage only, and what it was charged. */
  let before: Json;
  const BEFORE_CALLS = 5;
  /** The key charged across the outage. */
  let across: Json;
  /** Every answer to a call made on `across`, in order. */
  const answers: { startedAt: number; status: number; code: string | null; retryAfter: string | null }[] = [];
  let stoppedAt = 0;

  const admin = (path: string, body?: unknown, method = body === undefined ? "GET" : "POST") =>
    fetch(`${server.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  const issueKey = async (label: string) => {
    const res = await admin("/vault/keys", {
      vendor: "stripe",
      daily_usd_cap: 10_000,
      allowed_endpoints: ["POST /v1/payment_intents"],
      label,
    });
    expect(res.status).toBe(201);
    return (await res.json()) as Json;
  };
  const charge = (vaultKey: string) =>
    fetch(`${server.url}/stripe/v1/payment_intents`, {
      method: "POST",
      headers: { authorization: `Bearer ${vaultKey}`, "content-type": "application/x-www-form-urlencoded" },
      body: "amount=2900&currency=usd",
    });
  const chargeAcross = async () => {
    const startedAt = Date.now();
    const res = await charge(across.vault_key);
    const text = await res.text();
    let code: string | null = null;
    try {
      code = (JSON.parse(text) as Json).code ?? null;
    } catch {
      // not JSON
    }
    answers.push({ startedAt, status: res.status, code, retryAfter: res.headers.get("retry-after") });
    return res.status;
  };
  const stopPostgres = async () => {
    if (pgDown) return;
    await cluster!.stop("immediate");
    pgDown = true;
    stoppedAt = Date.now();
  };
  const storeLines = () =>
    server
      .stderr()
      .split("\n")
      .filter((l) => l.includes("store_unavailable"));

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "keybrake-outage-"));
    stripe = await mockStripe().start();
    const databaseUrl = new URL(cluster!.url);
    // Trust auth never asks for it: it is there to show that no log line ever carries it.
    databaseUrl.password = PASSWORD;
    server = await startProcess([await ensureBinary(), "serve"], {
      cwd: dir,
      env: {
        KEYBRAKE_DATABASE_URL: databaseUrl.toString(),
        KEYBRAKE_INSTANCE_ID: "outage-a",
        KEYBRAKE_HOST: "127.0.0.1",
        KEYBRAKE_PORT: "0",
        KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
        KEYBRAKE_STRIPE_SECRET_KEY: STRIPE_LIVE_SECRET,
        KEYBRAKE_STRIPE_BASE_URL: stripe.url,
      },
    });
  }, 60_000);
  afterAll(async () => {
    server?.proc.kill("SIGKILL");
    await server?.proc.exited;
    await stripe?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("before: calls pass and are counted", async () => {
    before = await issueKey("outage/before");
    across = await issueKey("outage/across");
    for (let i = 0; i < BEFORE_CALLS; i++) expect((await charge(before.vault_key)).status).toBe(200);
    const key = (await (await admin(`/vault/keys/${before.id}`)).json()) as Json;
    expect(key).toMatchObject({ spent_today_usd: 29 * BEFORE_CALLS, held_usd: 0 });
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });

  test("stopped mid-traffic: calls answer 503 store_unavailable with Retry-After, and nothing more reaches Stripe", async () => {
    // Traffic on `across` from four clients, one call after another each, while PostgreSQL crashes.
    let traffic = true;
    const clients = Array.from({ length: 4 }, async () => {
      while (traffic) await chargeAcross();
    });
    await waitFor(() => answers.length >= 20, 15_000, "traffic before the stop");
    await stopPostgres();
    await waitFor(() => answers.filter((a) => a.startedAt > stoppedAt).length >= 20, 15_000, "traffic after the stop");
    traffic = false;
    await Promise.all(clients);

    // Every call answered is either forwarded (200) or refused for the outage: never a 500.
    const statuses = new Set(answers.map((a) => `${a.status} ${a.code ?? ""}`.trim()));
    for (const s of statuses) expect(["200", "503 store_unavailable"]).toContain(s);
    // Once the server was down, every call was refused with the contract's 503 and Retry-After.
    const after = answers.filter((a) => a.startedAt > stoppedAt);
    expect(after.length).toBeGreaterThanOrEqual(20);
    for (const a of after) expect(a).toMatchObject({ status: 503, code: "store_unavailable", retryAfter: "5" });

    // Nothing in flight any more: from now on, Stripe hears nothing.
    const forwarded = stripe.count("POST", "/v1/payment_intents");
    for (let i = 0; i < 10; i++) await expectStoreUnavailable(await charge(across.vault_key));
    await expectStoreUnavailable(await charge(before.vault_key));
    expect(stripe.count("POST", "/v1/payment_intents")).toBe(forwarded);
  }, 60_000);

  test("while down: /healthz answers 503 promptly, admin routes 503 store_unavailable, logged without the URL", async () => {
    await stopPostgres();
    const started = performance.now();
    const health = await fetch(`${server.url}/healthz`);
    expect(performance.now() - started).toBeLessThan(3_000);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ status: "degraded", db: "unwritable" });

    await expectStoreUnavailable(await admin(`/vault/keys/${before.id}`));
    await expectStoreUnavailable(
      await admin("/vault/keys", { vendor: "stripe", daily_usd_cap: 5, allowed_endpoints: ["POST /v1/payment_intents"] }),
    );
    await expectStoreUnavailable(await admin("/audit?limit=5"));

    // Logged as a warning naming the driver's error, a few lines for the whole outage (at most one a minute each from
    // the app, the alert worker and the reconciler), never the URL or password.
    const lines = storeLines();
    expect(lines.length).toBeGreaterThanOrEqual(1);
    expect(lines.length).toBeLessThanOrEqual(4);
    expect(lines[0]).toMatch(/^keybrake: warning: the ledger cannot be reached: ERR_POSTGRES_CONNECTION_(REFUSED|CLOSED)/);
    expect(server.stderr()).not.toContain(PASSWORD);
    expect(server.stderr()).not.toContain("postgres://");
    expect(server.stderr()).not.toContain("unexpected error");
    // The server itself is still up.
    expect(server.proc.exitCode).toBeNull();
  }, 30_000);

  test("started again: Keybrake reconnects by itself, calls pass, and the ledger from before is intact", async () => {
    await stopPostgres();
    await cluster!.start();
    pgDown = false;
    // The pool notices the server is back on its own: no restart of Keybrake. Polled: /healthz first.
    await waitFor(async () => (await fetch(`${server.url}/healthz`)).status === 200, 20_000, "/healthz 200");
    await waitFor(async () => (await charge(before.vault_key)).status === 200, 20_000, "a call passing");
    for (let i = 0; i < 3; i++) expect((await charge(before.vault_key)).status).toBe(200);

    // The key charged before the outage: its 5 calls, and the 4 since, exactly.
    const key = (await (await admin(`/vault/keys/${before.id}`)).json()) as Json;
    expect(key).toMatchObject({ spent_today_usd: 29 * (BEFORE_CALLS + 4), held_usd: 0 });

    // The key charged across the outage: every call answered 2xx is counted (settled, or still held).
    const ok = answers.filter((a) => a.status === 200).length;
    expect(ok).toBeGreaterThan(0);
    const acrossNow = (await (await admin(`/vault/keys/${across.id}`)).json()) as Json;
    expect(acrossNow.spent_today_usd + acrossNow.held_usd).toBeGreaterThanOrEqual(29 * ok);
    // And nothing else: what reached Stripe, plus at most one hold per call answered 503 (a hold whose COMMIT the
    // crash cut off may have committed: it stays counted, orphaned, never forwarded; the safe side).
    const reached = stripe.received.filter((r) => r.method === "POST" && r.path === "/v1/payment_intents").length;
    const unknown = answers.filter((a) => a.status === 503).length;
    expect(acrossNow.spent_today_usd + acrossNow.held_usd).toBeLessThanOrEqual(29 * (reached - (BEFORE_CALLS + 4) + unknown));
  }, 60_000);

  test("a server that accepts connections and never answers: /healthz still answers 503 within about 2 s", async () => {
    cluster!.freeze();
    try {
      const started = performance.now();
      const health = await fetch(`${server.url}/healthz`);
      const ms = performance.now() - started;
      expect(health.status).toBe(503);
      expect(await health.json()).toMatchObject({ db: "unwritable" });
      expect(ms).toBeGreaterThanOrEqual(1_500);
      expect(ms).toBeLessThan(3_500);
    } finally {
      cluster!.thaw();
    }
    await waitFor(async () => (await fetch(`${server.url}/healthz`)).status === 200, 20_000, "/healthz 200 after the thaw");
    await waitFor(async () => (await charge(before.vault_key)).status === 200, 20_000, "a call passing after the thaw");
  }, 60_000);
});

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error("expected a throw");
}

async function rejection(promise: PromiseLike<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected a rejection");
}

/** The postmaster's status in its pid file (PostgreSQL ≥ 10, line 8): "starting", "ready", "standby" or "stopping". */
function pmStatus(data: string): string | undefined {
  try {
    return readFileSync(join(data, "postmaster.pid"), "utf8").split("\n")[7]?.trim();
  } catch {
    return undefined;
  }
}

function unusedPort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

import { SQL } from "bun";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { randomBytes } from "node:crypto";
import { freePort } from "./process";

/**
 * PostgreSQL for tests (SPEC §13). Each test file asks for fresh databases on one server:
 *
 * - `KEYBRAKE_TEST_DATABASE_URL`: a maintenance URL (postgres://postgres@127.0.0.1:5432/postgres) whose user may
 *   CREATE DATABASE. `.ci/run` starts a cluster and sets it.
 * - otherwise, when Debian's PostgreSQL is installed (/usr/lib/postgresql/<version>/bin/initdb): a throwaway cluster
 *   (a temp folder, a free port on 127.0.0.1, trust auth), started once per process (bun test runs every file in
 *   one) and stopped with it. As root, the server runs as the `postgres` user, which PostgreSQL requires.
 * - otherwise none: PostgreSQL tests are skipped with a message, except in CI, where that is an error.
 *
 * Usage: `const url = await testDatabaseUrl()` (null: no PostgreSQL here), `await dropTestDatabase(url)` after.
 * `testDatabaseUrl({ migrated: true })` gives one already at the latest schema, for tests of what the stores do
 * (not of migrating). A test that stops and starts the server takes a cluster of its own instead: `ownPostgresCluster()`.
 */

const DEBIAN_POSTGRES = "/usr/lib/postgresql";

let server: Promise<string | null> | undefined;

/** The maintenance URL of the test server, or null when there is none (never null in CI: it throws). */
export function testPostgresServer(): Promise<string | null> {
  server ??= findServer();
  return server;
}

/**
 * This process's databases are named `kb_t_<owner>_…`: several test runs may share a server (KEYBRAKE_TEST_DATABASE_URL)
 * without colliding, and what a run leaves behind is found by its prefix (see dropOursWhenProcessEnds).
 */
const owner = randomBytes(4).toString("hex");
const prefix = `kb_t_${owner}_`;

/**
 * A fresh database (`kb_t_<owner>_<random>`) on the test server: its URL, or null when there is no server. Empty,
 * or with `migrated`, a copy of a template migrated once per process: the same schema as applyPgMigrations makes,
 * without running every migration again (~260 ms a database).
 */
export async function testDatabaseUrl(opts: { migrated?: boolean } = {}): Promise<string | null> {
  const maintenance = await testPostgresServer();
  if (!maintenance) return null;
  const name = `${prefix}${randomBytes(6).toString("hex")}`;
  await createDatabase(maintenance, name, opts.migrated ? await migratedTemplate(maintenance) : undefined);
  return databaseUrl(maintenance, name);
}

/** Drops databases testDatabaseUrl() created (one connection for all), closing whatever connections are still open on them. */
export async function dropTestDatabase(...urls: string[]): Promise<void> {
  if (urls.length === 0) return;
  const names = urls.map((url) => new URL(url).pathname.slice(1));
  for (const name of names) if (!/^kb_t_[0-9a-f]+_[0-9a-f]+$/.test(name)) throw new Error(`not a test database: ${name}`);
  const maintenance = await testPostgresServer();
  if (!maintenance) throw new Error("no test PostgreSQL server");
  await onServer(maintenance, async (sql) => {
    for (const name of names) await sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  });
}

let template: Promise<string> | undefined;

/** This process's template at the latest schema (`kb_t_<owner>_template`), made on first use. */
function migratedTemplate(maintenance: string): Promise<string> {
  template ??= (async () => {
    const name = `${prefix}template`;
    await createDatabase(maintenance, name);
    const { applyPgMigrations } = await import("../../src/store/pg/migrate");
    const sql = new SQL({ url: databaseUrl(maintenance, name), max: 1 });
    try {
      await applyPgMigrations(sql);
    } finally {
      await sql.close();
    }
    // A database being copied must have no sessions: none may connect to it again, autovacuum included.
    await onServer(maintenance, (sql) => sql.unsafe(`ALTER DATABASE ${name} WITH ALLOW_CONNECTIONS false`));
    return name;
  })();
  return template;
}

let serverVersion: Promise<number> | undefined;

async function createDatabase(maintenance: string, name: string, from?: string): Promise<void> {
  await onServer(maintenance, async (sql) => {
    // PostgreSQL 15 copies the template through the WAL by default; a plain file copy is several times faster.
    serverVersion ??= sql`SELECT current_setting('server_version_num')::int AS version`.then(([row]) => row.version as number);
    // A database name cannot be a parameter; these are built from constants and hex digits only.
    const source = from ? ` TEMPLATE ${from}` : "";
    await sql.unsafe(`CREATE DATABASE ${name}${source}${(await serverVersion) >= 150000 ? " STRATEGY = FILE_COPY" : ""}`);
  });
}

function databaseUrl(maintenance: string, name: string): string {
  const url = new URL(maintenance);
  url.pathname = `/${name}`;
  return url.toString();
}

/**
 * The process's one maintenance session, for creating and dropping databases: a new session costs the server
 * ~30 ms of CPU, and a run creates a few hundred databases. It closes itself after a second unused (and opens
 * again when next needed), so it never holds a finished test process open.
 */
let maintenanceSession: { url: string; sql: SQL } | undefined;

function onServer<T>(url: string, use: (sql: SQL) => Promise<T>): Promise<T> {
  if (maintenanceSession?.url !== url) {
    // Named, so that dropOursWhenProcessEnds can end a CREATE DATABASE still running for a process that ended.
    maintenanceSession = { url, sql: new SQL({ url, max: 1, idleTimeout: 1, connection: { application_name: prefix } }) };
  }
  return use(maintenanceSession.sql);
}

async function findServer(): Promise<string | null> {
  const given = process.env.KEYBRAKE_TEST_DATABASE_URL;
  if (given) {
    dropOursWhenProcessEnds();
    return given;
  }
  const bin = debianPostgresBin();
  if (bin) return startThrowawayCluster(bin);
  if (process.env.CI) throw new Error("CI needs PostgreSQL: .ci/run installs it and sets KEYBRAKE_TEST_DATABASE_URL");
  console.warn("PostgreSQL tests SKIPPED: set KEYBRAKE_TEST_DATABASE_URL or install Debian's PostgreSQL (apt-get install -y postgresql)");
  return null;
}

/** The bin folder of the newest PostgreSQL Debian installed, or null. */
export function debianPostgresBin(): string | null {
  if (!existsSync(DEBIAN_POSTGRES)) return null;
  const versions = readdirSync(DEBIAN_POSTGRES)
    .filter((v) => existsSync(join(DEBIAN_POSTGRES, v, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length > 0 ? join(DEBIAN_POSTGRES, versions[0]!, "bin") : null;
}

function startThrowawayCluster(bin: string): string {
  const cluster = initThrowawayCluster(bin);
  stopWhenProcessEnds(cluster.stopCommand, cluster.dir);
  return cluster.url;
}

/**
 * A PostgreSQL cluster of a test's own, for tests that stop and start the server (outages, failover): initdb'd in
 * a temp folder, trust auth, on a free port of 127.0.0.1, started. Like the shared one, it is stopped and its
 * folder removed when the process ends, if `remove()` has not done so before. Null when Debian's PostgreSQL is
 * not installed (the caller skips).
 */
export interface OwnCluster {
  /** The maintenance URL (postgres://postgres@127.0.0.1:<port>/postgres). */
  url: string;
  port: number;
  /**
   * Stops the server: `immediate` is a crash (no checkpoint, connections cut), `fast` a clean shutdown, `smart`
   * one that waits for open sessions to end (refusing new ones with 57P03 meanwhile). Runs
   * pg_ctl as a child process without blocking this one's event loop (traffic from the test goes on meanwhile).
   */
  stop(mode?: "immediate" | "fast" | "smart"): Promise<void>;
  /** Starts it again on the same port and data; resolves once it accepts connections. */
  start(): Promise<void>;
  /**
   * Freezes the server (SIGSTOP to the postmaster and its backends) or lets it go on (SIGCONT): connections are
   * accepted by the kernel but nothing answers, as with a server hung or cut off by the network.
   */
  freeze(): void;
  thaw(): void;
  /** Stops it (if running) and removes its folder. */
  remove(): void;
}

export function ownPostgresCluster(): OwnCluster | null {
  const bin = debianPostgresBin();
  if (!bin) return null;
  const cluster = initThrowawayCluster(bin);
  stopWhenProcessEnds(cluster.stopCommand, cluster.dir);
  return {
    url: cluster.url,
    port: cluster.port,
    stop: (mode = "immediate") => mustRunAsync(asPostgres([join(bin, "pg_ctl"), "-D", cluster.data, "-m", mode, "-w", "stop"])),
    start: () => mustRunAsync(asPostgres(cluster.startCommand)),
    freeze: () => signalServer(cluster.data, "STOP"),
    thaw: () => signalServer(cluster.data, "CONT"),
    remove: () => {
      spawnSync("/bin/sh", ["-c", `${cluster.stopCommand} >/dev/null 2>&1`]);
      rmSync(cluster.dir, { recursive: true, force: true });
    },
  };
}

/**
 * A new cluster's data folder at `data` (whose parent the server's user owns): a copy of one initdb'd once per
 * PostgreSQL version on this machine ($TMPDIR/keybrake-test-pgdata-<version>), ~0.3 s, where an initdb of its own
 * takes ~1.3 s of CPU. Trust auth, UTF-8, the C locale, as initdb was run.
 */
export function initClusterData(bin: string, data: string) {
  const pristine = join(tmpdir(), `keybrake-test-pgdata-${basename(dirname(bin))}`);
  if (!existsSync(join(pristine, "PG_VERSION"))) {
    const building = mkdtempSync(`${pristine}.building-`);
    try {
      if (runningAsRoot()) mustRun(["chown", "postgres", building]);
      mustRun(
        asPostgres([
          join(bin, "initdb"),
          "-D",
          join(building, "data"),
          "-U",
          "postgres",
          "-A",
          "trust",
          "-E",
          "UTF8",
          "--locale=C",
          "--no-sync",
        ]),
      );
      try {
        renameSync(join(building, "data"), pristine);
      } catch {
        // Another test process made it first: theirs is the same.
      }
    } finally {
      rmSync(building, { recursive: true, force: true });
    }
  }
  mustRun(["cp", "-a", pristine, data]);
}

/** initdb and start a cluster in a new temp folder (see testPostgresServer); how to start and stop it again. */
function initThrowawayCluster(bin: string) {
  const dir = mkdtempSync(join(tmpdir(), "keybrake-pg-"));
  const data = join(dir, "data");
  const port = freePort();
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`;
  const startCommand = [join(bin, "pg_ctl"), "-D", data, "-l", join(dir, "server.log"), "-w", "-o", options, "start"];
  try {
    if (runningAsRoot()) mustRun(["chown", "postgres", dir]);
    initClusterData(bin, data);
    // Durability is not under test: without fsync the cluster starts and commits faster.
    mustRun(asPostgres(startCommand));
  } catch (error) {
    const log = existsSync(join(dir, "server.log")) ? readFileSync(join(dir, "server.log"), "utf8") : "";
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`could not start a test PostgreSQL in ${dir}: ${(error as Error).message}\n${log}`);
  }
  return {
    dir,
    data,
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    startCommand,
    stopCommand: shellLine(asPostgres([join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"])),
  };
}

/**
 * A shell line that returns once this process has ended: GNU tail checks it every second within one process; a
 * shell loop where tail has no --pid. (A loop of `sleep 0.2` started ~600 processes in a run of the suite.)
 */
const untilThisProcessEnds = `tail --pid=${process.pid} -f /dev/null 2>/dev/null || while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done`;

/**
 * bun test ends without running `exit` handlers, and a killed run runs none: a watcher of its own session (out
 * of the run's process group, deaf to its signals) waits for this process to end, then stops the cluster and
 * removes its folder.
 */
export function stopWhenProcessEnds(stopCommand: string, dir: string) {
  const script = `trap '' INT TERM HUP
${untilThisProcessEnds}
${stopCommand} >/dev/null 2>&1
rm -rf ${quote(dir)}`;
  spawn("/bin/sh", ["-c", script], { stdio: "ignore", detached: true }).unref();
}

/**
 * On a server of its own (KEYBRAKE_TEST_DATABASE_URL), what this process leaves behind is dropped once it ends: its
 * template, and the databases of a run killed before its afterAll hooks (first ending what its connections still
 * run, which could add one). A throwaway cluster goes whole instead.
 */
function dropOursWhenProcessEnds() {
  const sweep = [
    "const sql = new Bun.SQL({ url: process.env.KEYBRAKE_TEST_DATABASE_URL, max: 1, connectionTimeout: 10 });",
    `await sql.unsafe("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = '${prefix}'");`,
    `const ours = await sql.unsafe("SELECT datname FROM pg_database WHERE starts_with(datname, '${prefix}')");`,
    'for (const { datname } of ours) await sql.unsafe("DROP DATABASE IF EXISTS " + datname + " WITH (FORCE)");',
    "await sql.close();",
  ].join("\n");
  const script = `trap '' INT TERM HUP
${untilThisProcessEnds}
exec ${quote(process.execPath)} -e ${quote(sweep)}`;
  spawn("/bin/sh", ["-c", script], { cwd: tmpdir(), stdio: "ignore", detached: true }).unref();
}

export const runningAsRoot = () => process.getuid?.() === 0;

/** PostgreSQL refuses to run as root: as root, the command runs as the `postgres` user Debian's package creates. */
export function asPostgres(cmd: string[]): string[] {
  return runningAsRoot() ? ["su", "postgres", "-s", "/bin/sh", "-c", shellLine(cmd)] : cmd;
}

export function mustRun(cmd: string[]) {
  const result = spawnSync(cmd[0]!, cmd.slice(1), { encoding: "utf8", timeout: 60_000 });
  if (result.status !== 0) throw new Error(`${cmd.join(" ")} failed (${result.status ?? result.signal}): ${result.stderr}`);
}

/** Sends `signal` to the cluster's postmaster (its pid is postmaster.pid's first line) and to its children. */
function signalServer(data: string, signal: "STOP" | "CONT") {
  const postmaster = readFileSync(join(data, "postmaster.pid"), "utf8").split("\n")[0]!.trim();
  if (!/^\d+$/.test(postmaster)) throw new Error(`no postmaster pid in ${data}/postmaster.pid`);
  const children = spawnSync("pgrep", ["-P", postmaster], { encoding: "utf8" })
    .stdout.split(/\s+/)
    .filter((p) => /^\d+$/.test(p));
  mustRun(["kill", `-${signal}`, postmaster, ...children]);
}

export async function mustRunAsync(cmd: string[]) {
  const proc = Bun.spawn(cmd, { stdout: "ignore", stderr: "pipe" });
  const [status, stderr] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
  if (status !== 0) throw new Error(`${cmd.join(" ")} failed (${status}): ${stderr}`);
}

const quote = (word: string) => `'${word.replaceAll("'", `'\\''`)}'`;
export const shellLine = (cmd: string[]) => cmd.map(quote).join(" ");

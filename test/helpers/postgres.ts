import { SQL } from "bun";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";

/**
 * PostgreSQL for tests (SPEC §13). Each test file asks for fresh, empty databases on one server:
 *
 * - `KEYBRAKE_TEST_DATABASE_URL`: a maintenance URL (postgres://postgres@127.0.0.1:5432/postgres) whose user may
 *   CREATE DATABASE. `.ci/run` starts a cluster and sets it.
 * - otherwise, when Debian's PostgreSQL is installed (/usr/lib/postgresql/<version>/bin/initdb): a throwaway cluster
 *   (a temp folder, a free port on 127.0.0.1, trust auth), started once per process (bun test runs every file in
 *   one) and stopped with it. As root, the server runs as the `postgres` user, which PostgreSQL requires.
 * - otherwise none: PostgreSQL tests are skipped with a message, except in CI, where that is an error.
 *
 * Usage: `const url = await testDatabaseUrl()` (null: no PostgreSQL here), `await dropTestDatabase(url)` after.
 */

const DEBIAN_POSTGRES = "/usr/lib/postgresql";

let server: Promise<string | null> | undefined;

/** The maintenance URL of the test server, or null when there is none (never null in CI: it throws). */
export function testPostgresServer(): Promise<string | null> {
  server ??= findServer();
  return server;
}

/** A fresh, empty database (`kb_t_<random>`) on the test server: its URL, or null when there is no server. */
export async function testDatabaseUrl(): Promise<string | null> {
  const maintenance = await testPostgresServer();
  if (!maintenance) return null;
  const name = `kb_t_${randomBytes(8).toString("hex")}`;
  await onServer(maintenance, async (sql) => {
    // PostgreSQL 15 copies the template through the WAL by default; a plain file copy is several times faster.
    const [{ version }] = await sql`SELECT current_setting('server_version_num')::int AS version`;
    // A database name cannot be a parameter; this one is built from constants and hex digits only.
    await sql.unsafe(`CREATE DATABASE ${name}${version >= 150000 ? " STRATEGY = FILE_COPY" : ""}`);
  });
  const url = new URL(maintenance);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Drops a database testDatabaseUrl() created, closing whatever connections are still open on it. */
export async function dropTestDatabase(url: string): Promise<void> {
  const name = new URL(url).pathname.slice(1);
  if (!/^kb_t_[0-9a-f]+$/.test(name)) throw new Error(`not a test database: ${name}`);
  const maintenance = await testPostgresServer();
  if (!maintenance) throw new Error("no test PostgreSQL server");
  await onServer(maintenance, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
}

async function onServer<T>(url: string, use: (sql: SQL) => Promise<T>): Promise<T> {
  const sql = new SQL({ url, max: 1 });
  try {
    return await use(sql);
  } finally {
    await sql.close({ timeout: 5 });
  }
}

async function findServer(): Promise<string | null> {
  const given = process.env.KEYBRAKE_TEST_DATABASE_URL;
  if (given) return given;
  const bin = debianPostgresBin();
  if (bin) return startThrowawayCluster(bin);
  if (process.env.CI) throw new Error("CI needs PostgreSQL: .ci/run installs it and sets KEYBRAKE_TEST_DATABASE_URL");
  console.warn("PostgreSQL tests SKIPPED: set KEYBRAKE_TEST_DATABASE_URL or install Debian's PostgreSQL (apt-get install -y postgresql)");
  return null;
}

/** The bin folder of the newest PostgreSQL Debian installed, or null. */
function debianPostgresBin(): string | null {
  if (!existsSync(DEBIAN_POSTGRES)) return null;
  const versions = readdirSync(DEBIAN_POSTGRES)
    .filter((v) => existsSync(join(DEBIAN_POSTGRES, v, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length > 0 ? join(DEBIAN_POSTGRES, versions[0]!, "bin") : null;
}

function startThrowawayCluster(bin: string): string {
  const dir = mkdtempSync(join(tmpdir(), "keybrake-pg-"));
  const data = join(dir, "data");
  const port = freePort();
  try {
    if (runningAsRoot()) mustRun(["chown", "postgres", dir]);
    // Durability is not under test: without fsync the cluster starts and commits faster.
    mustRun(asPostgres([join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]));
    const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`;
    mustRun(asPostgres([join(bin, "pg_ctl"), "-D", data, "-l", join(dir, "server.log"), "-w", "-o", options, "start"]));
  } catch (error) {
    const log = existsSync(join(dir, "server.log")) ? readFileSync(join(dir, "server.log"), "utf8") : "";
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`could not start a test PostgreSQL in ${dir}: ${(error as Error).message}\n${log}`);
  }
  stopWhenProcessEnds(shellLine(asPostgres([join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"])), dir);
  return `postgres://postgres@127.0.0.1:${port}/postgres`;
}

/**
 * bun test ends without running `exit` handlers, and a killed run runs none: a watcher of its own session (out
 * of the run's process group, deaf to its signals) waits for this process to end, then stops the cluster and
 * removes its folder.
 */
function stopWhenProcessEnds(stopCommand: string, dir: string) {
  const script = `trap '' INT TERM HUP
while kill -0 ${process.pid} 2>/dev/null; do sleep 0.2; done
${stopCommand} >/dev/null 2>&1
rm -rf ${quote(dir)}`;
  spawn("/bin/sh", ["-c", script], { stdio: "ignore", detached: true }).unref();
}

const runningAsRoot = () => process.getuid?.() === 0;

/** PostgreSQL refuses to run as root: as root, the command runs as the `postgres` user Debian's package creates. */
function asPostgres(cmd: string[]): string[] {
  return runningAsRoot() ? ["su", "postgres", "-s", "/bin/sh", "-c", shellLine(cmd)] : cmd;
}

function mustRun(cmd: string[]) {
  const result = spawnSync(cmd[0]!, cmd.slice(1), { encoding: "utf8", timeout: 60_000 });
  if (result.status !== 0) throw new Error(`${cmd.join(" ")} failed (${result.status ?? result.signal}): ${result.stderr}`);
}

function freePort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

const quote = (word: string) => `'${word.replaceAll("'", `'\\''`)}'`;
const shellLine = (cmd: string[]) => cmd.map(quote).join(" ");

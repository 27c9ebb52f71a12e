/**
 * PostgreSQL for the bench, durable as a production server is: fsync and synchronous_commit on. The tests'
 * throwaway cluster (test/helpers/postgres.ts) runs with fsync off, which would flatter every commit, and fsync
 * cannot be turned on again over a command-line setting; so the bench starts a cluster of its own from Debian's
 * binaries (a temp folder, a free port on 127.0.0.1, trust auth; as root, run as the `postgres` user, which
 * PostgreSQL requires), and reads what any server it is given does (`postgresSettings`).
 */
import { SQL } from "bun";
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { debianPostgresBin } from "../test/helpers/postgres";
import { freePort } from "./processes";

export interface BenchPostgres {
  /** The maintenance URL (postgres://postgres@127.0.0.1:<port>/postgres). */
  url: string;
  /** Shuts the server down (fast: connections cut, a checkpoint) and removes its folder. */
  stop(): Promise<void>;
}

/** A server's version, and what makes its commits durable: fsync and synchronous_commit both on. */
export interface PostgresSettings {
  version: string;
  fsync: string;
  synchronous_commit: string;
}

/** A durable cluster started now, or null when Debian's PostgreSQL is not installed. */
export async function startDurablePostgres(): Promise<BenchPostgres | null> {
  const bin = debianPostgresBin();
  if (!bin) return null;
  const dir = mkdtempSync(join(tmpdir(), "keybrake-bench-pg-"));
  const data = join(dir, "data");
  const user = process.getuid?.() === 0 ? postgresUser() : null;
  if (user) chownSync(dir, user.uid, user.gid);
  const asPostgres = user ?? {};
  const run = (cmd: string[]) => Bun.spawnSync(cmd, { ...asPostgres, stdout: "pipe", stderr: "pipe" });
  const init = run([join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
  if (init.exitCode !== 0) throw new Error(`initdb failed: ${init.stderr}`);
  const port = await freePort();
  const settings = ["listen_addresses=127.0.0.1", "max_connections=200", "fsync=on", "synchronous_commit=on"];
  const server = Bun.spawn([join(bin, "postgres"), "-D", data, "-p", String(port), "-k", dir, ...settings.flatMap((s) => ["-c", s])], {
    ...asPostgres,
    stdout: "ignore",
    stderr: Bun.file(join(dir, "server.log")),
  });
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const stop = async () => {
    server.kill("SIGINT");
    await server.exited;
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 300; i++) {
    if (server.exitCode !== null) break;
    if (await answers(url)) return { url, stop };
    await Bun.sleep(100);
  }
  const log = existsSync(join(dir, "server.log")) ? readFileSync(join(dir, "server.log"), "utf8") : "";
  await stop();
  throw new Error(`the bench's PostgreSQL did not start:\n${log}`);
}

export async function postgresSettings(url: string): Promise<PostgresSettings> {
  const sql = new SQL({ url, max: 1 });
  try {
    const [settings] = await sql`SELECT current_setting('server_version') AS version, current_setting('fsync') AS fsync,
                                        current_setting('synchronous_commit') AS synchronous_commit`;
    return settings;
  } finally {
    await sql.close();
  }
}

async function answers(url: string): Promise<boolean> {
  const sql = new SQL({ url, max: 1, connectionTimeout: 1 });
  try {
    await sql`SELECT 1`;
    return true;
  } catch {
    return false;
  } finally {
    await sql.close();
  }
}

/** The `postgres` user Debian's package creates, to run the server as when this process is root. */
function postgresUser(): { uid: number; gid: number } {
  const id = (flag: string) => Number(Bun.spawnSync(["id", flag, "postgres"]).stdout.toString());
  return { uid: id("-u"), gid: id("-g") };
}

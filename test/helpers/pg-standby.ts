import { SQL } from "bun";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./process";
import {
  asPostgres,
  debianPostgresBin,
  initClusterData,
  mustRun,
  mustRunAsync,
  runningAsRoot,
  shellLine,
  stopWhenProcessEnds,
} from "./postgres";
import { waitFor } from "./receiver";

/**
 * PostgreSQL's standard HA pair, for the failover drill (SPEC §13): a primary that streams its WAL to a
 * synchronous standby (`synchronous_standby_names = '*'`, `synchronous_commit = on`, fsync on: a COMMIT is
 * acknowledged once it is on the standby's disk too), made with `pg_basebackup -R` from Debian's packages, in a
 * temp folder, on free ports of 127.0.0.1, trust auth. As root, the servers run as the `postgres` user. Like
 * ownPostgresCluster(), both are stopped and the folder removed when the test process ends, if `remove()` has not
 * done so before. Null when Debian's PostgreSQL is not installed (the caller skips).
 */
export interface StandbyPair {
  primary: { port: number; url: string };
  standby: { port: number; url: string };
  /** Both hosts, primary first, in libpq's multi-host form with `target_session_attrs=read-write`. */
  url: string;
  /** Kills the primary: `pg_ctl stop -m immediate` (no checkpoint, connections cut), without blocking the event loop. */
  crashPrimary(): Promise<void>;
  /** `pg_ctl promote`: the standby leaves recovery and takes writes (on its own: it has no standby of its own). */
  promoteStandby(): Promise<void>;
  /** Stops both (if running) and removes their folder. */
  remove(): void;
}

export async function postgresWithStandby(): Promise<StandbyPair | null> {
  const bin = debianPostgresBin();
  if (!bin) return null;
  const dir = mkdtempSync(join(tmpdir(), "keybrake-pg-ha-"));
  const [primaryPort, standbyPort] = [freePort(), freePort()];
  const node = (name: string, port: number) => ({
    data: join(dir, name),
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start: [join(bin, "pg_ctl"), "-D", join(dir, name), "-l", join(dir, `${name}.log`), "-w", "-o", options(port, name), "start"],
    stop: [join(bin, "pg_ctl"), "-D", join(dir, name), "-m", "immediate", "-w", "stop"],
  });
  // Only the primary waits for a synchronous standby: the promoted standby has none, and commits alone.
  const options = (port: number, name: string) =>
    `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on -c synchronous_commit=on` +
    (name === "primary" ? ` -c wal_level=replica -c "synchronous_standby_names=*"` : "");
  const primary = node("primary", primaryPort);
  const standby = node("standby", standbyPort);
  const stopBoth = [primary, standby].map((n) => `${shellLine(asPostgres(n.stop))} >/dev/null 2>&1`).join("; ");
  stopWhenProcessEnds(stopBoth, dir);
  const remove = () => {
    spawnSync("/bin/sh", ["-c", stopBoth]);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    if (runningAsRoot()) mustRun(["chown", "postgres", dir]);
    initClusterData(bin, primary.data);
    mustRun(asPostgres(primary.start));
    // -R: standby.signal and primary_conninfo, so the copy starts as a standby streaming from the primary.
    const from = ["-h", "127.0.0.1", "-p", String(primary.port), "-U", "postgres"];
    mustRun(asPostgres([join(bin, "pg_basebackup"), ...from, "-D", standby.data, "-R", "-X", "stream", "--checkpoint=fast"]));
    mustRun(asPostgres(standby.start));
    // Ready once the standby streams as the synchronous one: from then on every COMMIT waits for it.
    const sql = new SQL({ url: primary.url, max: 1 });
    try {
      await waitFor(
        async () => (await sql`SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'`).length === 1,
        20_000,
        "the standby streaming synchronously",
      );
    } finally {
      await sql.close({ timeout: 1 });
    }
  } catch (error) {
    const logs = ["primary", "standby"].map((n) => join(dir, `${n}.log`)).filter(existsSync);
    const said = logs.map((log) => readFileSync(log, "utf8")).join("\n");
    remove();
    throw new Error(`could not start a primary and its standby in ${dir}: ${(error as Error).message}\n${said}`);
  }
  return {
    primary: { port: primary.port, url: primary.url },
    standby: { port: standby.port, url: standby.url },
    url: `postgres://postgres@127.0.0.1:${primary.port},127.0.0.1:${standby.port}/postgres?target_session_attrs=read-write`,
    crashPrimary: () => mustRunAsync(asPostgres(primary.stop)),
    promoteStandby: () => mustRunAsync(asPostgres([join(bin, "pg_ctl"), "-D", standby.data, "-w", "promote"])),
    remove,
  };
}

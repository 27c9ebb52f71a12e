import { hostname } from "node:os";
import { ConfigError } from "../../config";
import { iso } from "../../util";
import { num, type Pg } from "./client";

/** The process that holds an instance id's lease. */
export interface LeaseHolder {
  host: string;
  pid: number;
  heartbeatAt: number;
  until: number;
}

/**
 * This instance's lease in `instances` (SPEC §13): while it is live (renewed before `lease_until`), no other
 * instance recovers this one's holds. An instance id belongs to one process at a time: a process whose id is
 * leased by another process (another host or pid) waits for that lease to run out, which it does when that process
 * died; a holder that renews it meanwhile is alive, two instances were given one id, and this one refuses to start.
 */
export function pgLeases(sql: Pg, instanceId: string, leaseMs: number) {
  const host = hostname();
  const pid = process.pid;
  let startedAt: number | null = null;

  /** Takes or extends the lease until `now + leaseMs`; false while another live process holds this id. */
  async function take(now: number, started: number): Promise<boolean> {
    const rows = await sql`
      INSERT INTO instances (id, host, pid, started_at, heartbeat_at, lease_until)
      VALUES (${instanceId}, ${host}, ${pid}, ${started}, ${now}, ${now + leaseMs})
      ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, started_at = excluded.started_at,
             heartbeat_at = excluded.heartbeat_at, lease_until = excluded.lease_until
       WHERE instances.lease_until <= ${now} OR (instances.host = excluded.host AND instances.pid = excluded.pid)
      RETURNING lease_until`;
    return rows.length > 0;
  }

  /** The process that holds this id's lease, and whether it is a dead process of this host. */
  async function holder(): Promise<(LeaseHolder & { deadHere: boolean }) | null> {
    const [row] = await sql`SELECT host, pid, heartbeat_at, lease_until FROM instances WHERE id = ${instanceId}`;
    if (!row) return null;
    const pid = num(row.pid);
    return {
      host: row.host,
      pid,
      heartbeatAt: num(row.heartbeat_at),
      until: num(row.lease_until),
      deadHere: row.host === host && !processAlive(pid),
    };
  }

  /** Takes over the lease of a process of this host that is gone (a crash, then a restart under the same id). */
  async function takeOver(now: number, deadPid: number): Promise<boolean> {
    const rows = await sql`
      UPDATE instances SET pid = ${pid}, started_at = ${now}, heartbeat_at = ${now}, lease_until = ${now + leaseMs}
       WHERE id = ${instanceId} AND host = ${host} AND pid = ${deadPid} RETURNING id`;
    return rows.length > 0;
  }

  return {
    /**
     * Takes the lease, first waiting out the lease of another process under the same id (`onWait` hears whose, once);
     * throws a ConfigError naming KEYBRAKE_INSTANCE_ID when that process renews it meanwhile.
     */
    async register(now: number, onWait?: (holder: LeaseHolder) => void): Promise<void> {
      const waitStart = Date.now();
      let seen: LeaseHolder | null = null;
      for (;;) {
        const at = now + (Date.now() - waitStart);
        if (await take(at, now)) break;
        const held = await holder();
        // Its holds are this restart's to recover at once: no need to wait for its lease to run out.
        if (held?.deadHere && (await takeOver(at, held.pid))) break;
        if (held && seen && held.heartbeatAt > seen.heartbeatAt && held.host === seen.host && held.pid === seen.pid) {
          throw new ConfigError(
            `KEYBRAKE_INSTANCE_ID "${instanceId}" is in use by a running instance (host ${held.host}, pid ${held.pid}, lease renewed at ${iso(held.heartbeatAt)}): give every instance its own id, or leave it unset (host:port)`,
          );
        }
        if (held && !seen) onWait?.(held);
        seen = held;
        // A live holder renews every third of a lease: one renewal is enough to tell it from a dead one.
        await Bun.sleep(Math.min(Math.max((held?.until ?? at) - at, 0) + 10, Math.ceil(leaseMs / 3) + 10));
      }
      startedAt = now;
    },

    /** Extends the lease; throws if another process has taken this id after the lease ran out. */
    async renew(now: number): Promise<void> {
      if (startedAt === null) throw new Error("the instance lease was never registered");
      if (!(await take(now, startedAt))) throw new Error(`instance id ${instanceId} is leased by another process`);
    },

    /** Gives the lease up at a clean stop: this instance leaves nothing to recover. */
    async release(): Promise<void> {
      await sql`DELETE FROM instances WHERE id = ${instanceId} AND host = ${host} AND pid = ${pid}`;
      startedAt = null;
    },
  };
}

/** Whether a process of this host is running (signal 0 checks without sending anything). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it runs, as another user.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

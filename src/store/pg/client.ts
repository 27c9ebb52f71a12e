import { SQL } from "bun";
import { parsePostgresUrl } from "../../postgres-url";

/** A PostgreSQL connection pool (Bun's built-in client), or a transaction or savepoint on it: all are tagged templates. */
export type Pg = SQL;

/**
 * PostgreSQL returns int8 (bigint) and numeric values, and count(*), as strings. Money (micro-dollars) and times
 * (Unix ms) stay below 2^53, so they are read back as plain numbers.
 */
export const num = (value: unknown): number => (typeof value === "number" ? value : Number(value));
export const numOrNull = (value: unknown): number | null => (value === null || value === undefined ? null : num(value));

/** Opens a pool on `url` (postgres://…, one host). `max`: connections per instance. */
export function openPgClient(url: string, max = 16): Pg {
  return new SQL({ url, max, idleTimeout: 30, connectionTimeout: 10 });
}

/** How often the pool's server is asked whether it still takes writes, and how long it may take to answer. */
const CHECK_MS = 1_000;
const PROBE_TIMEOUT_MS = 2_000;
/** While no listed host takes writes (the primary lost, no standby promoted yet): how often they are asked again. */
const SEARCH_MS = 250;

/**
 * The ledger's client for KEYBRAKE_DATABASE_URL (see postgres-url.ts). One host: a pool on it, which reconnects
 * by itself once the server is back. A list (a primary and its standbys): a pool on the first host that takes
 * writes, whatever `target_session_attrs` says (the ledger is written on every call), which follows the primary
 * (see `followPrimary`). `onPool` hears each pool opened: the first, and one per failover; `onMoved` hears where
 * a failover moved to (`host:port`, no credentials).
 */
export async function connectPg(
  url: string,
  max = 16,
  onPool: (pool: Pg) => void = () => {},
  onMoved: (where: string) => void = () => {},
): Promise<Pg> {
  const hosts = parsePostgresUrl(url)?.hosts ?? [url];
  const open = (host: string) => {
    const pool = openPgClient(host, max);
    onPool(pool);
    return pool;
  };
  if (hosts.length === 1) return open(url);
  const primary = await primaryAmong(hosts);
  if (primary === null) throw new Error(`none of the ${hosts.length} hosts takes writes: each refused, did not answer, or is a standby`);
  return followPrimary(hosts, primary, open, onMoved);
}

/**
 * A client over several hosts, for a failover (SPEC §13). It is one object for the store's lifetime (the queries,
 * group commits and lease renewals hold it), whose pool is swapped: every second the pool's server is asked
 * whether it still takes writes; once it does not (lost: refused, cut, silent; or a standby now, 25006), every host
 * is asked every 250 ms until one does (a standby promoted), and the pool moves there. Meanwhile the queries fail
 * as connection errors or 25006, which the callers answer 503 `store_unavailable`; the old pool's queries in flight
 * are given a few seconds, then cut. (A one-host URL whose name or address moves with the primary needs none of
 * this: its pool reconnects by itself.)
 */
function followPrimary(hosts: string[], primary: number, open: (host: string) => Pg, onMoved: (where: string) => void): Pg {
  let at = primary;
  let pool = open(hosts[at]!);
  let timer: Timer | undefined;
  let closed = false;
  const watch = (ms: number) => {
    timer = setTimeout(check, ms);
    timer.unref();
  };
  async function check() {
    const found = (await takesWrites(pool)) ? at : await primaryAmong(hosts);
    if (closed) return;
    if (found !== null && found !== at) {
      const old = pool;
      at = found;
      pool = open(hosts[at]!);
      old.close({ timeout: 5 }).catch(() => {});
      const moved = new URL(hosts[at]!);
      onMoved(`${moved.hostname}:${moved.port || "5432"}`);
    }
    watch(found === null ? SEARCH_MS : CHECK_MS);
  }
  async function close(options?: { timeout?: number }) {
    closed = true;
    clearTimeout(timer);
    await pool.close(options);
  }
  watch(CHECK_MS);
  // Every use goes to the pool of the moment: a query, `begin`, `reserve`, `unsafe`, `options`; `close` stops watching.
  return new Proxy((() => {}) as unknown as Pg, {
    apply: (_target, _this, args) => Reflect.apply(pool, pool, args),
    get(_target, name) {
      if (name === "close") return close;
      const value = Reflect.get(pool, name, pool);
      return typeof value === "function" ? value.bind(pool) : value;
    },
  });
}

/** The index of the first host (in the order listed) that takes writes now, or null when none does. */
async function primaryAmong(hosts: string[]): Promise<number | null> {
  const answers = await Promise.all(
    hosts.map(async (host) => {
      const one = new SQL({ url: host, max: 1, connectionTimeout: PROBE_TIMEOUT_MS / 1000 });
      try {
        return await takesWrites(one);
      } finally {
        one.close({ timeout: 0 }).catch(() => {});
      }
    }),
  );
  const first = answers.indexOf(true);
  return first === -1 ? null : first;
}

/** Whether `sql`'s server takes writes: a primary (not in recovery), not read-only. False if it does not answer in time. */
async function takesWrites(sql: Pg): Promise<boolean> {
  const asked = sql`SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off' AS writable`;
  let timer: Timer | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), PROBE_TIMEOUT_MS);
  });
  try {
    return await Promise.race([asked.then(([row]) => row.writable === true), late]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
    asked.cancel();
  }
}

/** A piece of SQL with its parameters, to build a query of (a WHERE condition). */
export type Fragment = SQL.Query<unknown>;

/** Conditions joined by AND (TRUE when there are none). */
export function allOf(sql: Pg, conditions: Fragment[]): Fragment {
  return conditions.reduce((where, condition) => sql`${where} AND ${condition}`, sql`TRUE`);
}

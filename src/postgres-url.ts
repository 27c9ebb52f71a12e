/**
 * KEYBRAKE_DATABASE_URL (SPEC §13): `postgres://user:password@host:port/database?…`, or libpq's multi-host form,
 * `postgres://user:password@host1:port1,host2:port2/database?target_session_attrs=read-write`, which lists a
 * primary and its standbys. Bun's SQL client takes one host only (1.4.5 refuses a list: ERR_INVALID_URL), so a
 * list is split here into one URL per host; the store connects to whichever takes writes (store/pg/client.ts).
 */
export interface PostgresUrl {
  /** One URL per host, in the order listed, each with the same user, password, database and parameters. */
  hosts: string[];
  /** `host:port,host:port/database`: where the ledger is, for log lines and errors (no credentials). */
  where: string;
  /** The password (decoded, "" when none): kept out of every log line and error. */
  password: string;
}

const SCHEME = /^postgres(ql)?:\/\//;

/** The URL's parts, or null when it is not a postgres:// URL with one host or a list of them. */
export function parsePostgresUrl(url: string): PostgresUrl | null {
  const scheme = SCHEME.exec(url)?.[0];
  if (scheme === undefined || url.length === scheme.length) return null;
  // The authority runs to the path, query or fragment; the user info ends at its last `@` (as WHATWG URL has it).
  const authorityEnd = url.slice(scheme.length).search(/[/?#]|$/) + scheme.length;
  const authority = url.slice(scheme.length, authorityEnd);
  const at = authority.lastIndexOf("@");
  const userinfo = authority.slice(0, at + 1);
  const listed = authority.slice(at + 1).split(",");
  if (listed.length > 1 && listed.includes("")) return null;
  const hosts = listed.map((host) => `${scheme}${userinfo}${host}${url.slice(authorityEnd)}`);
  if (!hosts.every((host) => URL.canParse(host))) return null;
  const parsed = hosts.map((host) => new URL(host));
  return {
    hosts,
    where: `${parsed.map((u) => `${u.hostname}:${u.port || "5432"}`).join(",")}${parsed[0]!.pathname}`,
    password: decodeURIComponent(parsed[0]!.password),
  };
}

const POOL_PARAM = "pool_max_conns";

/**
 * KEYBRAKE_DATABASE_URL's `pool_max_conns=N` (pgx's name for it): how many connections each instance opens, 1 to
 * 100, taken out of the URL (PostgreSQL would refuse it as a server setting). Without it, `poolSize` is undefined
 * and the store's default holds; null when it is not a whole number from 1 to 100.
 */
export function takePoolSize(url: string): { url: string; poolSize?: number } | null {
  const scheme = SCHEME.exec(url)?.[0] ?? "";
  const authorityEnd = url.slice(scheme.length).search(/[/?#]|$/) + scheme.length;
  const query = url.indexOf("?", authorityEnd);
  if (query < 0) return { url };
  const hash = url.indexOf("#", query);
  const end = hash < 0 ? url.length : hash;
  const params = new URLSearchParams(url.slice(query + 1, end));
  const raw = params.get(POOL_PARAM);
  if (raw === null) return { url };
  if (!/^\d{1,3}$/.test(raw) || Number(raw) < 1 || Number(raw) > 100) return null;
  params.delete(POOL_PARAM);
  const rest = params.toString();
  return { url: `${url.slice(0, query)}${rest ? `?${rest}` : ""}${url.slice(end)}`, poolSize: Number(raw) };
}

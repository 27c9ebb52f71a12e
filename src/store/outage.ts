import { KeybrakeError } from "../errors";

/**
 * Store outages (SPEC §4, §9, §13): errors that mean the ledger cannot be reached or written right now, as opposed
 * to a bug or a bad request. Such an error is answered 503 `store_unavailable` with `Retry-After` (nothing was
 * forwarded), never 500: PostgreSQL down or failing over, or a SQLite file on a full, read-only or failing disk.
 */

/**
 * Bun's own codes for a PostgreSQL connection that could not be made or was lost. Observed with Bun 1.4.5 against
 * a real server: a stopped server or an unresolvable host gives ERR_POSTGRES_CONNECTION_REFUSED ("Failed to
 * connect"), at once; a query in flight when the server dies, or sent on a pooled connection the server dropped,
 * ERR_POSTGRES_CONNECTION_CLOSED; a server that accepts TCP but never answers, ERR_POSTGRES_CONNECTION_TIMEOUT
 * after `connectionTimeout`. CLOSED is also what queries get after `sql.close()`, i.e. while Keybrake stops.
 */
const PG_CONNECTION_CODES = new Set([
  "ERR_POSTGRES_CONNECTION_CLOSED",
  "ERR_POSTGRES_CONNECTION_REFUSED",
  "ERR_POSTGRES_CONNECTION_FAILED",
  "ERR_POSTGRES_CONNECTION_TIMEOUT",
  "ERR_POSTGRES_IDLE_TIMEOUT",
  "ERR_POSTGRES_LIFETIME_TIMEOUT",
]);

/**
 * Operating-system codes for a socket that could not be opened or was lost. Bun's client reports its own codes
 * above, but a driver error carrying the system's code means the same; only trusted on a SQL error, since an
 * ECONNREFUSED from anything else (a vendor) is not the ledger's.
 */
const SOCKET_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN"]);
const SQL_ERROR_NAMES = new Set(["PostgresError", "SQLError"]);

/**
 * SQLSTATEs (a PostgresError's `errno`; Bun's `code` is then ERR_POSTGRES_SERVER_ERROR) of a server that cannot
 * serve writes now: class 08 connection exception; 57P01 admin shutdown (a fast stop, or a backend terminated),
 * 57P02 crash shutdown, 57P03 cannot connect now (starting up, shutting down, in recovery); class 53 insufficient
 * resources (disk full, out of memory, too many connections); 25006 read-only transaction (a standby, or a
 * primary demoted during a failover).
 */
const isOutageSqlState = (state: string) =>
  state.startsWith("08") || state.startsWith("53") || state === "57P01" || state === "57P02" || state === "57P03" || state === "25006";

/**
 * SQLite result codes (bun:sqlite's SQLiteError `code`: the extended code's name, e.g. SQLITE_IOERR_WRITE,
 * SQLITE_READONLY_DBMOVED) of a file that cannot be written now: the disk is full, failing or read-only, the file
 * cannot be opened, or another process holds the lock beyond busy_timeout.
 */
const SQLITE_OUTAGE = /^SQLITE_(FULL|IOERR|READONLY|CANTOPEN|BUSY|LOCKED)(_[A-Z_]+)?$/;

interface MaybeDbError {
  name?: unknown;
  code?: unknown;
  errno?: unknown;
  cause?: unknown;
}

/** The error itself, then its causes: drizzle wraps a driver's error in a DrizzleError whose `cause` it is. */
function* causes(err: unknown): Generator<MaybeDbError> {
  let e = err;
  for (let depth = 0; depth < 8 && typeof e === "object" && e !== null; depth++) {
    yield e as MaybeDbError;
    e = (e as MaybeDbError).cause;
  }
}

function isOutageItself(e: MaybeDbError): boolean {
  const code = typeof e.code === "string" ? e.code : "";
  if (PG_CONNECTION_CODES.has(code)) return true;
  if (typeof e.errno === "string" && code.startsWith("ERR_POSTGRES_") && isOutageSqlState(e.errno)) return true;
  if (SQLITE_OUTAGE.test(code)) return true;
  return SOCKET_CODES.has(code) && typeof e.name === "string" && SQL_ERROR_NAMES.has(e.name);
}

/** The error (or what it wraps) that makes `err` a store outage, or null when it is not one. */
function outageOf(err: unknown): MaybeDbError | null {
  for (const e of causes(err)) if (isOutageItself(e)) return e;
  return null;
}

/** Whether `err` means the ledger cannot be reached or written (see above): answer 503 `store_unavailable`. */
export function isStoreOutage(err: unknown): boolean {
  return outageOf(err) !== null;
}

/** The 503 for a store outage: `store_unavailable`, `Retry-After: 5`. Nothing may have been forwarded. */
export function storeUnavailable(): KeybrakeError {
  return new KeybrakeError("store_unavailable", undefined, { "retry-after": "5" });
}

/**
 * One line saying what the outage is, for a log: the driver's code, SQLSTATE and message, e.g.
 * `ERR_POSTGRES_CONNECTION_REFUSED: Failed to connect`. Built from the driver's error only, never from a wrapper
 * (drizzle's repeats the query and its parameters); anything URL-shaped is removed so that a database URL (and its
 * password) never reaches the log. `err` should be a store outage; anything else is described by its name only.
 */
export function describeStoreOutage(err: unknown): string {
  const e = outageOf(err) as (MaybeDbError & { message?: unknown }) | null;
  if (!e) return err instanceof Error ? err.name : typeof err;
  const code = typeof e.code === "string" ? e.code : "";
  const state = typeof e.errno === "string" ? ` (SQLSTATE ${e.errno})` : "";
  const message = typeof e.message === "string" ? e.message : "";
  const said = message
    .replace(/[a-z][a-z0-9+.-]*:\/\/\S*/gi, "<url>")
    .replace(/\s+/g, " ")
    .trim()
    .slice(0, 200);
  return `${code}${state}${said ? `: ${said}` : ""}`;
}

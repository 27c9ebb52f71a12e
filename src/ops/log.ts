import type { Store } from "../store/index";
import { describeStoreOutage } from "../store/outage";

/**
 * Keybrake's log: one line on stderr per notable event (SPEC §9), never one per allowed call. Text lines read
 * `keybrake: …` (`keybrake: warning: …`, `keybrake: ERROR: …`); KEYBRAKE_LOG_FORMAT=json writes one JSON
 * object per line instead: {"time", "level", "event", "msg", …the event's fields}. No secret is ever a field.
 *
 * The events: `start` (address, database, vendors and modes configured), `unknown_variable`, `orphaned_holds`,
 * `cap_hit` (the first per key and UTC day), `key_revoked` / `keys_revoked` / `token_revoked` (who, how many), `hold_resolved`,
 * `vendor_error` (5xx, timeout, unreachable: the call is ambiguous), `settlement_failed`, `price_differential`,
 * `settled_at_hold`, `reconciler`, `alert_delivery_failed` (an alert not delivered after 24 h of retries), `alert_worker`,
 * `unexpected_error`, `shutdown`.
 */
export type LogFormat = "text" | "json";
export type LogLevel = "info" | "warn" | "error";
export type LogFields = Record<string, string | number | boolean | null | undefined | readonly string[]>;

export interface Logger {
  info(event: string, message: string, fields?: LogFields): void;
  warn(event: string, message: string, fields?: LogFields): void;
  error(event: string, message: string, fields?: LogFields): void;
}

/** Where lines go: stderr, or a test's array. */
export type LineSink = (line: string) => void;
export const stderrSink: LineSink = (line) => {
  process.stderr.write(`${line}\n`);
};

const TEXT_PREFIX: Record<LogLevel, string> = { info: "keybrake: ", warn: "keybrake: warning: ", error: "keybrake: ERROR: " };

export function formatLine(format: LogFormat, level: LogLevel, event: string, message: string, fields: LogFields = {}, now = Date.now()) {
  if (format === "text") return TEXT_PREFIX[level] + message;
  const defined = Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
  return JSON.stringify({ time: new Date(now).toISOString(), level, event, msg: message, ...defined });
}

export function createLogger(format: LogFormat = "text", sink: LineSink = stderrSink): Logger {
  const at = (level: LogLevel) => (event: string, message: string, fields?: LogFields) =>
    sink(formatLine(format, level, event, message, fields));
  return { info: at("info"), warn: at("warn"), error: at("error") };
}

/** A `(message) => void` for code that logs whole `keybrake: …` messages (the WAL worker, unauthenticated floods). */
export const messageSink =
  (logger: Logger, level: LogLevel, event: string) =>
  (message: string): void =>
    logger[level](event, message.replace(/^keybrake: (?:ERROR: |warning: )?/, ""));

/**
 * The store with its admin events also logged when they stop or free something: revocations (who, which, how
 * many) and holds resolved by hand. Every other admin event is in GET /admin/events only.
 */
export function loggingAdminEvents<S extends Pick<Store, "recordAdminEvent">>(store: S, logger: Logger): S {
  return {
    ...store,
    async recordAdminEvent(event) {
      await store.recordAdminEvent(event);
      const d = event.details ?? {};
      if (event.action === "key.revoke") {
        logger.info("key_revoked", `key ${event.target} revoked by ${event.actor}`, { actor: event.actor, key_id: event.target, count: 1 });
      } else if (event.action === "key.revoke_bulk") {
        const ids = Array.isArray(d.revoked_ids) ? (d.revoked_ids as string[]) : [];
        const by =
          typeof d.label_prefix === "string" ? `label prefix ${d.label_prefix}` : `${(d.ids as string[] | undefined)?.length ?? 0} id(s)`;
        logger.info("keys_revoked", `${ids.length} key(s) revoked by ${event.actor} (${by})`, {
          actor: event.actor,
          count: ids.length,
          label_prefix: typeof d.label_prefix === "string" ? d.label_prefix : undefined,
          key_ids: ids.slice(0, 100),
        });
      } else if (event.action === "token.revoke") {
        const keys = Array.isArray(d.revoked_key_ids) ? (d.revoked_key_ids as string[]) : [];
        logger.info("token_revoked", `token ${event.target} revoked by ${event.actor}, with ${keys.length} key(s) it minted`, {
          actor: event.actor,
          token_id: event.target,
          count: keys.length,
          key_ids: keys.slice(0, 100),
        });
      } else if (event.action === "hold.settle" || event.action === "hold.release") {
        logger.info(
          "hold_resolved",
          `hold ${event.target} ${event.action === "hold.settle" ? "settled" : "released"} by ${event.actor} at ${d.cost_usd ?? 0} USD`,
          {
            actor: event.actor,
            hold_id: event.target,
            key_id: typeof d.key_id === "string" ? d.key_id : undefined,
            cost_usd: Number(d.cost_usd ?? 0),
          },
        );
      }
    },
  };
}

/** Within this long after a `store_unavailable` line, further outages are counted, not each logged. */
const OUTAGE_LOG_EVERY_MS = 60_000;
/** Per logger (one per app): when it last wrote a `store_unavailable` line, and how many outages it has not logged since. */
const outageLogs = new WeakMap<Logger, { lastAt: number; since: number }>();

/**
 * Logs an error answered 503 `store_unavailable`: one warning line, then at most one a minute for as long as the
 * outage goes on (saying how many were answered since), so that an outage under load is a few lines, not one per
 * call (SPEC §9). The state is kept per logger, so the app's onError and the proxy, sharing the app's logger,
 * share the one line. The line names the driver's error only (describeStoreOutage): never the URL or password.
 */
export function logStoreOutage(log: Logger, err: unknown, now: number = Date.now()): void {
  const state = outageLogs.get(log) ?? { lastAt: Number.NEGATIVE_INFINITY, since: 0 };
  outageLogs.set(log, state);
  // A clock set back (tests' injected clocks) logs again rather than staying silent.
  if (now - state.lastAt < OUTAGE_LOG_EVERY_MS && now >= state.lastAt) {
    state.since++;
    return;
  }
  const what = describeStoreOutage(err);
  const more = state.since > 0 ? ` (${state.since} more since the last such line)` : "";
  log.warn("store_unavailable", `the ledger cannot be reached: ${what}; answering 503 store_unavailable${more}`, {
    error: what,
    count: state.since + 1,
  });
  state.lastAt = now;
  state.since = 0;
}

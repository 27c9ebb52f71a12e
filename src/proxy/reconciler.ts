import type { Config } from "../config";
import { callUpstream } from "./forward";
import { auditRow, type AuditRow, type DueReconciliation, isStoreOutage, type Store } from "../store/index";
import { microsToUsd } from "../util";
import { createLogger, type LineSink, logStoreOutage } from "../ops/log";
import { vendorNamed } from "../vendors/index";
import type { Settlement } from "../vendors/types";

const HOUR_MS = 3_600_000;
/** Reads stop a day after the call: its entry keeps what it was settled at (the hold, a stated maximum). */
const GIVE_UP_AFTER_MS = 24 * HOUR_MS;
/** Retries wait at least this long, so KEYBRAKE_TWILIO_RECONCILE_AFTER_S=0 cannot re-read an entry every tick. */
const MIN_RETRY_MS = 30_000;

export interface ReconcilerOptions {
  /** How often due entries are looked for. */
  everyMs?: number;
  /** At most this many reads per tick, one after another: with `everyMs`, bounds the rate a vendor sees. */
  batch?: number;
  now?: () => number;
  /** Where log lines go (stderr by default), formatted per KEYBRAKE_LOG_FORMAT. */
  log?: LineSink;
}

/** What reading an entry's final price found. */
type Read =
  | { kind: "final"; settlement: Settlement; vendorRequestId: string | null; upstreamMs: number }
  /** Not stated yet, or the read failed: try again later. */
  | { kind: "not_yet" }
  /** It will never be readable (no FX rate for its currency, say): stop trying. */
  | { kind: "never"; why: string };

/**
 * Calls whose answer carried no final price (SPEC §6: Twilio messages and calls) were settled at their hold,
 * with where to read the price later. This loop reads it when due, with the real secret, and re-settles the
 * entry to it (audit `cost_source: reconciled`, which may lower spend as well as raise it). A price not known
 * yet is read again later, each wait twice the one before (at most an hour), for up to a day after the call.
 */
export function startReconciler(store: Store, config: Config, options: ReconcilerOptions = {}) {
  const { everyMs = 5_000, batch = 50, now = Date.now } = options;
  const log = createLogger(config.logFormat, options.log);
  let stopped = false;
  let running: Promise<void> | null = null;

  const reconcile = async (entry: DueReconciliation) => {
    const read = await readFinalPrice(entry, config);
    if (read.kind === "final") {
      await store.reconcileEntry({ id: entry.id, costMicros: read.settlement.costMicros, audit: reconciledAuditRow(entry, read, now()) });
      if (read.settlement.costMicros > entry.holdMicros) {
        log.warn(
          "price_differential",
          `price_differential: ${entry.id} (key ${entry.keyId}) cost ${microsToUsd(read.settlement.costMicros)} USD, ${microsToUsd(entry.holdMicros)} USD was held`,
          {
            hold_id: entry.id,
            key_id: entry.keyId,
            cost_usd: microsToUsd(read.settlement.costMicros),
            hold_usd: microsToUsd(entry.holdMicros),
          },
        );
      }
      return;
    }
    const firstDelayMs = config.vendors[entry.vendor]?.reconcileAfterMs ?? 0;
    const next = read.kind === "never" ? null : nextRead(entry, now(), firstDelayMs);
    await store.postponeReconciliation(entry.id, next);
    if (next === null) {
      const why = read.kind === "never" ? read.why : `no final price after ${entry.attempts + 1} reads`;
      log.info("reconciler", `reconciler: ${entry.id} (key ${entry.keyId}) stays at ${microsToUsd(entry.costMicros)} USD: ${why}`, {
        hold_id: entry.id,
        key_id: entry.keyId,
        cost_usd: microsToUsd(entry.costMicros),
      });
    }
  };

  const tick = (): Promise<void> => {
    running ??= (async () => {
      try {
        for (const entry of await store.dueReconciliations(now(), batch)) {
          if (stopped) break;
          await reconcile(entry);
        }
      } catch (err) {
        // The ledger is down: said once a minute, not once a tick; due entries wait for it.
        if (isStoreOutage(err)) logStoreOutage(log, err, now());
        else
          log.error("reconciler", `reconciler: ${err instanceof Error ? err.message : String(err)}; due entries are read again next time`);
      } finally {
        running = null;
      }
    })();
    return running;
  };

  const timer = setInterval(() => void tick(), everyMs);
  timer.unref();
  return {
    tick,
    /** Stops the loop; resolves once a read in progress has finished writing (call before closing the store). */
    stop(): Promise<void> {
      stopped = true;
      clearInterval(timer);
      return running ?? Promise.resolve();
    },
  };
}

async function readFinalPrice(entry: DueReconciliation, config: Config): Promise<Read> {
  const vendor = vendorNamed(entry.vendor);
  const settings = config.vendors[entry.vendor];
  if (!vendor?.finalPrice || !settings) return { kind: "never", why: `${entry.vendor} states no final price` };
  const creds = settings.credentials[entry.mode];
  if (!creds) return { kind: "not_yet" };
  const started = performance.now();
  const result = await callUpstream(settings.baseUrl + creds.upstreamPath(entry.reconcilePath), {
    method: "GET",
    headers: new Headers(creds.headers),
    body: null,
    timeoutMs: config.upstreamTimeoutMs,
  });
  const upstreamMs = performance.now() - started;
  if (result.kind !== "response" || result.status !== 200) return { kind: "not_yet" };
  let settlement: Settlement | null;
  try {
    settlement = vendor.finalPrice(JSON.parse(new TextDecoder().decode(result.body)), config.fx);
  } catch (err) {
    if (err instanceof SyntaxError) return { kind: "not_yet" }; // not JSON: a proxy's error page, say
    return { kind: "never", why: err instanceof Error ? err.message : String(err) };
  }
  if (!settlement) return { kind: "not_yet" };
  return { kind: "final", settlement, vendorRequestId: vendor.requestId(result.headers), upstreamMs };
}

/** When to read again after `attempts + 1` reads found nothing; null once a day has passed since the call. */
function nextRead(entry: DueReconciliation, now: number, firstDelayMs: number): number | null {
  if (now - entry.settledAt >= GIVE_UP_AFTER_MS) return null;
  return now + Math.min(Math.max(firstDelayMs, MIN_RETRY_MS) * 2 ** (entry.attempts + 1), HOUR_MS);
}

/** Not a proxied call but a hold event: its cost is what the final price changes (set by the store). */
function reconciledAuditRow(entry: DueReconciliation, read: Extract<Read, { kind: "final" }>, at: number): AuditRow {
  return auditRow({
    id: `kbr_reconciled_${entry.id}`,
    at,
    keyId: entry.keyId,
    label: entry.label,
    vendor: entry.vendor,
    mode: entry.mode,
    method: entry.method,
    path: entry.path,
    decision: "price_reconciled",
    holdMicros: entry.holdMicros,
    costSource: "reconciled",
    currency: read.settlement.currency,
    amountMinor: read.settlement.amountMinor,
    vendorRequestId: read.vendorRequestId,
    upstreamMs: read.upstreamMs,
  });
}

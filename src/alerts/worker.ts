import type { Config } from "../config";
import { createLogger, type LineSink, logStoreOutage } from "../ops/log";
import type { Metrics } from "../ops/metrics";
import { type PresentedHeads, presentHeads } from "../store/audit-chain";
import { type DueDelivery, isStoreOutage, type Store } from "../store/index";
import { urlOrigin } from "../store/alerts";
import { DELIVERY_TIMEOUT_MS, type SendResult, sendEvent } from "./send";

const HOUR_MS = 3_600_000;

export interface AlertWorkerOptions {
  /** How often due deliveries are looked for (a finished attempt also looks again at once). */
  everyMs?: number;
  /** At most this many POSTs in flight: a slow receiver holds these, never a proxied call. */
  concurrency?: number;
  /** A receiver's time to answer. */
  timeoutMs?: number;
  /** The first retry waits between half of this and this (then doubling, with jitter): within 10 s by default. */
  retryBaseMs?: number;
  /** The longest wait between two attempts. */
  maxRetryMs?: number;
  /** After this long since the event, a failed attempt is the last: the delivery is failed and logged. */
  giveUpAfterMs?: number;
  now?: () => number;
  /** Where log lines go (stderr by default), formatted per KEYBRAKE_LOG_FORMAT. */
  log?: LineSink;
  metrics?: Metrics;
}

/** When to try again after `attempts` failed attempts: exponential, with jitter (half to all of the step). */
export function retryDelay(attempts: number, baseMs: number, maxMs: number, random = Math.random): number {
  const step = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempts - 1));
  return Math.round(step * (0.5 + random() * 0.5));
}

/**
 * The alert delivery worker (SPEC §12). Polls the outbox for pending deliveries that are due and POSTs each
 * (alerts/send.ts), at most `concurrency` at a time, each bounded by `timeoutMs`. It runs beside the proxy on
 * the event loop and never blocks it: a hanging receiver ties up only the worker's own slots. Each attempt is
 * recorded: delivered; pending again after an exponential backoff with jitter; or, 24 h after the event,
 * failed, with one log line. Nothing is marked before it is sent, so a crash or a stop mid-send leaves the
 * delivery pending and it is sent again (at least once: receivers de-duplicate by the event id).
 */
export function startAlertWorker(store: Store, config: Pick<Config, "logFormat" | "publicUrl">, options: AlertWorkerOptions = {}) {
  const {
    everyMs = 1_000,
    concurrency = 4,
    timeoutMs = DELIVERY_TIMEOUT_MS,
    retryBaseMs = 5_000,
    maxRetryMs = HOUR_MS,
    giveUpAfterMs = 24 * HOUR_MS,
    now = Date.now,
    metrics,
  } = options;
  const log = createLogger(config.logFormat, options.log);
  const stopping = new AbortController();
  const inFlight = new Map<number, Promise<void>>();
  let polling: Promise<void> | null = null;

  const record = async (d: DueDelivery, result: SendResult) => {
    const at = now();
    const attempts = d.attempts + 1;
    const deadline = d.createdAt + giveUpAfterMs;
    let outcome: "delivered" | "retry" | "failed" = result.ok ? "delivered" : "retry";
    let nextAttemptAt: number | null = null;
    if (!result.ok) {
      nextAttemptAt = at + retryDelay(attempts, retryBaseMs, maxRetryMs);
      // The last attempt is at the deadline; one that fails there (or after) ends the delivery.
      if (at >= deadline) outcome = "failed";
      else nextAttemptAt = Math.min(nextAttemptAt, deadline);
    }
    await store.recordDeliveryAttempt({ seq: d.seq, at, outcome, status: result.status, error: result.error, nextAttemptAt });
    metrics?.alertDelivery(d.event.type, outcome);
    if (outcome === "failed") {
      log.error(
        "alert_delivery_failed",
        `alert_delivery_failed: ${d.event.type} ${d.event.id}${d.event.keyId ? ` (key ${d.event.keyId})` : ""} to webhook ${d.webhook.id} ` +
          `(${urlOrigin(d.webhook.url)}) not delivered after ${attempts} attempts over ${Math.round((at - d.createdAt) / HOUR_MS)} h; last: ${result.error}`,
        {
          event_id: d.event.id,
          event: d.event.type,
          key_id: d.event.keyId,
          webhook_id: d.webhook.id,
          destination: urlOrigin(d.webhook.url),
          attempts,
          last_error: result.error,
        },
      );
    }
  };

  const deliver = async (d: DueDelivery, auditHead: PresentedHeads) => {
    const result = await sendEvent(d.webhook, d.event, {
      publicUrl: config.publicUrl,
      auditHead,
      timeoutMs,
      signal: stopping.signal,
      nowMs: now(),
    });
    // Stopping mid-send: the attempt is not recorded, so the delivery stays pending and is sent after the restart.
    if (stopping.signal.aborted) return;
    try {
      await record(d, result);
    } catch (err) {
      log.error(
        "alert_worker",
        `alert worker: recording ${d.event.id}'s attempt failed: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  };

  const start = (d: DueDelivery, auditHead: PresentedHeads) => {
    const sending = deliver(d, auditHead).finally(() => {
      inFlight.delete(d.seq);
      // A slot is free: what else is due goes now, not at the next tick.
      if (!stopping.signal.aborted) void tick();
    });
    inFlight.set(d.seq, sending);
    return sending;
  };

  /** Starts what is due, within the free slots; resolves once those attempts are recorded. */
  const tick = (): Promise<void> => {
    if (stopping.signal.aborted) return Promise.resolve();
    if (polling) return polling;
    const free = concurrency - inFlight.size;
    if (free <= 0) return Promise.resolve();
    const poll = (async () => {
      let started: Promise<void>[] = [];
      try {
        const due = await store.dueDeliveries(now(), free, [...inFlight.keys()]);
        // Read once for what this poll sends: every body carries where the audit's chain stands (SPEC §19).
        const auditHead = due.length > 0 ? presentHeads(await store.auditHeads()) : presentHeads([]);
        started = due.map((d) => start(d, auditHead));
      } catch (err) {
        // The ledger is down: said once a minute, not once a poll; pending deliveries wait for it.
        if (isStoreOutage(err)) logStoreOutage(log, err, now());
        else
          log.error(
            "alert_worker",
            `alert worker: ${err instanceof Error ? err.message : String(err)}; pending deliveries are tried again next time`,
          );
      } finally {
        // After the first await, so always after `polling = poll` below: the next tick may poll while these send.
        polling = null;
      }
      await Promise.all(started);
    })();
    polling = poll;
    return poll;
  };

  const timer = setInterval(() => void tick(), everyMs);
  timer.unref();
  return {
    tick,
    /** How many POSTs are in flight now. */
    inFlight: () => inFlight.size,
    /** Stops polling and aborts POSTs in flight (they stay pending); resolves once nothing more will be written. */
    async stop(): Promise<void> {
      clearInterval(timer);
      stopping.abort();
      await Promise.allSettled([...inFlight.values()]);
    },
  };
}

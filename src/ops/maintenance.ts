import type { Store } from "../store/index";

const EVERY_MS = 60_000;
const BATCH = 500;

/**
 * Background upkeep: expired idempotency entries, and audit rows older than the retention, are deleted in small
 * batches, each its own short transaction, yielding between batches so proxied calls never wait behind a long
 * delete. The ledger is never pruned.
 */
export function startMaintenance(store: Store, retentionDays: number, now: () => number = Date.now) {
  let running = false;
  const drain = async (prune: () => Promise<number>) => {
    while ((await prune()) === BATCH) await Bun.sleep(5);
  };
  const tick = async () => {
    if (running) return;
    running = true;
    try {
      await drain(() => store.pruneIdempotency(now(), BATCH));
      await drain(() => store.pruneAudit(now() - retentionDays * 86_400_000, BATCH));
      // Alert events past the retention whose deliveries are finished, and the marks of past days' thresholds.
      await drain(() => store.pruneAlerts(now() - retentionDays * 86_400_000, BATCH));
      // Approvals nobody used before they lapsed give their reserved holds back, even if the job never retries.
      await drain(() => store.expireApprovals(now(), BATCH));
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void tick(), EVERY_MS);
  timer.unref();
  return { tick, stop: () => clearInterval(timer) };
}

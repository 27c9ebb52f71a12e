import type { Store } from "../store/index";

const EVERY_MS = 60_000;
const BATCH = 500;

/**
 * Background upkeep: expired idempotency entries are deleted in small batches, each its own short transaction,
 * yielding between batches so proxied calls never wait behind a long delete.
 */
export function startMaintenance(store: Store, now: () => number = Date.now) {
  let running = false;
  const tick = async () => {
    if (running) return;
    running = true;
    try {
      while ((await store.pruneIdempotency(now(), BATCH)) === BATCH) await Bun.sleep(5);
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void tick(), EVERY_MS);
  timer.unref();
  return { tick, stop: () => clearInterval(timer) };
}

/**
 * The ledger alone: hold + settle pairs per second through the store, no HTTP. Each pair is two
 * `BEGIN IMMEDIATE` transactions, the second with its audit row, exactly as the proxy does.
 */
import { auditRow, openStore, type Store } from "../src/store/index";

/** A Stripe key with room for any bench's calls (a $1 B daily cap), for 24 hours. */
export const insertBenchKey = (store: Pick<Store, "insertKey">, id: string, label: string, now: number) =>
  store.insertKey({
    id,
    keyHash: id,
    keyHint: "kb_live_…",
    vendor: "stripe",
    mode: "live",
    mintedBy: "admin",
    label,
    dailyCapMicros: 1e15,
    totalCapMicros: null,
    allowedEndpoints: ["POST /v1/payment_intents"],
    maxRequestsPerMinute: null,
    requireIdempotencyKey: false,
    metadata: {},
    createdAt: now,
    expiresAt: now + 86_400_000,
  });

export async function benchLedger(path: string, pairs: number) {
  const store = openStore(path);
  const now = Date.now();
  await insertBenchKey(store, "vk_bench", "bench", now);
  const day = new Date(now).toISOString().slice(0, 10);
  const audit = auditRow({
    id: "",
    at: now,
    keyId: "vk_bench",
    label: "bench",
    vendor: "stripe",
    mode: "live",
    method: "POST",
    path: "/v1/payment_intents",
    status: 200,
    decision: "allowed",
    holdMicros: 1_000_000,
    costMicros: 1_000_000,
    costSource: "request",
    currency: "usd",
    amountMinor: 100,
    vendorRequestId: "req_x",
    upstreamMs: 1,
    overheadMs: 0.05,
    clientIp: "127.0.0.1",
  });
  const started = performance.now();
  for (let i = 0; i < pairs; i++) {
    const holdId = `hold_${i}`;
    await store.holdSpend({
      holdId,
      keyId: "vk_bench",
      day,
      micros: 1_000_000,
      ledger: true,
      reuseAmbiguous: true,
      now,
      call: { requestId: `kbr_${i}`, method: "POST", path: "/v1/payment_intents" },
    });
    await store.settleCall({
      keyId: "vk_bench",
      day,
      holdId,
      outcome: "settled",
      costMicros: 1_000_000,
      now,
      audit: { ...audit, id: `kbr_${i}` },
    });
  }
  const seconds = (performance.now() - started) / 1000;
  await store.close();
  return { pairs, opsPerSecond: pairs / seconds, microsPerPair: (seconds * 1e6) / pairs };
}

if (import.meta.main) {
  const { mkdtempSync } = await import("node:fs");
  const { join } = await import("node:path");
  const { tmpdir } = await import("node:os");
  const result = await benchLedger(join(mkdtempSync(join(tmpdir(), "kb-ledger-")), "ledger.db"), Number(process.argv[2] ?? 20_000));
  console.log(result);
}

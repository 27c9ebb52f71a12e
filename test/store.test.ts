import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore, type AuditRow, auditRow, type Store } from "../src/store/index";

let dir: string;
let store: Store;
const now = Date.UTC(2026, 10, 27, 12);
const day = "2026-11-27";

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "keybrake-store-"));
  store = openStore(join(dir, "keybrake.db"));
  await store.insertKey({
    id: "vk_store",
    keyHash: "hash_store",
    keyHint: "kb_live_…",
    vendor: "stripe",
    mode: "live",
    mintedBy: "admin",
    label: "store/run",
    dailyCapMicros: 100_000_000,
    totalCapMicros: null,
    allowedEndpoints: ["POST /v1/payment_intents"],
    maxRequestsPerMinute: null,
    requireIdempotencyKey: false,
    metadata: {},
    createdAt: now,
    expiresAt: now + 86_400_000,
  });
});
afterAll(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const audit = (id: string): AuditRow =>
  auditRow({
    id,
    at: now,
    keyId: "vk_store",
    label: "store/run",
    vendor: "stripe",
    mode: "live",
    method: "POST",
    path: "/v1/payment_intents",
    status: 200,
    decision: "allowed",
    holdMicros: 29_000_000,
    costMicros: 29_000_000,
    costSource: "request",
    currency: "usd",
    amountMinor: 2900,
    vendorRequestId: "req_1",
    upstreamMs: 1,
    overheadMs: 0.1,
  });

describe("read-your-writes", () => {
  test("a settlement still queued (the proxy does not wait for it) is committed before any other store read", async () => {
    const hold = await store.holdSpend({
      holdId: "hold_ryw",
      keyId: "vk_store",
      day,
      micros: 29_000_000,
      ledger: true,
      reuseAmbiguous: true,
      now,
      call: { requestId: "kbr_ryw", method: "POST", path: "/v1/payment_intents" },
    });
    expect(hold.kind).toBe("admitted");
    const settled = store.settleCall({
      keyId: "vk_store",
      day,
      holdId: "hold_ryw",
      outcome: "settled",
      costMicros: 29_000_000,
      now,
      audit: audit("kbr_ryw"),
    });
    // Read in the same turn, before the queued commit would run on its own.
    const [holds, key, usage, page] = await Promise.all([
      store.listHolds("held", 10),
      store.findKeyById("vk_store"),
      store.dayUsage(["vk_store"], day),
      store.listAudit({ keyId: "vk_store", limit: 10 }),
    ]);
    expect(holds).toEqual([]);
    expect(key).toMatchObject({ spentTotalMicros: 29_000_000, heldTotalMicros: 0, calls: 1 });
    expect(usage.get("vk_store")).toEqual({ settledMicros: 29_000_000, heldMicros: 0 });
    expect(page.data.map((r) => [r.id, r.costMicros])).toEqual([["kbr_ryw", 29_000_000]]);
    await settled;
  });
});

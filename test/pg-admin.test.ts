import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore, type SqliteStore } from "../src/store/index";
import { pgAdminQueries } from "../src/store/pg/admin";
import { pgAlertOutbox, pgAlertQueries } from "../src/store/pg/alerts";
import { num, openPgClient, type Pg } from "../src/store/pg/client";
import { pgKeyQueries } from "../src/store/pg/keys";
import { applyPgMigrations } from "../src/store/pg/migrate";
import { pgTokenQueries } from "../src/store/pg/tokens";
import type { Issuance, NewKey } from "../src/store/types";
import { dropTestDatabase, testDatabaseUrl } from "./helpers/postgres";

/**
 * The PostgreSQL keys, tokens, admin events, settings and alerts (src/store/pg/{keys,tokens,admin,alerts}.ts),
 * with two clients on one database standing for two Keybrake instances: what one writes, the other sees at once,
 * and the limits, claims and marks hold across both.
 */

const url = await testDatabaseUrl({ migrated: true });
const now = Date.UTC(2026, 10, 27, 12);
const day = "2026-11-27";
const dayStart = Date.UTC(2026, 10, 27);

/** Two instances' connection pools, and each one's queries. */
let a: Pg;
let b: Pg;
const outbox = pgAlertOutbox();
const instance = (sql: Pg) => ({
  keys: pgKeyQueries(sql, outbox),
  alerts: pgAlertQueries(sql),
  tokens: pgTokenQueries(sql),
  admin: pgAdminQueries(sql),
});
let one: ReturnType<typeof instance>;
let two: ReturnType<typeof instance>;

let keyCount = 0;
function newKey(overrides: Partial<NewKey> = {}): NewKey {
  const n = ++keyCount;
  return {
    id: `vk_${String(n).padStart(4, "0")}`,
    keyHash: `hash_${n}`,
    keyHint: "kb_live_…",
    vendor: "stripe",
    mode: "live",
    label: `run/${n}`,
    mintedBy: "admin",
    dailyCapMicros: 10_000_000,
    totalCapMicros: null,
    allowedEndpoints: ["POST /v1/payment_intents"],
    maxRequestsPerMinute: null,
    requireIdempotencyKey: false,
    metadata: { job: "nightly" },
    createdAt: now,
    expiresAt: now + 86_400_000,
    ...overrides,
  };
}

const issuance = (overrides: Partial<Issuance>): Issuance => ({
  tokenId: "tok_issuer",
  micros: 1_000_000,
  now,
  dayStart,
  maxUsdPerDayMicros: null,
  maxKeysPerHour: null,
  ...overrides,
});

/** Starts `count` operations together and resolves once all have settled. */
const together = <T>(count: number, op: (i: number) => Promise<T>) => Promise.all(Array.from({ length: count }, (_, i) => op(i)));

beforeAll(async () => {
  if (!url) return;
  a = openPgClient(url, 10);
  b = openPgClient(url, 10);
  await applyPgMigrations(a);
  one = instance(a);
  two = instance(b);
});

afterAll(async () => {
  if (!url) return;
  await a.close({ timeout: 5 });
  await b.close({ timeout: 5 });
  await dropTestDatabase(url);
});

describe.skipIf(!url)("keys on PostgreSQL", () => {
  test("insert, find by id and by hash: the same record and policy SQLite gives, numbers as numbers", async () => {
    const key = newKey({
      totalCapMicros: 50_000_000,
      maxRequestsPerMinute: 60,
      requireIdempotencyKey: true,
      perCustomerCapMicros: 2_000_000,
    });
    const record = await one.keys.insertKey(key);
    expect(record).toEqual({
      id: key.id,
      keyHint: key.keyHint,
      vendor: "stripe",
      mode: "live",
      label: key.label,
      mintedBy: "admin",
      dailyCapMicros: 10_000_000,
      totalCapMicros: 50_000_000,
      allowedEndpoints: ["POST /v1/payment_intents"],
      maxRequestsPerMinute: 60,
      requireIdempotencyKey: true,
      metadata: { job: "nightly" },
      status: "active",
      createdAt: now,
      expiresAt: now + 86_400_000,
      revokedAt: null,
      spentTotalMicros: 0,
      heldTotalMicros: 0,
      calls: 0,
      lastUsedAt: null,
      alertThresholds: [0.5, 0.8, 1],
      budgetId: null,
      perCustomerCapMicros: 2_000_000,
      perDestinationCapMicros: null,
      approvalAboveMicros: null,
      approvalTtlMs: null,
      enforcement: "enforce",
    });
    expect(await two.keys.findKeyById(key.id)).toEqual(record);
    const { revokedAt, spentTotalMicros, heldTotalMicros, calls, lastUsedAt, alertThresholds, ...policy } = record;
    expect(await two.keys.findKeyByHash(key.keyHash)).toEqual(policy);
    expect(await two.keys.findKeyByHash("no such hash")).toBeNull();
    expect(await two.keys.findKeyById("vk_none")).toBeNull();
  });

  test("listKeys: the same pages as the SQLite store for every filter, `%` and `_` in a prefix are plain characters", async () => {
    const dir = mkdtempSync(join(tmpdir(), "keybrake-pg-parity-"));
    const sqlite: SqliteStore = openStore(join(dir, "keybrake.db"));
    try {
      const keys = [
        newKey({ label: "fam_1/a", vendor: "twilio" }),
        newKey({ label: "fam_1/b", mintedBy: "tok_x" }),
        newKey({ label: "famx1/c" }),
        newKey({ label: "fam%/d", mintedBy: "tok_x" }),
        newKey({ label: null }),
        newKey({ label: "fam_1/e", expiresAt: now - 1 }),
        newKey({ label: "fam_1/f", alertThresholds: [0.9] }),
      ];
      for (const k of keys) {
        await one.keys.insertKey(k);
        await sqlite.insertKey(k);
      }
      await one.keys.revokeKey(keys[1]!.id, now);
      await sqlite.revokeKey(keys[1]!.id, now);
      const filters = [
        { labelPrefix: "fam_1/" },
        { labelPrefix: "fam%" },
        { labelPrefix: "fam" },
        { label: "famx1/c" },
        { vendor: "twilio" },
        { mintedBy: "tok_x" },
        { status: "active" as const },
        { status: "revoked" as const },
        { status: "expired" as const },
        { labelPrefix: "fam", status: "active" as const },
      ];
      for (const filter of filters) {
        // Every page, by cursor. The cursors themselves differ (each store's own seq): the pages must not.
        const pages = async (list: typeof sqlite.listKeys) => {
          const seen: string[][] = [];
          let cursor: number | undefined;
          do {
            const page = await list({ ...filter, limit: 2, cursor }, now);
            seen.push(page.data.map((k) => k.id).filter((id) => keys.some((k) => k.id === id)));
            cursor = page.nextCursor ?? undefined;
          } while (cursor !== undefined);
          return seen.flat();
        };
        expect(await pages(two.keys.listKeys), JSON.stringify(filter)).toEqual(await pages(sqlite.listKeys));
      }
      for (const k of keys) expect(await two.keys.findKeyById(k.id)).toEqual((await sqlite.findKeyById(k.id))!);
    } finally {
      await sqlite.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("updateKey: only the fields given; an empty patch changes nothing; an unknown key is null", async () => {
    const key = await one.keys.insertKey(newKey());
    const changed = await two.keys.updateKey(key.id, { totalCapMicros: 20_000_000, alertThresholds: [0.25], expiresAt: now + 1 });
    expect(changed).toEqual({ ...key, totalCapMicros: 20_000_000, alertThresholds: [0.25], expiresAt: now + 1 });
    expect(await one.keys.updateKey(key.id, { dailyCapMicros: null })).toMatchObject({ dailyCapMicros: null, totalCapMicros: 20_000_000 });
    expect(await one.keys.updateKey(key.id, {})).toEqual((await one.keys.findKeyById(key.id))!);
    expect(await one.keys.updateKey("vk_none", { expiresAt: now })).toBeNull();
    // A key must keep a cap, as in SQLite.
    await expect(one.keys.updateKey(key.id, { totalCapMicros: null })).rejects.toThrow();
  });

  test("a revocation at one instance is seen by findKeyByHash at the other on its very next call", async () => {
    const key = newKey();
    await one.keys.insertKey(key);
    expect((await two.keys.findKeyByHash(key.keyHash))!.status).toBe("active");
    const revoked = await one.keys.revokeKey(key.id, now + 5, "ops");
    expect(revoked).toMatchObject({ status: "revoked", revokedAt: now + 5 });
    expect((await two.keys.findKeyByHash(key.keyHash))!.status).toBe("revoked");
    // Again: nothing changes, no second alert.
    expect(await two.keys.revokeKey(key.id, now + 9)).toMatchObject({ revokedAt: now + 5 });
    const alerts = await one.alerts.listAlertEvents({ keyId: key.id, limit: 10 });
    expect(alerts.data.map((e) => [e.type, e.data.by])).toEqual([["key_revoked", "ops"]]);
    expect(await one.keys.revokeKey("vk_none", now)).toBeNull();
  });

  test("revokeKeys: by ids, label prefix and minter (all must hold), each once, with one key_revoked each", async () => {
    const family = [newKey({ label: "bulk_/1" }), newKey({ label: "bulk_/2", mintedBy: "tok_b" }), newKey({ label: "bulkx/3" })];
    for (const k of family) await one.keys.insertKey(k);
    await expect(one.keys.revokeKeys({}, now)).rejects.toThrow("revokeKeys needs");
    expect(await two.keys.revokeKeys({ labelPrefix: "bulk_/", mintedBy: "tok_b" }, now, "ops")).toEqual([family[1]!.id]);
    // From both instances at once: every key revoked exactly once.
    const [x, y] = await Promise.all([
      one.keys.revokeKeys({ labelPrefix: "bulk" }, now, "ops"),
      two.keys.revokeKeys({ ids: family.map((k) => k.id) }, now, "ops"),
    ]);
    expect([...x, ...y].sort()).toEqual([family[0]!.id, family[2]!.id]);
    for (const k of family) {
      const events = await one.alerts.listAlertEvents({ keyId: k.id, type: "key_revoked", limit: 10 });
      expect(events.data).toHaveLength(1);
    }
  });

  test("dayUsage: the day's settled and held spend of the keys asked for", async () => {
    const [k1, k2] = [newKey(), newKey()];
    await one.keys.insertKey(k1);
    await one.keys.insertKey(k2);
    await a`INSERT INTO spend_days (key_id, day, settled_micros, held_micros) VALUES (${k1.id}, ${day}, 1500000, 250000), (${k1.id}, '2026-11-26', 9, 9)`;
    const usage = await two.keys.dayUsage([k1.id, k2.id], day);
    expect([...usage]).toEqual([[k1.id, { settledMicros: 1_500_000, heldMicros: 250_000 }]]);
    expect((await two.keys.dayUsage([], day)).size).toBe(0);
  });
});

describe.skipIf(!url)("issuer limits across instances", () => {
  test("20 mints at once from two instances under max_keys_per_hour 5: exactly 5 minted, the rest refused naming the rule", async () => {
    const limits = issuance({ tokenId: "tok_hourly", maxKeysPerHour: 5 });
    const results = await together(20, (i) =>
      (i % 2 ? one : two).keys.insertKeyWithin(newKey({ mintedBy: "tok_hourly" }), { ...limits, now: now + i }),
    );
    const ok = results.filter((r) => r.kind === "ok");
    expect(ok).toHaveLength(5);
    for (const r of results.filter((r) => r.kind === "refused")) expect(r).toEqual({ kind: "refused", rule: "max_keys_per_hour", used: 5 });
    expect((await one.keys.listKeys({ mintedBy: "tok_hourly", limit: 100 }, now)).data).toHaveLength(5);
    // An hour after the first mints, the window has room again.
    const later = await one.keys.insertKeyWithin(newKey({ mintedBy: "tok_hourly" }), { ...limits, now: now + 3_600_000 + 20 });
    expect(later.kind).toBe("ok");
  });

  test("issued_usd_per_day under concurrent mints and PATCHes: what is issued never passes it", async () => {
    const limits = issuance({ tokenId: "tok_daily", maxUsdPerDayMicros: 10_000_000, micros: 3_000_000 });
    const results = await together(12, (i) => (i % 2 ? one : two).keys.insertKeyWithin(newKey({ mintedBy: "tok_daily" }), limits));
    const minted = results.flatMap((r) => (r.kind === "ok" ? [r.value] : []));
    expect(minted).toHaveLength(3);
    for (const r of results.filter((r) => r.kind === "refused")) expect(r).toMatchObject({ rule: "issued_usd_per_day", used: 9_000_000 });
    // Raising two keys' caps at once by 1 USD each: only one raise fits in the 1 USD left.
    const raised = await Promise.all(
      minted
        .slice(0, 2)
        .map((k, i) => (i ? one : two).keys.updateKeyWithin(k.id, { dailyCapMicros: 4_000_000 }, { ...limits, micros: 4_000_000 })),
    );
    expect(raised.map((r) => r.kind).sort()).toEqual(["ok", "refused"]);
    expect(raised.find((r) => r.kind === "refused")).toMatchObject({ rule: "issued_usd_per_day", used: 10_000_000 });
    const [sum] = await a`SELECT sum(micros) AS s FROM key_issuance WHERE token_id = 'tok_daily'`;
    expect(num(sum.s)).toBe(10_000_000);
    // Lowering a cap issues nothing and records nothing.
    const lowered = await one.keys.updateKeyWithin(minted[2]!.id, { dailyCapMicros: 1_000_000 }, { ...limits, micros: 1_000_000 });
    expect(lowered).toMatchObject({ kind: "ok", value: { dailyCapMicros: 1_000_000 } });
    const [count] = await a`SELECT count(*) AS n FROM key_issuance WHERE token_id = 'tok_daily'`;
    expect(num(count.n)).toBe(4);
  });
});

describe.skipIf(!url)("alert thresholds and marks across instances", () => {
  /** A settlement as the ledger makes it: the key's row locked first, the spend written, then the outbox. */
  const settle = (sql: Pg, keyId: string, micros: number, at: number) =>
    sql.begin(async (tx) => {
      await tx`SELECT id FROM vault_keys WHERE id = ${keyId} FOR UPDATE`;
      await tx`INSERT INTO spend_days (key_id, day, settled_micros) VALUES (${keyId}, ${day}, ${micros})
               ON CONFLICT (key_id, day) DO UPDATE SET settled_micros = spend_days.settled_micros + excluded.settled_micros`;
      await tx`UPDATE vault_keys SET spent_total_micros = spent_total_micros + ${micros} WHERE id = ${keyId}`;
      await outbox.spendSettled(tx, keyId, day, micros, at);
    });

  test("settlements at two instances: each threshold fires once, with the spend after the call that crossed it", async () => {
    const key = newKey({ label: "thr/run", totalCapMicros: 100_000_000 });
    await one.keys.insertKey(key);
    await together(10, (i) => settle(i % 2 ? a : b, key.id, 1_000_000, now + i));
    const events = await one.alerts.listAlertEvents({ keyId: key.id, type: "cap_threshold", limit: 10 });
    expect(events.data.map((e) => [e.data.cap, e.data.threshold, e.data.spent_usd]).reverse()).toEqual([
      ["daily", 0.5, 5],
      ["daily", 0.8, 8],
      ["daily", 1, 10],
      // 10 of 100 USD: no lifetime threshold yet.
    ]);
    expect(events.data[0]).toMatchObject({ keyId: key.id, label: "thr/run", vendor: "stripe", mode: "live" });
    expect(events.data[0]!.data).toEqual({ cap: "daily", window: day, threshold: 1, cap_usd: 10, spent_usd: 10, percent: 100 });
  });

  test("the same crossing marked by two instances at once (no row lock between them) fires once", async () => {
    const key = newKey();
    await one.keys.insertKey(key);
    await a`INSERT INTO spend_days (key_id, day, settled_micros) VALUES (${key.id}, ${day}, 6000000)`;
    // Both saw 4 → 6 USD of a 10 USD cap: both cross 50 %. The second mark waits for the first to commit.
    let arrived = 0;
    let bothIn!: () => void;
    const barrier = new Promise<void>((resolve) => (bothIn = resolve));
    await together(2, (i) =>
      (i ? a : b).begin(async (tx) => {
        await tx`SELECT 1`;
        if (++arrived === 2) bothIn();
        await barrier;
        await outbox.spendSettled(tx, key.id, day, 2_000_000, now);
        await outbox.capRefused(tx, key.id, "daily", day, 10_000_000, undefined, 5_000_000, now);
        await outbox.holdsNeedAttention(tx, key.id, "ambiguous", [{ id: "h1", micros: 1 }], day, now);
        await Bun.sleep(20);
      }),
    );
    const events = await one.alerts.listAlertEvents({ keyId: key.id, limit: 10 });
    expect(events.data.map((e) => e.type).sort()).toEqual(["cap_exhausted", "cap_threshold", "holds_need_attention"]);
    // A later day is a new window; the lifetime window is not.
    await outbox.capRefused(a, key.id, "daily", "2026-11-28", 10_000_000, undefined, 1, now);
    await outbox.capRefused(a, key.id, "total", day, 10_000_000, undefined, 1, now);
    await outbox.capRefused(a, key.id, "total", "2026-11-28", 10_000_000, undefined, 1, now);
    expect((await one.alerts.listAlertEvents({ keyId: key.id, type: "cap_exhausted", limit: 10 })).data).toHaveLength(3);
  });

  test("a failed transaction leaves neither mark nor event: the crossing fires when it is retried", async () => {
    const key = newKey({ alertThresholds: [0.5] });
    await one.keys.insertKey(key);
    await a`INSERT INTO spend_days (key_id, day, settled_micros) VALUES (${key.id}, ${day}, 6000000)`;
    const failing = a.begin(async (tx) => {
      await outbox.spendSettled(tx, key.id, day, 2_000_000, now);
      throw new Error("the settlement failed");
    });
    await expect(failing).rejects.toThrow("the settlement failed");
    expect((await one.alerts.listAlertEvents({ keyId: key.id, limit: 10 })).data).toHaveLength(0);
    await b.begin((tx) => outbox.spendSettled(tx, key.id, day, 2_000_000, now));
    expect((await one.alerts.listAlertEvents({ keyId: key.id, limit: 10 })).data.map((e) => e.data.threshold)).toEqual([0.5]);
  });

  test("price_differential and orphaned holds_need_attention fire every time, with the event's fields", async () => {
    const key = newKey();
    await one.keys.insertKey(key);
    await a.begin(async (tx) => {
      await outbox.priceDifferential(tx, key.id, { holdId: "h_1", requestId: "req_1", holdMicros: 1_000_000, costMicros: 1_500_000 }, now);
      await outbox.holdsNeedAttention(tx, key.id, "orphaned", [{ id: "h_2", micros: 2_000_000 }], day, now);
      await outbox.holdsNeedAttention(tx, key.id, "orphaned", [{ id: "h_3", micros: 1_000_000 }], day, now);
      await outbox.priceDifferential(tx, "vk_none", { holdId: "h", requestId: null, holdMicros: 1, costMicros: 2 }, now);
    });
    const events = (await one.alerts.listAlertEvents({ keyId: key.id, limit: 10 })).data.reverse();
    expect(events.map((e) => e.type)).toEqual(["price_differential", "holds_need_attention", "holds_need_attention"]);
    expect(events[0]!.data).toEqual({ hold_id: "h_1", request_id: "req_1", hold_usd: 1, cost_usd: 1.5, over_usd: 0.5 });
    expect(events[1]!.data).toMatchObject({ reason: "orphaned", count: 1, amount_usd: 2, hold_ids: ["h_2"] });
  });
});

describe.skipIf(!url)("webhooks and deliveries", () => {
  const webhook = (id: string, overrides: Partial<{ events: string[]; labelPrefix: string | null; url: string }> = {}) => ({
    id,
    url: "https://hooks.example.com/services/T000/B000/secret-path",
    events: ["key_revoked"] as any,
    labelPrefix: null,
    format: "json" as const,
    createdAt: now,
    createdBy: "admin",
    secret: `whsec_${id}`,
    ...overrides,
  });

  test("insert, find (with its secret), list, delete (cancelling what is pending); a second delete is null", async () => {
    const created = await one.alerts.insertWebhook(webhook("wh_crud", { labelPrefix: "crud_/", events: ["key_revoked", "cap_threshold"] }));
    expect(created).toEqual({
      id: "wh_crud",
      url: "https://hooks.example.com/services/T000/B000/secret-path",
      events: ["key_revoked", "cap_threshold"],
      labelPrefix: "crud_/",
      format: "json",
      createdAt: now,
      createdBy: "admin",
      deletedAt: null,
    });
    expect(await two.alerts.findWebhook("wh_crud")).toEqual({ ...created, secret: "whsec_wh_crud" });
    expect((await two.alerts.listWebhooks()).map((w) => w.id)).toContain("wh_crud");
    // A matching key (label prefix, `_` plain) gets a delivery; one whose label only matches `_` as a wildcard does not.
    const [hit, miss] = [newKey({ label: "crud_/1" }), newKey({ label: "crudx/1" })];
    await one.keys.insertKey(hit);
    await one.keys.insertKey(miss);
    await one.keys.revokeKeys({ ids: [hit.id, miss.id] }, now);
    const pending = await two.alerts.listDeliveries({ webhookId: "wh_crud", limit: 10 });
    expect(pending.data.map((d) => [d.keyId, d.status, d.url])).toEqual([[hit.id, "pending", "https://hooks.example.com"]]);
    const deleted = await two.alerts.deleteWebhook("wh_crud", now + 1);
    expect(deleted).toEqual({ ...created, deletedAt: now + 1 });
    expect(await one.alerts.deleteWebhook("wh_crud", now + 2)).toBeNull();
    expect(await one.alerts.findWebhook("wh_crud")).toBeNull();
    expect((await one.alerts.listWebhooks()).map((w) => w.id)).not.toContain("wh_crud");
    const after = await one.alerts.listDeliveries({ webhookId: "wh_crud", limit: 10 });
    expect(after.data.map((d) => [d.status, d.lastError, d.nextAttemptAt])).toEqual([["cancelled", "webhook deleted", null]]);
  });

  test("dueDeliveries from two instances at once never hands out one delivery twice; a claim lasts 60 s", async () => {
    await one.alerts.insertWebhook(webhook("wh_due"));
    const keys = Array.from({ length: 40 }, () => newKey({ label: "due/run" }));
    for (const k of keys) await one.keys.insertKey(k);
    await one.keys.revokeKeys({ labelPrefix: "due/" }, now);
    const claimed: number[] = [];
    for (;;) {
      const rounds = await together(4, (i) => (i % 2 ? one : two).alerts.dueDeliveries(now, 3, []));
      const seqs = rounds.flat().map((d) => d.seq);
      if (seqs.length === 0) break;
      claimed.push(...seqs);
    }
    expect(claimed).toHaveLength(40);
    expect(new Set(claimed).size).toBe(40);
    // Claimed: not due again until the claim runs out, unless its attempt is recorded first.
    expect(await one.alerts.dueDeliveries(now + 59_999, 100, [])).toEqual([]);
    const [first, second] = claimed;
    await one.alerts.recordDeliveryAttempt({
      seq: first!,
      at: now + 1,
      outcome: "delivered",
      status: 200,
      error: null,
      nextAttemptAt: null,
    });
    await two.alerts.recordDeliveryAttempt({
      seq: second!,
      at: now + 1,
      outcome: "retry",
      status: 500,
      error: "HTTP 500",
      nextAttemptAt: now + 5_000,
    });
    const retried = await two.alerts.dueDeliveries(now + 5_000, 100, []);
    expect(retried.map((d) => d.seq)).toEqual([second!]);
    expect(retried[0]).toMatchObject({ attempts: 1, createdAt: now, event: { type: "key_revoked", label: "due/run" } });
    expect(retried[0]!.webhook).toEqual({
      id: "wh_due",
      url: "https://hooks.example.com/services/T000/B000/secret-path",
      format: "json",
      secret: "whsec_wh_due",
    });
    // A worker that stopped mid-send: its claims run out and the deliveries are due again, `skip` honoured.
    const again = await one.alerts.dueDeliveries(now + 60_000, 100, [claimed[2]!]);
    expect(again.map((d) => d.seq).sort((x, y) => x - y)).toEqual(claimed.slice(3).sort((x, y) => x - y));
    expect(await one.alerts.countPendingDeliveries()).toBe(39);
    const delivered = await one.alerts.listDeliveries({ status: "delivered", limit: 10 });
    expect(delivered.data.map((d) => [d.seq, d.attempts, d.lastStatus, d.deliveredAt])).toEqual([[first!, 1, 200, now + 1]]);
    await one.alerts.recordDeliveryAttempt({
      seq: first!,
      at: now + 2,
      outcome: "failed",
      status: 500,
      error: "late",
      nextAttemptAt: null,
    });
    expect((await one.alerts.listDeliveries({ eventId: delivered.data[0]!.eventId, limit: 10 })).data[0]!.status).toBe("delivered");
    // Oldest due first.
    const ordered = await two.alerts.dueDeliveries(now + 200_000, 100, []);
    const dueAt: { seq: string; at: string }[] =
      await a`SELECT seq, next_attempt_at AS at FROM alert_deliveries WHERE seq = ANY(${ordered.map((d) => d.seq)}::bigint[])`;
    const at = new Map(dueAt.map((r) => [num(r.seq), num(r.at)]));
    const times = ordered.map((d) => at.get(d.seq)!);
    expect(times).toEqual([...times].sort((x, y) => x - y));
    for (const d of ordered) {
      await one.alerts.recordDeliveryAttempt({
        seq: d.seq,
        at: now + 3,
        outcome: "failed",
        status: null,
        error: "gone",
        nextAttemptAt: null,
      });
    }
    expect(await one.alerts.countPendingDeliveries()).toBe(0);
  });

  test("listDeliveries and listAlertEvents: filters and cursors page through newest first", async () => {
    const all = await one.alerts.listAlertEvents({ limit: 1000 });
    const paged: number[] = [];
    let cursor: number | undefined;
    do {
      const page = await two.alerts.listAlertEvents({ limit: 7, cursor });
      paged.push(...page.data.map((e) => e.seq));
      cursor = page.nextCursor ?? undefined;
    } while (cursor !== undefined);
    expect(paged).toEqual(all.data.map((e) => e.seq));
    expect(paged).toEqual([...paged].sort((x, y) => y - x));
    const due = await one.alerts.listAlertEvents({ labelPrefix: "due/", type: "key_revoked", limit: 100 });
    expect(due.data).toHaveLength(40);
    expect((await one.alerts.listAlertEvents({ labelPrefix: "due_", limit: 100 })).data).toHaveLength(0);
    const deliveries = await one.alerts.listDeliveries({ webhookId: "wh_due", status: "failed", limit: 30 });
    expect(deliveries.data).toHaveLength(30);
    expect(deliveries.nextCursor).toBe(deliveries.data[29]!.seq);
    const rest = await one.alerts.listDeliveries({ webhookId: "wh_due", status: "failed", limit: 30, cursor: deliveries.nextCursor! });
    expect(rest.data).toHaveLength(9);
    expect(rest.nextCursor).toBeNull();
  });

  test("pruneAlerts: old events whose deliveries are finished go, with those deliveries and past days' marks", async () => {
    const before = now + 1_000_000;
    const pendingEvent = await a`SELECT e.id FROM alert_events e JOIN alert_deliveries d ON d.event_id = e.id LIMIT 1`;
    await a`UPDATE alert_deliveries SET status = 'pending' WHERE event_id = ${pendingEvent[0].id}`;
    let pruned = 0;
    for (let n = await one.alerts.pruneAlerts(before, 10); n > 0; n = await two.alerts.pruneAlerts(before, 10)) pruned += n;
    expect(pruned).toBeGreaterThan(0);
    const [left] =
      await a`SELECT count(*) AS events, count(*) FILTER (WHERE id = ${pendingEvent[0].id}) AS kept FROM alert_events WHERE at < ${before}`;
    expect([num(left.events), num(left.kept)]).toEqual([1, 1]);
    const marks = await a`SELECT "window" FROM alert_marks`;
    expect(marks.map((m: { window: string }) => m.window)).toEqual(["total"]);
  });
});

describe.skipIf(!url)("tokens, admin events and settings", () => {
  test("tokens: insert, find by hash (with it) and id, list by cursor, revoke once: seen by the other instance at once", async () => {
    const base = { role: "issuer" as const, tokenHint: "kb_iss_…", createdAt: now, createdBy: "admin", expiresAt: null };
    const made = [];
    for (let i = 0; i < 5; i++) {
      made.push(
        await one.tokens.insertToken({
          ...base,
          id: `tok_${i}`,
          name: `job-${i}`,
          tokenHash: `th_${i}`,
          policy: i === 0 ? null : { max_keys_per_hour: i },
          expiresAt: i === 4 ? now + 1 : null,
        }),
      );
    }
    expect(made[1]).toEqual({
      id: "tok_1",
      name: "job-1",
      role: "issuer",
      tokenHint: "kb_iss_…",
      policy: { max_keys_per_hour: 1 },
      createdAt: now,
      createdBy: "admin",
      expiresAt: null,
      revokedAt: null,
    });
    expect(await two.tokens.findTokenByHash("th_4")).toEqual({ ...made[4]!, expiresAt: now + 1, tokenHash: "th_4" });
    expect(await two.tokens.findTokenByHash("th_none")).toBeNull();
    expect(await two.tokens.findTokenById("tok_0")).toEqual(made[0]!);
    const first = await two.tokens.listTokens(3);
    const second = await two.tokens.listTokens(3, first.nextCursor!);
    expect([...first.data, ...second.data].map((t) => t.id)).toEqual(["tok_4", "tok_3", "tok_2", "tok_1", "tok_0"]);
    expect(second.nextCursor).toBeNull();
    expect(await one.tokens.revokeToken("tok_2", now + 7)).toMatchObject({ revokedAt: now + 7 });
    expect((await two.tokens.findTokenByHash("th_2"))!.revokedAt).toBe(now + 7);
    expect(await two.tokens.revokeToken("tok_2", now + 9)).toMatchObject({ revokedAt: now + 7 });
    expect(await two.tokens.revokeToken("tok_none", now)).toBeNull();
  });

  test("admin events: newest first, by cursor, filtered by token; details kept as given", async () => {
    for (let i = 0; i < 5; i++) {
      await (i % 2 ? one : two).admin.recordAdminEvent({
        at: now + i,
        actor: "ops",
        action: "key.revoke",
        target: `vk_${i}`,
        details: i === 0 ? null : { n: i, nested: { ok: true } },
        tokenId: i % 2 ? "tok_a" : null,
        tokenName: i % 2 ? "a" : null,
      });
    }
    const page = await one.admin.listAdminEvents(2);
    expect(page.data.map((e) => e.target)).toEqual(["vk_4", "vk_3"]);
    expect(page.data[1]).toEqual({
      seq: page.data[1]!.seq,
      at: now + 3,
      actor: "ops",
      action: "key.revoke",
      target: "vk_3",
      details: { n: 3, nested: { ok: true } },
      tokenId: "tok_a",
      tokenName: "a",
    });
    const rest = await one.admin.listAdminEvents(10, page.nextCursor!);
    expect(rest.data.map((e) => [e.target, e.details])).toEqual([
      ["vk_2", { n: 2, nested: { ok: true } }],
      ["vk_1", { n: 1, nested: { ok: true } }],
      ["vk_0", null],
    ]);
    expect(rest.nextCursor).toBeNull();
    const byToken = await two.admin.listAdminEvents(1, undefined, "tok_a");
    expect(byToken.data.map((e) => e.target)).toEqual(["vk_3"]);
    expect((await two.admin.listAdminEvents(10, byToken.nextCursor!, "tok_a")).data.map((e) => e.target)).toEqual(["vk_1"]);
  });

  test("settings: null until set, then the latest value, at either instance", async () => {
    expect(await one.admin.getSetting("admin_token_hash")).toBeNull();
    await one.admin.setSetting("admin_token_hash", "h1");
    await two.admin.setSetting("admin_token_hash", "h2");
    expect(await one.admin.getSetting("admin_token_hash")).toBe("h2");
  });
});

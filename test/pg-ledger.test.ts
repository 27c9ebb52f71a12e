import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { auditRow } from "../src/store/audit-row";
import { pgAlertOutbox } from "../src/store/pg/alerts";
import { PgBatch } from "../src/store/pg/batch";
import { num, openPgClient, type Pg } from "../src/store/pg/client";
import { pgLeases } from "../src/store/pg/lease";
import { pgLedgerQueries } from "../src/store/pg/ledger";
import { applyPgMigrations } from "../src/store/pg/migrate";
import { pgReconcileQueries } from "../src/store/pg/reconcile";
import type { HoldRequest, HoldResult, IdempotencyResult, SettleRequest } from "../src/store/types";
import { dropTestDatabase, testDatabaseUrl } from "./helpers/postgres";

/**
 * The PostgreSQL ledger (src/store/pg/{ledger,batch,reconcile,lease}.ts) with two connection pools on one database
 * standing for two Keybrake instances: caps exact when both race on one key, settlements and audit sums exact,
 * one Idempotency-Key admitted once across both, and recovery that never touches a live instance's holds.
 */

const url = await testDatabaseUrl({ migrated: true });
const now = Date.UTC(2026, 10, 27, 12);
const day = "2026-11-27";
const LEASE_MS = 60_000;
const USD = 1_000_000;

/** One instance: its pool, group commit, ledger and reconciliation queries, and lease. */
function instance(sql: Pg, id: string) {
  const batch = new PgBatch(sql);
  const deferred = new PgBatch(sql, false);
  const outbox = pgAlertOutbox();
  return {
    id,
    sql,
    batch,
    flush: () => Promise.all([batch.flush(), deferred.flush()]),
    ledger: pgLedgerQueries(sql, { durable: batch, deferred }, outbox, id),
    reconcile: pgReconcileQueries(sql, batch, outbox, id),
    lease: pgLeases(sql, id, LEASE_MS),
  };
}
type Instance = ReturnType<typeof instance>;

let poolA: Pg;
let poolB: Pg;
let a: Instance;
let b: Instance;

let keyCount = 0;
async function newKey(caps: { daily?: number; total?: number }): Promise<string> {
  const id = `vk_${String(++keyCount).padStart(4, "0")}`;
  await poolA`INSERT INTO vault_keys (id, key_hash, key_hint, vendor, mode, label, daily_cap_micros, total_cap_micros,
                                      allowed_endpoints, metadata, created_at, expires_at)
              VALUES (${id}, ${`hash_${id}`}, 'kb_live_…', 'stripe', 'live', ${`run/${id}`}, ${caps.daily ?? null},
                      ${caps.total ?? null}, '[]', '{}', ${now}, ${now + 86_400_000})`;
  return id;
}

let holdCount = 0;
function holdOf(keyId: string, micros: number, extra: Partial<HoldRequest> = {}): HoldRequest {
  const n = ++holdCount;
  return {
    holdId: `hold_${n}`,
    keyId,
    day,
    micros,
    ledger: true,
    reuseAmbiguous: true,
    now,
    call: { requestId: `kbr_${n}`, method: "POST", path: "/v1/payment_intents" },
    ...extra,
  };
}

function settleOf(
  keyId: string,
  holdId: string | undefined,
  outcome: SettleRequest["outcome"],
  costMicros: number,
  extra: Partial<SettleRequest> = {},
): SettleRequest {
  return {
    keyId,
    day,
    holdId,
    outcome,
    costMicros,
    now,
    audit: auditRow({
      id: `kbr_settle_${holdId ?? "none"}_${outcome}`,
      at: now,
      keyId,
      method: "POST",
      path: "/v1/payment_intents",
      status: 200,
      decision: "allowed",
      costMicros,
    }),
    ...extra,
  };
}

/** The key's counters, its day, the sum of its audit rows' costs, and what its ledger entries hold and spend. */
async function books(keyId: string) {
  const [row] = await poolA`
    SELECT k.spent_total_micros AS spent, k.held_total_micros AS held, k.calls,
           (SELECT settled_micros FROM spend_days WHERE key_id = k.id AND day = ${day}) AS "daySettled",
           (SELECT held_micros FROM spend_days WHERE key_id = k.id AND day = ${day}) AS "dayHeld",
           (SELECT coalesce(sum(cost_micros), 0) FROM audit_events WHERE key_id = k.id) AS audited,
           (SELECT coalesce(sum(hold_micros), 0) FROM ledger_entries WHERE key_id = k.id AND state IN ('held', 'orphaned')) AS "entriesHeld",
           (SELECT coalesce(sum(cost_micros), 0) FROM ledger_entries WHERE key_id = k.id AND state IN ('settled', 'ambiguous', 'released'))
             AS "entriesSpent"
      FROM vault_keys k WHERE k.id = ${keyId}`;
  return Object.fromEntries(Object.entries(row).map(([name, value]) => [name, num(value ?? 0)]));
}

/** Every rule of the books: counters, day, ledger entries and audit rows agree. */
async function expectBalancedBooks(keyId: string) {
  const m = await books(keyId);
  expect(m.daySettled).toBe(m.spent);
  expect(m.dayHeld).toBe(m.held);
  expect(m.entriesHeld).toBe(m.held);
  expect(m.entriesSpent).toBe(m.spent);
  expect(m.audited).toBe(m.spent);
  return m;
}

beforeAll(async () => {
  if (!url) return;
  poolA = openPgClient(url, 8);
  poolB = openPgClient(url, 8);
  await applyPgMigrations(poolA);
  a = instance(poolA, "inst-a");
  b = instance(poolB, "inst-b");
});

afterAll(async () => {
  if (!url) return;
  await Promise.all([a.flush(), b.flush()]);
  await Promise.all([poolA.close({ timeout: 5 }), poolB.close({ timeout: 5 })]);
  await dropTestDatabase(url);
});

describe.skipIf(!url)("PostgreSQL ledger across two instances", () => {
  test("300 holds of $29 raced through two instances on a $500 cap admit exactly 17, lifetime and daily", async () => {
    const total = await newKey({ total: 500 * USD });
    const daily = await newKey({ daily: 500 * USD });
    const requests = Array.from({ length: 300 }, () => [holdOf(total, 29 * USD), holdOf(daily, 29 * USD)]).flat();
    const started = performance.now();
    const results = await Promise.all(requests.map((req, i) => (i % 4 < 2 ? a : b).ledger.holdSpend(req)));
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `race: ${requests.length} holds on two hot keys in ${seconds.toFixed(2)} s, ${Math.round(requests.length / seconds)} holds/s`,
    );
    for (const keyId of [total, daily]) {
      const mine = results.filter((_, i) => requests[i]!.keyId === keyId);
      expect(mine.filter((r) => r.kind === "admitted")).toHaveLength(17);
      expect(mine.filter((r) => r.kind === "denied")).toHaveLength(283);
      const m = await expectBalancedBooks(keyId);
      expect(m.held).toBe(17 * 29 * USD);
      expect(m.dayHeld).toBe(17 * 29 * USD);
    }
    // Each refusal saw the balances of its moment: never more than the cap held, never a stale one.
    for (const r of results) {
      if (r.kind !== "denied") continue;
      expect(r.balance!.totalHeld + r.balance!.dayHeld).toBeGreaterThan(0);
      expect(Math.max(r.balance!.totalHeld, r.balance!.dayHeld)).toBeGreaterThan(500 * USD - 29 * USD);
    }

    // Settled through both instances at once: a price, a release, an ambiguous outcome, a price above the hold.
    const admitted = requests.filter((_, i) => results[i]!.kind === "admitted" && requests[i]!.keyId === total);
    const costs = admitted.map((_, i) => [29 * USD, 0, 29 * USD, 31 * USD][i % 4]!);
    const outcomes = admitted.map((_, i) => (["settled", "released", "ambiguous", "settled"] as const)[i % 4]!);
    await Promise.all(admitted.map((req, i) => (i % 2 ? a : b).ledger.settleCall(settleOf(total, req.holdId, outcomes[i]!, costs[i]!))));
    const spent = costs.reduce((sum, c) => sum + c, 0);
    const m = await expectBalancedBooks(total);
    expect(m).toMatchObject({ spent, held: 0, calls: 17 });

    // A second settle of a hold moves nothing and audits 0.
    expect(await b.ledger.settleCall(settleOf(total, admitted[0]!.holdId, "settled", 29 * USD))).toBe(0);
    expect(await books(total)).toMatchObject({ spent, held: 0, calls: 18 });

    // The next refusal states the cap and the settled balances: $1 more than what is left does not fit.
    const left = 500 * USD - spent;
    const refused = await b.ledger.holdSpend(holdOf(total, left + 1));
    expect(refused).toMatchObject({ kind: "denied", reason: "total_cap", capMicros: 500 * USD });
    expect((refused as Extract<HoldResult, { kind: "denied" }>).balance).toMatchObject({ totalSpent: spent, totalHeld: 0 });
    expect((await a.ledger.holdSpend(holdOf(total, left))).kind).toBe("admitted");
    const [exhausted] = await poolA`SELECT count(*) AS n FROM alert_events WHERE type = 'cap_exhausted' AND key_id = ${total}`;
    expect(num(exhausted.n)).toBe(1);

    // What is still held is released, so that later tests start with no open holds.
    for (const h of await a.ledger.listHolds("held", 100)) await a.ledger.settleCall(settleOf(h.keyId, h.id, "released", 0));
    await expectBalancedBooks(daily);
  }, 60_000);

  test("one Idempotency-Key raced through both instances is admitted once; then replayed, conflicting, re-opened", async () => {
    const keyId = await newKey({ total: 100 * USD });
    const idem = { key: "job-42", fingerprint: "fp-1", ttlMs: 86_400_000 };
    const raced = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).ledger.holdSpend(holdOf(keyId, 10 * USD, { idempotency: idem }))),
    );
    const admitted = raced.filter((r) => r.kind === "admitted");
    expect(admitted).toHaveLength(1);
    expect(raced.filter((r) => r.kind === "in_flight")).toHaveLength(19);
    const holdId = (admitted[0] as Extract<HoldResult, { kind: "admitted" }>).holdId!;
    expect(await b.ledger.idempotencyFingerprint(keyId, "job-42", now)).toBe("fp-1");
    expect(await b.ledger.idempotencyFingerprint(keyId, "job-42", now + 86_400_000)).toBeNull();
    expect(await b.ledger.holdSpend(holdOf(keyId, 10 * USD, { idempotency: { ...idem, fingerprint: "fp-2" } }))).toEqual({
      kind: "conflict",
    });

    // The vendor's answer was lost: spent at the hold, ambiguous; the retry through the other instance goes out
    // again on the same entry, at a higher price whose difference needs headroom.
    const ambiguous: IdempotencyResult = { kind: "ambiguous" };
    await a.ledger.settleCall(settleOf(keyId, holdId, "ambiguous", 10 * USD, { idempotency: { key: "job-42", result: ambiguous } }));
    expect(await expectBalancedBooks(keyId)).toMatchObject({ spent: 10 * USD, held: 0 });
    const retry = await b.ledger.holdSpend(holdOf(keyId, 12 * USD, { idempotency: idem }));
    expect(retry).toMatchObject({ kind: "admitted", holdId, holdMicros: 12 * USD, priorCostMicros: 10 * USD });
    expect(retry).toMatchObject({ balance: { totalSpent: 0, totalHeld: 12 * USD, daySettled: 0, dayHeld: 12 * USD } });
    expect(await b.ledger.holdSpend(holdOf(keyId, 12 * USD, { idempotency: idem }))).toEqual({ kind: "in_flight" });

    // Completed: the stored answer is replayed by either instance, nothing charged again.
    const body = new TextEncoder().encode('{"id":"pi_1"}');
    const completed: IdempotencyResult = {
      kind: "completed",
      response: { status: 200, headers: [["content-type", "application/json"]], body, vendorRequestId: "req_1" },
    };
    const cost = await b.ledger.settleCall(
      settleOf(keyId, holdId, "settled", 11 * USD, { idempotency: { key: "job-42", result: completed } }),
    );
    expect(cost).toBe(1 * USD); // what the retry added to the 10 the ambiguous attempt counted
    const replay = await a.ledger.holdSpend(holdOf(keyId, 12 * USD, { idempotency: idem }));
    expect(replay.kind).toBe("replay");
    const r = replay as Extract<HoldResult, { kind: "replay" }>;
    expect(new Uint8Array(r.response.body!)).toEqual(body);
    expect(r.response).toMatchObject({ status: 200, headers: [["content-type", "application/json"]], vendorRequestId: "req_1" });
    expect(r.balance).toMatchObject({ totalSpent: 11 * USD, totalHeld: 0 });
    expect(await expectBalancedBooks(keyId)).toMatchObject({ spent: 11 * USD, held: 0 });
  });

  test("a re-opened retry whose higher price does not fit is refused with the entry's day's balances", async () => {
    const keyId = await newKey({ daily: 20 * USD });
    const idem = { key: "job-7", fingerprint: "fp", ttlMs: 86_400_000 };
    const first = (await a.ledger.holdSpend(holdOf(keyId, 15 * USD, { idempotency: idem }))) as Extract<HoldResult, { kind: "admitted" }>;
    await a.ledger.settleCall(
      settleOf(keyId, first.holdId!, "ambiguous", 15 * USD, { idempotency: { key: "job-7", result: { kind: "ambiguous" } } }),
    );
    const refused = await b.ledger.holdSpend(holdOf(keyId, 30 * USD, { idempotency: idem }));
    expect(refused).toMatchObject({ kind: "denied", reason: "daily_cap", capMicros: 20 * USD });
    expect((refused as Extract<HoldResult, { kind: "denied" }>).balance).toEqual({
      daySettled: 15 * USD,
      dayHeld: 0,
      totalSpent: 15 * USD,
      totalHeld: 0,
    });
    // An operator releases it: the spend it counted goes, audited.
    const resolved = await b.ledger.resolveHold(first.holdId!, "released", 0, now);
    expect(resolved).toMatchObject({ state: "released", costMicros: 0 });
    expect(await b.ledger.resolveHold(first.holdId!, "released", 0, now)).toBeNull();
    expect(await expectBalancedBooks(keyId)).toMatchObject({ spent: 0, held: 0 });
  });

  test("recovery leaves a live instance's holds alone and takes them once its lease has run out", async () => {
    const keyId = await newKey({ total: 100 * USD });
    const other = await newKey({ total: 100 * USD });
    await a.lease.register(now);
    await b.lease.register(now);
    const aHolds = [holdOf(keyId, 5 * USD), holdOf(other, 7 * USD), holdOf(keyId, 3 * USD)];
    for (const req of aHolds) expect((await a.ledger.holdSpend(req)).kind).toBe("admitted");
    const claimed = holdOf(keyId, 0, { ledger: false, idempotency: { key: "job-a", fingerprint: "fp", ttlMs: 86_400_000 } });
    expect((await a.ledger.holdSpend(claimed)).kind).toBe("admitted");
    const bHold = holdOf(keyId, 1 * USD);
    expect((await b.ledger.holdSpend(bHold)).kind).toBe("admitted");

    // A is live: nothing of it is touched, by B nor by A itself.
    expect(await b.ledger.recoverOrphanedHolds(now + 1000)).toEqual([]);
    expect(await a.ledger.recoverOrphanedHolds(now + 1000)).toEqual([]);
    expect(await b.ledger.listHolds("held", 100)).toHaveLength(4);

    // A's lease has run out (B's too, but B never recovers its own open holds).
    const later = now + LEASE_MS + 1;
    const recovered = await b.ledger.recoverOrphanedHolds(later);
    expect(recovered.map((h) => h.id).sort()).toEqual(aHolds.map((h) => h.holdId).sort());
    expect(recovered.every((h) => h.state === "orphaned")).toBe(true);
    expect(await b.ledger.recoverOrphanedHolds(later)).toEqual([]);
    expect((await b.ledger.listHolds("held", 100)).map((h) => h.id)).toEqual([bHold.holdId]);
    expect(await b.ledger.countOpenHolds()).toBe(4);
    const [state] = await poolA`SELECT state FROM idempotency_entries WHERE key_id = ${keyId} AND idempotency_key = 'job-a'`;
    expect(state.state).toBe("ambiguous");
    const alerts = await poolA`SELECT key_id AS "keyId", data FROM alert_events
                                WHERE type = 'holds_need_attention' AND key_id IN (${keyId}, ${other}) ORDER BY key_id`;
    expect(alerts.map((e: { keyId: string }) => e.keyId)).toEqual([keyId, other]);
    expect(JSON.parse(alerts[0].data)).toMatchObject({ reason: "orphaned", count: 2, amount_usd: 8 });
    const audited = await poolA`SELECT id, decision, cost_micros AS cost FROM audit_events WHERE decision = 'orphaned_hold' ORDER BY id`;
    expect(audited.map((r: { id: string }) => r.id)).toEqual(aHolds.map((h) => h.call.requestId).sort());
    expect(await poolA`SELECT id FROM instances ORDER BY id`).toEqual([{ id: "inst-b" }]);

    // A, still running after all (its lease had lapsed), settles one: the orphaned hold settles as usual.
    await a.lease.renew(later);
    await a.ledger.settleCall(settleOf(keyId, aHolds[0]!.holdId, "settled", 5 * USD));
    await b.ledger.settleCall(settleOf(keyId, bHold.holdId, "settled", 1 * USD));
    // An operator settles the other one on `keyId`.
    expect(await a.ledger.resolveHold(aHolds[2]!.holdId, "settled", 2 * USD, later)).toMatchObject({
      state: "settled",
      costMicros: 2 * USD,
    });
    expect(await expectBalancedBooks(keyId)).toMatchObject({ spent: 8 * USD, held: 0 });
    expect(await expectBalancedBooks(other)).toMatchObject({ spent: 0, held: 7 * USD });
  });

  test("a restart under the same instance id recovers its earlier run's holds, never its own new ones", async () => {
    const keyId = await newKey({ total: 100 * USD });
    const first = instance(poolA, "inst-r");
    await first.lease.register(now);
    const earlier = holdOf(keyId, 4 * USD, { idempotency: { key: "job-r", fingerprint: "fp", ttlMs: 86_400_000 } });
    expect((await first.ledger.holdSpend(earlier)).kind).toBe("admitted");
    // The process dies; the next one (same host and pid here) takes the same id and its lease at once, and
    // takes a hold of its own.
    const restarted = instance(poolA, "inst-r");
    await restarted.lease.register(now);
    const fresh = holdOf(keyId, 6 * USD, { idempotency: { key: "job-s", fingerprint: "fp", ttlMs: 86_400_000 } });
    expect((await restarted.ledger.holdSpend(fresh)).kind).toBe("admitted");
    // B sees a live inst-a: nothing to do. The restarted process recognises its earlier run's hold.
    expect(await b.ledger.recoverOrphanedHolds(now)).toEqual([]);
    expect((await restarted.ledger.recoverOrphanedHolds(now)).map((h) => h.id)).toEqual([earlier.holdId]);
    const states = await poolA`SELECT idempotency_key AS k, state FROM idempotency_entries WHERE key_id = ${keyId} ORDER BY 1`;
    expect(states).toEqual([
      { k: "job-r", state: "ambiguous" },
      { k: "job-s", state: "in_flight" },
    ]);
    await restarted.ledger.settleCall(settleOf(keyId, fresh.holdId, "settled", 6 * USD));
    expect(await restarted.ledger.recoverOrphanedHolds(now)).toEqual([]);
    expect(await expectBalancedBooks(keyId)).toMatchObject({ spent: 6 * USD, held: 4 * USD });
  });

  test("holds under this instance's id leased by another live process are that process's, not an earlier run's", async () => {
    const keyId = await newKey({ total: 100 * USD });
    await poolA`INSERT INTO instances (id, host, pid, started_at, heartbeat_at, lease_until)
                VALUES ('inst-z', 'elsewhere', 1, ${now}, ${now}, ${now + LEASE_MS})`;
    const twin = instance(poolB, "inst-z");
    expect((await twin.ledger.holdSpend(holdOf(keyId, 1 * USD))).kind).toBe("admitted");
    expect(await instance(poolA, "inst-z").ledger.recoverOrphanedHolds(now)).toEqual([]);
    expect(await b.ledger.recoverOrphanedHolds(now)).toEqual([]);
    expect(await b.ledger.recoverOrphanedHolds(now + LEASE_MS)).toHaveLength(1);
  });

  test("a lease held by another live process is waited out", async () => {
    await poolA`INSERT INTO instances (id, host, pid, started_at, heartbeat_at, lease_until)
                VALUES ('inst-c', 'elsewhere', 1, ${now}, ${now}, ${now + 300})`;
    const started = Date.now();
    await pgLeases(poolB, "inst-c", LEASE_MS).register(now);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    const [row] = await poolA`SELECT pid, lease_until FROM instances WHERE id = 'inst-c'`;
    expect(row.pid).toBe(process.pid);
    await expect(pgLeases(poolA, "inst-c", LEASE_MS).renew(now)).rejects.toThrow();
  });

  test("a lease its holder renews while waited for is a running twin: refused, naming KEYBRAKE_INSTANCE_ID", async () => {
    await poolA`INSERT INTO instances (id, host, pid, started_at, heartbeat_at, lease_until)
                VALUES ('inst-t', 'elsewhere', 7, ${now}, ${now}, ${now + 300})`;
    // The other process is alive: it renews its lease (as every third of a lease) before it runs out.
    const renewal = setTimeout(
      () => void poolA`UPDATE instances SET heartbeat_at = ${now + 200}, lease_until = ${now + 60_000} WHERE id = 'inst-t'`.execute(),
      200,
    );
    const waited: string[] = [];
    const started = Date.now();
    try {
      await expect(pgLeases(poolB, "inst-t", 900).register(now, (h) => waited.push(`${h.host}:${h.pid}`))).rejects.toThrow(
        /^KEYBRAKE_INSTANCE_ID "inst-t" is in use by a running instance \(host elsewhere, pid 7, lease renewed at .*\): give every instance its own id/,
      );
    } finally {
      clearTimeout(renewal);
    }
    expect(waited).toEqual(["elsewhere:7"]);
    expect(Date.now() - started).toBeLessThan(5_000);
    const [row] = await poolA`SELECT pid FROM instances WHERE id = 'inst-t'`;
    expect(row.pid).toBe(7);
  });

  test("a final price is read by one instance and re-settled once, audited by the difference", async () => {
    const keyId = await newKey({ total: 100 * USD });
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const req = holdOf(keyId, 2 * USD);
      await a.ledger.holdSpend(req);
      await a.ledger.settleCall(settleOf(keyId, req.holdId, "settled", 2 * USD, { reconcile: { path: `/Messages/SM${i}.json`, at: now } }));
      ids.push(req.holdId);
    }
    const [dueA, dueB] = await Promise.all([a.reconcile.dueReconciliations(now, 4), b.reconcile.dueReconciliations(now, 4)]);
    expect([...dueA, ...dueB].map((d) => d.id).sort()).toEqual([...ids].sort());
    expect(dueA[0]).toMatchObject({ keyId, vendor: "stripe", holdMicros: 2 * USD, costMicros: 2 * USD, attempts: 0 });
    expect(await a.reconcile.dueReconciliations(now + 59_000, 10)).toEqual([]);
    const audit = (id: string) =>
      auditRow({ id: `kbr_reconciled_${id}`, at: now, keyId, method: "POST", path: "/x", decision: "price_reconciled" });
    const [first, second] = await Promise.all(
      [a, b].map((x) => x.reconcile.reconcileEntry({ id: ids[0]!, costMicros: 3 * USD, audit: audit(ids[0]!) })),
    );
    expect([first, second].sort()).toEqual([false, true]);
    await a.reconcile.reconcileEntry({ id: ids[1]!, costMicros: 1 * USD, audit: audit(ids[1]!) });
    // A read that found nothing sets the next; an entry re-settled meanwhile is not set to be read again.
    await b.reconcile.postponeReconciliation(ids[0]!, now + 5000);
    await b.reconcile.postponeReconciliation(ids[2]!, now + 5000);
    const due = await b.reconcile.dueReconciliations(now + 61_000, 10);
    expect(due.map((d) => d.id).sort()).toEqual([ids[2]!, ids[3]!, ids[4]!, ids[5]!].sort());
    expect(due.find((d) => d.id === ids[2])!.attempts).toBe(1);
    expect(await expectBalancedBooks(keyId)).toMatchObject({ spent: 12 * USD, held: 0 });
  });

  test("tracked objects, listing, pruning", async () => {
    const keyId = await newKey({ total: 100 * USD });
    const req = holdOf(keyId, 3 * USD, { idempotency: { key: "short", fingerprint: "fp", ttlMs: 1000 } });
    await a.ledger.holdSpend(req);
    const track = { objectId: "pi_track", keyId, currency: "usd", amountMinor: 300, countedMicros: 3 * USD };
    await a.ledger.settleCall(settleOf(keyId, req.holdId, "settled", 3 * USD, { track }));
    expect(await b.ledger.findTracked("pi_track")).toEqual(track);
    expect(await b.ledger.findTracked("pi_none")).toBeNull();
    expect(await b.ledger.findHold(req.holdId)).toMatchObject({
      id: req.holdId,
      keyId,
      label: `run/${keyId}`,
      state: "settled",
      costMicros: 3 * USD,
    });
    expect(await b.ledger.findHold("hold_none")).toBeNull();
    expect(await b.ledger.pruneIdempotency(now + 1000, 1000)).toBeGreaterThanOrEqual(1);
    expect(await b.ledger.idempotencyFingerprint(keyId, "short", now)).toBeNull();
  });
});

describe.skipIf(!url)("PostgreSQL group commit", () => {
  test("ops of one turn share a transaction, ordered by key; a failing op fails alone", async () => {
    await poolA`CREATE TABLE batch_probe (n integer PRIMARY KEY, key text)`;
    const order: string[] = [];
    const op = (n: number, key: string | null) => (tx: Pg) => {
      order.push(`${key}:${n}`);
      return tx`INSERT INTO batch_probe (n, key) VALUES (${n}, ${key}) RETURNING n`.then((rows) => rows[0].n);
    };
    const results = await Promise.allSettled([
      a.batch.submit("vk_b", op(1, "vk_b")),
      a.batch.submit("vk_a", op(2, "vk_a")),
      a.batch.submit(null, op(3, null)),
      a.batch.submit("vk_a", op(2, "vk_a")), // duplicate: fails alone
      a.batch.submit("vk_a", op(4, "vk_a")),
    ]);
    expect(order).toEqual(["null:3", "vk_a:2", "vk_a:2", "vk_a:4", "vk_b:1"]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "fulfilled", "rejected", "fulfilled"]);
    expect((await poolA`SELECT n FROM batch_probe ORDER BY n`).map((r: { n: number }) => r.n)).toEqual([1, 2, 3, 4]);
  });

  test("a group whose COMMIT fails runs each op again alone", async () => {
    await poolA`CREATE TABLE commit_parent (n integer PRIMARY KEY)`;
    await poolA`CREATE TABLE commit_child (n integer REFERENCES commit_parent (n) DEFERRABLE INITIALLY DEFERRED)`;
    await poolA`INSERT INTO commit_parent VALUES (1)`;
    const insert = (n: number) => (tx: Pg) => tx`INSERT INTO commit_child VALUES (${n})`.then(() => n);
    // n = 2 has no parent: only COMMIT finds out, and fails the whole group.
    const results = await Promise.allSettled([
      a.batch.submit(null, insert(1)),
      a.batch.submit(null, insert(2)),
      a.batch.submit(null, insert(1)),
    ]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect((await poolA`SELECT n FROM commit_child`).map((r: { n: number }) => r.n)).toEqual([1, 1]);
  });

  test("an op that lost a deadlock runs again alone", async () => {
    let attempts = 0;
    const flaky = async (tx: Pg) => {
      attempts++;
      await tx`SELECT 1`;
      if (attempts === 1) throw Object.assign(new Error("deadlock detected"), { errno: "40P01" });
      return "ok";
    };
    const [first, other] = await Promise.all([a.batch.submit("vk_x", flaky), a.batch.submit("vk_y", async () => "other")]);
    expect([first, other, attempts]).toEqual(["ok", "other", 2]);
  });

  test("flush waits for what was submitted", async () => {
    let done = false;
    void a.batch.submit(null, async (tx) => {
      await tx`SELECT pg_sleep(0.05)`;
      done = true;
    });
    await a.batch.flush();
    expect(done).toBe(true);
  });

  test("a deferred group does not wait for the disk; a durable one (holds) does", async () => {
    const setting = (batch: PgBatch) => batch.submit(null, async (tx) => (await tx`SHOW synchronous_commit`)[0].synchronous_commit);
    expect(await Promise.all([setting(new PgBatch(poolA, false)), setting(a.batch)])).toEqual(["off", "on"]);
  });
});

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { auditRow, type HoldRequest, type NewKey, openStore, type Store } from "../src/store/index";
import { dropTestDatabase, testDatabaseUrl, testPostgresServer } from "./helpers/postgres";

/**
 * Every money path at budget level (SPEC §14, issue 25), on both stores: a hold counts at every budget up the
 * key's chain, and a settlement, a release, an ambiguous outcome and its retry, an orphan and its resolution, and
 * a reconciliation move every level together. The HTTP path (races, refusals) is test/budgets-money.test.ts.
 */

const USD = 1_000_000;
const now = Date.UTC(2031, 4, 14, 12);
const day = "2031-05-14";

interface Kind {
  name: string;
  available: boolean;
  open(): Promise<{ store: Store; reopen(): Promise<Store>; remove(): Promise<void> }>;
}

const kinds: Kind[] = [
  {
    name: "SQLite",
    available: true,
    async open() {
      const dir = mkdtempSync(join(tmpdir(), "keybrake-budgets-"));
      const file = join(dir, "keybrake.db");
      return {
        store: openStore(file),
        reopen: async () => openStore(file),
        remove: async () => rmSync(dir, { recursive: true, force: true }),
      };
    },
  },
  {
    name: "PostgreSQL",
    available: (await testPostgresServer()) !== null,
    async open() {
      const url = (await testDatabaseUrl({ migrated: true }))!;
      const { openPgStore } = await import("../src/store/pg/index");
      // Four connections, not serve's 16: Bun opens the whole pool at the first query.
      const open = () => openPgStore(url, { instanceId: "budgets-ledger", leaseMs: 60_000, connections: 4 });
      return { store: await open(), reopen: open, remove: () => dropTestDatabase(url) };
    },
  },
];

const newKey = (id: string, budgetId: string | null): NewKey => ({
  id,
  keyHash: `hash_${id}`,
  keyHint: "kb_live_…",
  vendor: "stripe",
  mode: "live",
  label: `budgets/${id}`,
  mintedBy: "admin",
  dailyCapMicros: 1_000 * USD,
  totalCapMicros: null,
  allowedEndpoints: ["/*"],
  maxRequestsPerMinute: null,
  requireIdempotencyKey: false,
  metadata: {},
  createdAt: now,
  expiresAt: now + 86_400_000,
  budgetId,
});

let n = 0;
const hold = (store: Store, keyId: string, micros: number, idem?: string): ReturnType<Store["holdSpend"]> => {
  const req: HoldRequest = {
    holdId: `hold_${++n}`,
    keyId,
    day,
    micros,
    ledger: true,
    reuseAmbiguous: true,
    now,
    call: { requestId: `kbr_${n}`, method: "POST", path: "/v1/payment_intents" },
    ...(idem && { idempotency: { key: idem, fingerprint: idem, ttlMs: 60_000 } }),
  };
  return store.holdSpend(req);
};

const settle = (store: Store, keyId: string, holdId: string, outcome: "settled" | "released" | "ambiguous", cost: number, idem?: string) =>
  store.settleCall({
    keyId,
    day,
    holdId,
    outcome,
    costMicros: cost,
    now,
    audit: auditRow({ id: `kbr_s_${holdId}`, at: now, keyId, method: "POST", path: "/v1/payment_intents", decision: "allowed" }),
    ...(idem && {
      idempotency: { key: idem, result: outcome === "ambiguous" ? { kind: "ambiguous" as const } : { kind: "forget" as const } },
    }),
  });

/** A budget's money as its record says it: settled today, held, settled in all, in micro-dollars. */
async function money(store: Store, id: string) {
  const b = (await store.findBudget(id, day, now))!;
  return { today: b.today.settledMicros, held: b.today.heldMicros, spent: b.spentTotalMicros, heldTotal: b.heldTotalMicros };
}

for (const kind of kinds) {
  describe.skipIf(!kind.available)(`${kind.name}: money moves at every budget up the chain`, () => {
    let store: Store;
    let handle: Awaited<ReturnType<Kind["open"]>>;
    beforeAll(async () => {
      handle = await kind.open();
      store = handle.store;
      const base = { alertThresholds: [0.5, 1], createdAt: now, createdBy: "admin" };
      await store.insertBudget({ id: "bud_team", name: "team", parentId: null, dailyCapMicros: 500 * USD, totalCapMicros: null, ...base });
      await store.insertBudget({
        id: "bud_dag",
        name: "dag",
        parentId: "bud_team",
        dailyCapMicros: 300 * USD,
        totalCapMicros: 1_000 * USD,
        ...base,
      });
      for (const [id, budget] of [
        ["vk_dag1", "bud_dag"],
        ["vk_dag2", "bud_dag"],
        ["vk_team", "bud_team"],
        ["vk_free", null],
      ] as const)
        await store.insertKey(newKey(id, budget));
    });
    afterAll(async () => {
      await store.close();
      await handle.remove();
    });

    test("a chain binds at its lower budget: the DAG's $300 before the team's $500, across the DAG's keys", async () => {
      const admitted: string[] = [];
      for (let i = 0; i < 12; i++) {
        const r = await hold(store, i % 2 ? "vk_dag1" : "vk_dag2", 29 * USD);
        if (r.kind === "admitted") {
          admitted.push(r.holdId!);
          await settle(store, i % 2 ? "vk_dag1" : "vk_dag2", r.holdId!, "settled", 29 * USD);
        } else expect(r).toMatchObject({ kind: "denied", reason: "budget_daily_cap", budgetId: "bud_dag", capMicros: 300 * USD });
      }
      expect(admitted).toHaveLength(10);
      expect(await money(store, "bud_dag")).toEqual({ today: 290 * USD, held: 0, spent: 290 * USD, heldTotal: 0 });
      expect(await money(store, "bud_team")).toEqual({ today: 290 * USD, held: 0, spent: 290 * USD, heldTotal: 0 });
      // The team's own key has what the team has left: $210, so 7 calls of $29.
      let team = 0;
      for (let i = 0; i < 9; i++) {
        const r = await hold(store, "vk_team", 29 * USD);
        if (r.kind !== "admitted") {
          expect(r).toMatchObject({ reason: "budget_daily_cap", budgetId: "bud_team", capMicros: 500 * USD });
          continue;
        }
        team++;
        await settle(store, "vk_team", r.holdId!, "settled", 29 * USD);
      }
      expect(team).toBe(7);
      expect(await money(store, "bud_team")).toMatchObject({ today: 493 * USD, held: 0 });
      // A key outside the budgets is not held back by them.
      expect((await hold(store, "vk_free", 29 * USD)).kind).toBe("admitted");
    });

    test("a release gives the budgets back; an ambiguous outcome counts at its hold; its retry is held again there, once", async () => {
      const before = { dag: await money(store, "bud_dag"), team: await money(store, "bud_team") };
      // A fresh day for this test's arithmetic would be clearer, but the same day shows the levels move together.
      const released = await hold(store, "vk_dag1", 5 * USD);
      expect(released.kind).toBe("admitted");
      expect((await money(store, "bud_dag")).held).toBe(before.dag.held + 5 * USD);
      await settle(store, "vk_dag1", (released as { holdId: string }).holdId, "released", 0);
      expect(await money(store, "bud_dag")).toEqual(before.dag);
      expect(await money(store, "bud_team")).toEqual(before.team);

      const first = await hold(store, "vk_dag1", 7 * USD, "idem-amb");
      const holdId = (first as { holdId: string }).holdId;
      await settle(store, "vk_dag1", holdId, "ambiguous", 7 * USD, "idem-amb");
      expect(await money(store, "bud_dag")).toMatchObject({ today: before.dag.today + 7 * USD, held: 0 });
      expect(await money(store, "bud_team")).toMatchObject({ today: before.team.today + 7 * USD, held: 0 });
      const retry = await hold(store, "vk_dag1", 7 * USD, "idem-amb");
      expect(retry).toMatchObject({ kind: "admitted", holdId, holdMicros: 7 * USD, priorCostMicros: 7 * USD });
      expect(await money(store, "bud_dag")).toMatchObject({ today: before.dag.today, held: 7 * USD });
      expect(await money(store, "bud_team")).toMatchObject({ today: before.team.today, held: 7 * USD });
      await settle(store, "vk_dag1", holdId, "settled", 6 * USD, "idem-amb");
      expect(await money(store, "bud_dag")).toMatchObject({
        today: before.dag.today + 6 * USD,
        held: 0,
        spent: before.dag.spent + 6 * USD,
      });
      expect(await money(store, "bud_team")).toMatchObject({
        today: before.team.today + 6 * USD,
        held: 0,
        spent: before.team.spent + 6 * USD,
      });
    });

    test("an orphan after a stop stays counted at every budget; an operator's resolution moves them all", async () => {
      const before = { dag: await money(store, "bud_dag"), team: await money(store, "bud_team") };
      // The team has $1 left today ($499 of $500 spent by the tests above).
      const open = await hold(store, "vk_dag2", 500_000);
      const holdId = (open as { holdId: string }).holdId;
      await store.close();
      store = await handle.reopen();
      await store.recoverOrphanedHolds(now + 1_000);
      expect((await store.findHold(holdId))?.state).toBe("orphaned");
      expect(await money(store, "bud_dag")).toMatchObject({ held: before.dag.held + 500_000, heldTotal: before.dag.heldTotal + 500_000 });
      expect(await money(store, "bud_team")).toMatchObject({ held: before.team.held + 500_000 });
      await store.resolveHold(holdId, "settled", 250_000, now + 2_000);
      expect(await money(store, "bud_dag")).toMatchObject({ held: before.dag.held, today: before.dag.today + 250_000 });
      expect(await money(store, "bud_team")).toMatchObject({ held: before.team.held, today: before.team.today + 250_000 });
    });

    test("a reconciled final price moves every budget by the difference", async () => {
      // The team has $0.75 left today.
      const r = await hold(store, "vk_dag2", 500_000);
      const holdId = (r as { holdId: string }).holdId;
      const before = { dag: await money(store, "bud_dag"), team: await money(store, "bud_team") };
      await store.settleCall({
        keyId: "vk_dag2",
        day,
        holdId,
        outcome: "settled",
        costMicros: 500_000,
        now,
        audit: auditRow({ id: "kbr_rec", at: now, keyId: "vk_dag2", method: "POST", path: "/x", decision: "allowed" }),
        reconcile: { path: "/x/final", at: now },
      });
      const audit = auditRow({
        id: "kbr_reconciled",
        at: now,
        keyId: "vk_dag2",
        method: "GET",
        path: "/x/final",
        decision: "price_reconciled",
      });
      expect(await store.reconcileEntry({ id: holdId, costMicros: 250_000, audit })).toBe(true);
      expect(await money(store, "bud_dag")).toMatchObject({ today: before.dag.today + 250_000, held: before.dag.held - 500_000 });
      expect(await money(store, "bud_team")).toMatchObject({ today: before.team.today + 250_000 });
    });
  });
}

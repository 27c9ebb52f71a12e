import { SQL } from "bun";
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type AuditRow,
  auditRow,
  type BudgetRecord,
  type HoldRecord,
  type HoldResult,
  type IdempotencyResult,
  type KeyRecord,
  type NewBudget,
  type NewKey,
  openStore,
  type Store,
  type TrackedObject,
} from "../src/store/index";
import type { PgStore } from "../src/store/pg/index";
import { dropTestDatabase, testDatabaseUrl, testPostgresServer } from "./helpers/postgres";

// The store's guarantees (SPEC §6, §7, §12, §13), one suite run against every store: SQLite, the reference, and
// PostgreSQL, which must behave the same for every Keybrake instance sharing it. Money is micro-dollars, times ms.
// What only one store has (PostgreSQL's leases and claims) is tested at the end, on its own.

/** A ledger the suite can open more than once (a restart, or a second instance), and remove. */
interface Ledger {
  open(): Promise<Store>;
  remove(): Promise<void>;
  /**
   * Runs SQL (valid in both dialects) on a connection of its own, as another program would: rows a read is
   * checked against, without the writes that would make them.
   */
  write(statements: string): Promise<void>;
}

interface StoreKind {
  name: string;
  available: boolean;
  create(): Promise<Ledger>;
}

/** Long enough that no heartbeat runs during a test; lease tests move `now` past it instead. */
const LEASE_MS = 60_000;
let instances = 0;

const sqliteKind: StoreKind = {
  name: "SQLite",
  available: true,
  async create() {
    const dir = mkdtempSync(join(tmpdir(), "keybrake-contract-"));
    const file = join(dir, "keybrake.db");
    return {
      open: async () => openStore(file),
      remove: async () => rmSync(dir, { recursive: true, force: true }),
      async write(statements) {
        const db = new Database(file);
        try {
          db.exec(statements);
        } finally {
          db.close();
        }
      },
    };
  },
};

/**
 * The file's PostgreSQL databases, dropped together at its end: dropped right after its store closes, each would wait
 * (~130 ms) for the store's sessions to end.
 */
const databases: string[] = [];
afterAll(() => dropTestDatabase(...databases));

const postgresKind: StoreKind = {
  name: "PostgreSQL",
  available: (await testPostgresServer()) !== null,
  async create() {
    const url = await testDatabaseUrl({ migrated: true });
    if (!url) throw new Error("no test PostgreSQL");
    // Reopened, it is the same Keybrake instance restarting (its KEYBRAKE_INSTANCE_ID kept), as SQLite's one process.
    const instanceId = `contract-${++instances}`;
    return {
      open: () => openPg(url, instanceId),
      remove: async () => {
        databases.push(url);
      },
      async write(statements) {
        const sql = new SQL({ url, max: 1 });
        try {
          await sql.unsafe(statements).simple();
        } finally {
          await sql.close();
        }
      },
    };
  },
};

async function openPg(url: string, instanceId: string): Promise<PgStore> {
  const { openPgStore } = await import("../src/store/pg/index");
  // Two connections, not serve's 16: Bun opens the whole pool at the first query, the file opens ~30 stores, and
  // each connection costs the server ~40 ms of catalog warm-up. Every test's concurrency still spans two
  // connections per instance and both instances.
  return openPgStore(url, { instanceId, leaseMs: LEASE_MS, connections: 2 });
}

const USD = 1_000_000;
const DAY = 86_400_000;
const now = Date.UTC(2026, 10, 27, 12);
const day = "2026-11-27";
const tomorrow = now + DAY;
const dayOf = (at: number) => new Date(at).toISOString().slice(0, 10);

const newKey = (id: string, over: Partial<NewKey> = {}): NewKey => ({
  id,
  keyHash: `hash_${id}`,
  keyHint: "kb_live_…",
  vendor: "stripe",
  mode: "live",
  mintedBy: "admin",
  label: `contract/${id}`,
  dailyCapMicros: 100 * USD,
  totalCapMicros: null,
  allowedEndpoints: ["POST /v1/payment_intents"],
  maxRequestsPerMinute: null,
  requireIdempotencyKey: false,
  metadata: {},
  createdAt: now,
  expiresAt: now + 3 * DAY,
  ...over,
});

const callAudit = (id: string, keyId: string, at: number): AuditRow =>
  auditRow({
    id,
    at,
    keyId,
    vendor: "stripe",
    mode: "live",
    method: "POST",
    path: "/v1/payment_intents",
    status: 200,
    decision: "allowed",
    costSource: "request",
  });

function admitted(result: HoldResult) {
  if (result.kind !== "admitted") throw new Error(`expected admitted, got ${JSON.stringify(result)}`);
  return result;
}

const balance = (daySettled: number, dayHeld: number, totalSpent: number, totalHeld: number) => ({
  daySettled,
  dayHeld,
  totalSpent,
  totalHeld,
});

interface Context {
  ledger: Ledger;
  store: Store;
}

/** A fresh ledger for the describe block this is called in: opened before its tests, removed after them. */
function freshLedger(kind: StoreKind): Context {
  const ctx = {} as Context;
  beforeAll(async () => {
    ctx.ledger = await kind.create();
    ctx.store = await ctx.ledger.open();
  });
  afterAll(async () => {
    await ctx.store?.close();
    await ctx.ledger?.remove();
  });
  return ctx;
}

/** What a crash leaves: the store closes without settling, another process opens the ledger. */
async function restart(ctx: Context) {
  await ctx.store.close();
  ctx.store = await ctx.ledger.open();
}

let callCount = 0;

interface HoldOptions {
  at?: number;
  idem?: string;
  fingerprint?: string;
  ttlMs?: number;
  reuseAmbiguous?: boolean;
  ledger?: boolean;
}

interface SettleOptions {
  at?: number;
  idem?: { key: string; result: IdempotencyResult };
  track?: TrackedObject;
  reconcile?: { path: string; at: number };
  auditId?: string;
}

/** Proxied calls as the pipeline makes them: a hold, then its settlement. */
function ledgerCalls(ctx: Context) {
  const hold = (keyId: string, micros: number, o: HoldOptions = {}) => {
    const n = ++callCount;
    const at = o.at ?? now;
    return ctx.store.holdSpend({
      holdId: `hold_${n}`,
      keyId,
      day: dayOf(at),
      micros,
      ledger: o.ledger ?? true,
      reuseAmbiguous: o.reuseAmbiguous ?? true,
      now: at,
      call: { requestId: `kbr_${n}`, method: "POST", path: "/v1/payment_intents" },
      idempotency: o.idem === undefined ? undefined : { key: o.idem, fingerprint: o.fingerprint ?? "fp_a", ttlMs: o.ttlMs ?? DAY },
    });
  };
  const holdId = async (keyId: string, micros: number, o: HoldOptions = {}) => admitted(await hold(keyId, micros, o)).holdId!;
  const settle = (
    keyId: string,
    id: string | undefined,
    outcome: "settled" | "released" | "ambiguous",
    costMicros: number,
    o: SettleOptions = {},
  ) => {
    const at = o.at ?? now;
    return ctx.store.settleCall({
      keyId,
      day: dayOf(at),
      holdId: id,
      outcome,
      costMicros,
      now: at,
      audit: callAudit(o.auditId ?? `kbr_settle_${++callCount}`, keyId, at),
      track: o.track,
      idempotency: o.idem,
      reconcile: o.reconcile,
    });
  };
  const key = async (id: string) => (await ctx.store.findKeyById(id))!;
  const events = async (keyId: string) => (await ctx.store.listAlertEvents({ keyId, limit: 100 })).data.reverse();
  return { hold, holdId, settle, key, events };
}

for (const kind of [sqliteKind, postgresKind]) {
  describe.skipIf(!kind.available)(`${kind.name} store`, () => contract(kind));
}

function contract(kind: StoreKind) {
  describe("keys", () => {
    const ctx = freshLedger(kind);
    const { events } = ledgerCalls(ctx);

    test("insertKey returns the key with its counters at zero and the default thresholds; findKeyById reads it back", async () => {
      const expected: KeyRecord = {
        id: "vk_k1",
        keyHint: "kb_live_…",
        vendor: "stripe",
        mode: "live",
        label: "contract/vk_k1",
        mintedBy: "admin",
        dailyCapMicros: 100 * USD,
        totalCapMicros: 500 * USD,
        allowedEndpoints: ["POST /v1/payment_intents", "GET /v1/*"],
        maxRequestsPerMinute: 30,
        requireIdempotencyKey: true,
        metadata: { team: "billing", run: "42" },
        status: "active",
        createdAt: now,
        expiresAt: now + 3 * DAY,
        revokedAt: null,
        spentTotalMicros: 0,
        heldTotalMicros: 0,
        calls: 0,
        lastUsedAt: null,
        alertThresholds: [0.5, 0.8, 1],
        budgetId: null,
        perCustomerCapMicros: null,
        perDestinationCapMicros: null,
        approvalAboveMicros: null,
        approvalTtlMs: null,
        enforcement: "enforce",
      };
      const inserted = await ctx.store.insertKey(
        newKey("vk_k1", {
          totalCapMicros: 500 * USD,
          allowedEndpoints: ["POST /v1/payment_intents", "GET /v1/*"],
          maxRequestsPerMinute: 30,
          requireIdempotencyKey: true,
          metadata: { team: "billing", run: "42" },
        }),
      );
      expect(inserted).toEqual(expected);
      expect(await ctx.store.findKeyById("vk_k1")).toEqual(expected);
      expect(await ctx.store.findKeyById("vk_missing")).toBeNull();
      const own = await ctx.store.insertKey(
        newKey("vk_k2", { label: null, alertThresholds: [0.25], dailyCapMicros: null, totalCapMicros: 1 }),
      );
      expect(own).toMatchObject({ label: null, alertThresholds: [0.25], dailyCapMicros: null, totalCapMicros: 1 });
    });

    test("findKeyByHash returns the key's policy, and sees a revocation or a PATCH at once", async () => {
      await ctx.store.insertKey(
        newKey("vk_hash", {
          mode: "test",
          vendor: "twilio",
          requireIdempotencyKey: true,
          metadata: { job: "nightly" },
          allowedEndpoints: ["POST /2010-04-01/Accounts/*/Messages.json", "GET /2010-04-01/*"],
          perDestinationCapMicros: 3 * USD,
        }),
      );
      expect(await ctx.store.findKeyByHash("hash_vk_hash")).toEqual({
        id: "vk_hash",
        keyHint: "kb_live_…",
        vendor: "twilio",
        mode: "test",
        label: "contract/vk_hash",
        mintedBy: "admin",
        dailyCapMicros: 100 * USD,
        totalCapMicros: null,
        allowedEndpoints: ["POST /2010-04-01/Accounts/*/Messages.json", "GET /2010-04-01/*"],
        maxRequestsPerMinute: null,
        requireIdempotencyKey: true,
        metadata: { job: "nightly" },
        status: "active",
        createdAt: now,
        expiresAt: now + 3 * DAY,
        budgetId: null,
        perCustomerCapMicros: null,
        perDestinationCapMicros: 3 * USD,
        approvalAboveMicros: null,
        approvalTtlMs: null,
        enforcement: "enforce",
      });
      expect(await ctx.store.findKeyByHash("hash_unknown")).toBeNull();
      await ctx.store.updateKey("vk_hash", { dailyCapMicros: 7 * USD, maxRequestsPerMinute: 5 });
      expect(await ctx.store.findKeyByHash("hash_vk_hash")).toMatchObject({ dailyCapMicros: 7 * USD, maxRequestsPerMinute: 5 });
      await ctx.store.revokeKey("vk_hash", now);
      expect(await ctx.store.findKeyByHash("hash_vk_hash")).toMatchObject({ status: "revoked" });
    });

    test("listKeys: newest first, filtered by label, prefix (% and _ are plain), vendor, minter and status, paged by cursor", async () => {
      await ctx.store.insertKey(newKey("vk_l1", { label: "list/a%x", mintedBy: "tok_list" }));
      await ctx.store.insertKey(newKey("vk_l2", { label: "list/aa", vendor: "twilio", mintedBy: "tok_list", expiresAt: now }));
      await ctx.store.insertKey(newKey("vk_l3", { label: "list/b", vendor: "resend", mintedBy: "tok_list" }));
      await ctx.store.insertKey(newKey("vk_l4", { label: "list/a%y", mintedBy: "tok_other" }));
      await ctx.store.revokeKey("vk_l3", now);
      const ids = async (filter: Omit<Parameters<Store["listKeys"]>[0], "limit">, limit = 10) =>
        (await ctx.store.listKeys({ ...filter, limit }, now)).data.map((k) => k.id);
      expect(await ids({ mintedBy: "tok_list" })).toEqual(["vk_l3", "vk_l2", "vk_l1"]);
      expect(await ids({ labelPrefix: "list/a%" })).toEqual(["vk_l4", "vk_l1"]);
      expect(await ids({ labelPrefix: "list/a_" })).toEqual([]);
      expect(await ids({ labelPrefix: "list/", vendor: "stripe" })).toEqual(["vk_l4", "vk_l1"]);
      expect(await ids({ label: "list/b" })).toEqual(["vk_l3"]);
      expect(await ids({ labelPrefix: "list/", status: "active" })).toEqual(["vk_l4", "vk_l1"]);
      expect(await ids({ labelPrefix: "list/", status: "expired" })).toEqual(["vk_l2"]);
      expect(await ids({ labelPrefix: "list/", status: "revoked" })).toEqual(["vk_l3"]);

      const first = await ctx.store.listKeys({ labelPrefix: "list/", limit: 3 }, now);
      expect(first.data.map((k) => k.id)).toEqual(["vk_l4", "vk_l3", "vk_l2"]);
      expect(first.nextCursor).not.toBeNull();
      const second = await ctx.store.listKeys({ labelPrefix: "list/", limit: 3, cursor: first.nextCursor! }, now);
      expect(second).toMatchObject({ data: [{ id: "vk_l1" }], nextCursor: null });
      expect((await ctx.store.listKeys({ labelPrefix: "list/", limit: 4 }, now)).nextCursor).toBeNull();
    });

    test("revokeKey revokes once, with one key_revoked alert naming who; an unknown key is null", async () => {
      await ctx.store.insertKey(newKey("vk_r1", { label: "revoke/one" }));
      const revoked = await ctx.store.revokeKey("vk_r1", now + 5, "cli:ops");
      expect(revoked).toMatchObject({ id: "vk_r1", status: "revoked", revokedAt: now + 5 });
      expect(await ctx.store.revokeKey("vk_r1", now + 10, "cli:other")).toMatchObject({ status: "revoked", revokedAt: now + 5 });
      expect(await ctx.store.revokeKey("vk_none", now)).toBeNull();
      const fired = await events("vk_r1");
      expect(fired).toEqual([
        {
          seq: expect.any(Number),
          id: expect.stringMatching(/^evt_/),
          type: "key_revoked",
          at: now + 5,
          keyId: "vk_r1",
          label: "revoke/one",
          vendor: "stripe",
          mode: "live",
          data: { revoked_at: new Date(now + 5).toISOString(), by: "cli:ops", spent_total_usd: 0 },
        },
      ]);
      await ctx.store.insertKey(newKey("vk_r2"));
      await ctx.store.revokeKey("vk_r2", now);
      expect((await events("vk_r2")).map((e) => e.data.by)).toEqual([null]);
    });

    test("revokeKeys revokes the active keys every given condition selects, each with an alert; an empty selection is refused", async () => {
      await ctx.store.insertKey(newKey("vk_b1", { label: "bulk/x/1", mintedBy: "tok_a" }));
      await ctx.store.insertKey(newKey("vk_b2", { label: "bulk/x/2", mintedBy: "tok_b" }));
      await ctx.store.insertKey(newKey("vk_b3", { label: "bulk/y/1", mintedBy: "tok_a" }));
      await ctx.store.insertKey(newKey("vk_b4", { label: "bulk/x/3", mintedBy: "tok_a" }));
      await ctx.store.revokeKey("vk_b4", now);
      expect(await ctx.store.revokeKeys({ labelPrefix: "bulk/x/", mintedBy: "tok_a" }, now + 1, "admin")).toEqual(["vk_b1"]);
      expect((await ctx.store.revokeKeys({ ids: ["vk_b2", "vk_b3", "vk_b1", "vk_nope"] }, now + 2)).sort()).toEqual(["vk_b2", "vk_b3"]);
      expect(ctx.store.revokeKeys({}, now)).rejects.toThrow();
      expect((await ctx.store.findKeyById("vk_b1"))!.revokedAt).toBe(now + 1);
      expect((await events("vk_b1")).map((e) => [e.type, e.data.by])).toEqual([["key_revoked", "admin"]]);
      expect((await events("vk_b2")).map((e) => [e.type, e.at])).toEqual([["key_revoked", now + 2]]);
      expect(await events("vk_b4")).toHaveLength(1);
    });

    test("updateKey changes what the patch names and nothing else; an unknown key is null", async () => {
      const before = await ctx.store.insertKey(newKey("vk_u1"));
      const patch = {
        dailyCapMicros: 50 * USD,
        totalCapMicros: 70 * USD,
        expiresAt: now + 9 * DAY,
        maxRequestsPerMinute: 10,
        alertThresholds: [0.9],
      };
      const after = await ctx.store.updateKey("vk_u1", patch);
      expect(after).toEqual({ ...before, ...patch });
      expect(await ctx.store.updateKey("vk_u1", { totalCapMicros: null, maxRequestsPerMinute: null })).toEqual({
        ...before,
        ...patch,
        totalCapMicros: null,
        maxRequestsPerMinute: null,
      });
      expect(await ctx.store.updateKey("vk_none", { dailyCapMicros: 1 })).toBeNull();
    });

    test("insertKeyWithin and updateKeyWithin keep an issuer within max_keys_per_hour and issued_usd_per_day", async () => {
      const dayStart = Date.UTC(2026, 10, 27);
      const issuance = (micros: number, at = now, start = dayStart) => ({
        tokenId: "tok_issuer",
        micros,
        now: at,
        dayStart: start,
        maxUsdPerDayMicros: 100 * USD,
        maxKeysPerHour: 2,
      });
      const mint = (id: string, micros: number, at = now) =>
        ctx.store.insertKeyWithin(newKey(id, { mintedBy: "tok_issuer" }), issuance(micros, at));
      expect(await mint("vk_i1", 60 * USD)).toMatchObject({ kind: "ok", value: { id: "vk_i1", mintedBy: "tok_issuer" } });
      expect(await mint("vk_i2", 50 * USD)).toEqual({ kind: "refused", rule: "issued_usd_per_day", used: 60 * USD });
      expect(await ctx.store.findKeyById("vk_i2")).toBeNull();
      expect(await mint("vk_i2", 40 * USD)).toMatchObject({ kind: "ok" });
      expect(await mint("vk_i3", 0)).toEqual({ kind: "refused", rule: "max_keys_per_hour", used: 2 });
      expect(await mint("vk_i3", 0, now + 3_600_001)).toMatchObject({ kind: "ok" });

      // What the key counted (60) is not issued again; tomorrow, raising it to 90 issues 30 of tomorrow's 100.
      const same = await ctx.store.updateKeyWithin("vk_i1", { totalCapMicros: 60 * USD }, issuance(60 * USD));
      expect(same).toMatchObject({ kind: "ok", value: { id: "vk_i1", totalCapMicros: 60 * USD } });
      const next = (micros: number) => issuance(micros, now + DAY, dayStart + DAY);
      expect(await ctx.store.updateKeyWithin("vk_i1", { totalCapMicros: 90 * USD }, next(90 * USD))).toMatchObject({
        kind: "ok",
        value: { totalCapMicros: 90 * USD },
      });
      expect(await ctx.store.updateKeyWithin("vk_i1", { totalCapMicros: 200 * USD }, next(200 * USD))).toEqual({
        kind: "refused",
        rule: "issued_usd_per_day",
        used: 30 * USD,
      });
      expect((await ctx.store.findKeyById("vk_i1"))!.totalCapMicros).toBe(90 * USD);
    });
  });

  describe("budgets", () => {
    const ctx = freshLedger(kind);
    const newBudget = (id: string, over: Partial<NewBudget> = {}): NewBudget => ({
      id,
      name: `budget ${id}`,
      parentId: null,
      dailyCapMicros: 500 * USD,
      totalCapMicros: null,
      createdAt: now,
      createdBy: "admin",
      ...over,
    });
    /** The refusal of a row that would draw from no budget: 400 invalid_request naming the field. */
    const noBudget = (field: string, id: string) => ({
      code: "invalid_request",
      details: { fields: [{ path: field, message: `no budget ${id}` }] },
    });
    const unused = { today: { settledMicros: 0, heldMicros: 0 }, activeKeys: 0 };

    test("insertBudget returns it with nothing spent and the default thresholds; findBudget and listBudgets read it with usage", async () => {
      const expected: BudgetRecord = {
        id: "bud_a",
        name: "airflow-billing",
        parentId: null,
        dailyCapMicros: 2000 * USD,
        totalCapMicros: null,
        alertThresholds: [0.5, 0.8, 1],
        spentTotalMicros: 0,
        heldTotalMicros: 0,
        createdAt: now,
        createdBy: "admin",
      };
      expect(await ctx.store.insertBudget(newBudget("bud_a", { name: "airflow-billing", dailyCapMicros: 2000 * USD }))).toEqual(expected);
      const child = await ctx.store.insertBudget(
        newBudget("bud_b", {
          parentId: "bud_a",
          dailyCapMicros: null,
          totalCapMicros: 300 * USD,
          alertThresholds: [0.9],
          createdBy: "cli:ops",
        }),
      );
      expect(child).toEqual({
        ...expected,
        id: "bud_b",
        name: "budget bud_b",
        parentId: "bud_a",
        dailyCapMicros: null,
        totalCapMicros: 300 * USD,
        alertThresholds: [0.9],
        createdBy: "cli:ops",
      });
      expect(await ctx.store.findBudget("bud_a", day, now)).toEqual({ ...expected, ...unused });
      expect(await ctx.store.findBudget("bud_none", day, now)).toBeNull();
      expect(await ctx.store.listBudgets(day, now)).toEqual([
        { ...expected, ...unused },
        { ...child, ...unused },
      ]);
    });

    test("a parent that does not exist is refused, naming parent_id; nothing is written", async () => {
      await expect(ctx.store.insertBudget(newBudget("bud_orphan", { parentId: "bud_missing" }))).rejects.toMatchObject(
        noBudget("parent_id", "bud_missing"),
      );
      expect(await ctx.store.findBudget("bud_orphan", day, now)).toBeNull();
    });

    test("usage: today's settled and held from the budget's day row, the lifetime from the budget, the active keys that draw from it", async () => {
      await ctx.store.insertBudget(newBudget("bud_u"));
      await ctx.ledger.write(`
        UPDATE budgets SET spent_total_micros = 70000000, held_total_micros = 5000000 WHERE id = 'bud_u';
        INSERT INTO budget_days (budget_id, day, settled_micros, held_micros)
        VALUES ('bud_u', '${day}', 40000000, 5000000), ('bud_u', '${dayOf(now - DAY)}', 30000000, 0);`);
      await ctx.store.insertKey(newKey("vk_bu1", { budgetId: "bud_u" }));
      await ctx.store.insertKey(newKey("vk_bu2", { budgetId: "bud_u" }));
      await ctx.store.insertKey(newKey("vk_bu3", { budgetId: "bud_u", expiresAt: now }));
      await ctx.store.insertKey(newKey("vk_bu4", { budgetId: "bud_u" }));
      await ctx.store.insertKey(newKey("vk_bu5"));
      await ctx.store.revokeKey("vk_bu4", now);
      expect(await ctx.store.findBudget("bud_u", day, now)).toMatchObject({
        spentTotalMicros: 70 * USD,
        heldTotalMicros: 5 * USD,
        today: { settledMicros: 40 * USD, heldMicros: 5 * USD },
        activeKeys: 2,
      });
      const yesterday = (await ctx.store.listBudgets(dayOf(now - DAY), now)).find((b) => b.id === "bud_u");
      expect(yesterday).toMatchObject({ today: { settledMicros: 30 * USD, heldMicros: 0 }, activeKeys: 2 });
      // Tomorrow: no day row yet (zeros), and both keys expired by then.
      expect(await ctx.store.findBudget("bud_u", dayOf(tomorrow), now + 3 * DAY)).toMatchObject({ ...unused, spentTotalMicros: 70 * USD });
    });

    test("a key draws from a budget that exists, or is refused naming budget_id; its caps are kept; listKeys filters by budget", async () => {
      await ctx.store.insertBudget(newBudget("bud_k"));
      const caps = { budgetId: "bud_k", perCustomerCapMicros: 100 * USD, perDestinationCapMicros: 5 * USD };
      expect(await ctx.store.insertKey(newKey("vk_bk1", caps))).toMatchObject(caps);
      expect(await ctx.store.findKeyById("vk_bk1")).toMatchObject(caps);
      expect(await ctx.store.findKeyByHash("hash_vk_bk1")).toMatchObject(caps);
      await expect(ctx.store.insertKey(newKey("vk_bk2", { budgetId: "bud_missing" }))).rejects.toMatchObject(
        noBudget("budget_id", "bud_missing"),
      );
      expect(await ctx.store.findKeyById("vk_bk2")).toBeNull();
      const issuance = { tokenId: "tok_bud", micros: USD, now, dayStart: now, maxUsdPerDayMicros: null, maxKeysPerHour: null };
      const within = (id: string, budgetId: string) => ctx.store.insertKeyWithin(newKey(id, { budgetId, mintedBy: "tok_bud" }), issuance);
      await expect(within("vk_bk3", "bud_missing")).rejects.toMatchObject(noBudget("budget_id", "bud_missing"));
      expect(await ctx.store.findKeyById("vk_bk3")).toBeNull();
      expect(await within("vk_bk4", "bud_k")).toMatchObject({ kind: "ok", value: { budgetId: "bud_k" } });
      expect((await ctx.store.listKeys({ budgetId: "bud_k", limit: 10 }, now)).data.map((k) => k.id)).toEqual(["vk_bk4", "vk_bk1"]);
    });

    test("updateBudget changes what the patch names and nothing else (never the parent); an unknown budget is null", async () => {
      await ctx.store.insertBudget(newBudget("bud_up_top"));
      const before = await ctx.store.insertBudget(newBudget("bud_up", { parentId: "bud_up_top" }));
      const patch = { name: "renamed", dailyCapMicros: null, totalCapMicros: 900 * USD, alertThresholds: [0.25, 1] };
      expect(await ctx.store.updateBudget("bud_up", patch)).toEqual({ ...before, ...patch });
      expect(await ctx.store.updateBudget("bud_up", { dailyCapMicros: 10 * USD })).toEqual({
        ...before,
        ...patch,
        dailyCapMicros: 10 * USD,
      });
      expect(await ctx.store.updateBudget("bud_up", {})).toEqual({ ...before, ...patch, dailyCapMicros: 10 * USD });
      expect(await ctx.store.updateBudget("bud_none", { name: "x" })).toBeNull();
    });

    test("deleteBudget is refused while an active key, a budget below or an open hold of its keys draws from it; then it goes with its days", async () => {
      await ctx.store.insertBudget(newBudget("bud_top"));
      await ctx.store.insertBudget(newBudget("bud_mid", { parentId: "bud_top" }));
      await ctx.store.insertKey(newKey("vk_bd1", { budgetId: "bud_mid" }));
      await ctx.store.insertKey(newKey("vk_bd2", { budgetId: "bud_top", expiresAt: now }));
      await ctx.ledger.write(
        `INSERT INTO budget_days (budget_id, day, settled_micros, held_micros) VALUES ('bud_mid', '${day}', 7000000, 0);`,
      );
      expect(await ctx.store.deleteBudget("bud_none", now)).toBe("not_found");
      expect(await ctx.store.deleteBudget("bud_top", now)).toBe("in_use");
      expect(await ctx.store.deleteBudget("bud_mid", now)).toBe("in_use");
      // Revoked, its key no longer draws from it; a hold of that key still open (a crash's) still does.
      await ctx.store.revokeKey("vk_bd1", now);
      await ctx.ledger.write(
        `INSERT INTO ledger_entries (id, key_id, day, hold_micros, state, created_at) VALUES ('hold_bd', 'vk_bd1', '${day}', 1000000, 'orphaned', ${now});`,
      );
      expect(await ctx.store.deleteBudget("bud_mid", now)).toBe("in_use");
      await ctx.ledger.write("UPDATE ledger_entries SET state = 'released' WHERE id = 'hold_bd';");
      expect(await ctx.store.deleteBudget("bud_mid", now)).toBe("deleted");
      expect(await ctx.store.findBudget("bud_mid", day, now)).toBeNull();
      expect(await ctx.store.deleteBudget("bud_mid", now)).toBe("not_found");
      // An expired key draws from nothing any more.
      expect(await ctx.store.deleteBudget("bud_top", now)).toBe("deleted");
      // Its day rows went with it: a new budget of the same id starts from nothing.
      await ctx.store.insertBudget(newBudget("bud_mid"));
      expect(await ctx.store.findBudget("bud_mid", day, now)).toMatchObject(unused);
    });
  });

  describe("holds", () => {
    const ctx = freshLedger(kind);
    const { hold, holdId, settle, key } = ledgerCalls(ctx);

    test("a cap admits exactly what fits under 200 concurrent holds: daily, then lifetime", async () => {
      await ctx.store.insertKey(newKey("vk_race_day", { dailyCapMicros: 50 * USD }));
      await ctx.store.insertKey(newKey("vk_race_life", { dailyCapMicros: null, totalCapMicros: 50 * USD }));
      for (const [keyId, reason] of [
        ["vk_race_day", "daily_cap"],
        ["vk_race_life", "total_cap"],
      ] as const) {
        const results = await Promise.all(Array.from({ length: 200 }, () => hold(keyId, 700_000)));
        const ok = results.filter((r) => r.kind === "admitted");
        const denied = results.filter((r) => r.kind === "denied");
        // 71 x 0.70 = 49.70 fits under 50; a 72nd would not. Each admission saw the one before it.
        expect(ok).toHaveLength(71);
        expect(denied).toHaveLength(129);
        const held = ok.map((r) => (reason === "daily_cap" ? r.balance.dayHeld : r.balance.totalHeld)).sort((a, b) => a - b);
        expect(held).toEqual(Array.from({ length: 71 }, (_, i) => (i + 1) * 700_000));
        const full = balance(0, 49_700_000, 0, 49_700_000);
        for (const d of denied) expect(d).toEqual({ kind: "denied", reason, capMicros: 50 * USD, balance: full });
        expect(await key(keyId)).toMatchObject({ heldTotalMicros: 49_700_000, spentTotalMicros: 0 });
        expect((await ctx.store.dayUsage([keyId], day)).get(keyId)).toEqual({ settledMicros: 0, heldMicros: 49_700_000 });
      }
    });

    test("a denial names the cap and the balances the check saw; settled money counts, released money does not", async () => {
      await ctx.store.insertKey(newKey("vk_deny", { dailyCapMicros: 10 * USD }));
      const first = admitted(await hold("vk_deny", 6 * USD));
      expect(first).toEqual({
        kind: "admitted",
        holdId: first.holdId,
        day,
        holdMicros: 6 * USD,
        priorCostMicros: null,
        balance: balance(0, 6 * USD, 0, 6 * USD),
        tightest: { limit: "key", remainingMicros: 4 * USD },
      });
      expect(await hold("vk_deny", 5 * USD)).toEqual({
        kind: "denied",
        reason: "daily_cap",
        capMicros: 10 * USD,
        balance: balance(0, 6 * USD, 0, 6 * USD),
      });
      expect(await settle("vk_deny", first.holdId!, "settled", 4 * USD)).toBe(4 * USD);
      const second = admitted(await hold("vk_deny", 6 * USD));
      expect(second.balance).toEqual(balance(4 * USD, 6 * USD, 4 * USD, 6 * USD));
      expect(await hold("vk_deny", 1)).toMatchObject({
        kind: "denied",
        reason: "daily_cap",
        balance: balance(4 * USD, 6 * USD, 4 * USD, 6 * USD),
      });
      expect(await settle("vk_deny", second.holdId!, "released", 0)).toBe(0);
      expect(admitted(await hold("vk_deny", 6 * USD)).balance).toEqual(balance(4 * USD, 6 * USD, 4 * USD, 6 * USD));
      // A new UTC day starts a new daily window; the lifetime counters carry on.
      expect(admitted(await hold("vk_deny", 10 * USD, { at: tomorrow })).balance).toEqual(balance(0, 10 * USD, 4 * USD, 16 * USD));
      expect(await key("vk_deny")).toMatchObject({ spentTotalMicros: 4 * USD, heldTotalMicros: 16 * USD });
    });

    test("the lifetime cap refuses what the daily cap would admit", async () => {
      await ctx.store.insertKey(newKey("vk_life", { dailyCapMicros: 10 * USD, totalCapMicros: 15 * USD }));
      const id = await holdId("vk_life", 8 * USD);
      await settle("vk_life", id, "settled", 8 * USD);
      expect(await hold("vk_life", 8 * USD, { at: tomorrow })).toEqual({
        kind: "denied",
        reason: "total_cap",
        capMicros: 15 * USD,
        balance: balance(0, 0, 8 * USD, 0),
      });
      expect(admitted(await hold("vk_life", 7 * USD, { at: tomorrow })).balance).toEqual(balance(0, 7 * USD, 8 * USD, 7 * USD));
    });

    test("a revoked or unknown key is denied as revoked, before anything else", async () => {
      await ctx.store.insertKey(newKey("vk_revoked"));
      await ctx.store.revokeKey("vk_revoked", now);
      expect(await hold("vk_revoked", 1)).toEqual({ kind: "denied", reason: "revoked" });
      expect(await hold("vk_revoked", 1, { idem: "k1" })).toEqual({ kind: "denied", reason: "revoked" });
      expect(await hold("vk_nobody", 1)).toEqual({ kind: "denied", reason: "revoked" });
      expect(await key("vk_revoked")).toMatchObject({ heldTotalMicros: 0, calls: 0 });
    });

    test("a call without a ledger entry holds nothing; its settlement counts the call and costs 0", async () => {
      await ctx.store.insertKey(newKey("vk_free", { dailyCapMicros: 10 * USD }));
      const free = await hold("vk_free", 0, { ledger: false });
      expect(free).toEqual({
        kind: "admitted",
        holdId: null,
        day,
        holdMicros: 0,
        priorCostMicros: null,
        balance: balance(0, 0, 0, 0),
        tightest: { limit: "key", remainingMicros: 10 * USD },
      });
      expect(await settle("vk_free", undefined, "settled", 3 * USD, { at: now + 7 })).toBe(0);
      expect(await key("vk_free")).toMatchObject({ spentTotalMicros: 0, heldTotalMicros: 0, calls: 1, lastUsedAt: now + 7 });
      expect((await ctx.store.dayUsage(["vk_free"], day)).get("vk_free")).toBeUndefined();
    });

    test("dayUsage: one day's settled and held money of each key that has any", async () => {
      const usage = await ctx.store.dayUsage(["vk_deny", "vk_life", "vk_free", "vk_nobody"], day);
      expect([...usage.entries()].sort()).toEqual([
        ["vk_deny", { settledMicros: 4 * USD, heldMicros: 6 * USD }],
        ["vk_life", { settledMicros: 8 * USD, heldMicros: 0 }],
      ]);
      expect((await ctx.store.dayUsage(["vk_deny"], dayOf(tomorrow))).get("vk_deny")).toEqual({ settledMicros: 0, heldMicros: 10 * USD });
      expect((await ctx.store.dayUsage([], day)).size).toBe(0);
    });
  });

  describe("settlement", () => {
    const ctx = freshLedger(kind);
    const { hold, holdId, settle, key, events } = ledgerCalls(ctx);

    test("settled, released and ambiguous move the counters; settleCall resolves to the audit row's cost", async () => {
      await ctx.store.insertKey(newKey("vk_s", { label: "settle/run" }));
      const a = await holdId("vk_s", 6 * USD);
      const b = await holdId("vk_s", 7 * USD);
      const c = await holdId("vk_s", 8 * USD);
      expect(await key("vk_s")).toMatchObject({ heldTotalMicros: 21 * USD, spentTotalMicros: 0, calls: 0 });
      expect(await ctx.store.countOpenHolds()).toBe(3);
      expect(await settle("vk_s", a, "settled", 5 * USD, { at: now + 1, auditId: "kbr_a" })).toBe(5 * USD);
      expect(await settle("vk_s", b, "released", 0, { at: now + 2, auditId: "kbr_b" })).toBe(0);
      expect(await settle("vk_s", c, "ambiguous", 8 * USD, { at: now + 3, auditId: "kbr_c" })).toBe(8 * USD);
      expect(await key("vk_s")).toMatchObject({ spentTotalMicros: 13 * USD, heldTotalMicros: 0, calls: 3, lastUsedAt: now + 3 });
      // An ambiguous entry is spent, not held: it is not an open hold.
      expect(await ctx.store.countOpenHolds()).toBe(0);
      expect((await ctx.store.dayUsage(["vk_s"], day)).get("vk_s")).toEqual({ settledMicros: 13 * USD, heldMicros: 0 });
      const entry = (id: string, holdMicros: number, costMicros: number, state: HoldRecord["state"], settledAt: number): HoldRecord => ({
        id,
        keyId: "vk_s",
        label: "settle/run",
        day,
        holdMicros,
        costMicros,
        state,
        createdAt: now,
        settledAt,
      });
      expect(await ctx.store.findHold(a)).toEqual(entry(a, 6 * USD, 5 * USD, "settled", now + 1));
      expect(await ctx.store.findHold(b)).toEqual(entry(b, 7 * USD, 0, "released", now + 2));
      expect(await ctx.store.findHold(c)).toEqual(entry(c, 8 * USD, 8 * USD, "ambiguous", now + 3));
      expect(await ctx.store.listHolds("ambiguous", 10)).toEqual([entry(c, 8 * USD, 8 * USD, "ambiguous", now + 3)]);
      const rows = (await ctx.store.listAudit({ keyId: "vk_s", limit: 10 })).data;
      expect(rows.map((r) => [r.id, r.costMicros])).toEqual([
        ["kbr_c", 8 * USD],
        ["kbr_b", 0],
        ["kbr_a", 5 * USD],
      ]);
      // An ambiguous outcome is an alert (the first of the key's day).
      expect((await events("vk_s")).map((e) => [e.type, e.data.reason, e.data.hold_ids])).toEqual([
        ["holds_need_attention", "ambiguous", [c]],
      ]);
    });

    test("a second settlement of one hold moves no money: it resolves to 0 and its audit row costs 0", async () => {
      await ctx.store.insertKey(newKey("vk_twice"));
      const id = await holdId("vk_twice", 3 * USD);
      expect(await settle("vk_twice", id, "settled", 3 * USD)).toBe(3 * USD);
      expect(await settle("vk_twice", id, "settled", 3 * USD, { auditId: "kbr_twice_2" })).toBe(0);
      expect(await settle("vk_twice", id, "released", 0)).toBe(0);
      expect(await key("vk_twice")).toMatchObject({ spentTotalMicros: 3 * USD, heldTotalMicros: 0, calls: 3 });
      expect((await ctx.store.listAudit({ requestId: "kbr_twice_2", limit: 1 })).data[0]!.costMicros).toBe(0);
      expect((await ctx.store.findHold(id))!.state).toBe("settled");
    });

    test("a price above the hold settles at the price, fires price_differential, and blocks what no longer fits", async () => {
      await ctx.store.insertKey(newKey("vk_over", { dailyCapMicros: 10 * USD }));
      const id = await holdId("vk_over", 5 * USD);
      expect(await settle("vk_over", id, "settled", 7_500_000, { auditId: "kbr_over" })).toBe(7_500_000);
      expect(await key("vk_over")).toMatchObject({ spentTotalMicros: 7_500_000, heldTotalMicros: 0 });
      expect((await events("vk_over")).map((e) => [e.type, e.data])).toEqual([
        ["cap_threshold", { cap: "daily", window: day, threshold: 0.5, cap_usd: 10, spent_usd: 7.5, percent: 75 }],
        ["price_differential", { hold_id: id, request_id: "kbr_over", hold_usd: 5, cost_usd: 7.5, over_usd: 2.5 }],
      ]);
      expect(await hold("vk_over", 3 * USD)).toMatchObject({
        kind: "denied",
        reason: "daily_cap",
        balance: balance(7_500_000, 0, 7_500_000, 0),
      });
      expect((await hold("vk_over", 2_500_000)).kind).toBe("admitted");
    });

    test("an object created through a call is tracked with what it counted; a later call updates it", async () => {
      await ctx.store.insertKey(newKey("vk_track"));
      const track = (amountMinor: number, countedMicros: number): TrackedObject => ({
        objectId: "pi_contract",
        keyId: "vk_track",
        currency: "eur",
        amountMinor,
        countedMicros,
      });
      await settle("vk_track", await holdId("vk_track", 29 * USD), "settled", 29 * USD, { track: track(2900, 29 * USD) });
      expect(await ctx.store.findTracked("pi_contract")).toEqual(track(2900, 29 * USD));
      await settle("vk_track", await holdId("vk_track", 21 * USD), "settled", 21 * USD, { track: track(5000, 50 * USD) });
      expect(await ctx.store.findTracked("pi_contract")).toEqual(track(5000, 50 * USD));
      expect(await ctx.store.findTracked("pi_none")).toBeNull();
    });
  });

  describe("idempotency", () => {
    const ctx = freshLedger(kind);
    const { hold, holdId, settle, key } = ledgerCalls(ctx);
    const completed = (body: Uint8Array | null): IdempotencyResult => ({
      kind: "completed",
      response: {
        status: 201,
        headers: [
          ["content-type", "application/json"],
          ["request-id", "req_42"],
        ],
        body,
        vendorRequestId: "req_42",
      },
    });

    test("a claimed key is in flight until its answer; another fingerprint is a conflict", async () => {
      await ctx.store.insertKey(newKey("vk_claim"));
      await ctx.store.insertKey(newKey("vk_claim_other"));
      await holdId("vk_claim", 6 * USD, { idem: "k1" });
      expect(await ctx.store.idempotencyFingerprint("vk_claim", "k1", now)).toBe("fp_a");
      expect(await ctx.store.idempotencyFingerprint("vk_claim", "k2", now)).toBeNull();
      expect(await ctx.store.idempotencyFingerprint("vk_claim_other", "k1", now)).toBeNull();
      expect(await hold("vk_claim", 6 * USD, { idem: "k1" })).toEqual({ kind: "in_flight" });
      expect(await hold("vk_claim", 6 * USD, { idem: "k1", fingerprint: "fp_b" })).toEqual({ kind: "conflict" });
      expect((await hold("vk_claim_other", 6 * USD, { idem: "k1", fingerprint: "fp_b" })).kind).toBe("admitted");
      expect(await key("vk_claim")).toMatchObject({ heldTotalMicros: 6 * USD });
    });

    test("a completed answer is replayed (status, headers, body bytes) with the balances now, and charged once", async () => {
      await ctx.store.insertKey(newKey("vk_replay"));
      const bytes = new Uint8Array([0, 1, 2, 127, 128, 254, 255, 123, 34, 125]);
      const id = await holdId("vk_replay", 6 * USD, { idem: "k_done" });
      expect(await settle("vk_replay", id, "settled", 6 * USD, { idem: { key: "k_done", result: completed(bytes) } })).toBe(6 * USD);
      const replay = await hold("vk_replay", 6 * USD, { idem: "k_done" });
      if (replay.kind !== "replay") throw new Error(replay.kind);
      expect(replay.response.status).toBe(201);
      expect(replay.response.headers).toEqual([
        ["content-type", "application/json"],
        ["request-id", "req_42"],
      ]);
      expect(replay.response.vendorRequestId).toBe("req_42");
      expect(new Uint8Array(replay.response.body!)).toEqual(bytes);
      expect(replay.balance).toEqual(balance(6 * USD, 0, 6 * USD, 0));
      expect(await hold("vk_replay", 6 * USD, { idem: "k_done", fingerprint: "fp_b" })).toEqual({ kind: "conflict" });
      expect(await key("vk_replay")).toMatchObject({ spentTotalMicros: 6 * USD, heldTotalMicros: 0, calls: 1 });
    });

    test("an answer up to 256 KiB is kept for replay; a larger one is replayed without its body", async () => {
      await ctx.store.insertKey(newKey("vk_big"));
      for (const [idem, size] of [
        ["k_fits", 256 * 1024],
        ["k_big", 256 * 1024 + 1],
      ] as const) {
        const body = new Uint8Array(size).fill(120);
        const id = await holdId("vk_big", 1, { idem });
        await settle("vk_big", id, "settled", 1, { idem: { key: idem, result: completed(body) } });
        const replay = await hold("vk_big", 1, { idem });
        if (replay.kind !== "replay") throw new Error(replay.kind);
        expect(replay.response.body === null ? null : replay.response.body.byteLength).toBe(idem === "k_fits" ? size : null);
      }
    });

    test("a memory past its time is a fresh call", async () => {
      await ctx.store.insertKey(newKey("vk_exp"));
      const id = await holdId("vk_exp", 1 * USD, { idem: "k_exp", ttlMs: 60_000 });
      await settle("vk_exp", id, "settled", 1 * USD, { idem: { key: "k_exp", result: completed(null) } });
      expect(await ctx.store.idempotencyFingerprint("vk_exp", "k_exp", now + 59_999)).toBe("fp_a");
      expect((await hold("vk_exp", 1 * USD, { idem: "k_exp", at: now + 59_999 })).kind).toBe("replay");
      expect(await ctx.store.idempotencyFingerprint("vk_exp", "k_exp", now + 60_000)).toBeNull();
      const fresh = admitted(await hold("vk_exp", 2 * USD, { idem: "k_exp", fingerprint: "fp_b", at: now + 60_000 }));
      expect(fresh.holdId).not.toBe(id);
      expect(fresh.balance).toEqual(balance(1 * USD, 2 * USD, 1 * USD, 2 * USD));
      expect(await ctx.store.idempotencyFingerprint("vk_exp", "k_exp", now + 60_000)).toBe("fp_b");
    });

    test("forget: a call that never reached the vendor leaves no memory", async () => {
      await ctx.store.insertKey(newKey("vk_forget"));
      const id = await holdId("vk_forget", 4 * USD, { idem: "k_f" });
      expect(await settle("vk_forget", id, "released", 0, { idem: { key: "k_f", result: { kind: "forget" } } })).toBe(0);
      expect(await ctx.store.idempotencyFingerprint("vk_forget", "k_f", now)).toBeNull();
      expect((await hold("vk_forget", 4 * USD, { idem: "k_f", fingerprint: "fp_b" })).kind).toBe("admitted");
    });

    test("an ambiguous call's retry is forwarded again on its own entry, holding at least what it counted", async () => {
      await ctx.store.insertKey(newKey("vk_amb", { dailyCapMicros: 10 * USD }));
      const id = await holdId("vk_amb", 6 * USD, { idem: "k_amb" });
      const ambiguous = { key: "k_amb", result: { kind: "ambiguous" } as const };
      expect(await settle("vk_amb", id, "ambiguous", 6 * USD, { idem: ambiguous })).toBe(6 * USD);
      expect(await key("vk_amb")).toMatchObject({ spentTotalMicros: 6 * USD, heldTotalMicros: 0 });
      // Priced lower this time, the retry still holds the 6 the vendor may have charged.
      expect(await hold("vk_amb", 4 * USD, { idem: "k_amb" })).toEqual({
        kind: "admitted",
        holdId: id,
        day,
        holdMicros: 6 * USD,
        priorCostMicros: 6 * USD,
        balance: balance(0, 6 * USD, 0, 6 * USD),
        tightest: { limit: "key", remainingMicros: 4 * USD },
      });
      expect(await ctx.store.findHold(id)).toMatchObject({ state: "held", holdMicros: 6 * USD, costMicros: 6 * USD });
      expect(await hold("vk_amb", 6 * USD, { idem: "k_amb" })).toEqual({ kind: "in_flight" });
      // The retry's answer replaces the first attempt's cost: the audit rows of the entry sum to 5.
      expect(await settle("vk_amb", id, "settled", 5 * USD, { idem: { key: "k_amb", result: completed(null) } })).toBe(-1 * USD);
      expect(await key("vk_amb")).toMatchObject({ spentTotalMicros: 5 * USD, heldTotalMicros: 0, calls: 2 });
      expect((await ctx.store.spendBy("key", { keyId: "vk_amb" }))[0]).toMatchObject({ spendMicros: 5 * USD, ambiguousMicros: 0 });
    });

    test("a retry at a higher price needs the difference in headroom; its definite failure releases the entry", async () => {
      await ctx.store.insertKey(newKey("vk_amb2", { dailyCapMicros: 10 * USD }));
      const id = await holdId("vk_amb2", 6 * USD, { idem: "k_amb2" });
      await settle("vk_amb2", id, "ambiguous", 6 * USD, { idem: { key: "k_amb2", result: { kind: "ambiguous" } } });
      expect(await hold("vk_amb2", 12 * USD, { idem: "k_amb2" })).toEqual({
        kind: "denied",
        reason: "daily_cap",
        capMicros: 10 * USD,
        balance: balance(6 * USD, 0, 6 * USD, 0),
      });
      expect((await ctx.store.findHold(id))!.state).toBe("ambiguous");
      expect(await hold("vk_amb2", 8 * USD, { idem: "k_amb2" })).toEqual({
        kind: "admitted",
        holdId: id,
        day,
        holdMicros: 8 * USD,
        priorCostMicros: 6 * USD,
        balance: balance(0, 8 * USD, 0, 8 * USD),
        tightest: { limit: "key", remainingMicros: 2 * USD },
      });
      expect(await settle("vk_amb2", id, "released", 0, { idem: { key: "k_amb2", result: { kind: "forget" } } })).toBe(-6 * USD);
      expect(await key("vk_amb2")).toMatchObject({ spentTotalMicros: 0, heldTotalMicros: 0 });
      expect(await ctx.store.findHold(id)).toMatchObject({ state: "released", costMicros: 0, holdMicros: 8 * USD });
    });

    test("without reuseAmbiguous a retry is a new call: the ambiguous entry stays counted and a new hold is taken", async () => {
      await ctx.store.insertKey(newKey("vk_amb3", { dailyCapMicros: 20 * USD }));
      const id = await holdId("vk_amb3", 6 * USD, { idem: "k_amb3", reuseAmbiguous: false });
      await settle("vk_amb3", id, "ambiguous", 6 * USD, { idem: { key: "k_amb3", result: { kind: "ambiguous" } } });
      const retry = admitted(await hold("vk_amb3", 6 * USD, { idem: "k_amb3", reuseAmbiguous: false }));
      expect(retry.holdId).not.toBe(id);
      expect(retry).toMatchObject({ holdMicros: 6 * USD, priorCostMicros: null, balance: balance(6 * USD, 6 * USD, 6 * USD, 6 * USD) });
      expect(await ctx.store.findHold(id)).toMatchObject({ state: "ambiguous", costMicros: 6 * USD });
      expect(await hold("vk_amb3", 6 * USD, { idem: "k_amb3", reuseAmbiguous: false })).toEqual({ kind: "in_flight" });
    });

    test("pruneIdempotency deletes what expired, a batch at a time", async () => {
      await ctx.store.insertKey(newKey("vk_prune_idem"));
      for (const idem of ["p1", "p2", "p3"]) await hold("vk_prune_idem", 0, { idem, ttlMs: 1000, ledger: false });
      expect(await ctx.store.pruneIdempotency(now + 999, 10)).toBe(0);
      expect(await ctx.store.pruneIdempotency(now + 1000, 2)).toBe(2);
      expect(await ctx.store.pruneIdempotency(now + 1000, 2)).toBe(1);
      expect(await ctx.store.pruneIdempotency(now + 1000, 2)).toBe(0);
      expect(await ctx.store.idempotencyFingerprint("vk_replay", "k_done", now)).toBe("fp_a");
    });
  });

  describe("recovery of a hold waiting on a person", () => {
    const ctx = freshLedger(kind);
    const { holdId, events } = ledgerCalls(ctx);

    test("a hold reserved for a call waiting on a person is not orphaned by a restart: its approval settles it", async () => {
      await ctx.store.insertKey(newKey("vk_wait", { label: "recover/approval", dailyCapMicros: 5_000 * USD }));
      const waiting = await ctx.store.holdSpend({
        holdId: "hold_waiting",
        keyId: "vk_wait",
        day,
        micros: 4_000 * USD,
        ledger: true,
        reuseAmbiguous: true,
        now,
        call: { requestId: "kbr_waiting", method: "POST", path: "/v1/refunds" },
        idempotency: { key: "refund-1", fingerprint: "fp_refund", ttlMs: DAY },
        approval: { id: "apr_waiting", ttlMs: 3_600_000, requestedBy: null },
      });
      expect(waiting).toMatchObject({ kind: "approval_pending", approvalId: "apr_waiting" });
      const lost = await holdId("vk_wait", 1 * USD);
      await restart(ctx);

      expect((await ctx.store.recoverOrphanedHolds(now + 1000)).map((h) => h.id)).toEqual([lost]);
      expect(await ctx.store.findHold("hold_waiting")).toMatchObject({ state: "held", holdMicros: 4_000 * USD });
      const orphanRows = (await ctx.store.listAudit({ keyId: "vk_wait", decision: "orphaned_hold", limit: 10 })).data;
      expect(orphanRows.map((r) => r.holdMicros)).toEqual([1 * USD]);
      const attention = (await events("vk_wait")).filter((e) => e.type === "holds_need_attention");
      expect(attention.map((e) => e.data.hold_ids)).toEqual([[lost]]);
      await ctx.store.resolveHold(lost, "released", 0, now + 2000);
      // The audit API reads a call's approval beside its rows.
      const asked = [
        { keyId: "vk_wait", idempotencyKey: "refund-1" },
        { keyId: "vk_wait", idempotencyKey: "refund-2" },
        { keyId: "vk_other", idempotencyKey: "refund-1" },
      ];
      expect((await ctx.store.approvalsOfCalls(asked)).map((a) => [a.id, a.status, a.label, a.decidedBy])).toEqual([
        ["apr_waiting", "pending", "recover/approval", null],
      ]);
      expect(await ctx.store.approvalsOfCalls([])).toEqual([]);
    });
  });

  describe("recovery and resolution of holds", () => {
    const ctx = freshLedger(kind);
    const { hold, holdId, settle, key, events } = ledgerCalls(ctx);

    test("holds a stopped process never settled become orphaned: still held, audited, alerted, and re-opened by a retry", async () => {
      await ctx.store.insertKey(newKey("vk_orph", { label: "recover/run", dailyCapMicros: 20 * USD }));
      const a1 = admitted(await hold("vk_orph", 2 * USD, { idem: "k_o1" }));
      const a2 = admitted(await hold("vk_orph", 3 * USD));
      await settle("vk_orph", await holdId("vk_orph", 1 * USD), "settled", 1 * USD);
      await restart(ctx);

      const orphan = (id: string, holdMicros: number): HoldRecord => ({
        id,
        keyId: "vk_orph",
        label: "recover/run",
        day,
        holdMicros,
        costMicros: null,
        state: "orphaned",
        createdAt: now,
        settledAt: null,
      });
      const byId = (a: HoldRecord, b: HoldRecord) => a.id.localeCompare(b.id);
      const expected = [orphan(a1.holdId!, 2 * USD), orphan(a2.holdId!, 3 * USD)].sort(byId);
      expect((await ctx.store.recoverOrphanedHolds(now + 1000)).sort(byId)).toEqual(expected);
      expect((await ctx.store.listHolds("orphaned", 10)).sort(byId)).toEqual(expected);
      expect(await ctx.store.listHolds("held", 10)).toEqual([]);
      expect(await ctx.store.countOpenHolds()).toBe(2);
      expect(await key("vk_orph")).toMatchObject({ spentTotalMicros: 1 * USD, heldTotalMicros: 5 * USD });
      const audited = (await ctx.store.listAudit({ keyId: "vk_orph", decision: "orphaned_hold", limit: 10 })).data;
      expect(audited.map((r) => [r.id, r.at, r.holdMicros, r.costMicros, r.label]).sort()).toEqual(
        [
          [`kbr_${a1.holdId!.slice(5)}`, now + 1000, 2 * USD, 0, "recover/run"],
          [`kbr_${a2.holdId!.slice(5)}`, now + 1000, 3 * USD, 0, "recover/run"],
        ].sort(),
      );
      const [attention, ...more] = await events("vk_orph");
      expect(more).toEqual([]);
      expect(attention).toMatchObject({ type: "holds_need_attention", data: { reason: "orphaned", count: 2, amount_usd: 5 } });
      expect((attention!.data.hold_ids as string[]).sort()).toEqual([a1.holdId!, a2.holdId!].sort());
      expect(await ctx.store.recoverOrphanedHolds(now + 2000)).toEqual([]);

      // The call that was in flight became ambiguous: its retry goes out again on the orphaned entry, no new hold.
      expect(await hold("vk_orph", 2 * USD, { idem: "k_o1" })).toEqual({
        kind: "admitted",
        holdId: a1.holdId,
        day,
        holdMicros: 2 * USD,
        priorCostMicros: 2 * USD,
        balance: balance(1 * USD, 5 * USD, 1 * USD, 5 * USD),
        tightest: { limit: "key", remainingMicros: 14 * USD },
      });
      expect(await ctx.store.findHold(a1.holdId!)).toMatchObject({ state: "held", costMicros: null });
      expect(await settle("vk_orph", a1.holdId!, "settled", 2 * USD)).toBe(2 * USD);
      expect(await key("vk_orph")).toMatchObject({ spentTotalMicros: 3 * USD, heldTotalMicros: 3 * USD });
    });

    test("resolveHold settles or releases an orphaned hold, re-prices an ambiguous one, and refuses anything else", async () => {
      const [orphaned] = await ctx.store.listHolds("orphaned", 10);
      expect(orphaned).toMatchObject({ keyId: "vk_orph", holdMicros: 3 * USD });
      const settled = await ctx.store.resolveHold(orphaned!.id, "settled", 2_500_000, now + 3000);
      expect(settled).toEqual({ ...orphaned!, state: "settled", costMicros: 2_500_000, settledAt: now + 3000 });
      expect(await key("vk_orph")).toMatchObject({ spentTotalMicros: 5_500_000, heldTotalMicros: 0 });
      const row = (await ctx.store.listAudit({ requestId: `kbr_hold_settled_${orphaned!.id}`, limit: 1 })).data[0];
      expect(row).toMatchObject({ decision: "hold_settled", keyId: "vk_orph", holdMicros: 3 * USD, costMicros: 2_500_000, at: now + 3000 });
      expect(await ctx.store.resolveHold(orphaned!.id, "released", 0, now + 4000)).toBeNull();

      const lost = await holdId("vk_orph", 4 * USD);
      await restart(ctx);
      await ctx.store.recoverOrphanedHolds(now + 5000);
      expect(await ctx.store.resolveHold(lost, "released", 999, now + 6000)).toMatchObject({ state: "released", costMicros: 0 });
      expect(await key("vk_orph")).toMatchObject({ spentTotalMicros: 5_500_000, heldTotalMicros: 0 });
      expect((await ctx.store.listAudit({ requestId: `kbr_hold_released_${lost}`, limit: 1 })).data[0]).toMatchObject({
        decision: "hold_released",
        costMicros: 0,
      });

      const open = await holdId("vk_orph", 1 * USD);
      expect(await ctx.store.resolveHold(open, "settled", 1 * USD, now)).toBeNull();
      await settle("vk_orph", open, "released", 0);

      const repriced = await holdId("vk_orph", 4 * USD);
      await settle("vk_orph", repriced, "ambiguous", 4 * USD);
      const dropped = await holdId("vk_orph", 2 * USD);
      await settle("vk_orph", dropped, "ambiguous", 2 * USD);
      expect(await key("vk_orph")).toMatchObject({ spentTotalMicros: 11_500_000, heldTotalMicros: 0 });
      expect(await ctx.store.resolveHold(repriced, "settled", 3 * USD, now + 7000)).toMatchObject({
        state: "settled",
        costMicros: 3 * USD,
      });
      expect(await ctx.store.resolveHold(dropped, "released", 5 * USD, now + 7000)).toMatchObject({ state: "released", costMicros: 0 });
      expect(await key("vk_orph")).toMatchObject({ spentTotalMicros: 8_500_000, heldTotalMicros: 0 });
      expect((await ctx.store.listAudit({ requestId: `kbr_hold_settled_${repriced}`, limit: 1 })).data[0]!.costMicros).toBe(-1 * USD);
      expect((await ctx.store.listAudit({ requestId: `kbr_hold_released_${dropped}`, limit: 1 })).data[0]!.costMicros).toBe(-2 * USD);
      expect((await ctx.store.dayUsage(["vk_orph"], day)).get("vk_orph")).toEqual({ settledMicros: 8_500_000, heldMicros: 0 });
      expect(await ctx.store.resolveHold(repriced, "released", 0, now)).toBeNull();
      expect(await ctx.store.resolveHold("hold_none", "released", 0, now)).toBeNull();
      expect(await ctx.store.countOpenHolds()).toBe(0);
    });

    test("listHolds lists one state, oldest first, up to the limit; findHold reads any entry", async () => {
      await ctx.store.insertKey(newKey("vk_lh", { label: "list/holds" }));
      const late = await holdId("vk_lh", 1 * USD, { at: now + 30 });
      const early = await holdId("vk_lh", 1 * USD, { at: now + 10 });
      const middle = await holdId("vk_lh", 1 * USD, { at: now + 20 });
      expect((await ctx.store.listHolds("held", 2)).map((h) => h.id)).toEqual([early, middle]);
      expect(await ctx.store.listHolds("held", 10)).toHaveLength(3);
      expect(await ctx.store.findHold(late)).toEqual({
        id: late,
        keyId: "vk_lh",
        label: "list/holds",
        day,
        holdMicros: 1 * USD,
        costMicros: null,
        state: "held",
        createdAt: now + 30,
        settledAt: null,
      });
      expect(await ctx.store.findHold("hold_none")).toBeNull();
      expect(await ctx.store.countOpenHolds()).toBe(3);
    });
  });

  describe("audit", () => {
    const ctx = freshLedger(kind);
    const { holdId } = ledgerCalls(ctx);
    const rows: Record<string, AuditRow> = {};

    beforeAll(async () => {
      await ctx.store.insertKey(newKey("vk_a1", { label: "audit/x/1", mintedBy: "tok_a" }));
      await ctx.store.insertKey(newKey("vk_a2", { label: "audit/y/1", vendor: "twilio", mintedBy: "tok_b" }));
      const x = {
        keyId: "vk_a1",
        label: "audit/x/1",
        vendor: "stripe",
        mode: "live" as const,
        method: "POST",
        path: "/v1/payment_intents",
      };
      const y = {
        keyId: "vk_a2",
        label: "audit/y/1",
        vendor: "twilio",
        mode: "live" as const,
        method: "POST",
        path: "/2010-04-01/Accounts/AC1/Messages.json",
      };
      rows.a1 = auditRow({
        ...x,
        id: "kbr_a1",
        at: now,
        status: 200,
        decision: "allowed",
        holdMicros: 5 * USD,
        costMicros: 5 * USD,
        costSource: "request",
        currency: "usd",
        amountMinor: 500,
        vendorRequestId: "req_a1",
        idempotencyKey: "idem-1",
        upstreamMs: 12.5,
        overheadMs: 0.25,
        clientIp: "10.0.0.1",
      });
      rows.a2 = auditRow({ ...x, id: "kbr_a2", at: now + 1000, status: 429, decision: "cap_exhausted" });
      rows.a3 = auditRow({ ...y, id: "kbr_a3", at: tomorrow, status: 201, decision: "allowed", holdMicros: 2 * USD, costMicros: 2 * USD });
      rows.a4 = auditRow({
        id: "kbr_a4",
        at: now + 2000,
        vendor: "stripe",
        method: "POST",
        path: "/v1/charges",
        status: 401,
        decision: "invalid_key",
        requests: 5,
      });
      rows.a5 = auditRow({ ...x, id: "kbr_a5", at: now + 3000, decision: "hold_settled", holdMicros: 1 * USD, costMicros: 1 * USD });
      for (const row of Object.values(rows)) await ctx.store.recordAudit(row);
      // An ambiguous call of vk_a2 tomorrow: its cost is spend, and part of it is still ambiguous.
      const id = await holdId("vk_a2", 3 * USD, { at: tomorrow });
      const audit = auditRow({ ...y, id: "kbr_a6", at: tomorrow + 1000, status: 504, decision: "allowed", holdMicros: 3 * USD });
      await ctx.store.settleCall({
        keyId: "vk_a2",
        day: dayOf(tomorrow),
        holdId: id,
        outcome: "ambiguous",
        costMicros: 3 * USD,
        now: tomorrow + 1000,
        audit,
      });
      rows.a6 = { ...audit, costMicros: 3 * USD };
    });

    const ids = async (filter: Omit<Parameters<Store["listAudit"]>[0], "limit">, limit = 20) =>
      (await ctx.store.listAudit({ ...filter, limit })).data.map((r) => r.id);

    test("listAudit returns rows as written, newest first, under every filter, paged by cursor", async () => {
      const all = (await ctx.store.listAudit({ limit: 20 })).data;
      expect(all.map((r) => r.id)).toEqual(["kbr_a6", "kbr_a5", "kbr_a4", "kbr_a3", "kbr_a2", "kbr_a1"]);
      for (const row of all) expect(row).toEqual({ ...rows[row.id.slice(4)]!, requests: rows[row.id.slice(4)]!.requests ?? 1 });
      expect(await ids({ requestId: "kbr_a3" })).toEqual(["kbr_a3"]);
      expect(await ids({ keyId: "vk_a1" })).toEqual(["kbr_a5", "kbr_a2", "kbr_a1"]);
      expect(await ids({ mintedBy: "tok_b" })).toEqual(["kbr_a6", "kbr_a3"]);
      expect(await ids({ label: "audit/x/1" })).toEqual(["kbr_a5", "kbr_a2", "kbr_a1"]);
      expect(await ids({ labelPrefix: "audit/" })).toEqual(["kbr_a6", "kbr_a5", "kbr_a3", "kbr_a2", "kbr_a1"]);
      expect(await ids({ vendor: "twilio" })).toEqual(["kbr_a6", "kbr_a3"]);
      expect(await ids({ decision: "allowed" })).toEqual(["kbr_a6", "kbr_a3", "kbr_a1"]);
      expect(await ids({ since: now + 1000, until: tomorrow })).toEqual(["kbr_a5", "kbr_a4", "kbr_a2"]);
      expect(await ids({ keyId: "vk_a1", decision: "cap_exhausted" })).toEqual(["kbr_a2"]);
      const first = await ctx.store.listAudit({ limit: 4 });
      expect(first.nextCursor).not.toBeNull();
      const rest = await ctx.store.listAudit({ limit: 4, cursor: first.nextCursor! });
      expect(rest.data.map((r) => r.id)).toEqual(["kbr_a2", "kbr_a1"]);
      expect(rest.nextCursor).toBeNull();
    });

    test("spendBy sums the audit's costs per label, key, vendor and day, with what is still ambiguous", async () => {
      const row = (group: string | null, calls: number, allowed: number, denied: number, spendMicros: number, ambiguousMicros = 0) => ({
        group,
        calls,
        allowed,
        denied,
        spendMicros,
        ambiguousMicros,
      });
      expect(await ctx.store.spendBy("key", {})).toEqual([
        row("vk_a1", 2, 1, 1, 6 * USD),
        row("vk_a2", 2, 2, 0, 5 * USD, 3 * USD),
        row(null, 5, 0, 5, 0),
      ]);
      expect(await ctx.store.spendBy("day", {})).toEqual([row(day, 7, 1, 6, 6 * USD), row(dayOf(tomorrow), 2, 2, 0, 5 * USD, 3 * USD)]);
      expect(await ctx.store.spendBy("vendor", {})).toEqual([row("stripe", 7, 1, 6, 6 * USD), row("twilio", 2, 2, 0, 5 * USD, 3 * USD)]);
      expect(await ctx.store.spendBy("label", { labelPrefix: "audit/" })).toEqual([
        row("audit/x/1", 2, 1, 1, 6 * USD),
        row("audit/y/1", 2, 2, 0, 5 * USD, 3 * USD),
      ]);
      expect(await ctx.store.spendBy("key", { mintedBy: "tok_b", since: tomorrow })).toEqual([row("vk_a2", 2, 2, 0, 5 * USD, 3 * USD)]);
      expect(await ctx.store.spendBy("key", { keyId: "vk_a2", decision: "cap_exhausted" })).toEqual([]);
      expect(await ctx.store.spendBy("key", { keyId: "vk_a2", until: tomorrow })).toEqual([]);
    });

    test("pruneAudit deletes rows older than the cut, the oldest first, a batch at a time", async () => {
      expect(await ctx.store.pruneAudit(now, 10)).toBe(0);
      expect(await ctx.store.pruneAudit(now + 1500, 1)).toBe(1);
      expect(await ids({})).toEqual(["kbr_a6", "kbr_a5", "kbr_a4", "kbr_a3", "kbr_a2"]);
      expect(await ctx.store.pruneAudit(now + 1500, 10)).toBe(1);
      expect(await ctx.store.pruneAudit(now + 1500, 10)).toBe(0);
      expect(await ids({})).toEqual(["kbr_a6", "kbr_a5", "kbr_a4", "kbr_a3"]);
    });
  });

  describe("tokens, settings and admin events", () => {
    const ctx = freshLedger(kind);

    test("tokens: inserted, found by hash (with it) and by id, listed newest first, revoked once", async () => {
      const issuer = {
        id: "tok_1",
        name: "ci",
        role: "issuer" as const,
        tokenHint: "kbt_…abcd",
        policy: { allowed_vendors: ["stripe"], max_cap_usd: 50, nested: { ok: true } },
        createdAt: now,
        createdBy: "admin",
        expiresAt: now + DAY,
      };
      expect(await ctx.store.insertToken({ ...issuer, tokenHash: "th_1" })).toEqual({ ...issuer, revokedAt: null });
      const viewer = {
        id: "tok_2",
        name: "dash",
        role: "viewer" as const,
        tokenHint: "kbt_…efgh",
        policy: null,
        createdAt: now + 1,
        createdBy: "tok_1",
        expiresAt: null,
      };
      await ctx.store.insertToken({ ...viewer, tokenHash: "th_2" });
      expect(await ctx.store.findTokenByHash("th_1")).toEqual({ ...issuer, revokedAt: null, tokenHash: "th_1" });
      expect(await ctx.store.findTokenById("tok_2")).toEqual({ ...viewer, revokedAt: null });
      expect(await ctx.store.findTokenByHash("th_none")).toBeNull();
      expect(await ctx.store.findTokenById("tok_none")).toBeNull();
      const first = await ctx.store.listTokens(1);
      expect(first.data.map((t) => t.id)).toEqual(["tok_2"]);
      const second = await ctx.store.listTokens(1, first.nextCursor!);
      expect(second).toEqual({ data: [{ ...issuer, revokedAt: null }], nextCursor: null });
      expect(await ctx.store.revokeToken("tok_1", now + 5)).toEqual({ ...issuer, revokedAt: now + 5 });
      expect(await ctx.store.revokeToken("tok_1", now + 9)).toMatchObject({ revokedAt: now + 5 });
      expect(await ctx.store.findTokenByHash("th_1")).toMatchObject({ revokedAt: now + 5 });
      expect(await ctx.store.revokeToken("tok_none", now)).toBeNull();
    });

    test("settings: missing is null; set overwrites; the store says it is writable", async () => {
      expect(await ctx.store.getSetting("admin_token_hash")).toBeNull();
      await ctx.store.setSetting("admin_token_hash", "h1");
      await ctx.store.setSetting("other", "x");
      await ctx.store.setSetting("admin_token_hash", "h2");
      expect(await ctx.store.getSetting("admin_token_hash")).toBe("h2");
      expect(await ctx.store.getSetting("other")).toBe("x");
      expect(await ctx.store.checkWritable()).toBe(true);
    });

    test("admin events: newest first, paged by cursor, filtered by token, details as written", async () => {
      const events = [
        {
          at: now,
          actor: "admin",
          action: "key.revoke",
          target: "vk_1",
          details: { reason: "leak", count: 2, ids: ["a"] },
          tokenId: "admin",
          tokenName: "bootstrap",
        },
        { at: now + 1, actor: "cli", action: "token.create", target: null, details: null, tokenId: null, tokenName: null },
        { at: now + 2, actor: "tok_1", action: "key.create", target: "vk_2", details: { cap_usd: 1.5 }, tokenId: "tok_1", tokenName: "ci" },
      ];
      for (const event of events) await ctx.store.recordAdminEvent(event);
      const page = await ctx.store.listAdminEvents(10);
      expect(page).toEqual({ data: [...events].reverse().map((e) => ({ ...e, seq: expect.any(Number) })), nextCursor: null });
      const first = await ctx.store.listAdminEvents(2);
      expect(first.data.map((e) => e.action)).toEqual(["key.create", "token.create"]);
      expect((await ctx.store.listAdminEvents(2, first.nextCursor!)).data.map((e) => e.action)).toEqual(["key.revoke"]);
      expect((await ctx.store.listAdminEvents(10, undefined, "tok_1")).data.map((e) => e.action)).toEqual(["key.create"]);
    });
  });

  describe("alerts: thresholds, refusals and who receives them", () => {
    const ctx = freshLedger(kind);
    const { hold, holdId, settle, events } = ledgerCalls(ctx);
    const slack = {
      id: "wh_1",
      url: "https://hooks.slack.com/services/T0/B0/secretpath",
      events: ["cap_threshold", "cap_exhausted"] as ("cap_threshold" | "cap_exhausted")[],
      labelPrefix: "alerts/team-a/",
      format: "slack" as const,
      createdAt: now,
      createdBy: "admin",
    };
    const everything = {
      id: "wh_2",
      url: "http://127.0.0.1:9/hook",
      events: ["cap_threshold", "cap_exhausted", "key_revoked", "holds_need_attention", "price_differential"] as (
        | "cap_threshold"
        | "cap_exhausted"
        | "key_revoked"
        | "holds_need_attention"
        | "price_differential"
      )[],
      labelPrefix: null,
      format: "json" as const,
      createdAt: now + 1,
      createdBy: "tok_admin",
    };

    test("webhooks: inserted, found with their secret, listed in order", async () => {
      expect(await ctx.store.insertWebhook({ ...slack, secret: "whsec_1" })).toEqual({ ...slack, deletedAt: null });
      await ctx.store.insertWebhook({ ...everything, secret: "whsec_2" });
      expect(await ctx.store.findWebhook("wh_1")).toEqual({ ...slack, deletedAt: null, secret: "whsec_1" });
      expect(await ctx.store.findWebhook("wh_none")).toBeNull();
      expect(await ctx.store.listWebhooks()).toEqual([
        { ...slack, deletedAt: null },
        { ...everything, deletedAt: null },
      ]);
    });

    test("each threshold fires once when settled spend crosses it; the first refusal fires cap_exhausted once", async () => {
      await ctx.store.insertKey(newKey("vk_al", { label: "alerts/team-a/run", dailyCapMicros: 10 * USD }));
      const spend = async (micros: number, at: number) => settle("vk_al", await holdId("vk_al", micros, { at }), "settled", micros, { at });
      await spend(4 * USD, now + 10);
      expect(await events("vk_al")).toEqual([]);
      await spend(2 * USD, now + 20);
      await spend(1 * USD, now + 30);
      await spend(3 * USD, now + 40);
      expect((await hold("vk_al", 1 * USD, { at: now + 50 })).kind).toBe("denied");
      expect((await hold("vk_al", 2 * USD, { at: now + 60 })).kind).toBe("denied");
      const fired = await events("vk_al");
      expect(fired.map((e) => [e.type, e.at, e.label, e.vendor, e.mode, e.data])).toEqual([
        [
          "cap_threshold",
          now + 20,
          "alerts/team-a/run",
          "stripe",
          "live",
          { cap: "daily", window: day, threshold: 0.5, cap_usd: 10, spent_usd: 6, percent: 60 },
        ],
        [
          "cap_threshold",
          now + 40,
          "alerts/team-a/run",
          "stripe",
          "live",
          { cap: "daily", window: day, threshold: 0.8, cap_usd: 10, spent_usd: 10, percent: 100 },
        ],
        [
          "cap_threshold",
          now + 40,
          "alerts/team-a/run",
          "stripe",
          "live",
          { cap: "daily", window: day, threshold: 1, cap_usd: 10, spent_usd: 10, percent: 100 },
        ],
        [
          "cap_exhausted",
          now + 50,
          "alerts/team-a/run",
          "stripe",
          "live",
          { cap: "daily", window: day, cap_usd: 10, spent_usd: 10, held_usd: 0, price_usd: 1, percent: 100 },
        ],
      ]);

      await ctx.store.insertKey(
        newKey("vk_al_life", { label: "alerts/team-b/life", dailyCapMicros: null, totalCapMicros: 10 * USD, alertThresholds: [0.5] }),
      );
      const id = await holdId("vk_al_life", 5 * USD);
      await settle("vk_al_life", id, "settled", 5 * USD);
      // Held on another day: the lifetime cap's refusal counts it, the day's balance does not.
      await holdId("vk_al_life", 2 * USD, { at: tomorrow });
      expect((await hold("vk_al_life", 6 * USD)).kind).toBe("denied");
      expect((await hold("vk_al_life", 6 * USD, { at: tomorrow })).kind).toBe("denied");
      expect((await events("vk_al_life")).map((e) => [e.type, e.data])).toEqual([
        ["cap_threshold", { cap: "total", window: null, threshold: 0.5, cap_usd: 10, spent_usd: 5, percent: 50 }],
        ["cap_exhausted", { cap: "total", window: null, cap_usd: 10, spent_usd: 5, held_usd: 2, price_usd: 6, percent: 50 }],
      ]);
    });

    test("an event goes to each webhook that wants its type and label, as a pending delivery due at once", async () => {
      await ctx.store.insertKey(newKey("vk_al_rev", { label: "alerts/team-a/rev" }));
      await ctx.store.revokeKey("vk_al_rev", now + 70);
      const slackDeliveries = (await ctx.store.listDeliveries({ webhookId: "wh_1", limit: 100 })).data;
      const jsonDeliveries = (await ctx.store.listDeliveries({ webhookId: "wh_2", limit: 100 })).data;
      // wh_1: vk_al's four events; wh_2: those, vk_al_life's two and vk_al_rev's revocation.
      expect(slackDeliveries.map((d) => [d.eventType, d.keyId]).reverse()).toEqual([
        ["cap_threshold", "vk_al"],
        ["cap_threshold", "vk_al"],
        ["cap_threshold", "vk_al"],
        ["cap_exhausted", "vk_al"],
      ]);
      expect(jsonDeliveries.map((d) => [d.eventType, d.keyId]).reverse()).toEqual([
        ["cap_threshold", "vk_al"],
        ["cap_threshold", "vk_al"],
        ["cap_threshold", "vk_al"],
        ["cap_exhausted", "vk_al"],
        ["cap_threshold", "vk_al_life"],
        ["cap_exhausted", "vk_al_life"],
        ["key_revoked", "vk_al_rev"],
      ]);
      const [revocation] = jsonDeliveries;
      expect(revocation).toEqual({
        seq: expect.any(Number),
        eventId: expect.stringMatching(/^evt_/),
        eventType: "key_revoked",
        keyId: "vk_al_rev",
        label: "alerts/team-a/rev",
        webhookId: "wh_2",
        url: "http://127.0.0.1:9",
        status: "pending",
        attempts: 0,
        createdAt: now + 70,
        nextAttemptAt: now + 70,
        lastAttemptAt: null,
        lastStatus: null,
        lastError: null,
        deliveredAt: null,
      });
      // A Slack webhook's path is its credential: only the origin is shown.
      expect(slackDeliveries[0]!.url).toBe("https://hooks.slack.com");
      expect(await ctx.store.countPendingDeliveries()).toBe(11);
    });

    test("listAlertEvents: newest first, by type, key and label prefix, paged by cursor", async () => {
      const types = async (filter: Omit<Parameters<Store["listAlertEvents"]>[0], "limit">, limit = 100) =>
        (await ctx.store.listAlertEvents({ ...filter, limit })).data.map((e) => [e.type, e.keyId]);
      expect(await types({ type: "cap_exhausted" })).toEqual([
        ["cap_exhausted", "vk_al_life"],
        ["cap_exhausted", "vk_al"],
      ]);
      expect(await types({ labelPrefix: "alerts/team-b/" })).toEqual([
        ["cap_exhausted", "vk_al_life"],
        ["cap_threshold", "vk_al_life"],
      ]);
      const first = await ctx.store.listAlertEvents({ limit: 5 });
      expect(first.data.map((e) => e.keyId)).toEqual(["vk_al_rev", "vk_al_life", "vk_al_life", "vk_al", "vk_al"]);
      const rest = await ctx.store.listAlertEvents({ limit: 5, cursor: first.nextCursor! });
      expect(rest.data.map((e) => e.type)).toEqual(["cap_threshold", "cap_threshold"]);
      expect(rest.nextCursor).toBeNull();
    });

    test("retention keeps events still to be delivered and lifetime marks; past days' marks go, so a new day fires again", async () => {
      // Every event has a pending delivery: only vk_al's four daily marks (three thresholds, one refusal) are old enough.
      expect(await ctx.store.pruneAlerts(now + 2 * DAY, 500)).toBe(4);
      expect((await ctx.store.listAlertEvents({ limit: 100 })).data).toHaveLength(7);
      expect((await hold("vk_al", 1 * USD, { at: now + 80 })).kind).toBe("denied");
      expect((await hold("vk_al_life", 6 * USD, { at: now + 80 })).kind).toBe("denied");
      expect((await events("vk_al")).map((e) => e.type)).toEqual([
        "cap_threshold",
        "cap_threshold",
        "cap_threshold",
        "cap_exhausted",
        "cap_exhausted",
      ]);
      expect(await events("vk_al_life")).toHaveLength(2);
    });
  });

  describe("alerts: delivery", () => {
    const ctx = freshLedger(kind);
    const webhook = (id: string, createdAt: number) => ({
      id,
      url: `https://alerts.example.com/${id}?token=s3cret`,
      events: ["key_revoked" as const],
      labelPrefix: null,
      format: "json" as const,
      createdAt,
      createdBy: "admin",
      secret: `whsec_${id}`,
    });
    const revokeAt = async (keyId: string, at: number) => {
      await ctx.store.insertKey(newKey(keyId, { label: `deliver/${keyId}` }));
      await ctx.store.revokeKey(keyId, at, "admin");
    };
    const delivery = async (seq: number) => (await ctx.store.listDeliveries({ limit: 100 })).data.find((d) => d.seq === seq)!;
    /** The deliveries of vk_d1, vk_d2 and vk_d3's revocations, in that order. */
    let seqs: [number, number, number];

    test("dueDeliveries: what is due by now, the longest due first, with its event and webhook; skipped ones left out", async () => {
      await ctx.store.insertWebhook(webhook("wh_d", now));
      for (const [i, keyId] of ["vk_d1", "vk_d2", "vk_d3"].entries()) await revokeAt(keyId, now + 1 + i);
      const listed = (await ctx.store.listDeliveries({ limit: 10 })).data.map((d) => d.seq).reverse();
      expect(listed).toHaveLength(3);
      seqs = listed as typeof seqs;
      const due = await ctx.store.dueDeliveries(now + 2, 10, []);
      expect(due.map((d) => d.seq)).toEqual([seqs[0], seqs[1]]);
      expect(due[0]).toEqual({
        seq: seqs[0],
        attempts: 0,
        createdAt: now + 1,
        event: {
          seq: expect.any(Number),
          id: expect.stringMatching(/^evt_/),
          type: "key_revoked",
          at: now + 1,
          keyId: "vk_d1",
          label: "deliver/vk_d1",
          vendor: "stripe",
          mode: "live",
          data: { revoked_at: new Date(now + 1).toISOString(), by: "admin", spent_total_usd: 0 },
        },
        webhook: { id: "wh_d", url: "https://alerts.example.com/wh_d?token=s3cret", format: "json", secret: "whsec_wh_d" },
      });
      expect((await ctx.store.dueDeliveries(now + 3, 10, [seqs[0], seqs[1]])).map((d) => d.seq)).toEqual([seqs[2]]);
    });

    test("recordDeliveryAttempt: delivered, pending again from a later time, or failed; a retry is due again then", async () => {
      const [d1, d2, d3] = seqs;
      await ctx.store.recordDeliveryAttempt({ seq: d1, at: now + 10, outcome: "delivered", status: 200, error: null, nextAttemptAt: null });
      await ctx.store.recordDeliveryAttempt({
        seq: d2,
        at: now + 10,
        outcome: "retry",
        status: 503,
        error: "HTTP 503",
        nextAttemptAt: now + 20_000,
      });
      await ctx.store.recordDeliveryAttempt({
        seq: d3,
        at: now + 10,
        outcome: "failed",
        status: null,
        error: "connection refused",
        nextAttemptAt: null,
      });
      const after = { attempts: 1, lastAttemptAt: now + 10 };
      expect(await delivery(d1)).toMatchObject({
        ...after,
        status: "delivered",
        lastStatus: 200,
        lastError: null,
        deliveredAt: now + 10,
        nextAttemptAt: null,
      });
      expect(await delivery(d2)).toMatchObject({
        ...after,
        status: "pending",
        lastStatus: 503,
        lastError: "HTTP 503",
        deliveredAt: null,
        nextAttemptAt: now + 20_000,
      });
      expect(await delivery(d3)).toMatchObject({
        ...after,
        status: "failed",
        lastStatus: null,
        lastError: "connection refused",
        nextAttemptAt: null,
      });
      expect(await ctx.store.countPendingDeliveries()).toBe(1);
      expect(await ctx.store.dueDeliveries(now + 19_999, 10, [])).toEqual([]);
      expect((await ctx.store.dueDeliveries(now + 20_000, 10, [])).map((d) => [d.seq, d.attempts])).toEqual([[d2, 1]]);
      // A finished delivery is not attempted again.
      await ctx.store.recordDeliveryAttempt({ seq: d1, at: now + 30, outcome: "failed", status: 500, error: "late", nextAttemptAt: null });
      expect(await delivery(d1)).toMatchObject({ status: "delivered", attempts: 1 });
      await ctx.store.recordDeliveryAttempt({
        seq: d2,
        at: now + 20_001,
        outcome: "delivered",
        status: 204,
        error: null,
        nextAttemptAt: null,
      });
      expect(await delivery(d2)).toMatchObject({ status: "delivered", attempts: 2, deliveredAt: now + 20_001, lastStatus: 204 });
    });

    test("listDeliveries: newest first, by status, webhook and event, paged by cursor", async () => {
      const [d1, d2, d3] = seqs;
      expect((await ctx.store.listDeliveries({ status: "failed", limit: 10 })).data.map((d) => d.seq)).toEqual([d3]);
      const third = await delivery(d3);
      expect((await ctx.store.listDeliveries({ eventId: third.eventId, limit: 10 })).data.map((d) => d.seq)).toEqual([d3]);
      expect((await ctx.store.listDeliveries({ webhookId: "wh_none", limit: 10 })).data).toEqual([]);
      const first = await ctx.store.listDeliveries({ limit: 2 });
      expect(first.data.map((d) => d.seq)).toEqual([d3, d2]);
      expect(await ctx.store.listDeliveries({ limit: 2, cursor: first.nextCursor! })).toMatchObject({
        data: [{ seq: d1 }],
        nextCursor: null,
      });
      expect(third.url).toBe("https://alerts.example.com");
    });

    test("deleteWebhook cancels its pending deliveries; later events skip it", async () => {
      await ctx.store.insertWebhook(webhook("wh_gone", now + 3));
      await revokeAt("vk_d4", now + 4);
      expect((await ctx.store.listDeliveries({ webhookId: "wh_gone", limit: 10 })).data.map((d) => d.status)).toEqual(["pending"]);
      const { secret: _secret, ...record } = webhook("wh_gone", now + 3);
      expect(await ctx.store.deleteWebhook("wh_gone", now + 50)).toEqual({ ...record, deletedAt: now + 50 });
      expect((await ctx.store.listDeliveries({ webhookId: "wh_gone", limit: 10 })).data).toMatchObject([
        { status: "cancelled", nextAttemptAt: null, lastError: "webhook deleted" },
      ]);
      expect(await ctx.store.findWebhook("wh_gone")).toBeNull();
      expect((await ctx.store.listWebhooks()).map((w) => w.id)).toEqual(["wh_d"]);
      expect(await ctx.store.deleteWebhook("wh_gone", now + 60)).toBeNull();
      await revokeAt("vk_d5", now + 5);
      expect((await ctx.store.listDeliveries({ webhookId: "wh_gone", limit: 10 })).data).toHaveLength(1);
      expect(await ctx.store.countPendingDeliveries()).toBe(2);
    });

    test("pruneAlerts deletes old events whose deliveries are all finished, with those deliveries", async () => {
      // vk_d1..3's events are finished; vk_d4's still has a pending delivery (wh_d), vk_d5's too.
      expect(await ctx.store.pruneAlerts(now + 1, 100)).toBe(0);
      expect(await ctx.store.pruneAlerts(now + 100, 100)).toBe(3);
      expect((await ctx.store.listAlertEvents({ limit: 10 })).data.map((e) => e.keyId)).toEqual(["vk_d5", "vk_d4"]);
      expect((await ctx.store.listDeliveries({ limit: 10 })).data.map((d) => [d.keyId, d.webhookId, d.status]).sort()).toEqual([
        ["vk_d4", "wh_d", "pending"],
        ["vk_d4", "wh_gone", "cancelled"],
        ["vk_d5", "wh_d", "pending"],
      ]);
      expect(await ctx.store.pruneAlerts(now + 100, 100)).toBe(0);
    });
  });

  describe("reconciliation", () => {
    const ctx = freshLedger(kind);
    const { holdId, settle, key, events } = ledgerCalls(ctx);
    const messagePath = "/2010-04-01/Accounts/{AccountSid}/Messages/SM1.json";
    const reconciled = (id: string, auditId: string, costMicros: number) =>
      ctx.store.reconcileEntry({
        id,
        costMicros,
        audit: auditRow({
          id: auditId,
          at: now + 130_000,
          keyId: "vk_rec",
          label: "rec/run",
          vendor: "twilio",
          mode: "live",
          method: "POST",
          path: "/2010-04-01/Accounts/AC1/Messages.json",
          decision: "price_reconciled",
          costSource: "reconciled",
        }),
      });
    const settleLater = async (micros: number, cost: number) => {
      const id = await holdId("vk_rec", micros);
      await settle("vk_rec", id, "settled", cost, { reconcile: { path: messagePath, at: now + 60_000 } });
      return id;
    };

    test("an entry whose final price comes later is due at its time, postponed on request, then re-settled once", async () => {
      await ctx.store.insertKey(newKey("vk_rec", { label: "rec/run", vendor: "twilio", dailyCapMicros: 10 * USD }));
      const id = await settleLater(2 * USD, 1_500_000);
      expect(await ctx.store.dueReconciliations(now + 59_999, 10)).toEqual([]);
      expect(await ctx.store.dueReconciliations(now + 60_000, 10)).toEqual([
        {
          id,
          keyId: "vk_rec",
          label: "rec/run",
          vendor: "twilio",
          mode: "live",
          holdMicros: 2 * USD,
          costMicros: 1_500_000,
          reconcilePath: messagePath,
          attempts: 0,
          settledAt: now,
          method: "POST",
          path: "/v1/payment_intents",
        },
      ]);
      await ctx.store.postponeReconciliation(id, now + 120_000);
      expect(await ctx.store.dueReconciliations(now + 119_999, 10)).toEqual([]);
      expect((await ctx.store.dueReconciliations(now + 120_000, 10)).map((d) => [d.id, d.attempts])).toEqual([[id, 1]]);

      expect(await reconciled(id, "kbr_rec_1", 1_800_000)).toBe(true);
      expect(await key("vk_rec")).toMatchObject({ spentTotalMicros: 1_800_000, heldTotalMicros: 0 });
      expect((await ctx.store.dayUsage(["vk_rec"], day)).get("vk_rec")).toEqual({ settledMicros: 1_800_000, heldMicros: 0 });
      expect(await ctx.store.findHold(id)).toMatchObject({ state: "settled", costMicros: 1_800_000 });
      expect((await ctx.store.listAudit({ requestId: "kbr_rec_1", limit: 1 })).data[0]).toMatchObject({
        costMicros: 300_000,
        decision: "price_reconciled",
      });
      expect(await reconciled(id, "kbr_rec_again", 9 * USD)).toBe(false);
      expect(await key("vk_rec")).toMatchObject({ spentTotalMicros: 1_800_000 });
    });

    test("a final price above the hold fires price_differential; one below lowers the spend", async () => {
      const above = await settleLater(2 * USD, 1_500_000);
      expect(await reconciled(above, "kbr_rec_2", 2_500_000)).toBe(true);
      expect((await events("vk_rec")).map((e) => [e.type, e.data])).toEqual([
        ["price_differential", { hold_id: above, request_id: `kbr_${above.slice(5)}`, hold_usd: 2, cost_usd: 2.5, over_usd: 0.5 }],
      ]);
      const below = await settleLater(2 * USD, 1_500_000);
      expect(await reconciled(below, "kbr_rec_3", 1 * USD)).toBe(true);
      expect((await ctx.store.listAudit({ requestId: "kbr_rec_3", limit: 1 })).data[0]!.costMicros).toBe(-500_000);
      expect(await key("vk_rec")).toMatchObject({ spentTotalMicros: 5_300_000 });
    });

    test("postponing to never stops the reads; the entry keeps its cost", async () => {
      const id = await settleLater(2 * USD, 1_500_000);
      await ctx.store.postponeReconciliation(id, null);
      expect(await ctx.store.dueReconciliations(now + 10 * DAY, 10)).toEqual([]);
      expect(await reconciled(id, "kbr_rec_4", 1 * USD)).toBe(false);
      expect(await ctx.store.findHold(id)).toMatchObject({ costMicros: 1_500_000 });
    });
  });

  describe("read-your-writes", () => {
    const ctx = freshLedger(kind);

    test("a settlement still queued (the proxy does not wait for it) is committed before any other store read", async () => {
      await ctx.store.insertKey(newKey("vk_store", { label: "store/run" }));
      const hold = await ctx.store.holdSpend({
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
      const settled = ctx.store.settleCall({
        keyId: "vk_store",
        day,
        holdId: "hold_ryw",
        outcome: "settled",
        costMicros: 29_000_000,
        now,
        audit: { ...callAudit("kbr_ryw", "vk_store", now), holdMicros: 29_000_000 },
      });
      // Read in the same turn, before the queued commit would run on its own.
      const [holds, key, usage, page] = await Promise.all([
        ctx.store.listHolds("held", 10),
        ctx.store.findKeyById("vk_store"),
        ctx.store.dayUsage(["vk_store"], day),
        ctx.store.listAudit({ keyId: "vk_store", limit: 10 }),
      ]);
      expect(holds).toEqual([]);
      expect(key).toMatchObject({ spentTotalMicros: 29_000_000, heldTotalMicros: 0, calls: 1 });
      expect(usage.get("vk_store")).toEqual({ settledMicros: 29_000_000, heldMicros: 0 });
      expect(page.data.map((r) => [r.id, r.costMicros])).toEqual([["kbr_ryw", 29_000_000]]);
      expect(await settled).toBe(29_000_000);
    });
  });
}

// PostgreSQL only: several instances share one ledger (SPEC §13).
describe.skipIf(!postgresKind.available)("PostgreSQL store: several instances on one ledger", () => {
  let url: string;
  let a: PgStore;
  let b: PgStore;
  beforeAll(async () => {
    url = (await testDatabaseUrl({ migrated: true }))!;
    a = await openPg(url, "instance-a");
    b = await openPg(url, "instance-b");
    await a.insertKey(newKey("vk_pg", { dailyCapMicros: 50 * USD }));
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    if (url) databases.push(url);
  });
  /** What a serving instance reports; these tests read the ledger instead. */
  const serving = { onRecovered: () => {}, counters: () => [] };
  const holdOn = (store: Store, keyId: string, micros: number, at: number, idem?: string) => {
    const n = ++callCount;
    return store.holdSpend({
      holdId: `hold_pg_${n}`,
      keyId,
      day: dayOf(at),
      micros,
      ledger: true,
      reuseAmbiguous: true,
      now: at,
      call: { requestId: `kbr_pg_${n}`, method: "POST", path: "/v1/payment_intents" },
      idempotency: idem === undefined ? undefined : { key: idem, fingerprint: "fp_a", ttlMs: DAY },
    });
  };

  test("a cap is exact across instances: 200 concurrent holds spread over two admit what one would", async () => {
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => holdOn(i % 2 === 0 ? a : b, "vk_pg", 700_000, now)));
    expect(results.filter((r) => r.kind === "admitted")).toHaveLength(71);
    expect((await b.findKeyById("vk_pg"))!.heldTotalMicros).toBe(49_700_000);
  });

  test("a revocation or PATCH at one instance is seen on the next call at another", async () => {
    await a.insertKey(newKey("vk_pg_rev", { dailyCapMicros: 10 * USD }));
    expect(await b.findKeyByHash("hash_vk_pg_rev")).toMatchObject({ status: "active", dailyCapMicros: 10 * USD });
    await a.updateKey("vk_pg_rev", { dailyCapMicros: 3 * USD });
    expect(await b.findKeyByHash("hash_vk_pg_rev")).toMatchObject({ dailyCapMicros: 3 * USD });
    expect(await holdOn(b, "vk_pg_rev", 4 * USD, now)).toMatchObject({ kind: "denied", reason: "daily_cap", capMicros: 3 * USD });
    await a.revokeKey("vk_pg_rev", now);
    expect(await b.findKeyByHash("hash_vk_pg_rev")).toMatchObject({ status: "revoked" });
    expect(await holdOn(b, "vk_pg_rev", 1, now)).toEqual({ kind: "denied", reason: "revoked" });
  });

  test("recovery takes only the holds of instances whose lease lapsed, never a live one's nor its own", async () => {
    const t = Date.now();
    await a.startInstance(serving);
    await b.startInstance(serving);
    await a.insertKey(newKey("vk_lease", { createdAt: t, expiresAt: t + DAY }));
    const mine = admitted(await holdOn(a, "vk_lease", 1 * USD, t, "k_lease"));
    const theirs = admitted(await holdOn(b, "vk_lease", 2 * USD, t));
    expect(await b.recoverOrphanedHolds(Date.now())).toEqual([]);
    expect(await a.recoverOrphanedHolds(Date.now())).toEqual([]);
    expect(await holdOn(b, "vk_lease", 1 * USD, t, "k_lease")).toEqual({ kind: "in_flight" });
    // Past a's lease (never renewed at that time), b takes a's hold and a's in-flight call; not its own hold.
    const later = Date.now() + LEASE_MS + 1000;
    const recovered = (await b.recoverOrphanedHolds(later)).filter((h) => h.keyId === "vk_lease");
    expect(recovered.map((h) => [h.id, h.state])).toEqual([[mine.holdId!, "orphaned"]]);
    expect(await a.findHold(theirs.holdId!)).toMatchObject({ state: "held" });
    expect(await holdOn(b, "vk_lease", 1 * USD, t, "k_lease")).toMatchObject({
      kind: "admitted",
      holdId: mine.holdId,
      priorCostMicros: 1 * USD,
    });
  });

  test("a cleanly closed instance gives up its lease: its unsettled holds are recoverable at once", async () => {
    const c = await openPg(url, "instance-c");
    await c.startInstance(serving);
    const t = Date.now();
    await c.insertKey(newKey("vk_closed", { createdAt: t, expiresAt: t + DAY }));
    const left = admitted(await holdOn(c, "vk_closed", 1 * USD, t));
    expect(await a.recoverOrphanedHolds(Date.now())).toEqual([]);
    await c.close();
    expect((await a.recoverOrphanedHolds(Date.now())).map((h) => h.id)).toEqual([left.holdId!]);
  });

  test("dueDeliveries and dueReconciliations claim what they return: another instance's worker does not get it meanwhile", async () => {
    await a.insertWebhook({
      id: "wh_pg",
      url: "http://127.0.0.1:9/",
      events: ["key_revoked"],
      labelPrefix: null,
      format: "json",
      createdAt: now,
      createdBy: "admin",
      secret: "s",
    });
    await a.insertKey(newKey("vk_claimed"));
    await a.revokeKey("vk_claimed", now);
    const [sent] = await a.dueDeliveries(now, 10, []);
    expect(sent).toBeDefined();
    expect(await b.dueDeliveries(now, 10, [])).toEqual([]);
    expect((await b.dueDeliveries(now + 60_001, 10, [])).map((d) => d.seq)).toEqual([sent!.seq]);
    await b.recordDeliveryAttempt({
      seq: sent!.seq,
      at: now + 60_001,
      outcome: "retry",
      status: 500,
      error: "HTTP 500",
      nextAttemptAt: now + 70_000,
    });
    expect((await a.dueDeliveries(now + 70_000, 10, [])).map((d) => [d.seq, d.attempts])).toEqual([[sent!.seq, 1]]);

    await a.insertKey(newKey("vk_pg_rec"));
    const id = admitted(await holdOn(a, "vk_pg_rec", 2 * USD, now)).holdId!;
    await a.settleCall({
      keyId: "vk_pg_rec",
      day,
      holdId: id,
      outcome: "settled",
      costMicros: 1 * USD,
      now,
      audit: callAudit("kbr_pg_rec", "vk_pg_rec", now),
      reconcile: { path: "/x", at: now + 1000 },
    });
    expect((await a.dueReconciliations(now + 1000, 10)).map((d) => d.id)).toEqual([id]);
    expect(await b.dueReconciliations(now + 1000, 10)).toEqual([]);
    expect((await b.dueReconciliations(now + 61_000, 10)).map((d) => d.id)).toEqual([id]);
  });

  test("max_requests_per_minute is counted for the fleet", async () => {
    const t = now;
    expect(await a.rateLimiter.take("vk_pg_rate", 2, t)).toBe(0);
    expect(await b.rateLimiter.take("vk_pg_rate", 2, t + 1)).toBe(0);
    expect(await a.rateLimiter.take("vk_pg_rate", 2, t + 2)).toBe(60);
    expect(await b.rateLimiter.take("vk_pg_rate", 2, t + 58_500)).toBe(2);
    expect(await b.rateLimiter.take("vk_pg_rate", 2, t + 60_001)).toBe(0);
  });
});

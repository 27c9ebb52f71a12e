import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { alertOutbox } from "../src/store/alerts";
import { auditRow } from "../src/store/audit-row";
import { GroupCommit } from "../src/store/group-commit";
import { keyQueries } from "../src/store/keys";
import { ledgerQueries } from "../src/store/ledger";
import { openDatabase } from "../src/store/sqlite";
import type { HoldRequest, SettleRequest } from "../src/store/types";

// SPEC §6 with synchronous=full (the default): a hold is on disk before its call is forwarded, and a settlement
// lost to a power loss leaves its hold counted. So a commit that holds a hold syncs the WAL (FULL), and one that
// holds only settlements does not (NORMAL): the next synced commit makes it durable too, WAL frames being
// recovered in order. Whether a commit syncs is SQLite's `synchronous` level in effect when it commits
// (https://sqlite.org/pragma.html#pragma_synchronous: in WAL mode FULL syncs the WAL on every commit, NORMAL
// only at checkpoints), so the tests read that level inside each transaction, from SQLite itself.

const USD = 1_000_000;
const now = Date.UTC(2026, 10, 27, 12);
const day = "2026-11-27";
const FULL = 2;
const NORMAL = 1;

let dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  dirs = [];
});

/** The real ledger over a real file, its group commit observed: the level of each commit, and of the connection. */
async function ledgerOn(synchronous: "full" | "normal") {
  const dir = mkdtempSync(join(tmpdir(), "keybrake-durability-"));
  dirs.push(dir);
  const db = openDatabase(join(dir, "keybrake.db"), { synchronous });
  const client = db.$client;
  const commits: { synchronous: number; writes: number }[] = [];
  const group = new GroupCommit(client, { onCommit: (c) => commits.push(c) });
  const outbox = alertOutbox(client);
  const keys = keyQueries(db, outbox);
  const ledger = ledgerQueries(db, group, outbox);
  await keys.insertKey({
    id: "vk_d",
    keyHash: "hash_vk_d",
    keyHint: "kb_live_…",
    vendor: "stripe",
    mode: "live",
    mintedBy: "admin",
    label: "durability/run",
    dailyCapMicros: 100 * USD,
    totalCapMicros: null,
    allowedEndpoints: ["POST /v1/payment_intents"],
    maxRequestsPerMinute: null,
    requireIdempotencyKey: false,
    metadata: {},
    createdAt: now,
    expiresAt: now + 86_400_000,
  });
  const levelNow = () => client.query<{ synchronous: number }, []>("PRAGMA synchronous").get()!.synchronous;
  /** A write that only reads the level its own transaction will commit at. */
  const probe = () => levelNow();
  const hold = (id: string): HoldRequest => ({
    holdId: id,
    keyId: "vk_d",
    day,
    micros: 2 * USD,
    ledger: true,
    reuseAmbiguous: true,
    now,
    call: { requestId: `kbr_${id}`, method: "POST", path: "/v1/payment_intents" },
  });
  const settle = (id: string): SettleRequest => ({
    keyId: "vk_d",
    day,
    holdId: id,
    outcome: "settled",
    costMicros: 2 * USD,
    now,
    audit: auditRow({ id: `kbr_${id}`, at: now, keyId: "vk_d", method: "POST", path: "/v1/payment_intents", decision: "allowed" }),
  });
  return { client, group, commits, ledger, levelNow, probe, hold, settle };
}

describe("durability per commit (synchronous=full, the default)", () => {
  test("a hold commits synced (FULL); its settlement alone does not (NORMAL); the connection stays at FULL", async () => {
    const d = await ledgerOn("full");
    expect(d.levelNow()).toBe(FULL);

    const [held, seenByHold] = await Promise.all([d.ledger.holdSpend(d.hold("h_1")), d.group.defer(d.probe)]);
    expect(held.kind).toBe("admitted");
    expect(seenByHold).toBe(FULL);
    expect(d.commits).toEqual([{ synchronous: FULL, writes: 2 }]);

    const [, seenBySettlement] = await Promise.all([d.ledger.settleCall(d.settle("h_1")), d.group.defer(d.probe)]);
    expect(seenBySettlement).toBe(NORMAL);
    expect(d.commits.at(-1)).toEqual({ synchronous: NORMAL, writes: 2 });

    // Writes outside the group commit (keys, tokens, revocations, an operator's decisions) commit at the
    // connection's level: FULL again right after a NORMAL group.
    expect(d.levelNow()).toBe(FULL);
  });

  test("the holds and settlements of one turn share one synced commit: one sync per call at most", async () => {
    const d = await ledgerOn("full");
    await d.ledger.holdSpend(d.hold("h_a"));
    d.commits.length = 0;
    const results = await Promise.all([
      d.ledger.settleCall(d.settle("h_a")),
      d.ledger.holdSpend(d.hold("h_b")),
      d.ledger.holdSpend(d.hold("h_c")),
    ]);
    expect(results[1]).toMatchObject({ kind: "admitted" });
    expect(d.commits).toEqual([{ synchronous: FULL, writes: 3 }]);

    // Settlements of calls already answered, with no hold queued behind them: one commit, not synced.
    await Promise.all([d.ledger.settleCall(d.settle("h_b")), d.ledger.settleCall(d.settle("h_c"))]);
    expect(d.commits.at(-1)).toEqual({ synchronous: NORMAL, writes: 2 });
  });

  test("a durable write of any kind is synced; only deferred ones are not", async () => {
    const d = await ledgerOn("full");
    expect(await d.group.submit(d.probe)).toBe(FULL);
    expect(await d.group.defer(d.probe)).toBe(NORMAL);
    expect(d.commits.map((c) => c.synchronous)).toEqual([FULL, NORMAL]);
  });

  test("a deferred group that fails leaves the connection at FULL", async () => {
    const d = await ledgerOn("full");
    await expect(
      d.group.defer(() => {
        throw new Error("no such thing");
      }),
    ).rejects.toThrow("no such thing");
    expect(d.levelNow()).toBe(FULL);
    expect(await d.group.submit(d.probe)).toBe(FULL);
  });

  test("the settlement of a hold is on the ledger once its promise resolves; flush commits what is queued at once", async () => {
    const d = await ledgerOn("full");
    await d.ledger.holdSpend(d.hold("h_f"));
    const settled = d.ledger.settleCall(d.settle("h_f"));
    d.group.flush();
    const state = d.client.query<{ state: string }, [string]>("SELECT state FROM ledger_entries WHERE id = ?").get("h_f")!.state;
    expect(state).toBe("settled");
    expect(await settled).toBe(2 * USD);
  });
});

describe("synchronous=normal (KEYBRAKE_DB_SYNCHRONOUS=normal)", () => {
  test("no commit is synced, holds included", async () => {
    const d = await ledgerOn("normal");
    expect(await Promise.all([d.ledger.holdSpend(d.hold("h_n")).then(() => "held"), d.group.defer(d.probe)])).toEqual(["held", NORMAL]);
    await d.ledger.settleCall(d.settle("h_n"));
    expect(d.commits.map((c) => c.synchronous)).toEqual([NORMAL, NORMAL]);
    expect(d.levelNow()).toBe(NORMAL);
  });
});

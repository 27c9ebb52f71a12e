import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getTableColumns } from "drizzle-orm";
import { verifyAudit } from "../src/audit/verify";
import { CHAIN_COLUMN_NAMES } from "../src/store/audit-append";
import { CHAIN_FIELDS, canonicalForm, chainHash, chainValues, GENESIS_HASH } from "../src/store/audit-chain";
import { auditRow, openStore, type Store } from "../src/store/index";
import { applyMigrations, embeddedMigrations } from "../src/store/migrate";
import { auditEvents as pgAuditEvents } from "../src/store/pg/schema";
import { auditEvents } from "../src/store/schema";
import { cliInProcess } from "./helpers/cli";
import { type Harness, startKeybrake } from "./helpers/harness";
import { type MockStripe, mockStripe } from "./helpers/mock-stripe";
import { dropTestDatabase, testDatabaseUrl } from "./helpers/postgres";
import { Receiver, waitFor } from "./helpers/receiver";

/**
 * The audit's hash chain (SPEC §19): every row's hash links it to the one before; `keybrake audit verify` (the
 * built binary, on the database file) names the first row that no longer links after any edit, deletion or move,
 * and a head kept elsewhere catches the newest rows deleted. The head is at GET /audit/head, in /metrics and in
 * every webhook body; retention and the rows from before the chain leave checkpoints the rest verifies against.
 */

type Json = Record<string, any>;
const USD = 1_000_000;
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "keybrake-chain-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const row = (n: number, extra: Partial<Parameters<typeof auditRow>[0]> = {}) =>
  auditRow({
    id: `kbr_${String(n).padStart(4, "0")}`,
    at: Date.UTC(2026, 10, 1) + n * 60_000,
    method: "POST",
    path: "/v1/x",
    decision: "allowed",
    ...extra,
  });

describe("the canonical form and the hash", () => {
  test("hash = SHA-256(previous hash ‖ canonical form), both as text: what sha256sum computes", () => {
    const r = row(1, { keyId: "vk_1", label: "run/1", status: 200, costMicros: 29 * USD, upstreamMs: 12.5 });
    const canonical = canonicalForm(chainValues(r));
    // Every column but seq, hash and chain, in CHAIN_FIELDS order; trailing nulls (would_deny) left out.
    expect(canonical).toBe(
      `["kbr_0001",${r.at},"vk_1","run/1",null,null,"POST","/v1/x",200,"allowed",0,29000000,null,null,null,null,null,12.5,null,null,1,0]`,
    );
    expect(chainHash(GENESIS_HASH, canonical)).toBe(createHash("sha256").update(`${GENESIS_HASH}${canonical}`).digest("hex"));
  });

  test("a string with a lone surrogate is hashed as the database stores it (U+FFFD)", () => {
    expect(canonicalForm(chainValues(row(1, { label: "a\uD800b" })))).toContain('"a\uFFFDb"');
  });

  test("CHAIN_FIELDS names every audit column but seq, hash and chain, in both schemas: a new column must join it", () => {
    for (const table of [auditEvents, pgAuditEvents]) {
      const columns = Object.keys(getTableColumns(table)).filter((c) => !["seq", "hash", "chain"].includes(c));
      expect([...CHAIN_FIELDS].sort() as string[]).toEqual(columns.sort());
    }
  });
});

/** `keybrake audit verify` (in the test process: cliInProcess) on a SQLite file. */
const verify = (db: string, ...args: string[]) => cliInProcess(["audit", "verify", ...args], { KEYBRAKE_DB: db });

/** A copy of `source` (its WAL folded in), changed by `sql`. */
function tampered(source: string, name: string, change: (db: Database) => void): string {
  const path = join(dir, `${name}.db`);
  copyFileSync(source, path);
  const db = new Database(path);
  change(db);
  db.close();
  return path;
}

describe("a SQLite ledger, through the server and `keybrake audit verify`", () => {
  let stripe: MockStripe;
  let kb: Harness;
  let clean: string;
  let rows: { seq: number; id: string; hash: string }[];
  let receiver: Receiver;

  beforeAll(async () => {
    stripe = await mockStripe().start();
    receiver = await new Receiver().up();
    kb = await startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url }, { alerts: { everyMs: 20 } });
    const hook = await kb.admin("/alerts/webhooks", { body: { url: receiver.url, events: ["key_revoked"] } });
    expect(hook.status).toBe(201);
    // Allowed calls, and refusals at the cap: rows of both kinds, settlements and denials.
    const key = await kb.issueKey({
      vendor: "stripe",
      daily_usd_cap: 100,
      allowed_endpoints: ["POST /v1/payment_intents"],
      label: "chain/run",
    });
    for (let i = 0; i < 8; i++) {
      await fetch(`${kb.url}/stripe/v1/payment_intents`, {
        method: "POST",
        headers: { authorization: `Bearer ${key.vault_key}`, "content-type": "application/x-www-form-urlencoded" },
        body: "amount=2900&currency=usd",
      });
    }
    clean = join(dir, "clean.db");
    rows = await kb.readDb((db) => {
      db.run(`VACUUM INTO '${clean}'`);
      return db.query<{ seq: number; id: string; hash: string }, []>("SELECT seq, id, hash FROM audit_events ORDER BY seq").all();
    });
    expect(rows.length).toBe(8);
    expect(rows.every((r) => /^[0-9a-f]{64}$/.test(r.hash))).toBe(true);
  }, 120_000);
  afterAll(async () => {
    await kb?.stop();
    await stripe?.stop();
    await receiver?.down();
  });

  test("a clean ledger verifies: exit 0, every row checked", async () => {
    const result = await verify(clean);
    expect(result.stderr).toBe("");
    expect(result.stdout).toContain("8 rows in 1 chain(s) checked");
    expect(result.stdout).toContain(`chain main: 8 rows, head seq ${rows[7]!.seq} ${rows[7]!.hash}`);
    expect(result.code).toBe(0);
  }, 60_000);

  test("one row's cost edited: exit 1, naming that row", async () => {
    const target = rows[3]!;
    const db = tampered(clean, "edited", (db) =>
      db.run(`UPDATE audit_events SET cost_micros = cost_micros - 1000000 WHERE seq = ${target.seq}`),
    );
    const result = await verify(db);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain(`FAIL seq ${target.seq} (${target.id}) in chain main: does not match its hash`);
    expect(result.stdout.match(/^FAIL/gm)).toHaveLength(1);
  }, 60_000);

  test("a middle row deleted: exit 1, naming the row after it", async () => {
    const db = tampered(clean, "deleted", (db) => db.run(`DELETE FROM audit_events WHERE seq = ${rows[4]!.seq}`));
    const result = await verify(db);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain(`FAIL seq ${rows[5]!.seq} (${rows[5]!.id}) in chain main`);
  }, 60_000);

  test("two rows swapped: exit 1, naming the first", async () => {
    const [a, b] = [rows[2]!, rows[5]!];
    const db = tampered(clean, "swapped", (db) => {
      const cols = CHAIN_COLUMN_NAMES.join(", ");
      const read = (seq: number) => db.query(`SELECT ${cols} FROM audit_events WHERE seq = ?`).values(seq)[0]!;
      const [va, vb] = [read(a.seq), read(b.seq)];
      const write = db.prepare(`UPDATE audit_events SET ${CHAIN_COLUMN_NAMES.map((c) => `${c} = ?`).join(", ")} WHERE seq = ?`);
      write.run(...vb, a.seq);
      write.run(...va, b.seq);
    });
    const result = await verify(db);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain(`FAIL seq ${a.seq} (${b.id}) in chain main`);
  }, 60_000);

  test("the newest rows deleted: the chain left still links, but a head kept outside is in no chain", async () => {
    const db = tampered(clean, "truncated", (db) => db.run(`DELETE FROM audit_events WHERE seq > ${rows[5]!.seq}`));
    expect((await verify(db)).code).toBe(0);
    const withHead = await verify(db, "--head", rows[7]!.hash);
    expect(withHead.code).toBe(1);
    expect(withHead.stdout).toContain(`FAIL the head ${rows[7]!.hash} is in no chain`);
    // A head kept before those rows is still met: the chain reaches it.
    const older = await verify(db, "--head", rows[5]!.hash);
    expect(older.code).toBe(0);
    expect(older.stdout).toContain(`the head ${rows[5]!.hash} is at seq ${rows[5]!.seq}`);
  }, 60_000);

  test("--since checks the rows since, from the hash of the row before; a change before them is not its business", async () => {
    const db = tampered(clean, "old-edit", (db) => db.run(`UPDATE audit_events SET label = 'x' WHERE seq = ${rows[1]!.seq}`));
    expect((await verify(db)).code).toBe(1);
    const at = await kb.readDb((d) => d.query<{ at: number }, []>(`SELECT at FROM audit_events WHERE seq = ${rows[4]!.seq}`).get()!.at);
    const since = await verify(db, "--since", new Date(at).toISOString());
    expect(since.stdout).toContain("rows in 1 chain(s) checked");
    expect(since.code).toBe(0);
  }, 60_000);

  test("GET /audit/head and /metrics give the newest row's seq and hash, to admins and viewers, not issuers", async () => {
    const last = await kb.readDb(
      (db) => db.query<{ seq: number; hash: string }, []>("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1").get()!,
    );
    const head = (await (await kb.admin("/audit/head")).json()) as Json;
    expect(head).toEqual({ chain: "main", seq: last.seq, hash: last.hash, heads: [{ chain: "main", seq: last.seq, hash: last.hash }] });
    const metrics = await (await kb.admin("/metrics")).text();
    expect(metrics).toContain(`keybrake_audit_head_seq{chain="main"} ${last.seq}`);
    expect(metrics).toContain(`keybrake_audit_head_info{chain="main",seq="${last.seq}",hash="${last.hash}"} 1`);
    const token = async (role: string) =>
      (
        (await (
          await kb.admin("/admin/tokens", { body: { name: `chain-${role}`, role, ...(role === "issuer" && { policy: {} }) } })
        ).json()) as Json
      ).token;
    const as = async (role: string) =>
      (await fetch(`${kb.url}/audit/head`, { headers: { authorization: `Bearer ${await token(role)}` } })).status;
    expect(await as("viewer")).toBe(200);
    expect(await as("issuer")).toBe(403);
  });

  test("a webhook's body carries the head, signed with the rest", async () => {
    const keys = (await (await kb.admin("/vault/keys?label_prefix=chain/")).json()) as { data: Json[] };
    expect((await kb.admin(`/vault/keys/${keys.data[0]!.id}`, { method: "DELETE" })).status).toBe(200);
    await waitFor(() => receiver.ofType("key_revoked").length > 0, 10_000, "the key_revoked delivery");
    const head = (await (await kb.admin("/audit/head")).json()) as Json;
    expect(receiver.ofType("key_revoked")[0]!.json.audit_head).toEqual(head);
  });
});

describe("retention and the rows from before the chain leave checkpoints the rest verifies against", () => {
  const fresh = (name: string) => openStore(join(dir, `${name}.db`));
  const problems = async (store: Store) => (await verifyAudit(store)).problems.map((p) => `${p.seq} ${p.message}`);

  test("pruned in batches, to the newest row: the rows left verify, and a change to one of them is still caught", async () => {
    const store = fresh("pruned");
    try {
      for (let n = 1; n <= 30; n++) await store.recordAudit(row(n, { costMicros: n }));
      expect(await store.pruneAudit(row(11).at, 4)).toBe(4);
      expect(await store.pruneAudit(row(11).at, 100)).toBe(6);
      expect(await store.pruneAudit(row(11).at, 100)).toBe(0);
      expect((await store.auditCheckpoints()).map((c) => [c.seq, c.reason])).toEqual([[10, "pruned"]]);
      expect(await problems(store)).toEqual([]);
      // Everything past retention: the newest row stays, so seq never starts over.
      expect(await store.pruneAudit(row(99).at, 100)).toBe(19);
      for (let n = 31; n <= 33; n++) await store.recordAudit(row(n));
      const report = await verifyAudit(store);
      expect(report).toMatchObject({ ok: true, rows: 4 });
    } finally {
      await store.close();
    }
  });

  test("a row changed just before retention prunes it past its checkpoint: the next row no longer links", async () => {
    const store = fresh("pruned-tampered");
    try {
      for (let n = 1; n <= 10; n++) await store.recordAudit(row(n));
      await store.pruneAudit(row(4).at, 100);
      const db = new Database(join(dir, "pruned-tampered.db"));
      db.run("UPDATE audit_checkpoints SET hash = 'x'");
      db.close();
      expect(await problems(store)).toEqual([
        "4 does not link to where its chain starts (its content was changed, or rows before it were deleted)",
      ]);
    } finally {
      await store.close();
    }
  });

  test("rows from before the chain are sealed at migration; chained rows link to the seal; a sealed row changed is caught", async () => {
    const path = join(dir, "sealed.db");
    const all = embeddedMigrations();
    const old = new Database(path);
    applyMigrations(
      old,
      all.slice(
        0,
        all.findIndex((m) => m.tag.endsWith("_audit_chain")),
      ),
    );
    const insert = old.prepare(
      `INSERT INTO audit_events (${CHAIN_COLUMN_NAMES.join(", ")}) VALUES (${CHAIN_COLUMN_NAMES.map(() => "?").join(", ")})`,
    );
    for (let n = 1; n <= 5; n++) insert.run(...chainValues(row(n)));
    old.close();
    const store = openStore(path);
    try {
      expect((await store.auditCheckpoints()).map((c) => [c.seq, c.reason])).toEqual([[5, "sealed"]]);
      for (let n = 6; n <= 8; n++) await store.recordAudit(row(n));
      expect(await verifyAudit(store)).toMatchObject({ ok: true, rows: 8 });
      const db = new Database(path);
      db.run("UPDATE audit_events SET path = '/v1/y' WHERE seq = 2");
      db.close();
      expect(await problems(store)).toEqual([
        "5 is a sealed checkpoint the rows up to it no longer reach (a row up to it was changed, deleted or moved)",
      ]);
    } finally {
      await store.close();
    }
  });
});

const databaseUrl = await testDatabaseUrl({ migrated: true });

describe.skipIf(databaseUrl === null)("PostgreSQL: one chain per instance", () => {
  afterAll(async () => {
    if (databaseUrl) await dropTestDatabase(databaseUrl);
  });

  test("two instances writing at once: each its own chain, in seq order; pruned across both; a change is caught in its chain", async () => {
    const { openPgStore } = await import("../src/store/pg/index");
    // Four connections each, not serve's 16 (Bun opens the whole pool at once): the group commits still interleave.
    const [a, b] = await Promise.all([
      openPgStore(databaseUrl!, { instanceId: "pg-a", connections: 4 }),
      openPgStore(databaseUrl!, { instanceId: "pg-b", connections: 4 }),
    ]);
    try {
      // Many writes per event-loop turn: group commits of several rows, interleaved between the two. The first 20
      // (older) before the others, so that retention's cut below takes exactly them.
      const write = (from: number, to: number) =>
        Promise.all(
          Array.from({ length: to - from + 1 }, (_, i) => ((from + i) % 2 ? a : b).recordAudit(row(from + i, { costMicros: i }))),
        );
      await write(1, 20);
      await write(21, 60);
      const heads = await a.auditHeads();
      expect(heads.map((h) => h.chain)).toEqual(["pg-a", "pg-b"]);
      const report = await verifyAudit(b, { heads: heads.map((h) => h.hash) });
      expect(report).toMatchObject({ ok: true, rows: 60 });
      expect(report.chains.map((c) => [c.chain, c.rows])).toEqual(
        expect.arrayContaining([
          ["pg-a", 30],
          ["pg-b", 30],
        ]),
      );
      expect(await a.pruneAudit(row(21).at, 100)).toBe(20);
      expect(await verifyAudit(a)).toMatchObject({ ok: true, rows: 40 });
      const { SQL } = await import("bun");
      const sql = new SQL({ url: databaseUrl!, max: 1 });
      const [victim] = await sql`SELECT seq, id FROM audit_events WHERE chain = 'pg-b' ORDER BY seq LIMIT 1 OFFSET 3`;
      await sql`UPDATE audit_events SET cost_micros = 0 WHERE seq = ${victim.seq}`;
      await sql.close();
      const broken = await verifyAudit(a);
      expect(broken.problems).toEqual([expect.objectContaining({ chain: "pg-b", seq: Number(victim.seq), id: victim.id })]);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  }, 60_000);
});

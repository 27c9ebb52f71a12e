import { SQL } from "bun";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary } from "./helpers/binary";
import { ADMIN_TOKEN, fleetInstanceEnv } from "./helpers/harness";
import { mockStripe, type MockStripe } from "./helpers/mock-stripe";
import { dropTestDatabase, testDatabaseUrl } from "./helpers/postgres";
import { run, type Started, startProcess } from "./helpers/process";
import { waitFor } from "./helpers/receiver";

/**
 * SPEC §13 on the built binary: three instances on one PostgreSQL ledger behave as one Keybrake. Skipped (with a
 * message) where no PostgreSQL can be started; CI always has one.
 */
const databaseUrl = await testDatabaseUrl();
type Json = Record<string, any>;

let dir: string;
let binary: string;
let stripe: MockStripe;
const running = new Map<string, Started>();

const LEASE_S = 2;
/**
 * Four connections per instance, not the default 16 (KEYBRAKE_DATABASE_URL's pool_max_conns): each costs the
 * server ~40 ms of CPU to start, and this file starts instances eight times. Races still span the three instances.
 */
const POOL = 4;
const envFor = (id: string) => {
  const sized = new URL(databaseUrl!);
  sized.searchParams.set("pool_max_conns", String(POOL));
  return fleetInstanceEnv({ databaseUrl: sized.href, id, leaseS: LEASE_S, stripeUrl: stripe.url });
};
const start = async (id: string) => {
  const started = await startProcess([binary], { cwd: dir, env: envFor(id) });
  running.set(id, started);
  return started;
};
const url = (id: string) => running.get(id)!.url;

const admin = async (id: string, path: string, body?: unknown, method = body === undefined ? "GET" : "POST") => {
  const res = await fetch(`${url(id)}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Json };
};
const issueKey = async (id: string, cap: Json) =>
  (await admin(id, "/vault/keys", { vendor: "stripe", allowed_endpoints: ["POST /v1/payment_intents"], ...cap })).json;
const charge = (id: string, vaultKey: string, headers: Record<string, string> = {}) =>
  fetch(`${url(id)}/stripe/v1/payment_intents`, {
    method: "POST",
    headers: { authorization: `Bearer ${vaultKey}`, "content-type": "application/x-www-form-urlencoded", ...headers },
    body: "amount=2900&currency=usd",
  });

describe.skipIf(databaseUrl === null)("several instances on one PostgreSQL ledger (SPEC §13, built binary)", () => {
  beforeAll(async () => {
    binary = await ensureBinary();
    dir = mkdtempSync(join(tmpdir(), "keybrake-scale-"));
    stripe = await mockStripe().start();
    // The first migrates; then the others, side by side, find the schema current.
    await start("a");
    await Promise.all(["b", "c"].map(start));
  }, 120_000);
  afterAll(async () => {
    for (const s of running.values()) s.proc.kill("SIGKILL");
    await Promise.all([...running.values()].map((s) => s.proc.exited));
    await stripe?.stop();
    if (databaseUrl) await dropTestDatabase(databaseUrl);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("300 concurrent $29 calls over three instances against a $500 cap: exactly 17 forwarded, $493 in the ledger", async () => {
    const key = await issueKey("a", { daily_usd_cap: 500, label: "scale/race" });
    stripe.reset();
    const ids = ["a", "b", "c"];
    const answers = await Promise.all(
      Array.from({ length: 300 }, async (_, i) => {
        const res = await charge(ids[i % 3]!, key.vault_key);
        return { status: res.status, body: (await res.json()) as Json };
      }),
    );
    const admitted = answers.filter((a) => a.status === 200);
    const refused = answers.filter((a) => a.status === 429);
    expect(admitted.length).toBe(17);
    expect(refused.length).toBe(283);
    expect(refused.every((a) => a.body.error?.code === "cap_exhausted" || a.body.code === "cap_exhausted")).toBe(true);
    expect(stripe.count("POST", "/v1/payment_intents")).toBe(17);
    // pool_max_conns held: three instances, four connections each (Bun opens a pool whole), and the test's own.
    const sessions = new SQL({ url: databaseUrl!, max: 1 });
    try {
      const [{ n }] = await sessions`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database()`;
      expect(n).toBe(3 * POOL + 1);
    } finally {
      await sessions.close();
    }
    // Every instance reads the same ledger: $493 settled, nothing held, and the audit says the same.
    for (const id of ids) {
      const record = (await admin(id, `/vault/keys/${key.id}`)).json;
      expect(record).toMatchObject({ spent_today_usd: 493, spent_total_usd: 493, held_usd: 0, calls: 17 });
    }
    const spend = (await admin("b", "/audit/spend?group_by=label")).json as { data: Json[] };
    expect(spend.data.find((r) => r.group === "scale/race")).toMatchObject({ spend_usd: 493, allowed: 17, denied: 283 });
    // /metrics at any instance counts the fleet's spend (each instance saves its counters every lease renewal).
    const spendMetric = async (id: string) => {
      const text = await (await fetch(`${url(id)}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
      return Number(/^keybrake_spend_usd_total\{vendor="stripe"\} (\S+)$/m.exec(text)?.[1] ?? 0);
    };
    for (const id of ids) await waitFor(async () => (await spendMetric(id)) === 493, LEASE_S * 1000 * 3, `${id}'s /metrics at $493`);
  }, 60_000);

  test("a $500 budget over 10 keys ($1,000 caps each): 300 concurrent $29 calls over three instances → exactly 17 forwarded", async () => {
    const budget = (await admin("a", "/budgets", { name: "scale-pool", daily_usd_cap: 500 })).json;
    expect(budget.id).toStartWith("bud_");
    const keys = await Promise.all(
      Array.from({ length: 10 }, (_, k) =>
        issueKey("abc"[k % 3]!, { daily_usd_cap: 1_000, budget_id: budget.id, label: `scale/pool-${k}` }),
      ),
    );
    stripe.reset();
    const ids = ["a", "b", "c"];
    const answers = await Promise.all(
      Array.from({ length: 300 }, async (_, i) => {
        const res = await charge(ids[i % 3]!, keys[i % 10]!.vault_key);
        return { status: res.status, code: res.headers.get("x-keybrake-error") };
      }),
    );
    expect(answers.filter((a) => a.status === 200).length).toBe(17);
    expect(answers.filter((a) => a.status === 429).every((a) => a.code === "budget_exhausted")).toBe(true);
    expect(answers.filter((a) => a.status === 429).length).toBe(283);
    expect(stripe.count("POST", "/v1/payment_intents")).toBe(17);
    for (const id of ids) expect((await admin(id, `/budgets/${budget.id}`)).json).toMatchObject({ spent_today_usd: 493, held_usd: 0 });
    const perKey = await Promise.all(keys.map(async (k) => (await admin("b", `/vault/keys/${k.id}`)).json.spent_today_usd as number));
    expect(perKey.reduce((a, b) => a + b, 0)).toBe(493);
  }, 60_000);

  test("the start line names the instance id and the moved upstreams; a second process under a running id refuses to start, naming KEYBRAKE_INSTANCE_ID", async () => {
    expect(running.get("a")!.stderr()).toMatch(
      new RegExp(
        `listening on http://127\\.0\\.0\\.1:\\d+ \\(version [^,]+, db [^,]+, instance a\\); vendors: .*; upstreams: stripe=${stripe.url}; docs at /docs`,
      ),
    );
    const twin = await run([binary], { cwd: dir, env: envFor("a") });
    expect(twin.code).toBe(2);
    expect(twin.stderr).toContain(`KEYBRAKE_INSTANCE_ID "a" is leased by another process`);
    expect(twin.stderr).toMatch(
      /keybrake: invalid configuration: KEYBRAKE_INSTANCE_ID "a" is in use by a running instance \(host [^,]+, pid \d+, lease renewed at [^)]+\): give every instance its own id/,
    );
    expect(twin.stderr).not.toContain("listening on");
    // The running instance is untouched.
    expect((await admin("a", "/healthz")).status).toBe(200);
  }, 30_000);

  test("a revocation through one instance stops the next call through every other instance", async () => {
    const key = await issueKey("a", { daily_usd_cap: 100 });
    // Each instance has served the key once (anything cached would be warm now).
    for (const id of ["a", "b", "c"]) expect((await charge(id, key.vault_key)).status).toBe(200);
    expect((await admin("b", `/vault/keys/${key.id}`, undefined, "DELETE")).status).toBe(200);
    for (const id of ["a", "c"]) {
      const res = await charge(id, key.vault_key);
      expect(res.status).toBe(401);
      expect(((await res.json()) as Json).error.code).toBe("key_revoked");
    }
  });

  test("an Idempotency-Key replayed through another instance is replayed, not forwarded", async () => {
    const key = await issueKey("a", { daily_usd_cap: 100 });
    stripe.reset();
    const first = await charge("a", key.vault_key, { "idempotency-key": "order-77" });
    expect(first.status).toBe(200);
    const firstBody = await first.text();
    for (const id of ["b", "c"]) {
      const again = await charge(id, key.vault_key, { "idempotency-key": "order-77" });
      expect(again.status).toBe(200);
      expect(again.headers.get("x-keybrake-replayed")).toBe("true");
      expect(await again.text()).toBe(firstBody);
    }
    expect(stripe.count("POST", "/v1/payment_intents")).toBe(1);
    expect((await admin("c", `/vault/keys/${key.id}`)).json.spent_today_usd).toBe(29);
  });

  describe("approvals across instances (SPEC §15)", () => {
    const refundKey = () =>
      issueKey("a", { daily_usd_cap: 20_000, allowed_endpoints: ["POST /v1/refunds"], approval_above_usd: 500, label: "scale/refunds" });
    /** A full refund of `charge`, priced from it, under the job's `idem`. */
    const refund = (id: string, vaultKey: string, charge: string, idem: string) =>
      fetch(`${url(id)}/stripe/v1/refunds`, {
        method: "POST",
        headers: { authorization: `Bearer ${vaultKey}`, "content-type": "application/x-www-form-urlencoded", "idempotency-key": idem },
        body: `charge=${charge}`,
      });
    const askApproval = async (id: string, vaultKey: string, charge: string, idem: string) => {
      const res = await refund(id, vaultKey, charge, idem);
      expect(res.status).toBe(403);
      const body = (await res.json()) as Json;
      expect(body.code).toBe("approval_required");
      return body.error.details.approval_id as string;
    };

    test("requested at a, approved at b, retried at c: forwarded once, counted once; retries at a and b replay", async () => {
      const key = await refundKey();
      const charge = stripe.seedCharge(400_000);
      stripe.reset();
      const approvalId = await askApproval("a", key.vault_key, charge.id, "refund-abc");
      expect((await admin("c", `/vault/keys/${key.id}`)).json).toMatchObject({ held_usd: 4_000, spent_today_usd: 0 });
      // Pending at every instance.
      expect((await refund("b", key.vault_key, charge.id, "refund-abc")).headers.get("x-keybrake-error")).toBe("approval_required");

      const approved = await admin("b", `/approvals/${approvalId}/approve`, {});
      expect(approved).toMatchObject({ status: 200, json: { status: "approved" } });
      const retried = await refund("c", key.vault_key, charge.id, "refund-abc");
      expect(retried.status).toBe(200);
      const body = await retried.text();
      for (const id of ["a", "b"]) {
        const again = await refund(id, key.vault_key, charge.id, "refund-abc");
        expect(again.status).toBe(200);
        expect(again.headers.get("x-keybrake-replayed")).toBe("true");
        expect(await again.text()).toBe(body);
      }
      expect(stripe.count("POST", "/v1/refunds")).toBe(1);
      expect((await admin("a", `/vault/keys/${key.id}`)).json).toMatchObject({ spent_today_usd: 4_000, held_usd: 0, calls: 1 });
      expect((await admin("a", `/approvals/${approvalId}`)).json).toMatchObject({
        status: "used",
        decided_by: "admin (bootstrap admin token)",
      });
    });

    test("two people deciding at once at two instances (approve at a, deny at b): exactly one 200, the other 409 approval_not_pending; the winner's decision stands", async () => {
      const key = await refundKey();
      stripe.reset();
      for (let round = 0; round < 5; round++) {
        const charge = stripe.seedCharge(100_000);
        const approvalId = await askApproval("c", key.vault_key, charge.id, `race-${round}`);
        const [approve, deny] = await Promise.all([
          admin("a", `/approvals/${approvalId}/approve`, {}),
          admin("b", `/approvals/${approvalId}/deny`, { reason: "race" }),
        ]);
        expect([approve.status, deny.status].sort()).toEqual([200, 409]);
        const [winner, loser] = approve.status === 200 ? [approve, deny] : [deny, approve];
        expect(loser.json.code).toBe("approval_not_pending");
        expect(loser.json.message).toContain(`is ${winner.json.status} (by admin (bootstrap admin token))`);
        expect((await admin("c", `/approvals/${approvalId}`)).json.status).toBe(winner.json.status);
        // The job's retry follows the decision that stands: out once, or refused with its hold released.
        const retried = await refund("a", key.vault_key, charge.id, `race-${round}`);
        expect(retried.status).toBe(winner.json.status === "approved" ? 200 : 403);
      }
      const record = (await admin("b", `/vault/keys/${key.id}`)).json;
      expect(record.held_usd).toBe(0);
      expect(record.spent_today_usd).toBe(1_000 * stripe.count("POST", "/v1/refunds"));
    });
  });

  test("the CLI works on the shared ledger: migrate finds it current, keys lists every instance's keys, backup points to pg_dump", async () => {
    const env = envFor("cli");
    await issueKey("b", { daily_usd_cap: 5, label: "scale/cli" });
    const migrated = await run([binary, "migrate"], { cwd: dir, env });
    expect(migrated).toMatchObject({ code: 0, stdout: "already at the latest schema\n" });
    const listed = await run([binary, "keys", "list", "--label", "scale/cli", "--json"], { cwd: dir, env });
    expect(listed).toMatchObject({ code: 0, stderr: "" });
    expect(JSON.parse(listed.stdout).map((k: Json) => k.label)).toEqual(["scale/cli"]);
    const backup = await run([binary, "backup", join(dir, "x.db")], { cwd: dir, env });
    expect(backup.code).not.toBe(0);
    expect(backup.stderr).toContain("pg_dump");
    // The URL's password never reaches an error line.
    const refused = await run([binary, "keys", "list"], {
      cwd: dir,
      env: { ...env, KEYBRAKE_DATABASE_URL: "postgres://keybrake:hunter2-secret@127.0.0.1:1/keybrake" },
    });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("KEYBRAKE_DATABASE_URL");
    expect(refused.stderr + refused.stdout).not.toContain("hunter2-secret");
  });

  test("SIGKILL mid-burst: the dead instance's holds stay counted and are recovered after its lease; a restart meanwhile leaves a live instance's in-flight holds alone", async () => {
    const key = await issueKey("a", { daily_usd_cap: 1000, label: "scale/kill" });
    stripe.reset();
    const gate = Promise.withResolvers<void>();
    stripe.failAlways({ kind: "wait", until: gate.promise });
    // In flight: 3 calls through a (which lives on) and 4 through c (which is killed).
    const live = Array.from({ length: 3 }, () => charge("a", key.vault_key));
    const doomed = Array.from({ length: 4 }, () => charge("c", key.vault_key).catch(() => null));
    await waitFor(() => stripe.received.length === 7, 10_000, "7 calls at the vendor");
    // c renews its lease every third of it: killed now, its lease is live for at least two thirds of LEASE_S more.
    const leaseLiveUntil = Date.now() + (LEASE_S * 1000 * 2) / 3;
    running.get("c")!.proc.kill("SIGKILL");
    await running.get("c")!.proc.exited;
    await Promise.all(doomed);

    // b restarts while a's calls and c's dead holds are in flight: it recovers neither (c's lease is still live).
    const restarted = running.get("b")!;
    restarted.proc.kill("SIGTERM");
    await restarted.proc.exited;
    await start("b");
    const afterRestart = (await admin("b", `/vault/keys/${key.id}`)).json;
    const orphanedNow = (await admin("b", "/vault/holds?state=orphaned&limit=100")).json.data as Json[];
    expect(afterRestart.held_usd).toBe(7 * 29);
    // a's in-flight holds are never taken; c's are not while its lease may be live (on a machine slow enough that
    // b's restart outlasts it, c's may already be orphaned, as they should be then).
    const aHeld = ((await admin("a", "/vault/holds?state=held&limit=100")).json.data as Json[]).filter((h) => h.key_id === key.id);
    expect(aHeld.length).toBeGreaterThanOrEqual(3);
    if (Date.now() < leaseLiveUntil) expect(orphanedNow.length).toBe(0);
    else expect(orphanedNow.length === 0 || orphanedNow.length === 4).toBe(true);

    // Once c's lease lapses, a live instance recovers c's holds (and only those): orphaned, still counted.
    await waitFor(
      async () => ((await admin("b", "/vault/holds?state=orphaned&limit=100")).json.data as Json[]).length === 4,
      LEASE_S * 1000 * 4,
      "c's 4 holds orphaned",
    );
    const held = ((await admin("a", "/vault/holds?state=held&limit=100")).json.data as Json[]).filter((h) => h.key_id === key.id);
    expect(held.length).toBe(3);
    expect((await admin("a", `/vault/keys/${key.id}`)).json.held_usd).toBe(7 * 29);

    // a's calls were never disturbed: they settle normally.
    stripe.failAlways(null);
    gate.resolve();
    expect((await Promise.all(live)).map((r) => r.status)).toEqual([200, 200, 200]);
    // A settlement commits just after its answer leaves a; b reads the ledger once it has.
    await waitFor(async () => (await admin("b", `/vault/keys/${key.id}`)).json.spent_today_usd === 3 * 29, 5_000, "a's calls settled");
    expect((await admin("b", `/vault/keys/${key.id}`)).json).toMatchObject({ spent_today_usd: 3 * 29, held_usd: 4 * 29 });

    // c restarts under its id: it takes its dead predecessor's lease over and serves again.
    await start("c");
    expect((await charge("c", key.vault_key)).status).toBe(200);
  }, 60_000);
});

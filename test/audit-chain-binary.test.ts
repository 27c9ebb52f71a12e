import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SQL } from "bun";
import { ensureBinary } from "./helpers/binary";
import { ADMIN_TOKEN } from "./helpers/harness";
import { type MockStripe, mockStripe, STRIPE_LIVE_SECRET } from "./helpers/mock-stripe";
import { dropTestDatabase, testDatabaseUrl } from "./helpers/postgres";
import { run, type Started, startProcess } from "./helpers/process";
import { waitFor } from "./helpers/receiver";

/**
 * The audit's hash chain (SPEC §19) on the built binary: a SIGKILL mid-traffic leaves a chain that verifies after
 * the restart (its recovery's rows included), and three instances on one PostgreSQL ledger write three chains
 * that `keybrake audit verify` checks, each on its own.
 */

type Json = Record<string, any>;
let binary: string;
let stripe: MockStripe;
let dir: string;

beforeAll(async () => {
  binary = await ensureBinary();
  stripe = await mockStripe().start();
  dir = mkdtempSync(join(tmpdir(), "keybrake-chain-bin-"));
}, 120_000);
afterAll(async () => {
  await stripe.stop();
  rmSync(dir, { recursive: true, force: true });
});

const base = {
  KEYBRAKE_HOST: "127.0.0.1",
  KEYBRAKE_PORT: "0",
  KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
  KEYBRAKE_STRIPE_SECRET_KEY: STRIPE_LIVE_SECRET,
};

const issue = async (server: Started, label: string) =>
  (await (
    await fetch(`${server.url}/vault/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({
        vendor: "stripe",
        daily_usd_cap: 1_000_000,
        allowed_endpoints: ["POST /v1/payment_intents"],
        label,
        expires_in: "1h",
      }),
    })
  ).json()) as Json;

const charge = (server: Started, vaultKey: string, i: number) =>
  fetch(`${server.url}/stripe/v1/payment_intents`, {
    method: "POST",
    headers: { authorization: `Bearer ${vaultKey}`, "content-type": "application/x-www-form-urlencoded", "idempotency-key": `chain-${i}` },
    body: "amount=2900&currency=usd",
  })
    .then((res) => res.arrayBuffer())
    .catch(() => {});

const verify = (env: Record<string, string>, ...args: string[]) => run([binary, "audit", "verify", ...args], { cwd: dir, env });

test("SIGKILL mid-traffic: after the restart (orphaned holds audited), the chain verifies", async () => {
  const env = { ...base, KEYBRAKE_DB: join(dir, "crash.db"), KEYBRAKE_STRIPE_BASE_URL: stripe.url };
  stripe.reset();
  stripe.failAlways({ kind: "delay", ms: 30 });
  const first = await startProcess([binary], { cwd: dir, env });
  const key = await issue(first, "chain/crash");
  let next = 0;
  const load = Promise.all(
    Array.from({ length: 24 }, async () => {
      while (next < 400) await charge(first, key.vault_key, next++);
    }),
  );
  await waitFor(() => stripe.received.length >= 60, 20_000, "calls to reach Stripe");
  first.proc.kill("SIGKILL");
  await first.proc.exited;
  await load;
  stripe.failAlways(null);

  const second = await startProcess([binary], { cwd: dir, env });
  try {
    await charge(second, key.vault_key, 10_000);
    const live = await verify(env);
    expect(live.stdout).toContain("1 chain(s) checked");
    expect(live.code).toBe(0);
  } finally {
    second.proc.kill("SIGTERM");
    expect(await second.proc.exited).toBe(0);
  }
  const result = await verify(env);
  expect(result.stdout).toMatch(/\d+ rows in 1 chain\(s\) checked/);
  expect(result.code).toBe(0);
}, 90_000);

const databaseUrl = await testDatabaseUrl();

describe.skipIf(databaseUrl === null)("three instances on one PostgreSQL ledger: three chains", () => {
  const running: Started[] = [];
  afterAll(async () => {
    for (const s of running) s.proc.kill("SIGKILL");
    await Promise.all(running.map((s) => s.proc.exited));
    if (databaseUrl) await dropTestDatabase(databaseUrl);
  });

  test("calls spread over a, b and c: each instance's chain verifies; a row changed is named in its chain", async () => {
    // Four connections per instance (pool_max_conns), not 16: each costs the server ~40 ms of CPU to start.
    const sized = new URL(databaseUrl!);
    sized.searchParams.set("pool_max_conns", "4");
    const env = (id: string) => ({
      ...base,
      KEYBRAKE_DATABASE_URL: sized.href,
      KEYBRAKE_INSTANCE_ID: id,
      KEYBRAKE_STRIPE_BASE_URL: stripe.url,
    });
    // The first migrates; then the others, side by side, find the schema current.
    running.push(await startProcess([binary], { cwd: dir, env: env("a") }));
    running.push(...(await Promise.all(["b", "c"].map((id) => startProcess([binary], { cwd: dir, env: env(id) })))));
    const key = await issue(running[0]!, "chain/fleet");
    await Promise.all(Array.from({ length: 90 }, (_, i) => charge(running[i % 3]!, key.vault_key, i)));

    const cli = { KEYBRAKE_DATABASE_URL: databaseUrl! };
    const heads = (await (
      await fetch(`${running[1]!.url}/audit/head`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
    ).json()) as Json;
    expect(heads.heads.map((h: Json) => h.chain)).toEqual(["a", "b", "c"]);
    expect(heads.seq).toBeNull();
    const clean = await verify(cli, ...heads.heads.flatMap((h: Json) => ["--head", h.hash]));
    expect(clean.stdout).toContain("90 rows in 3 chain(s) checked");
    for (const id of ["a", "b", "c"]) expect(clean.stdout).toContain(`chain ${id}: 30 rows`);
    expect(clean.code).toBe(0);

    const sql = new SQL({ url: databaseUrl!, max: 1 });
    const [victim] = await sql`SELECT seq, id FROM audit_events WHERE chain = 'b' ORDER BY seq LIMIT 1 OFFSET 10`;
    await sql`UPDATE audit_events SET cost_micros = 0 WHERE seq = ${victim.seq}`;
    await sql.close();
    const broken = await verify(cli);
    expect(broken.code).toBe(1);
    expect(broken.stdout).toContain(`FAIL seq ${victim.seq} (${victim.id}) in chain b: does not match its hash`);
    expect(broken.stdout.match(/^FAIL/gm)).toHaveLength(1);
  }, 90_000);
});

import { Database } from "bun:sqlite";
import { afterAll, beforeAll, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mockStripe, STRIPE_LIVE_SECRET, type MockStripe } from "./helpers/mock-stripe";
import { run, startProcess, type Started } from "./helpers/process";
import { keybrakeCommand } from "./helpers/binary";

// SPEC §9: a second `keybrake serve` on an address in use fails to start with one line (no silent port sharing).
const root = join(import.meta.dir, "..");
const token = randomBytes(36).toString("base64url");
let dir: string;
let stripe: MockStripe;
let first: Started;

const env = (port: string) => ({
  KEYBRAKE_DB: join(dir, "keybrake.db"),
  KEYBRAKE_HOST: "127.0.0.1",
  KEYBRAKE_PORT: port,
  KEYBRAKE_ADMIN_TOKEN: token,
  KEYBRAKE_STRIPE_SECRET_KEY: STRIPE_LIVE_SECRET,
  KEYBRAKE_STRIPE_BASE_URL: stripe.url,
});

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "keybrake-listen-"));
  stripe = await mockStripe().start();
  first = await startProcess(await keybrakeCommand("serve"), { cwd: root, env: env("0") });
}, 30_000);
afterAll(async () => {
  if (first.proc.exitCode === null) first.proc.kill("SIGTERM");
  await first.proc.exited;
  await stripe.stop();
  rmSync(dir, { recursive: true, force: true });
});

test("a second serve on the same address exits non-zero with one line, and leaves the running server's call alone", async () => {
  const admin = (path: string, body?: unknown) =>
    fetch(first.url + path, {
      method: body ? "POST" : "GET",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body ? JSON.stringify(body) : undefined,
    });
  const key = (await (
    await admin("/vault/keys", { vendor: "stripe", daily_usd_cap: 100, allowed_endpoints: ["POST /v1/payment_intents"] })
  ).json()) as { id: string; vault_key: string };
  // A call in flight on the first server while the second one starts on the same database.
  const secondDone = Promise.withResolvers<void>();
  stripe.failNext({ kind: "wait", until: secondDone.promise });
  const inFlight = fetch(`${first.url}/v1/payment_intents`, {
    method: "POST",
    headers: { authorization: `Bearer ${key.vault_key}`, "content-type": "application/x-www-form-urlencoded" },
    body: "amount=2900&currency=usd",
  });
  while (stripe.received.length === 0) await Bun.sleep(10);

  const port = new URL(first.url).port;
  const second = await run(await keybrakeCommand("serve"), { cwd: root, env: env(port) });
  secondDone.resolve();
  expect(second.code).not.toBe(0);
  const lines = second.stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toContain(`127.0.0.1:${port}`);
  expect(lines[0]).toContain("already in use");

  // The first server still answers every call, and its hold was not taken for a crashed run's orphan.
  expect((await inFlight).status).toBe(200);
  const record = (await (await admin(`/vault/keys/${key.id}`)).json()) as Record<string, unknown>;
  expect(record).toMatchObject({ spent_today_usd: 29, held_usd: 0 });
  const orphans = (await (await admin("/audit?decision=orphaned_hold")).json()) as { data: unknown[] };
  expect(orphans.data).toEqual([]);
  expect((await fetch(`${first.url}/healthz`)).status).toBe(200);
}, 30_000); // spawns Bun processes: slow on a loaded machine

test("SIGTERM writes the unauthenticated denials that were only counted (SPEC §9)", async () => {
  for (let i = 0; i < 5; i++) expect((await fetch(`${first.url}/stripe/v1/payment_intents`, { method: "POST" })).status).toBe(401);
  first.proc.kill("SIGTERM");
  expect(await first.proc.exited).toBe(0);
  const db = new Database(join(dir, "keybrake.db"), { readonly: true });
  try {
    const rows = db.query<{ requests: number }, []>("SELECT requests FROM audit_events WHERE decision = 'invalid_key' ORDER BY seq").all();
    expect(rows.reduce((sum, r) => sum + r.requests, 0)).toBe(5); // [1, 4] unless a minute ended in between
    expect(rows.length).toBeLessThan(5);
  } finally {
    db.close();
  }
}, 30_000); // waits for the process to stop

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { keybrakeCommand } from "./helpers/binary";
import { ADMIN_TOKEN } from "./helpers/harness";
import { mockResend, RESEND_KEY } from "./helpers/mock-resend";
import { mockStripe, STRIPE_LIVE_SECRET, type MockStripe } from "./helpers/mock-stripe";
import { mockTwilio, TWILIO_SID, TWILIO_TOKEN, type MockTwilio } from "./helpers/mock-twilio";
import type { MockVendor } from "./helpers/mock-vendor";
import { freePort, run, type Started, startProcess } from "./helpers/process";

// The Python client (clients/python, SPEC §17) installed with pip, against the built binary: the seeds' Flask
// and Celery code rewritten with it and run for real (Debian's python3-flask; python3-celery with a throwaway
// redis-server), the Airflow and Dagster helpers with stand-ins for what cannot be installed here, and
// `python -m keybrake mint` in a shell step, from the copy the binary serves.

const PYTHON = "/usr/bin/python3";
// Whether the modules are installed, looked up without importing them: importing them all takes ~0.5 s, and the
// tests import them anyway (an installed module that fails to import fails them).
const MODULES = ["stripe", "twilio", "httpx", "requests", "flask", "celery", "redis"];
const probe = Bun.spawnSync(
  [PYTHON, "-c", `import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None for m in ${JSON.stringify(MODULES)}))`],
  { stderr: "ignore" },
);
const hasPython = probe.exitCode === 0 && existsSync("/usr/bin/redis-server");
if (!hasPython && process.env.CI)
  throw new Error("CI needs python3-stripe python3-twilio python3-httpx python3-requests python3-flask python3-celery redis-server");

type Json = Record<string, any>;
const ROOT = join(import.meta.dir, "..");
const SCRIPTS = join(import.meta.dir, "python");
let dir: string;
let site: string;
let kb: Started;
let issuer: string;
let stripe: MockStripe;
let tw: MockTwilio;
let rs: MockVendor;
/** The Celery tests' broker (a throwaway redis-server) and worker, started with the rest in the first beforeAll. */
let redis: Subprocess | undefined;
let worker: Subprocess<"ignore", "ignore", "pipe"> | undefined;
let broker: string;
let workerReady: Promise<void>;

const admin = async (path: string, body?: unknown) =>
  (await (
    await fetch(`${kb.url}${path}`, {
      method: body === undefined ? "GET" : "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
  ).json()) as Json;
const keysLabelled = async (prefix: string) =>
  (await admin(`/vault/keys?label_prefix=${encodeURIComponent(prefix)}&limit=100`)).data as Json[];
/** The environment a job gets: where Keybrake is, the issuer token that mints, and the installed client. */
const jobEnv = (extra: Record<string, string> = {}) => ({
  KEYBRAKE_URL: kb.url,
  KEYBRAKE_TOKEN: issuer,
  KB_ADMIN: ADMIN_TOKEN,
  PYTHONPATH: `${site}:${SCRIPTS}`,
  PYTHONDONTWRITEBYTECODE: "1",
  ...extra,
});
const python = async (script: string, env: Record<string, string> = {}) => {
  const result = await run([PYTHON, join(SCRIPTS, script)], { cwd: dir, env: jobEnv(env) });
  if (result.code !== 0) throw new Error(`${script} exited ${result.code}: ${result.stderr}`);
  return JSON.parse(result.stdout) as Json;
};

describe.skipIf(!hasPython)("the Python client", () => {
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "keybrake-pyclient-"));
    const port = freePort();
    broker = `redis://127.0.0.1:${port}/0`;
    redis = Bun.spawn(["/usr/bin/redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      cwd: dir,
      stdout: "ignore",
      stderr: "ignore",
    });
    [stripe, tw, rs] = await Promise.all([mockStripe().start(), mockTwilio().start(), mockResend().start()]);
    // pip, offline, from a copy of the folder (pip builds in place): what `pip install ./clients/python` does. It
    // runs while Keybrake starts.
    const source = join(dir, "src");
    cpSync(join(ROOT, "clients/python"), source, { recursive: true });
    site = join(dir, "site");
    const installing = run([PYTHON, "-m", "pip", "install", "--no-build-isolation", "--no-index", "--target", site, source], {
      cwd: dir,
      env: {},
    });
    kb = await startProcess(await keybrakeCommand(), {
      cwd: dir,
      env: {
        KEYBRAKE_DB: join(dir, "kb.db"),
        KEYBRAKE_HOST: "127.0.0.1",
        KEYBRAKE_PORT: "0",
        KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
        KEYBRAKE_STRIPE_SECRET_KEY: STRIPE_LIVE_SECRET,
        KEYBRAKE_TWILIO_ACCOUNT_SID: TWILIO_SID,
        KEYBRAKE_TWILIO_AUTH_TOKEN: TWILIO_TOKEN,
        KEYBRAKE_RESEND_API_KEY: RESEND_KEY,
        KEYBRAKE_STRIPE_BASE_URL: stripe.url,
        KEYBRAKE_TWILIO_BASE_URL: tw.url,
        KEYBRAKE_RESEND_BASE_URL: rs.url,
      },
    });
    // The job hosts' token: an issuer, as the README recommends, capped per key.
    issuer = (
      await admin("/admin/tokens", {
        name: "python-jobs",
        role: "issuer",
        policy: { vendors: ["stripe", "twilio", "resend"], max_daily_usd_cap: 100, max_expires_in: "6h" },
      })
    ).token;
    const pip = await installing;
    if (pip.code !== 0) throw new Error(`pip install failed: ${pip.stderr}`);
    // The Celery worker needs the installed client, Keybrake's address and the issuer token: it starts now, and
    // gets ready while the tests before the Celery ones run (their beforeAll waits for it).
    worker = Bun.spawn(
      [PYTHON, "-m", "celery", "-A", "celery_tasks", "worker", "--pool=solo", "--loglevel=info", "--without-gossip", "--without-mingle"],
      {
        cwd: SCRIPTS,
        env: { PATH: process.env.PATH ?? "", HOME: dir, ...jobEnv({ CELERY_BROKER: broker }) },
        stdout: "ignore",
        stderr: "pipe",
      },
    );
    workerReady = untilReady(worker);
    workerReady.catch(() => {}); // reported by the Celery tests' beforeAll
  }, 120_000);
  afterAll(async () => {
    worker?.kill("SIGTERM");
    redis?.kill("SIGTERM");
    kb?.proc.kill("SIGTERM");
    await Promise.all([worker?.exited, redis?.exited, kb?.proc.exited]);
    await Promise.all([stripe?.stop(), tw?.stop(), rs?.stop()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("pip installs it from clients/python; the binary serves the same file at /clients/python/keybrake.py", async () => {
    const source = readFileSync(join(ROOT, "clients/python/keybrake.py"), "utf8");
    expect(readFileSync(join(site, "keybrake.py"), "utf8")).toBe(source);
    const served = await fetch(`${kb.url}/clients/python/keybrake.py`);
    expect(served.status).toBe(200);
    expect(served.headers.get("content-type")).toStartWith("text/x-python");
    expect(await served.text()).toBe(source);
  });

  test("Flask: a key per request, revoked after it even when the tool raises; a cap hit is a typed CapExhausted", async () => {
    const seen = await python("client_flask.py");
    expect(seen.charge).toMatchObject({ status: 200, amount: 1200 });
    expect(seen.big).toEqual({ status: 402, error: "spend_cap_exceeded", cap_usd: 100, price_usd: 200, retryable: false });
    expect(seen.flaky_status).toBe(500);
    expect(seen.health).toEqual({ has_key: false });
    const keys = await keysLabelled("flask-u1-");
    expect(keys.map((k) => k.label).sort()).toEqual(["flask-u1-r1", "flask-u1-r2", "flask-u1-r3"]);
    expect(keys.every((k) => k.status === "revoked")).toBe(true);
    // The crashed tool's call went out before it raised.
    expect(keys.find((k) => k.label === "flask-u1-r3")!.spent_today_usd).toBe(5);
  });

  describe("Celery, with a worker on a throwaway Redis", () => {
    beforeAll(() => workerReady, 90_000);

    test("a task retried three times (a fresh key per try, the same Idempotency-Key) spends once at Stripe; a cap hit is not retried", async () => {
      stripe.reset();
      const movedBefore = stripe.moved.length;
      const intentsBefore = stripe.intents.size;
      const seen = await python("client_celery.py", { CELERY_BROKER: broker });
      expect(seen.retried).toMatchObject({ tries: 4 });
      // Four tries, four keys, one charge at the vendor: the retries were replayed by Stripe's idempotency.
      expect(stripe.moved.slice(movedBefore)).toEqual([{ kind: "/v1/payment_intents", amount: 2900, currency: "usd" }]);
      expect(stripe.intents.size).toBe(intentsBefore + 1);
      expect(stripe.intents.has(seen.retried.id)).toBe(true);
      const tries = await keysLabelled("celery-billing-o-1");
      expect(tries).toHaveLength(4);
      expect(tries.every((k) => k.status === "revoked")).toBe(true);
      const vendorKeys = new Set(stripe.received.filter((r) => r.method === "POST").map((r) => r.headers["idempotency-key"]));
      expect(vendorKeys.size).toBe(1);

      expect(seen.over_cap).toEqual({ state: "FAILURE", type: "CapExhausted", is_cap_exhausted: true, cap_usd: 5, price_usd: 29 });
      const over = await keysLabelled("celery-billing-o-2");
      expect(over).toHaveLength(1);
      expect(over[0]!.status).toBe("revoked");
    }, 90_000);
  });

  test("Airflow's task pair and Dagster's resource (stand-ins for both frameworks), Resend, Twilio, typed errors, dry runs", async () => {
    stripe.reset();
    const seen = await python("client_orchestrators.py");
    expect(seen.airflow).toEqual({
      label: "airflow-billing/scheduled__2026-11-22T06:00:00+00:00",
      scope: "billing-scheduled__2026-11-22T06:00:00+00:00",
      retry_same_intent: true,
      cap: {
        code: "cap_exhausted",
        cap: "daily",
        cap_usd: 50,
        spent_usd: 29,
        price_usd: 29,
        resets_at: true,
        retryable: false,
        status: 429,
      },
      forgot_idempotency_key: "idempotency_key_required",
      revoke_trigger_rule: "all_done",
      status_after: "revoked",
    });
    expect(seen.dagster).toEqual({ label: "dagster/8a1c2f", daily_usd_cap: 30, spent: 10, status_after: "revoked" });
    expect(seen.resend.status_after).toBe("revoked");
    expect(rs.received[0]!.headers["idempotency-key"]).toMatch(/^kb_/);
    expect(seen.twilio.sid).toStartWith("SM");
    expect(tw.received[0]!.path).toBe(`/2010-04-01/Accounts/${TWILIO_SID}/Messages.json`);
    expect(seen.policy).toEqual({ rule: "policy.max_daily_usd_cap", status: 403 });
    expect(seen.requests_error).toEqual({ type: "CapExhausted", remaining_usd: 1 });
    expect(seen.price).toMatchObject({ dry_run: true, decision: "allowed", price_usd: 0.5, price_class: "request" });
    expect(seen.price_over).toBe("cap_exhausted");
    expect(seen.repr).not.toContain("kb_live_");
  });

  test("a Kestra/Argo shell step: the client fetched from the binary, `python -m keybrake mint` prints the key for the next step", async () => {
    stripe.reset();
    const script = `set -euo pipefail
cd "$(mktemp -d)"
curl -fsS "$KEYBRAKE_URL/clients/python/keybrake.py" -o keybrake.py
python3 -m keybrake mint --vendor stripe --daily-usd-cap 30 --allow "POST /v1/payment_intents" --expires-in 2h --label "argo/billing-agent-x7k2p" > /tmp/vault_key.$$
VAULT_KEY=$(cat /tmp/vault_key.$$)
curl -fsS -X POST "$KEYBRAKE_URL/stripe/v1/payment_intents" -u "$VAULT_KEY:" -H "Idempotency-Key: argo-x7k2p-cus_1" -d amount=2900 -d currency=usd > /dev/null
python3 -m keybrake mint --vendor stripe --daily-usd-cap 5 --allow "POST /v1/payment_intents" --label "kestra/exec-42" --format kestra
python3 -m keybrake revoke --label-prefix argo/
python3 -m keybrake revoke --label-prefix nothing-matches/ || echo "exit $?"
rm -f /tmp/vault_key.$$`;
    const result = await run(["bash", "-c", script], { cwd: dir, env: { KEYBRAKE_URL: kb.url, KEYBRAKE_API_KEY: issuer } });
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const [kestra, revoked, nothing, nothingExit] = result.stdout.trim().split("\n");
    const outputs = JSON.parse(/^::(.*)::$/.exec(kestra!)![1]!).outputs;
    expect(outputs.vault_key).toStartWith("kb_live_");
    expect(outputs.vault_key_id).toStartWith("vk_");
    expect(revoked).toBe("revoked 1 key(s)");
    expect([nothing, nothingExit]).toEqual(["revoked 0 key(s)", "exit 1"]);
    expect(stripe.count("POST", "/v1/payment_intents")).toBe(1);
    const [argo] = await keysLabelled("argo/");
    expect(argo).toMatchObject({ label: "argo/billing-agent-x7k2p", status: "revoked", spent_today_usd: 29 });
  });
});

/**
 * Resolves once the worker logs "<name> ready." (at INFO, once its consumer is up and takes tasks); its stderr is
 * read to the end meanwhile. Rejects, with what it said, if it exits first.
 */
async function untilReady(proc: Subprocess<"ignore", "ignore", "pipe">): Promise<void> {
  const reader = proc.stderr.getReader();
  const decoder = new TextDecoder();
  let said = "";
  while (!/ ready\.\s*$/m.test(said)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the celery worker exited (${await proc.exited}): ${said}`);
    said += decoder.decode(value, { stream: true });
  }
  void (async () => {
    for (;;) if ((await reader.read().catch(() => ({ done: true }))).done) return;
  })();
}

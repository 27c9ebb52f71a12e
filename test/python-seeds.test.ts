import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { ADMIN_TOKEN, startKeybrake, type Harness } from "./helpers/harness";
import { mockResend, RESEND_KEY } from "./helpers/mock-resend";
import { mockStripe, STRIPE_LIVE_SECRET, type MockStripe } from "./helpers/mock-stripe";
import { mockTwilio, TWILIO_SID, type MockTwilio } from "./helpers/mock-twilio";
import type { MockVendor } from "./helpers/mock-vendor";
import { run } from "./helpers/process";

// Debian's python3-stripe, -twilio, -httpx, -requests (.ci/run installs them). Without them the test is skipped
// on a developer machine, never in CI.
const PYTHON = "/usr/bin/python3";
const probe = Bun.spawnSync([PYTHON, "-c", "import stripe, twilio, httpx, requests"], { stderr: "ignore" });
const hasPython = probe.exitCode === 0;
if (!hasPython && process.env.CI) throw new Error("CI needs python3-stripe python3-twilio python3-httpx python3-requests");

let kb: Harness;
let stripe: MockStripe;
let tw: MockTwilio;
let rs: MockVendor;
beforeAll(async () => {
  [stripe, tw, rs] = await Promise.all([mockStripe().start(), mockTwilio().start(), mockResend().start()]);
  kb = await startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url, KEYBRAKE_TWILIO_BASE_URL: tw.url, KEYBRAKE_RESEND_BASE_URL: rs.url });
});
afterAll(async () => {
  await kb.stop();
  await Promise.all([stripe.stop(), tw.stop(), rs.stop()]);
});

test.skipIf(!hasPython)(
  "the seeds' Python code works against Keybrake with only the base URL changed",
  async () => {
    const result = await run([PYTHON, join(import.meta.dir, "python/seeds.py")], {
      cwd: import.meta.dir,
      env: { KB: kb.url, KB_ADMIN: ADMIN_TOKEN },
    });
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const seen = JSON.parse(result.stdout) as Record<string, any>;

    // Airflow: one charge, the retry with the same idempotency key replayed, the next charge stopped by the cap.
    expect(seen.airflow.id).toStartWith("pi_");
    expect(seen.airflow.retry_id).toBe(seen.airflow.id);
    expect(seen.cap).toEqual({ code: "cap_exhausted", cap_hit: "true", status: 429 });
    const stripeCreates = stripe.received.filter((r) => r.path === "/v1/payment_intents");
    expect(stripeCreates).toHaveLength(2); // the Airflow charge and the Flask charge
    expect(stripeCreates.every((r) => r.headers.authorization === `Bearer ${STRIPE_LIVE_SECRET}`)).toBe(true);
    // The vendor gets the derivation of the job's key (SPEC §7), never the key itself.
    expect(stripeCreates[0]!.headers["idempotency-key"]).toMatch(/^kb_[A-Za-z0-9_-]{43}$/);

    // Flask: JSON body priced, a charge over the per-request cap refused, the key dead after DELETE.
    expect(seen.flask).toEqual({ charge_status: 200, big_status: 429, big_code: "cap_exhausted", after_revoke: "key_revoked" });

    expect(seen.twilio.sid).toStartWith("SM");
    expect(tw.received[0]!.path).toBe(`/2010-04-01/Accounts/${TWILIO_SID}/Messages.json`);
    expect(seen.resend.id).toBeString();
    expect(rs.received[0]!.headers.authorization).toBe(`Bearer ${RESEND_KEY}`);
    expect(rs.received[0]!.headers["idempotency-key"]).toMatch(/^kb_[A-Za-z0-9_-]{43}$/);
  },
  60_000,
);

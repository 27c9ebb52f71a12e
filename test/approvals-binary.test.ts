import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { verifySignature } from "../src/alerts/payload";
import { ensureBinary } from "./helpers/binary";
import { ADMIN_TOKEN } from "./helpers/harness";
import { mockStripe, STRIPE_LIVE_SECRET, type MockStripe } from "./helpers/mock-stripe";
import { run, type Started, startProcess } from "./helpers/process";
import { Receiver, waitFor } from "./helpers/receiver";

/**
 * Approvals (SPEC §15) as users meet them, on the built binary over SQLite: a refund job in stripe-python told to
 * come back, a person approving through the API; the operator's CLI deciding on the same database while the server
 * runs; and the approval events at a webhook receiver, signed, linking to the Approvals page.
 */

// Debian's python3-stripe and python3-httpx (.ci/run installs them); without them skipped here, never in CI.
const PYTHON = "/usr/bin/python3";
const hasPython = Bun.spawnSync([PYTHON, "-c", "import stripe, httpx"], { stderr: "ignore" }).exitCode === 0;
if (!hasPython && process.env.CI) throw new Error("CI needs python3-stripe python3-httpx");

type Json = Record<string, any>;
const PUBLIC_URL = "https://keybrake.example.com";
let dir: string;
let stripe: MockStripe;
let server: Started;
let receiver: Receiver;
let hook: Json;
let slack: Receiver;

const admin = async (path: string, body?: unknown, token = ADMIN_TOKEN) => {
  const res = await fetch(server.url + path, {
    method: body === undefined ? "GET" : "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Json };
};

const refundKey = async (label: string) => {
  const created = await admin("/vault/keys", {
    vendor: "stripe",
    daily_usd_cap: 5_000,
    allowed_endpoints: ["POST /v1/refunds"],
    approval_above_usd: 500,
    agent_run_label: label,
  });
  expect(created.status).toBe(201);
  return created.json as { id: string; vault_key: string };
};

/** A full refund of `charge` under `idem`, as the job sends it on every attempt. */
const refund = (vaultKey: string, charge: string, idem: string) =>
  fetch(`${server.url}/stripe/v1/refunds`, {
    method: "POST",
    headers: { authorization: `Bearer ${vaultKey}`, "content-type": "application/x-www-form-urlencoded", "idempotency-key": idem },
    body: `charge=${charge}`,
  });

/** A refund that must wait for a person: its approval's id. */
const askApproval = async (vaultKey: string, charge: string, idem: string) => {
  const res = await refund(vaultKey, charge, idem);
  expect(res.status).toBe(403);
  return ((await res.json()) as Json).error.details.approval_id as string;
};

/** `keybrake …` (the same binary) on the server's database, as the operator named ops-alice. */
const cli = async (...args: string[]) =>
  run([await ensureBinary(), ...args], { cwd: dir, env: { KEYBRAKE_DB: join(dir, "keybrake.db"), USER: "ops-alice" } });

const approverToken = async (name: string) => {
  const created = await admin("/admin/tokens", { name, role: "approver" });
  expect(created.status).toBe(201);
  return created.json.token as string;
};

describe("approvals on the built binary (SQLite)", () => {
  beforeAll(async () => {
    stripe = await mockStripe().start();
    receiver = await new Receiver().up();
    slack = await new Receiver().up();
    dir = mkdtempSync(join(tmpdir(), "keybrake-approvals-"));
    server = await startProcess([await ensureBinary()], {
      cwd: dir,
      env: {
        KEYBRAKE_HOST: "127.0.0.1",
        KEYBRAKE_PORT: "0",
        KEYBRAKE_DB: join(dir, "keybrake.db"),
        KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
        KEYBRAKE_STRIPE_SECRET_KEY: STRIPE_LIVE_SECRET,
        KEYBRAKE_STRIPE_BASE_URL: stripe.url,
        KEYBRAKE_PUBLIC_URL: PUBLIC_URL,
      },
    });
    const events = ["approval_requested", "approval_decided"];
    hook = (await admin("/alerts/webhooks", { url: receiver.url, events, label_prefix: "refund-alerts/" })).json;
    expect(hook.secret).toStartWith("whsec_");
    expect((await admin("/alerts/webhooks", { url: slack.url, events, label_prefix: "refund-alerts/", format: "slack" })).status).toBe(201);
  }, 120_000);

  afterAll(async () => {
    server?.proc.kill("SIGTERM");
    await server?.proc.exited;
    await stripe?.stop();
    await receiver?.down();
    await slack?.down();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test.skipIf(!hasPython)(
    "stripe-python: a $4,000 refund above $500 is PermissionError approval_required; approved through the API, its retry refunds once, counted once; a further retry replays",
    async () => {
      const charge = stripe.seedCharge(400_000);
      stripe.reset();
      const movedBefore = stripe.moved.length;
      const result = await run([PYTHON, join(import.meta.dir, "python/approvals.py")], {
        cwd: import.meta.dir,
        env: { KB: server.url, KB_ADMIN: ADMIN_TOKEN, KB_APPROVER: await approverToken("python-approver"), CHARGE: charge.id },
      });
      expect(result.stderr).toBe("");
      expect(result.code).toBe(0);
      const seen = JSON.parse(result.stdout) as Json;

      const { approval_id: approvalId, retry_after: retryAfter, ...first } = seen.first;
      expect(first).toEqual({ status: 403, code: "approval_required" });
      expect(approvalId).toStartWith("apr_");
      expect(Number(retryAfter)).toBeGreaterThan(0);
      expect(seen.pending_retry).toBe("approval_required");
      expect(seen.approve).toEqual({ status: 200, approval_status: "approved" });
      expect(seen.retry.id).toStartWith("re_");
      expect(seen.retry).toEqual({ id: seen.retry.id, amount: 400_000, replayed: null });
      expect(seen.again).toEqual({ id: seen.retry.id, replayed: "true" });

      // One refund reached the mock, and it moved $4,000 once; the ledger counts it once, nothing left held.
      expect(stripe.count("POST", "/v1/refunds")).toBe(1);
      expect(stripe.moved.slice(movedBefore)).toEqual([{ kind: "/v1/refunds", amount: 400_000, currency: "usd" }]);
      const key = (await admin(`/vault/keys/${seen.key_id}`)).json;
      expect(key).toMatchObject({ spent_today_usd: 4_000, spent_total_usd: 4_000, held_usd: 0, remaining_today_usd: 1_000 });
      const approval = (await admin(`/approvals/${approvalId}`)).json;
      expect(approval).toMatchObject({
        status: "used",
        price_usd: 4_000,
        decided_by: expect.stringMatching(/^tok_.* \(python-approver\)$/),
      });
    },
    60_000,
  );

  test("the CLI lists pending approvals and decides them as its user, on the database the server runs on; the server honours both", async () => {
    const key = await refundKey("refund-cli/run_1");
    const [big, bigger] = [stripe.seedCharge(90_000), stripe.seedCharge(120_000)];
    const toApprove = await askApproval(key.vault_key, big.id, "cli-approve");
    const toDeny = await askApproval(key.vault_key, bigger.id, "cli-deny");

    const listed = await cli("approvals", "list", "--status", "pending", "--json");
    expect(listed.stderr).toBe("");
    expect(listed.code).toBe(0);
    const pending = JSON.parse(listed.stdout) as Json[];
    expect(pending.filter((a) => a.key_id === key.id).map((a) => [a.id, a.price_usd, a.label, a.path])).toEqual([
      [toDeny, 1_200, "refund-cli/run_1", "/v1/refunds"],
      [toApprove, 900, "refund-cli/run_1", "/v1/refunds"],
    ]);
    const table = await cli("approvals", "list");
    expect(table.stdout.split("\n")[0]).toMatch(/^id\s+status\s+label\s+price\s+method\s+path/);

    const approved = await cli("approvals", "approve", toApprove, "--json");
    expect(approved.code).toBe(0);
    expect(JSON.parse(approved.stdout)).toMatchObject([{ id: toApprove, status: "approved", decided_by: "cli:ops-alice" }]);
    const denied = await cli("approvals", "deny", toDeny, "--reason", "customer already refunded by hand", "--json");
    expect(denied.code).toBe(0);
    expect(JSON.parse(denied.stdout)).toMatchObject([
      { status: "denied", decided_by: "cli:ops-alice", reason: "customer already refunded by hand" },
    ]);
    // Decided once: a second decision is refused, naming who decided, and exits non-zero.
    const twice = await cli("approvals", "approve", toDeny);
    expect(twice.code).toBe(2);
    expect(twice.stderr.trim()).toBe(
      `keybrake: approval_not_pending: Approval ${toDeny} is denied (by cli:ops-alice): it can no longer be decided.`,
    );

    // The server reads the CLI's decisions: the approved refund goes out, the denied one is refused, its hold released.
    stripe.reset();
    expect((await refund(key.vault_key, big.id, "cli-approve")).status).toBe(200);
    const refused = await refund(key.vault_key, bigger.id, "cli-deny");
    expect(refused.status).toBe(403);
    expect(refused.headers.get("x-keybrake-error")).toBe("approval_denied");
    expect(stripe.count("POST", "/v1/refunds")).toBe(1);
    expect((await admin(`/vault/keys/${key.id}`)).json).toMatchObject({ spent_today_usd: 900, held_usd: 0 });
    // Who decided is in the admin events.
    const events = (await admin("/admin/events?limit=100")).json.data as Json[];
    const decisions = events.filter((e) => e.target === toApprove || e.target === toDeny);
    expect(decisions.map((e) => [e.action, e.actor]).sort()).toEqual([
      ["approval.approve", "cli:ops-alice"],
      ["approval.deny", "cli:ops-alice"],
    ]);

    const unknown = await cli("approvals", "deny", "apr_nope");
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("not_found");
  }, 60_000);

  test("the receiver gets approval_requested, signed and linking to the Approvals page, then approval_decided with who decided; Slack's text links there too", async () => {
    const key = await refundKey("refund-alerts/run_1");
    const approvalId = await askApproval(key.vault_key, stripe.seedCharge(75_000).id, "alerted-1");
    const approver = await approverToken("alice-on-call");
    expect((await admin(`/approvals/${approvalId}/deny`, { reason: "not on a Sunday" }, approver)).status).toBe(200);

    const ofApproval = (r: Receiver, type: string) =>
      r.received.filter((got) => got.json.type === type && got.json.data?.approval_id === approvalId);
    await waitFor(() => ofApproval(receiver, "approval_decided").length === 1, 20_000, "approval_decided at the receiver");
    const [requested] = ofApproval(receiver, "approval_requested");
    expect(requested).toBeDefined();
    expect(verifySignature(hook.secret, requested!.body, requested!.headers["keybrake-signature"]!, Date.now() / 1000)).toBe(true);
    expect(requested!.headers["keybrake-event-type"]).toBe("approval_requested");
    expect(requested!.json).toMatchObject({
      key: { id: key.id, label: "refund-alerts/run_1", vendor: "stripe" },
      data: { approval_id: approvalId, price_usd: 750, method: "POST", path: "/v1/refunds" },
      dashboard_url: `${PUBLIC_URL}/ui#/approvals`,
    });
    expect(Date.parse(requested!.json.data.expires_at)).toBeGreaterThan(Date.now() + 55 * 60_000);

    const [decided] = ofApproval(receiver, "approval_decided");
    expect(verifySignature(hook.secret, decided!.body, decided!.headers["keybrake-signature"]!, Date.now() / 1000)).toBe(true);
    expect(decided!.json.data).toMatchObject({
      status: "denied",
      reason: "not on a Sunday",
      by: expect.stringMatching(/\(alice-on-call\)$/),
    });
    expect(decided!.json.dashboard_url).toBe(`${PUBLIC_URL}/ui#/approvals`);

    // Slack: the request and the decision, each one line linking to the page (a link never decides by itself).
    await waitFor(() => slack.received.filter((r) => String(r.json.text).includes(approvalId)).length === 2, 20_000, "two Slack posts");
    const texts = slack.received.map((r) => String(r.json.text)).filter((t) => t.includes(approvalId));
    expect(texts.some((t) => t.includes("asks to POST /v1/refunds for 750.00 USD"))).toBe(true);
    expect(texts.some((t) => t.includes("was denied by") && t.includes("not on a Sunday"))).toBe(true);
    for (const text of texts) expect(text).toEndWith(`<${PUBLIC_URL}/ui#/approvals|Open in Keybrake>`);
    // Only the labels the webhooks asked for: the other tests' approvals were not sent.
    expect(receiver.received.every((r) => r.json.key?.label?.startsWith("refund-alerts/"))).toBe(true);
  }, 60_000);
});

import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BrowserContext, Page, Request as PwRequest } from "playwright-core";
import { ensureBinary } from "./helpers/binary";
import { ADMIN_TOKEN } from "./helpers/harness";
import { mockStripe, STRIPE_LIVE_SECRET, type MockStripe } from "./helpers/mock-stripe";
import { type Started, startProcess } from "./helpers/process";

// SPEC §11 in a real browser (Debian's chromium driven by playwright-core), against the built binary: sign in,
// watch two runs of one family spend, revoke the family after a confirmation that says 2, sign out. Nothing the
// page asks for may leave 127.0.0.1. `.ci/run` installs chromium; without it locally, this file says so and skips.

const CHROMIUM = "/usr/bin/chromium";
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) console.warn(`ui.browser.test.ts: SKIPPED: ${CHROMIUM} is missing (apt-get install -y chromium; .ci/run installs it)`);

// In CI, .ci/run installs it: a missing browser there is a failure, never a skip.
test.if(!hasChromium && Boolean(process.env.CI))("CI has Chromium (.ci/run installs it; this fails only when it could not)", () => {
  throw new Error(`${CHROMIUM} is missing in CI: .ci/run should have installed it`);
});

/** Screenshots to look at (git-ignored). */
const SHOTS = join(import.meta.dir, "..", "test-artifacts", "ui");
/**
 * The flags that keep Chromium from calling out (no background networking, updates, sync or QUIC), and from work
 * a test of one local site does not need: one renderer process (no site isolation), no throttling of a page that
 * is not in front (a wait would last longer). Measured on the file alone: 18 s → 15 s, 13.4 → 12.4 s of CPU.
 */
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-extensions",
  "--renderer-process-limit=1",
  "--disable-site-isolation-trials",
  "--disable-renderer-backgrounding",
  "--disable-background-timer-throttling",
];

type Json = Record<string, any>;
let stripe: MockStripe;
let server: Started;
let dir: string;
let context: BrowserContext;
let page: Page;
/** Every URL the browser asked for that was not on 127.0.0.1 (each was aborted). */
const outside: string[] = [];
/** Every request the page made, for the CSRF header check. */
const requests: PwRequest[] = [];
const pageErrors: string[] = [];

const admin = (path: string, body?: unknown, method?: string) =>
  fetch(server.url + path, {
    method: method ?? (body === undefined ? "GET" : "POST"),
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });

async function issue(label: string, extra: Json = {}): Promise<{ id: string; vault_key: string }> {
  const res = await admin("/vault/keys", {
    vendor: "stripe",
    daily_usd_cap: 500,
    allowed_endpoints: ["POST /v1/payment_intents"],
    label,
    ...extra,
  });
  expect(res.status).toBe(201);
  return (await res.json()) as { id: string; vault_key: string };
}

const charge = (key: string, amount: number) =>
  fetch(`${server.url}/stripe/v1/payment_intents`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/x-www-form-urlencoded" },
    body: `amount=${amount}&currency=usd`,
  });

/** A link of the page's navigation. */
const nav = (name: string) => page.getByRole("navigation", { name: "Pages" }).getByRole("link", { name, exact: true });

/**
 * Full-page screenshots to look at, with KEYBRAKE_UI_SCREENSHOTS=1: they cost Chromium ~3 s of CPU a run, and
 * nothing asserts on them.
 */
const WANTS_SHOTS = process.env.KEYBRAKE_UI_SCREENSHOTS === "1";
const shot = async (name: string) => {
  if (WANTS_SHOTS) await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
};

async function launchChromium(): Promise<BrowserContext> {
  const { chromium } = await import("playwright-core");
  return chromium.launchPersistentContext(join(dir, "chromium-profile"), {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 900 },
  });
}

describe.skipIf(!hasChromium)("the dashboard in Chromium, served by dist/keybrake", () => {
  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    dir = mkdtempSync(join(tmpdir(), "keybrake-ui-"));
    // Chromium starts while Keybrake does.
    const launched = launchChromium().then((browser) => {
      context = browser;
    });
    stripe = await mockStripe().start();
    server = await startProcess([await ensureBinary()], {
      cwd: dir,
      env: {
        KEYBRAKE_HOST: "127.0.0.1",
        KEYBRAKE_PORT: "0",
        KEYBRAKE_DB: join(dir, "keybrake.db"),
        KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
        KEYBRAKE_STRIPE_SECRET_KEY: STRIPE_LIVE_SECRET,
        KEYBRAKE_STRIPE_BASE_URL: stripe.url,
      },
    });
    await launched;
    await context.route("**/*", (route) => {
      const url = new URL(route.request().url());
      if (url.hostname === "127.0.0.1") return route.continue();
      outside.push(url.href);
      return route.abort();
    });
    page = context.pages()[0] ?? (await context.newPage());
    // Waits end when the page shows what they wait for; the bound only matters on a machine busy with other tests.
    page.setDefaultTimeout(30_000);
    page.on("request", (r) => requests.push(r));
    page.on("pageerror", (err) => pageErrors.push(err.message));
    page.on("console", (m) => {
      // A 401 is how the page learns it is signed out (GET /ui/session before sign-in): not an error of the page.
      if (m.type() === "error" && !/status of 401/.test(m.text())) pageErrors.push(m.text());
    });
  }, 120_000);

  afterAll(async () => {
    await context?.close();
    server?.proc.kill("SIGTERM");
    await server?.proc.exited;
    await stripe?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("sign in, see two runs of a family spend, revoke the family (the confirmation says 2), sign out", async () => {
    // Keys for two runs of one family and one other, made through the API, and calls through the proxy.
    const run1 = await issue("airflow-billing/run_2026_11_22");
    const run2 = await issue("airflow-billing/run_2026_11_23");
    const other = await issue("celery-emails/task_81");
    for (const [key, amount] of [
      [run1, 1250],
      [run2, 800],
      [run1, 500],
      [other, 300],
    ] as const) {
      expect((await charge(key.vault_key, amount)).status).toBe(200);
    }

    await page.goto(`${server.url}/ui`);
    await page.getByLabel("Token").fill(ADMIN_TOKEN);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Overview" }).waitFor();

    // The session: an HttpOnly, SameSite=Strict cookie that scripts cannot see; nothing kept in web storage.
    const cookies = await context.cookies(server.url);
    expect(cookies.map((c) => c.name)).toEqual(["keybrake_session"]);
    const cookie = cookies[0]!;
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: "Strict", secure: false, path: "/" });
    const hours = (cookie.expires * 1000 - Date.now()) / 3_600_000;
    expect(hours).toBeGreaterThan(7.9);
    expect(hours).toBeLessThanOrEqual(8);
    // Runs in the page (this file is type-checked without the DOM's types).
    const storage = await page.evaluate(() => {
      const w = globalThis as any;
      return {
        cookie: w.document.cookie as string,
        local: JSON.stringify({ ...w.localStorage }),
        session: JSON.stringify({ ...w.sessionStorage }),
      };
    });
    expect(storage.cookie).toBe("");
    for (const stored of [storage.local, storage.session]) {
      expect(stored).toBe("{}");
      expect(stored).not.toContain(ADMIN_TOKEN);
      expect(stored).not.toContain(cookie.value);
    }

    // Overview: today's spend by vendor (12.50 + 8.00 + 5.00 + 3.00) and the runs spending most.
    const today = page.getByRole("region", { name: "Spend today (UTC)" });
    await today.getByText("$28.50", { exact: true }).waitFor();
    await page.getByRole("region", { name: "Runs spending most, last hour" }).getByText("airflow-billing/run_2026_11_22").waitFor();
    await shot("overview-1280");

    // Runs: the family and its two runs with their spend against the daily cap.
    await nav("Runs").click();
    await page.getByRole("heading", { name: "Runs" }).waitFor();
    const run1Row = page.getByRole("row", { name: /airflow-billing\/run_2026_11_22/ });
    await run1Row.getByText("$17.50 of $500.00").waitFor();
    await page
      .getByRole("row", { name: /airflow-billing\/run_2026_11_23/ })
      .getByText("$8.00 of $500.00")
      .waitFor();
    await page
      .getByRole("row", { name: /celery-emails\/task_81/ })
      .getByText("$3.00 of $500.00")
      .waitFor();
    expect(await page.getByText("2 keys, 2 active").count()).toBe(1);
    await shot("runs-1280");
    // The README's picture (docs/dashboard.png is a copy of this one).
    if (WANTS_SHOTS) await page.screenshot({ path: join(SHOTS, "readme-runs.png"), clip: { x: 0, y: 0, width: 1280, height: 500 } });
    await page.setViewportSize({ width: 800, height: 900 });
    await shot("runs-800");
    await nav("Overview").click();
    await page.getByRole("region", { name: "Spend today (UTC)" }).getByText("$28.50", { exact: true }).waitFor();
    await shot("overview-800");
    await nav("Runs").click();

    // Revoke the family, by keyboard: the confirmation states the count.
    const revokeFamily = page.getByRole("button", { name: "Revoke family airflow-billing/" });
    await revokeFamily.focus();
    await page.keyboard.press("Enter");
    const dialog = page.getByRole("dialog", { name: "Revoke the airflow-billing/ family?" });
    await dialog.waitFor();
    expect(await dialog.textContent()).toContain("2 active keys");
    await shot("revoke-family-800");
    await page.setViewportSize({ width: 1280, height: 900 });
    await dialog.getByRole("button", { name: "Revoke 2 keys" }).click();
    await page.getByRole("status").getByText("Revoked 2 keys of airflow-billing/").waitFor();

    // The revocation went through the admin API with the cookie and the CSRF token; it counts on the next call.
    const revoke = requests.find((r) => r.method() === "POST" && new URL(r.url()).pathname === "/vault/keys/revoke")!;
    expect(revoke).toBeDefined();
    expect((await revoke.allHeaders())["x-csrf-token"]).toMatch(/^[0-9A-Za-z]{43}$/);
    expect(await revoke.postDataJSON()).toEqual({ label_prefix: "airflow-billing/" });
    for (const key of [run1, run2]) {
      const res = await charge(key.vault_key, 100);
      expect(res.status).toBe(401);
      expect(((await res.json()) as Json).code).toBe("key_revoked");
    }
    expect((await charge(other.vault_key, 100)).status).toBe(200);

    // A key's page: its policy, spend chart and calls.
    await page.getByRole("combobox", { name: "Show" }).selectOption({ label: "all keys" });
    await page.getByRole("link", { name: "celery-emails/task_81" }).click();
    await page.getByRole("heading", { name: /celery-emails\/task_81/ }).waitFor();
    await page.getByRole("img", { name: /Cumulative spend of this key: \$4\.00 in 2 priced calls/ }).waitFor();
    await shot("key-1280");

    // Audit, filtered by the family, with its export links.
    await nav("Audit").click();
    await page.getByLabel("Label prefix").fill("airflow-billing/");
    await page.getByRole("button", { name: "Apply" }).click();
    await page.getByRole("link", { name: "CSV" }).waitFor();
    expect(await page.getByRole("link", { name: "CSV" }).getAttribute("href")).toBe(
      "/audit/export?label_prefix=airflow-billing%2F&format=csv",
    );
    await page.getByRole("cell", { name: "key_revoked" }).first().waitFor();
    await shot("audit-1280");

    // The operators' pages load (nothing to resolve, no webhooks yet: their empty states).
    await nav("Holds").click();
    await page.getByText("No orphaned holds. Nothing needs resolving.").waitFor();
    await nav("Tokens").click();
    await page.getByRole("heading", { name: "Create a token" }).waitFor();
    await nav("Alerts").click();
    await page.getByRole("heading", { name: "Deliveries" }).waitFor();

    // Sign out: the session ends on the server and its cookie is gone from the browser.
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    expect((await context.cookies(server.url)).map((c) => c.name)).toEqual([]);
    const replay = await fetch(`${server.url}/vault/keys`, { headers: { cookie: `keybrake_session=${cookie.value}` } });
    expect(replay.status).toBe(401);

    expect(outside).toEqual([]);
    expect(requests.every((r) => new URL(r.url()).hostname === "127.0.0.1")).toBe(true);
    expect(pageErrors).toEqual([]);
  }, 120_000);

  test("a viewer sees the runs but no control that writes, and no Tokens page", async () => {
    const created = await admin("/admin/tokens", { name: "ui-viewer", role: "viewer" });
    const { token } = (await created.json()) as { token: string };
    await context.clearCookies();
    await page.goto("about:blank");
    await page.goto(`${server.url}/ui#/runs`);
    await page.getByLabel("Token").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Runs" }).waitFor();
    await page.getByRole("combobox", { name: "Show" }).selectOption({ label: "all keys" });
    await page.getByRole("link", { name: "celery-emails/task_81" }).waitFor();
    expect(await page.getByRole("button", { name: /Revoke/ }).count()).toBe(0);
    expect(await nav("Tokens").count()).toBe(0);
    expect(await nav("Alerts").count()).toBe(0);
    await page.getByRole("link", { name: "celery-emails/task_81" }).click();
    await page.getByRole("heading", { name: "Policy" }).waitFor();
    expect(await page.getByRole("button", { name: /Revoke|Save/ }).count()).toBe(0);
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    expect(outside).toEqual([]);
    expect(pageErrors).toEqual([]);
  }, 60_000);

  test("Approvals: an admin approves and denies from the page, with the CSRF header (a POST without it is refused); an approver decides and reads like a viewer; a viewer sees no control that decides", async () => {
    const key = await issue("refunds/run_ui", { daily_usd_cap: 10_000, allowed_endpoints: ["POST /v1/refunds"], approval_above_usd: 500 });
    /** A full refund of a charge of `cents`, under `idem`: a call that waits for a person. */
    const refund = (charge: string, idem: string) =>
      fetch(`${server.url}/stripe/v1/refunds`, {
        method: "POST",
        headers: { authorization: `Bearer ${key.vault_key}`, "content-type": "application/x-www-form-urlencoded", "idempotency-key": idem },
        body: `charge=${charge}`,
      });
    const ask = async (cents: number, idem: string) => {
      const charge = stripe.seedCharge(cents).id;
      const res = await refund(charge, idem);
      expect(res.status).toBe(403);
      return { charge, id: ((await res.json()) as Json).error.details.approval_id as string };
    };
    const toApprove = await ask(400_000, "ui-refund-1");
    const toDeny = await ask(120_000, "ui-refund-2");
    const signIn = async (token: string) => {
      await context.clearCookies();
      await page.goto("about:blank");
      await page.goto(`${server.url}/ui#/approvals`);
      await page.getByLabel("Token").fill(token);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByRole("heading", { name: "Approvals" }).waitFor();
    };
    const rowOf = (id: string) => page.getByRole("row", { name: new RegExp(id) });

    await signIn(ADMIN_TOKEN);
    // Each pending call: its key (a link), label, method and path, price, who asked and when, its expiry.
    const row = rowOf(toApprove.id);
    await row.getByRole("link", { name: "refunds/run_ui" }).waitFor();
    expect(await row.getByRole("link", { name: "refunds/run_ui" }).getAttribute("href")).toBe(`#/keys/${key.id}`);
    for (const text of ["POST /v1/refunds", "$4,000.00", "by admin", "pending", /^in (59|60) min$/])
      await row.getByText(text).first().waitFor();
    await shot("approvals-1280");
    await page.setViewportSize({ width: 800, height: 900 });
    await shot("approvals-800");
    await page.setViewportSize({ width: 1280, height: 900 });

    // A write with the page's session cookie but without the CSRF token is refused: the approval stays pending.
    const session = (await context.cookies(server.url)).find((c) => c.name === "keybrake_session")!;
    const forged = await fetch(`${server.url}/approvals/${toApprove.id}/approve`, {
      method: "POST",
      headers: { cookie: `keybrake_session=${session.value}` },
    });
    expect(forged.status).toBe(403);
    expect(((await forged.json()) as Json).code).toBe("csrf_failed");
    expect(((await (await admin(`/approvals/${toApprove.id}`)).json()) as Json).status).toBe("pending");

    // Approve, after a confirmation that says what goes out; the job's retry then goes out once.
    await page.getByRole("button", { name: `Approve ${toApprove.id}` }).click();
    const approveDialog = page.getByRole("dialog", { name: "Approve this call?" });
    expect(await approveDialog.textContent()).toContain("POST /v1/refunds for $4,000.00 of refunds/run_ui goes out once");
    await approveDialog.getByRole("button", { name: "Approve $4,000.00" }).click();
    await page.getByRole("status").getByText(`Approved ${toApprove.id}`).waitFor();
    const approveRequest = requests.find(
      (r) => r.method() === "POST" && new URL(r.url()).pathname === `/approvals/${toApprove.id}/approve`,
    )!;
    expect((await approveRequest.allHeaders())["x-csrf-token"]).toMatch(/^[0-9A-Za-z]{43}$/);
    await rowOf(toApprove.id).getByText("approved", { exact: true }).waitFor();
    expect(await page.getByRole("button", { name: `Approve ${toApprove.id}` }).count()).toBe(0);
    stripe.reset();
    expect((await refund(toApprove.charge, "ui-refund-1")).status).toBe(200);
    expect(stripe.count("POST", "/v1/refunds")).toBe(1);

    // Deny with a reason typed in the confirmation.
    await page.getByRole("button", { name: `Deny ${toDeny.id}` }).click();
    const denyDialog = page.getByRole("dialog", { name: "Deny this call?" });
    await denyDialog.getByLabel(/Reason/).fill("refunded by hand already");
    await denyDialog.getByRole("button", { name: "Deny $1,200.00" }).click();
    await page.getByRole("status").getByText(`Denied ${toDeny.id}`).waitFor();
    await rowOf(toDeny.id).getByText("“refunded by hand already”").waitFor();
    const denyRequest = requests.find((r) => r.method() === "POST" && new URL(r.url()).pathname === `/approvals/${toDeny.id}/deny`)!;
    expect(await denyRequest.postDataJSON()).toEqual({ reason: "refunded by hand already" });
    expect((await refund(toDeny.charge, "ui-refund-2")).headers.get("x-keybrake-error")).toBe("approval_denied");

    // An approver signs in, sees what a viewer sees (no Tokens, no revoke), and the decide buttons.
    const pending = await ask(90_000, "ui-refund-3");
    const approver = (await (await admin("/admin/tokens", { name: "ui-approver", role: "approver" })).json()) as Json;
    await signIn(approver.token);
    await page.getByRole("button", { name: `Approve ${pending.id}` }).waitFor();
    expect(await nav("Tokens").count()).toBe(0);
    await nav("Runs").click();
    await page.getByRole("link", { name: "refunds/run_ui" }).waitFor();
    expect(await page.getByRole("button", { name: /Revoke/ }).count()).toBe(0);

    // A viewer reads the page and sees no control that decides.
    const viewer = (await (await admin("/admin/tokens", { name: "ui-approvals-viewer", role: "viewer" })).json()) as Json;
    await signIn(viewer.token);
    await rowOf(pending.id).getByText("$900.00").waitFor();
    await rowOf(toDeny.id).getByText("denied", { exact: true }).waitFor();
    expect(await page.getByRole("button", { name: /^(Approve|Deny)/ }).count()).toBe(0);
    expect(await page.getByRole("columnheader", { name: "Decide" }).count()).toBe(0);
    await shot("approvals-viewer-1280");
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    expect(outside).toEqual([]);
    expect(pageErrors).toEqual([]);
  }, 60_000);

  test("Budgets: a tree with spend against caps, a budget near its cap and its keys; an admin sets its cap, a viewer cannot", async () => {
    const created = async (body: Json) => {
      const res = await admin("/budgets", body);
      expect(res.status).toBe(201);
      return (await res.json()) as Json;
    };
    const team = await created({ name: "billing-team", daily_usd_cap: 500 });
    const dag = await created({ name: "nightly-dag", daily_usd_cap: 100, parent_id: team.id });
    await issue("nightly-dag/run_1", { budget_id: dag.id });
    // $85 of the DAG's $100 spent today (and so of its team's $500), written as the ledger would: how calls count at
    // budgets is the ledger's to test; this page shows what its rows say.
    const db = new Database(join(dir, "keybrake.db"));
    try {
      db.exec("PRAGMA busy_timeout = 5000");
      const today = new Date().toISOString().slice(0, 10);
      for (const id of [team.id, dag.id]) {
        db.query("UPDATE budgets SET spent_total_micros = 85000000 WHERE id = ?").run(id);
        db.query("INSERT INTO budget_days (budget_id, day, settled_micros, held_micros) VALUES (?, ?, 85000000, 0)").run(id, today);
      }
    } finally {
      db.close();
    }

    const signIn = async (token: string) => {
      await context.clearCookies();
      await page.goto("about:blank");
      await page.goto(`${server.url}/ui#/budgets`);
      await page.getByLabel("Token").fill(token);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByRole("heading", { name: "Budgets", exact: true }).waitFor();
    };
    await signIn(ADMIN_TOKEN);
    // The tree: the DAG's budget inside its team's, each with its spend against its cap.
    const teamRegion = page.getByRole("region", { name: /^billing-team/ });
    const dagRegion = teamRegion.getByRole("region", { name: /^nightly-dag/ });
    await dagRegion.getByText("$85.00 of $100.00").first().waitFor();
    await teamRegion.getByText("$85.00 of $500.00").first().waitFor();
    expect(await dagRegion.getByText("near its cap (85%)").count()).toBe(1);
    expect(await teamRegion.getByText(/near its cap/).count()).toBe(1);
    await dagRegion.getByRole("link", { name: "nightly-dag/run_1" }).waitFor();
    await shot("budgets-1280");
    await page.setViewportSize({ width: 800, height: 900 });
    await shot("budgets-800");
    await page.setViewportSize({ width: 1280, height: 900 });

    // An admin raises the DAG's daily cap: a labelled field, saved with the session's CSRF token.
    await dagRegion.getByText("Set caps").click();
    await page.getByLabel("Daily cap (USD) of nightly-dag").fill("200");
    await page.getByRole("button", { name: "Save caps of nightly-dag" }).click();
    await page.getByRole("status").getByText("Saved the caps of nightly-dag").waitFor();
    await dagRegion.getByText("$85.00 of $200.00").first().waitFor();
    expect(await dagRegion.getByText(/near its cap/).count()).toBe(0);
    const patch = requests.find((r) => r.method() === "PATCH" && new URL(r.url()).pathname === `/budgets/${dag.id}`)!;
    expect((await patch.allHeaders())["x-csrf-token"]).toMatch(/^[0-9A-Za-z]{43}$/);
    expect(await patch.postDataJSON()).toEqual({ daily_usd_cap: 200 });

    // A key's page names its budget and leads back to it.
    await dagRegion.getByRole("link", { name: "nightly-dag/run_1" }).click();
    await page.getByRole("heading", { name: "Policy" }).waitFor();
    await page.getByRole("link", { name: "nightly-dag", exact: true }).click();
    await page.getByRole("heading", { name: /^nightly-dag/ }).waitFor();
    expect(new URL(page.url()).hash).toBe(`#/budgets/${dag.id}`);

    // A viewer sees the same tree and no control that writes.
    const viewer = await admin("/admin/tokens", { name: "ui-budget-viewer", role: "viewer" });
    await signIn(((await viewer.json()) as Json).token);
    await dagRegion.getByText("$85.00 of $200.00").first().waitFor();
    expect(await page.getByText("Set caps").count()).toBe(0);
    expect(await page.getByRole("button", { name: /Save/ }).count()).toBe(0);
    expect(await page.getByRole("spinbutton").count()).toBe(0);
    await shot("budgets-viewer-1280");
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    expect(outside).toEqual([]);
    expect(pageErrors).toEqual([]);
  }, 60_000);

  test("Runs: families on - and :, any typed prefix with its count and its revocation, near the cap, observe keys not braking; a key's chart with its daily cap and marks; the audit at 800 px", async () => {
    const o1 = await issue("celery-billing-o-1", { daily_usd_cap: 50 });
    const o2 = await issue("celery-billing-o-2", { daily_usd_cap: 50 });
    const watched = await issue("flask-u9-r1", { daily_usd_cap: 40, enforcement: "observe" });
    const once = (key: string, amount: number, idem: string) =>
      fetch(`${server.url}/stripe/v1/payment_intents`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/x-www-form-urlencoded", "idempotency-key": idem },
        body: `amount=${amount}&currency=usd`,
      });
    expect((await charge(o1.vault_key, 4500)).status).toBe(200);
    expect((await once(o2.vault_key, 500, "o-2")).status).toBe(200);
    expect((await once(o2.vault_key, 500, "o-2")).headers.get("x-keybrake-replayed")).toBe("true");
    expect((await charge(watched.vault_key, 2900)).status).toBe(200);
    expect((await charge(watched.vault_key, 2900)).headers.get("x-keybrake-would-deny")).toBe("cap_exhausted");
    // What makes an audit row wide: a long run label, a long path.
    const backfill = await issue("airflow-billing/scheduled__2026-11-22T06:00:00+00:00_backfill_of_the_whole_month");
    const long = await fetch(`${server.url}/stripe/v1/payment_intents/pi_3PqQ1c2eZvKYlo2C0bGkXyZabcdefghij/increment_authorization`, {
      method: "POST",
      headers: { authorization: `Bearer ${backfill.vault_key}`, "content-type": "application/x-www-form-urlencoded" },
      body: "amount=100",
    });
    expect(long.headers.get("x-keybrake-error")).toBe("endpoint_not_allowed");

    await context.clearCookies();
    await page.goto("about:blank");
    await page.goto(`${server.url}/ui#/runs`);
    await page.getByLabel("Token").fill(ADMIN_TOKEN);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Runs" }).waitFor();
    // Labels without a "/" have families too.
    await page
      .getByRole("rowgroup")
      .filter({ hasText: /^celery- 2 keys, 2 active/ })
      .waitFor();
    await page
      .getByRole("row", { name: /flask-u9-r1/ })
      .getByText("not braking")
      .waitFor();

    // Near the cap: the $45 of $50 run and the observed run past its cap; not the $5 one.
    await page.getByLabel(/Near the cap/).check();
    await page.getByRole("link", { name: "celery-billing-o-1" }).waitFor();
    await page.getByRole("link", { name: "flask-u9-r1" }).waitFor();
    expect(await page.getByRole("link", { name: "celery-billing-o-2" }).count()).toBe(0);
    await page.getByLabel(/Near the cap/).uncheck();

    // Any prefix, with the count of what it would revoke before anything is revoked.
    await page.getByLabel("Label prefix").fill("celery-billing-o-");
    await page.getByText("2 active keys start with celery-billing-o-.").waitFor();
    await shot("runs-prefix-1280");
    await page.getByRole("button", { name: "Revoke 2 keys starting with celery-billing-o-" }).click();
    const dialog = page.getByRole("dialog", { name: "Revoke the celery-billing-o- family?" });
    expect(await dialog.textContent()).toContain("2 active keys");
    await dialog.getByRole("button", { name: "Revoke 2 keys" }).click();
    await page.getByRole("status").getByText("Revoked 2 keys of celery-billing-o-").waitFor();
    expect((await charge(o1.vault_key, 100)).headers.get("x-keybrake-error")).toBe("key_revoked");
    await page.getByLabel("Label prefix").fill("");

    // The observed key's page says it does not brake; its chart shows its daily cap and the call that went past it.
    await page.getByRole("link", { name: "flask-u9-r1" }).click();
    await page
      .getByRole("heading", { name: /flask-u9-r1/ })
      .getByText("not braking")
      .waitFor();
    await page.getByRole("img", { name: /daily cap \$40\.00; 1 over a limit, forwarded \(observe\)/ }).waitFor();
    await page.getByRole("cell", { name: /would deny: cap_exhausted/ }).waitFor();
    await shot("key-observe-1280");
    await page.goto(`${server.url}/ui#/keys/${o2.id}`);
    await page.getByRole("img", { name: /daily cap \$50\.00; 1 replayed/ }).waitFor();

    // The audit at 800 px: every column of its table within the page, none cut off.
    await page.setViewportSize({ width: 800, height: 900 });
    await nav("Audit").click();
    await page.getByRole("cell", { name: /would deny: cap_exhausted/ }).waitFor();
    const fits = await page.evaluate(() => {
      const w = globalThis as any;
      const wrap = w.document.querySelector(".table-wrap");
      return {
        scroll: wrap.scrollWidth as number,
        client: wrap.clientWidth as number,
        page: w.document.documentElement.scrollWidth as number,
      };
    });
    expect(fits.scroll).toBeLessThanOrEqual(fits.client);
    expect(fits.page).toBeLessThanOrEqual(800);
    for (const column of ["When (UTC)", "Run", "Call", "Status", "Decision", "Cost"])
      await page.getByRole("columnheader", { name: column }).waitFor();
    await shot("audit-800");
    await page.setViewportSize({ width: 1280, height: 900 });
    expect(outside).toEqual([]);
    expect(pageErrors).toEqual([]);
  }, 60_000);
});

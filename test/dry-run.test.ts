import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { cliInProcess } from "./helpers/cli";
import { startKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, type MockStripe } from "./helpers/mock-stripe";

// Dry runs (SPEC §16): `X-Keybrake-Dry-Run: 1` runs every check and the pricing, a pre-flight read included, and
// answers 200 with the verdict; nothing is held, nothing forwarded, one audit row `decision: dry_run`.

type Json = Record<string, any>;
let kb: Harness;
let stripe: MockStripe;
beforeAll(async () => {
  stripe = await mockStripe().start();
  kb = await startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url });
});
afterAll(async () => {
  await kb.stop();
  await stripe.stop();
});
beforeEach(() => stripe.reset());

const DRY = { "x-keybrake-dry-run": "1" };
const post = (vaultKey: string, path: string, body: string, headers: Record<string, string> = DRY) =>
  fetch(`${kb.url}/stripe${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${vaultKey}`, "content-type": "application/x-www-form-urlencoded", ...headers },
    body,
  });
const json = async (res: Response) => (await res.json()) as Json;
const refundKey = (cap: number, extra: Json = {}) =>
  kb.issueKey({ vendor: "stripe", daily_usd_cap: cap, allowed_endpoints: ["POST /v1/refunds", "POST /v1/payment_intents"], ...extra });
/** What the key holds and has spent, and its ledger entries: a dry run leaves all of them as they were. */
const books = async (keyId: string) => ({
  key: await json(await kb.admin(`/vault/keys/${keyId}`)),
  entries: await kb.readDb((db) => db.query("SELECT count(*) AS n FROM ledger_entries WHERE key_id = ?").get(keyId) as { n: number }),
});

describe("a dry run", () => {
  test("of a full refund reads the charge (pre-flight), answers its price and allowed, and holds and forwards nothing", async () => {
    const charge = stripe.seedCharge(4500);
    const key = await refundKey(100);
    const res = await post(key.vault_key, "/v1/refunds", `charge=${charge.id}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("x-keybrake-dry-run")).toBe("true");
    const verdict = await json(res);
    expect(verdict).toMatchObject({
      dry_run: true,
      decision: "allowed",
      would_deny: null,
      price_usd: 45,
      price_class: "object",
      remaining_today_usd: 100,
      budget_id: null,
      approval_required: false,
      key_id: key.id,
    });
    // The pre-flight GET, and nothing else: the refund never reached Stripe, nor did the header.
    expect(stripe.received.map((r) => `${r.method} ${r.path}`)).toEqual([`GET /v1/charges/${charge.id}`]);
    expect(stripe.received[0]!.headers["x-keybrake-dry-run"]).toBeUndefined();
    expect(charge.amount_refunded).toBe(0);
    const { key: after, entries } = await books(key.id);
    expect(after).toMatchObject({ spent_today_usd: 0, held_usd: 0, calls: 0 });
    expect(entries.n).toBe(0);
    const [row] = (await json(await kb.admin(`/audit?key_id=${key.id}`))).data as Json[];
    expect(row).toMatchObject({ id: verdict.request_id, decision: "dry_run", status: 200, hold_usd: 0, cost_usd: 0, would_deny: null });
  });

  test("under an Idempotency-Key remembered with another body: idempotency_conflict, the real call's own answer", async () => {
    const key = await refundKey(100);
    const intent = (amount: number, headers: Record<string, string>) =>
      post(key.vault_key, "/v1/payment_intents", `amount=${amount}&currency=usd`, { "idempotency-key": "pi/run-1", ...headers });
    expect((await intent(2900, {})).status).toBe(200);
    expect(await json(await intent(9900, DRY))).toMatchObject({ dry_run: true, decision: "idempotency_conflict" });
    // The same body is what a retry would replay: allowed.
    expect(await json(await intent(2900, DRY))).toMatchObject({ dry_run: true, decision: "allowed" });
  });

  test("over the cap: cap_exhausted with its numbers, still 200, nothing held", async () => {
    const charge = stripe.seedCharge(4500);
    const key = await refundKey(40);
    const verdict = await json(await post(key.vault_key, "/v1/refunds", `charge=${charge.id}`));
    expect(verdict).toMatchObject({ decision: "cap_exhausted", price_usd: 45, remaining_today_usd: 40 });
    expect(verdict.details).toMatchObject({ cap: "daily", cap_usd: 40, spent_usd: 0, held_usd: 0, price_usd: 45 });
    expect(verdict.message).toContain("daily USD cap");
    expect(stripe.count("POST", "/v1/refunds")).toBe(0);
    expect((await books(key.id)).entries.n).toBe(0);
    const [row] = (await json(await kb.admin(`/audit?key_id=${key.id}`))).data as Json[];
    expect(row).toMatchObject({ decision: "dry_run", status: 200, would_deny: "cap_exhausted" });
    // The real call meets exactly that.
    const real = await post(key.vault_key, "/v1/refunds", `charge=${charge.id}`, {});
    expect(real.headers.get("x-keybrake-error")).toBe("cap_exhausted");
  });

  test("counts what is already spent and what budgets up the chain have left", async () => {
    const team = await json(await kb.admin("/budgets", { body: { name: "dry-team", daily_usd_cap: 60 } }));
    const dag = await json(await kb.admin("/budgets", { body: { name: "dry-dag", daily_usd_cap: 500, parent_id: team.id } }));
    const key = await refundKey(1000, { budget_id: dag.id });
    expect((await post(key.vault_key, "/v1/payment_intents", "amount=2900&currency=usd", {})).status).toBe(200);
    const fits = await json(await post(key.vault_key, "/v1/payment_intents", "amount=2900&currency=usd"));
    expect(fits).toMatchObject({ decision: "allowed", price_usd: 29, price_class: "request", remaining_today_usd: 971, budget_id: dag.id });
    const over = await json(await post(key.vault_key, "/v1/payment_intents", "amount=3200&currency=usd"));
    expect(over).toMatchObject({ decision: "budget_exhausted", details: { budget_id: team.id, cap_usd: 60, spent_usd: 29 } });
    expect(stripe.count("POST", "/v1/payment_intents")).toBe(1);
  });

  test("an observe-mode key: allowed, with what enforcing would answer as would_deny", async () => {
    const key = await refundKey(10, { enforcement: "observe" });
    const verdict = await json(await post(key.vault_key, "/v1/payment_intents", "amount=2900&currency=usd"));
    expect(verdict).toMatchObject({ decision: "allowed", would_deny: "cap_exhausted" });
    expect(stripe.received).toEqual([]);
  });

  test("every check's refusal is its decision at 200; an unknown vault key is still 401", async () => {
    const key = await refundKey(100);
    const notAllowed = await post(key.vault_key, "/v1/charges", "amount=100&currency=usd");
    expect(notAllowed.status).toBe(200);
    expect(await json(notAllowed)).toMatchObject({ dry_run: true, decision: "endpoint_not_allowed", price_usd: null, price_class: null });
    const unpriceable = await json(await post(key.vault_key, "/v1/payment_intents", "currency=usd"));
    expect(unpriceable.decision).toBe("unpriceable_request");
    const missing = await json(await post(key.vault_key, "/v1/refunds", "charge=ch_missing"));
    expect(missing.decision).toBe("preflight_failed");
    const unknown = await post("kb_live_unknownunknownunknownunknownunknown00", "/v1/refunds", "charge=ch_1");
    expect(unknown.status).toBe(401);
    expect(unknown.headers.get("x-keybrake-error")).toBe("invalid_key");
    const rows = (await json(await kb.admin(`/audit?key_id=${key.id}`))).data as Json[];
    expect(rows.map((r) => [r.decision, r.status, r.would_deny])).toEqual([
      ["dry_run", 200, "preflight_failed"],
      ["dry_run", 200, "unpriceable_request"],
      ["dry_run", 200, "endpoint_not_allowed"],
    ]);
    expect(stripe.count("POST", /./)).toBe(0);
  });

  test("X-Keybrake-Dry-Run: 0 is a real call, and the header never reaches the vendor", async () => {
    const key = await refundKey(100);
    const res = await post(key.vault_key, "/v1/payment_intents", "amount=2900&currency=usd", { "x-keybrake-dry-run": "0" });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-keybrake-dry-run")).toBeNull();
    expect(stripe.count("POST", "/v1/payment_intents")).toBe(1);
    expect(stripe.received[0]!.headers["x-keybrake-dry-run"]).toBeUndefined();
  });
});

describe("keybrake price", () => {
  const price = (...args: string[]) => cliInProcess(["price", "--base-url", kb.url, ...args]);

  test("prints the verdict of a dry run against the running server; exit 0 when allowed, 1 when refused", async () => {
    const charge = stripe.seedCharge(4500);
    const key = await refundKey(100);
    const allowed = await price(
      "--key",
      key.vault_key,
      "POST",
      "/v1/refunds",
      "-d",
      `charge=${charge.id}`,
      "-H",
      "Idempotency-Key: run_1-refund",
    );
    expect(allowed.stderr).toBe("");
    expect(allowed.code).toBe(0);
    expect(allowed.stdout).toMatch(/^decision: +allowed$/m);
    expect(allowed.stdout).toMatch(/^price_usd: +45\.00$/m);
    expect(allowed.stdout).toMatch(/^price_class: +object$/m);

    const tight = await refundKey(20);
    const refused = await price("--key", tight.vault_key, "--json", "POST", "/stripe/v1/refunds", "-d", `{"charge":"${charge.id}"}`);
    expect(refused.code).toBe(1);
    expect(JSON.parse(refused.stdout)).toMatchObject({ dry_run: true, decision: "cap_exhausted", price_usd: 45 });
    expect(stripe.count("POST", "/v1/refunds")).toBe(0);
  });

  test("an unknown key or a bad command line is said in one line", async () => {
    const unknown = await price("--key", "kb_live_nope", "POST", "/v1/refunds", "-d", "charge=ch_1");
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^keybrake price: http:\/\/127\.0\.0\.1:\d+\/v1\/refunds: invalid_key: /);
    const noPath = await price("--key", "kb_live_nope", "POST");
    expect(noPath.code).toBe(2);
    expect(noPath.stderr).toContain("keybrake price: give METHOD and PATH");
    const help = await cliInProcess(["price", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toStartWith("usage: keybrake price --key");
  });
});

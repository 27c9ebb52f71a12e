import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { parse } from "csv-parse/sync";
import { ADMIN_TOKEN, startKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, type MockStripe } from "./helpers/mock-stripe";

// Observe mode (SPEC §16): a key whose limits are reported, not enforced. Its calls over a cap, a budget or a
// counterparty cap go out and are audited `would_deny`; alerts fire and /metrics counts them; every other check
// still refuses; an issuer mints one only when its policy allows it.

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

const charge = (vaultKey: string, cents: number, extra: Record<string, string> = {}, headers: Record<string, string> = {}) =>
  fetch(`${kb.url}/stripe/v1/payment_intents`, {
    method: "POST",
    headers: { authorization: `Bearer ${vaultKey}`, "content-type": "application/x-www-form-urlencoded", ...headers },
    body: new URLSearchParams({ amount: String(cents), currency: "usd", ...extra }),
  });
const json = async (res: Response) => (await res.json()) as Json;
const auditOf = async (keyId: string) => (await json(await kb.admin(`/audit?key_id=${keyId}`))).data as Json[];

describe("an observe-mode key", () => {
  test("over its cap: forwarded, audited would_deny cap_exhausted, the alert fires, /metrics counts it, the ledger counts it all", async () => {
    const key = await kb.issueKey({
      vendor: "stripe",
      daily_usd_cap: 50,
      allowed_endpoints: ["POST /v1/payment_intents"],
      enforcement: "observe",
      label: "observe/run_1",
    });
    expect(key.enforcement).toBe("observe");
    expect((await charge(key.vault_key, 2900)).status).toBe(200);
    const over = await charge(key.vault_key, 2900);
    expect(over.status).toBe(200);
    expect(over.headers.get("x-keybrake-would-deny")).toBe("cap_exhausted");
    expect(stripe.count("POST", "/v1/payment_intents")).toBe(2);

    const rows = await auditOf(key.id);
    expect(rows.map((r) => [r.decision, r.would_deny])).toEqual([
      ["allowed", "cap_exhausted"],
      ["allowed", null],
    ]);
    // Spend is counted truthfully, past the cap it did not enforce.
    expect(await json(await kb.admin(`/vault/keys/${key.id}`))).toMatchObject({ spent_today_usd: 58, remaining_today_usd: 0 });
    const events = (await kb.store.listAlertEvents({ keyId: key.id, limit: 10 })).data.map((e) => e.type);
    expect(events).toContain("cap_exhausted");
    const metrics = await (await kb.admin("/metrics")).text();
    expect(metrics).toContain('keybrake_would_deny_total{vendor="stripe",code="cap_exhausted"} 1');
  });

  test("over its budget and its per-customer cap: forwarded, would_deny budget_exhausted / counterparty_cap_exhausted", async () => {
    const budget = await json(await kb.admin("/budgets", { body: { name: "observe-pool", daily_usd_cap: 30 } }));
    const pooled = await kb.issueKey({
      vendor: "stripe",
      daily_usd_cap: 500,
      allowed_endpoints: ["POST /v1/payment_intents"],
      enforcement: "observe",
      budget_id: budget.id,
    });
    await charge(pooled.vault_key, 2900);
    expect((await charge(pooled.vault_key, 2900)).headers.get("x-keybrake-would-deny")).toBe("budget_exhausted");

    const perCustomer = await kb.issueKey({
      vendor: "stripe",
      daily_usd_cap: 500,
      allowed_endpoints: ["POST /v1/payment_intents"],
      enforcement: "observe",
      per_customer_usd_cap: 40,
    });
    await charge(perCustomer.vault_key, 2900, { customer: "cus_1" });
    const over = await charge(perCustomer.vault_key, 2900, { customer: "cus_1" });
    expect(over.status).toBe(200);
    expect(over.headers.get("x-keybrake-would-deny")).toBe("counterparty_cap_exhausted");
    expect(stripe.count("POST", "/v1/payment_intents")).toBe(4);
  });

  test("above its approval threshold: forwarded without waiting for a person, would_deny approval_required", async () => {
    const key = await kb.issueKey({
      vendor: "stripe",
      daily_usd_cap: 500,
      allowed_endpoints: ["POST /v1/payment_intents"],
      enforcement: "observe",
      approval_above_usd: 20,
    });
    const res = await charge(key.vault_key, 2900, {}, { "idempotency-key": "observe-approval-1" });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-keybrake-would-deny")).toBe("approval_required");
    expect(stripe.count("POST", "/v1/payment_intents")).toBe(1);
    expect(((await json(await kb.admin("/approvals?status=pending"))).data as Json[]).filter((a) => a.key_id === key.id)).toEqual([]);
    // Without an Idempotency-Key too: nothing would be requested, so the observed call is not refused for lacking one.
    const bare = await charge(key.vault_key, 2900);
    expect(bare.status).toBe(200);
    expect(bare.headers.get("x-keybrake-would-deny")).toBe("approval_required");
    expect(stripe.count("POST", "/v1/payment_intents")).toBe(2);
  });

  test("the allowlist, the catalogue and revocation still refuse", async () => {
    const key = await kb.issueKey({
      vendor: "stripe",
      daily_usd_cap: 1,
      allowed_endpoints: ["POST /v1/payment_intents", "/v1/ephemeral_keys"],
      enforcement: "observe",
    });
    const refund = await fetch(`${kb.url}/stripe/v1/refunds`, {
      method: "POST",
      headers: { authorization: `Bearer ${key.vault_key}`, "content-type": "application/x-www-form-urlencoded" },
      body: "charge=ch_1",
    });
    expect(refund.headers.get("x-keybrake-error")).toBe("endpoint_not_allowed");
    const credential = await fetch(`${kb.url}/stripe/v1/ephemeral_keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${key.vault_key}` },
    });
    expect(credential.headers.get("x-keybrake-error")).toBe("credential_endpoint_refused");
    await kb.admin(`/vault/keys/${key.id}`, { method: "DELETE" });
    expect((await charge(key.vault_key, 100)).headers.get("x-keybrake-error")).toBe("key_revoked");
    expect(stripe.received).toEqual([]);
  });

  test("an enforcing key's refusal carries no would_deny; the audit export and CSV carry the column", async () => {
    const key = await kb.issueKey({ vendor: "stripe", daily_usd_cap: 10, allowed_endpoints: ["POST /v1/payment_intents"] });
    expect(key.enforcement).toBe("enforce");
    const refused = await charge(key.vault_key, 2900);
    expect(refused.status).toBe(429);
    expect(refused.headers.get("x-keybrake-would-deny")).toBeNull();
    expect((await auditOf(key.id))[0]).toMatchObject({ decision: "cap_exhausted", would_deny: null });

    const observed = await kb.issueKey({
      vendor: "stripe",
      daily_usd_cap: 10,
      allowed_endpoints: ["POST /v1/payment_intents"],
      enforcement: "observe",
    });
    await charge(observed.vault_key, 2900);
    const csv = await (await kb.admin(`/audit/export?format=csv&key_id=${observed.id}`)).text();
    const [row] = parse(csv, { columns: true }) as Json[];
    expect(row).toMatchObject({ decision: "allowed", would_deny: "cap_exhausted" });
  });
});

describe("issuer policies", () => {
  const token = async (policy: Json) =>
    (await json(await kb.admin("/admin/tokens", { body: { name: `observe-${crypto.randomUUID()}`, role: "issuer", policy } })))
      .token as string;
  const mint = (bearer: string, body: Json) =>
    fetch(`${kb.url}/vault/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
      body: JSON.stringify({ vendor: "stripe", daily_usd_cap: 5, allowed_endpoints: ["POST /v1/payment_intents"], ...body }),
    });

  test("an issuer mints an observe key only with allow_observe: true", async () => {
    const plain = await token({ vendors: ["stripe"] });
    const refused = await mint(plain, { enforcement: "observe" });
    expect(refused.status).toBe(403);
    const body = await json(refused);
    expect(body.code).toBe("issuer_policy_violation");
    expect(body.error.details.rule).toBe("policy.allow_observe");
    expect((await mint(plain, {})).status).toBe(201);

    const allowed = await token({ vendors: ["stripe"], allow_observe: true });
    const minted = await mint(allowed, { enforcement: "observe" });
    expect(minted.status).toBe(201);
    expect((await json(minted)).enforcement).toBe("observe");
  });

  test("the admin token is not bound by a policy; a bad value is named", async () => {
    expect((await mint(ADMIN_TOKEN, { enforcement: "observe" })).status).toBe(201);
    const bad = await json(await mint(ADMIN_TOKEN, { enforcement: "watch" }));
    expect(bad.code).toBe("invalid_request");
    expect(JSON.stringify(bad.error.details)).toContain("enforcement");
  });
});

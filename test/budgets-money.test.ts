import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { startKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, type MockStripe } from "./helpers/mock-stripe";

/**
 * Budgets and counterparty caps over HTTP (SPEC §14, issue 25): a race over many keys of one budget admits
 * exactly what fits the budget, the refusal names the budget with its numbers, the spend headers say which
 * limit binds, and a key's per-customer cap stops a loop over one customer without touching another.
 */

type Json = Record<string, any>;
let kb: Harness;
let stripe: MockStripe;

beforeAll(async () => {
  stripe = await mockStripe().start();
  kb = await startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url, KEYBRAKE_UPSTREAM_TIMEOUT_MS: "20000" });
});
afterAll(async () => {
  await kb.stop();
  await stripe.stop();
});
beforeEach(() => stripe.reset());

const createBudget = async (body: Json): Promise<Json> => {
  const res = await kb.admin("/budgets", { body });
  expect(res.status).toBe(201);
  return (await res.json()) as Json;
};

const stripeKey = (body: Json) =>
  kb.issueKey({ vendor: "stripe", daily_usd_cap: 1_000, allowed_endpoints: ["POST /v1/payment_intents", "POST /v1/refunds"], ...body });

const post = (vaultKey: string, path: string, form: Record<string, string>) =>
  fetch(`${kb.url}/stripe${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${vaultKey}`, "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(form).toString(),
  });

const PI_2900 = { amount: "2900", currency: "usd" };

describe("a budget over a run family's keys", () => {
  test("300 concurrent $29 calls over 10 keys ($1,000 each) of one $500 budget: exactly 17 reach Stripe", async () => {
    const budget = await createBudget({ name: "airflow-billing", daily_usd_cap: 500 });
    const keys = await Promise.all(
      Array.from({ length: 10 }, (_, i) => stripeKey({ budget_id: budget.id, agent_run_label: `airflow-billing/run_${i}` })),
    );
    const answers = await Promise.all(Array.from({ length: 300 }, (_, i) => post(keys[i % 10]!.vault_key, "/v1/payment_intents", PI_2900)));
    const admitted = answers.filter((r) => r.status === 200);
    expect(admitted).toHaveLength(17);
    expect(stripe.count("POST", "/v1/payment_intents")).toBe(17);
    const refused = answers.filter((r) => r.status === 429);
    expect(refused).toHaveLength(283);
    const body = (await refused[0]!.json()) as Json;
    expect(body).toMatchObject({
      code: "budget_exhausted",
      error: { code: "budget_exhausted", details: { budget_id: budget.id, cap: "daily", cap_usd: 500, price_usd: 29 } },
    });
    expect(refused[0]!.headers.get("x-keybrake-error")).toBe("budget_exhausted");
    expect(Number(refused[0]!.headers.get("retry-after"))).toBeGreaterThan(0);
    // The budget and its keys count the same money.
    const after = (await (await kb.admin(`/budgets/${budget.id}`)).json()) as Json;
    expect(after).toMatchObject({ spent_today_usd: 493, held_usd: 0, active_keys: 10 });
    const spentByKeys = await Promise.all(
      keys.map(async (k) => ((await (await kb.admin(`/vault/keys/${k.id}`)).json()) as Json).spent_today_usd),
    );
    expect(spentByKeys.reduce((a: number, b: number) => a + b, 0)).toBeCloseTo(493, 6);
  });

  test("the spend headers name the limit that binds: the budget's when it has less room than the key's", async () => {
    const budget = await createBudget({ name: "tight", daily_usd_cap: 50 });
    const key = await stripeKey({ budget_id: budget.id });
    const res = await post(key.vault_key, "/v1/payment_intents", PI_2900);
    expect(res.status).toBe(200);
    expect(res.headers.get("x-keybrake-binding-limit")).toBe(`budget:${budget.id}`);
    expect(res.headers.get("x-keybrake-binding-remaining-usd")).toBe("21");
    const free = await stripeKey({});
    expect((await post(free.vault_key, "/v1/payment_intents", PI_2900)).headers.get("x-keybrake-binding-limit")).toBe("key");
  });

  test("a two-level chain (team $500 over a DAG's $300) binds at the lower, and the team's other keys share what is left", async () => {
    const team = await createBudget({ name: "team", daily_usd_cap: 500 });
    const dag = await createBudget({ name: "team/dag", daily_usd_cap: 300, parent_id: team.id });
    const dagKey = await stripeKey({ budget_id: dag.id });
    const teamKey = await stripeKey({ budget_id: team.id });
    const dagAnswers = [];
    for (let i = 0; i < 12; i++) dagAnswers.push((await post(dagKey.vault_key, "/v1/payment_intents", PI_2900)).status);
    expect(dagAnswers.filter((s) => s === 200)).toHaveLength(10);
    const teamAnswers = [];
    for (let i = 0; i < 9; i++) teamAnswers.push(await post(teamKey.vault_key, "/v1/payment_intents", PI_2900));
    expect(teamAnswers.filter((r) => r.status === 200)).toHaveLength(7);
    expect(((await teamAnswers.at(-1)!.json()) as Json).error.details.budget_id).toBe(team.id);
    expect(stripe.count("POST", "/v1/payment_intents")).toBe(17);
  });
});

describe("counterparty caps", () => {
  test("100 concurrent full refunds to one customer under a $100 per-customer cap: only what fits; another customer is unaffected", async () => {
    const key = await stripeKey({ per_customer_usd_cap: 100 });
    const ofA = Array.from({ length: 100 }, () => stripe.seedCharge(1_000, "usd", true, "cus_A"));
    const ofB = Array.from({ length: 5 }, () => stripe.seedCharge(1_000, "usd", true, "cus_B"));
    const answers = await Promise.all(ofA.map((c) => post(key.vault_key, "/v1/refunds", { charge: c.id })));
    expect(answers.filter((r) => r.status === 200)).toHaveLength(10);
    const refused = answers.filter((r) => r.status === 429);
    expect(refused).toHaveLength(90);
    expect(((await refused[0]!.json()) as Json).error).toMatchObject({
      code: "counterparty_cap_exhausted",
      details: { counterparty: "customer:cus_A", cap_usd: 100 },
    });
    expect(stripe.count("POST", "/v1/refunds")).toBe(10);
    const others = await Promise.all(ofB.map((c) => post(key.vault_key, "/v1/refunds", { charge: c.id })));
    expect(others.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    // Calls naming no customer share one bucket: intents without one.
    const none = [];
    for (let i = 0; i < 5; i++) none.push((await post(key.vault_key, "/v1/payment_intents", { amount: "2500", currency: "usd" })).status);
    expect(none).toEqual([200, 200, 200, 200, 429]);
  });
});

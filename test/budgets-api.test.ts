import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cliInProcess } from "./helpers/cli";
import { ADMIN_TOKEN, type Harness, startKeybrake } from "./helpers/harness";

// SPEC §14's budgets as the admin API, the CLI and issuer tokens see them: made, read with usage, changed and
// deleted; keys that draw from them. How calls count at budgets is the ledger's, tested with it.

type Json = Record<string, any>;
let kb: Harness;

beforeAll(async () => {
  kb = await startKeybrake();
});
afterAll(() => kb.stop());

/** A request to the admin API with `token`. */
const as =
  (token: string) =>
  (path: string, init: { method?: string; body?: unknown } = {}) =>
    fetch(kb.url + path, {
      method: init.method ?? (init.body === undefined ? "GET" : "POST"),
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });
const admin = as(ADMIN_TOKEN);

async function json(res: Response, status: number): Promise<Json> {
  const body = (await res.json()) as Json;
  expect({ status: res.status, body }).toMatchObject({ status, body: {} });
  return body;
}

let budgets = 0;
const createBudget = async (body: Json = {}) =>
  json(await admin("/budgets", { body: { name: `family-${++budgets}`, daily_usd_cap: 500, ...body } }), 201);

let runs = 0;
const KEY = { vendor: "stripe", daily_usd_cap: 100, allowed_endpoints: ["POST /v1/payment_intents"], expires_in: "1h" };
const mint = (token: string, body: Json = {}) =>
  as(token)("/vault/keys", { body: { ...KEY, agent_run_label: `budgets/run_${++runs}`, ...body } });

const newToken = async (body: Json) => json(await admin("/admin/tokens", { body }), 201);

/** The fields a 400 names. */
const fieldsOf = (body: Json) => (body.error.details.fields as { path: string; message: string }[]).map((f) => f.path);

const adminEvents = async (target: string) =>
  ((await json(await admin("/admin/events?limit=1000"), 200)).data as Json[]).filter((e) => e.target === target).map((e) => e.action);

describe("CRUD", () => {
  test("create, list, show, change and delete: USD outside, micro-dollars inside, an admin event for each write", async () => {
    const top = await json(
      await admin("/budgets", { body: { name: "airflow-billing", daily_usd_cap: 2000, alert_thresholds: [0.8, 0.5] } }),
      201,
    );
    expect(top).toEqual({
      id: expect.stringMatching(/^bud_[0-9A-Za-z]{20}$/),
      name: "airflow-billing",
      parent_id: null,
      daily_usd_cap: 2000,
      total_usd_cap: null,
      alert_thresholds: [0.5, 0.8],
      created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      spent_today_usd: 0,
      spent_total_usd: 0,
      held_usd: 0,
      remaining_today_usd: 2000,
      active_keys: 0,
    });
    const child = await json(
      await admin("/budgets", { body: { name: "nightly", daily_usd_cap: 300, total_usd_cap: 5000.25, parent_id: top.id } }),
      201,
    );
    expect(child).toMatchObject({ parent_id: top.id, daily_usd_cap: 300, total_usd_cap: 5000.25, alert_thresholds: [0.5, 0.8, 1] });
    const listed = (await json(await admin("/budgets"), 200)).data as Json[];
    expect(listed.filter((b) => [top.id, child.id].includes(b.id))).toEqual([top, child]);
    expect(await json(await admin(`/budgets/${child.id}`), 200)).toEqual(child);

    const patched = await json(
      await admin(`/budgets/${top.id}`, { method: "PATCH", body: { name: "airflow-billing (all runs)", daily_usd_cap: 2500.5 } }),
      200,
    );
    expect(patched).toEqual({ ...top, name: "airflow-billing (all runs)", daily_usd_cap: 2500.5, remaining_today_usd: 2500.5 });
    expect(await kb.readDb((db) => db.query("SELECT daily_cap_micros AS cap FROM budgets WHERE id = ?").get(top.id))).toEqual({
      cap: 2_500_500_000,
    });
    // One cap may go while the other stays; both cannot.
    expect(await json(await admin(`/budgets/${child.id}`, { method: "PATCH", body: { daily_usd_cap: null } }), 200)).toMatchObject({
      daily_usd_cap: null,
      total_usd_cap: 5000.25,
      remaining_today_usd: null,
    });
    const capless = await json(await admin(`/budgets/${child.id}`, { method: "PATCH", body: { total_usd_cap: null } }), 400);
    expect(fieldsOf(capless)).toEqual(["daily_usd_cap"]);
    // The parent fixes the chain the ledger moves: it is not a field of a PATCH.
    const reparent = await json(await admin(`/budgets/${child.id}`, { method: "PATCH", body: { parent_id: null } }), 400);
    expect(reparent.error.details.fields).toContainEqual({ path: "parent_id", message: "is not a known field" });
    expect(await json(await admin(`/budgets/${child.id}`), 200)).toMatchObject({ parent_id: top.id, total_usd_cap: 5000.25 });

    expect(await json(await admin(`/budgets/${child.id}`, { method: "DELETE" }), 200)).toMatchObject({ id: child.id, name: "nightly" });
    expect((await admin(`/budgets/${child.id}`)).status).toBe(404);
    expect(await json(await admin(`/budgets/${top.id}`, { method: "DELETE" }), 200)).toMatchObject({ id: top.id });
    expect(await adminEvents(top.id)).toEqual(["budget.delete", "budget.update", "budget.create"]);
    expect(await adminEvents(child.id)).toEqual(["budget.delete", "budget.update", "budget.create"]);
  });

  test("refused: no cap (both fields named), a parent that does not exist, a fourth level, bad fields; unknown ids are 404", async () => {
    expect(fieldsOf(await json(await admin("/budgets", { body: { name: "no-cap" } }), 400))).toEqual(["daily_usd_cap", "total_usd_cap"]);
    const bad = await json(await admin("/budgets", { body: { name: "", daily_usd_cap: 0, colour: "red" } }), 400);
    expect(fieldsOf(bad).sort()).toEqual(["colour", "daily_usd_cap", "name"]);
    const orphan = await json(await admin("/budgets", { body: { name: "orphan", daily_usd_cap: 1, parent_id: "bud_nope" } }), 400);
    expect(orphan.error.details.fields).toEqual([{ path: "parent_id", message: "no budget bud_nope" }]);

    const level1 = await createBudget();
    const level2 = await createBudget({ parent_id: level1.id });
    const level3 = await createBudget({ parent_id: level2.id });
    const before = (await json(await admin("/budgets"), 200)).data.length;
    const level4 = await json(await admin("/budgets", { body: { name: "too-deep", daily_usd_cap: 1, parent_id: level3.id } }), 400);
    expect(level4.error.details.fields).toEqual([
      { path: "parent_id", message: `${level3.id} is already level 3 of its chain; a chain has at most 3 levels` },
    ]);
    expect((await json(await admin("/budgets"), 200)).data.length).toBe(before);
    // A sibling at level 3 is fine.
    await createBudget({ parent_id: level2.id });

    expect((await admin("/budgets/bud_nope")).status).toBe(404);
    expect((await admin("/budgets/bud_nope", { method: "PATCH", body: { name: "x" } })).status).toBe(404);
    expect((await admin("/budgets/bud_nope", { method: "DELETE" })).status).toBe(404);
  });

  test("delete is 409 budget_in_use, saying what draws from it, while an active key or a budget below does; then it goes", async () => {
    const top = await createBudget();
    const child = await createBudget({ parent_id: top.id });
    const key = await json(await mint(ADMIN_TOKEN, { budget_id: child.id }), 201);
    expect(await json(await admin(`/budgets/${child.id}`), 200)).toMatchObject({ active_keys: 1 });

    const topInUse = await json(await admin(`/budgets/${top.id}`, { method: "DELETE" }), 409);
    expect(topInUse.error).toMatchObject({ code: "budget_in_use", details: { active_keys: 0, budgets_below: [child.id] } });
    expect(topInUse.message).toContain(child.id);
    const childInUse = await json(await admin(`/budgets/${child.id}`, { method: "DELETE" }), 409);
    expect(childInUse.error).toMatchObject({ code: "budget_in_use", details: { active_keys: 1, budgets_below: [] } });
    expect(childInUse.message).toContain("1 active key(s)");
    expect(await adminEvents(child.id)).toEqual(["budget.create"]);

    await json(await admin(`/vault/keys/${key.id}`, { method: "DELETE" }), 200);
    expect(await json(await admin(`/budgets/${child.id}`), 200)).toMatchObject({ active_keys: 0 });
    await json(await admin(`/budgets/${child.id}`, { method: "DELETE" }), 200);
    await json(await admin(`/budgets/${top.id}`, { method: "DELETE" }), 200);
  });
});

describe("keys draw from budgets", () => {
  test("budget_id and the counterparty caps are stored at mint and shown in the key record; the list filters by budget", async () => {
    const family = await createBudget();
    const drawn = await json(
      await mint(ADMIN_TOKEN, { budget_id: family.id, per_customer_usd_cap: 100, per_destination_usd_cap: 5.5 }),
      201,
    );
    expect(drawn).toMatchObject({ budget_id: family.id, per_customer_usd_cap: 100, per_destination_usd_cap: 5.5 });
    expect(await json(await admin(`/vault/keys/${drawn.id}`), 200)).toMatchObject({
      budget_id: family.id,
      per_customer_usd_cap: 100,
      per_destination_usd_cap: 5.5,
    });
    expect(
      await kb.readDb((db) =>
        db
          .query(
            "SELECT budget_id, per_customer_cap_micros AS customer, per_destination_cap_micros AS destination FROM vault_keys WHERE id = ?",
          )
          .get(drawn.id),
      ),
    ).toEqual({ budget_id: family.id, customer: 100_000_000, destination: 5_500_000 });
    const plain = await json(await mint(ADMIN_TOKEN), 201);
    expect(plain).toMatchObject({ budget_id: null, per_customer_usd_cap: null, per_destination_usd_cap: null });
    const listed = await json(await admin(`/vault/keys?budget_id=${family.id}`), 200);
    expect(listed.data.map((k: Json) => k.id)).toEqual([drawn.id]);
    expect(await adminEvents(drawn.id)).toEqual(["key.create"]);
  });

  test("an unknown budget_id is 400 naming budget_id, and no key is made; a PATCH cannot change a key's budget", async () => {
    const refused = await json(await mint(ADMIN_TOKEN, { budget_id: "bud_nope", agent_run_label: "budgets/unknown" }), 400);
    expect(refused.error.details.fields).toEqual([{ path: "budget_id", message: "no budget bud_nope" }]);
    expect((await json(await admin("/vault/keys?label=budgets/unknown"), 200)).data).toEqual([]);

    const family = await createBudget();
    const key = await json(await mint(ADMIN_TOKEN), 201);
    const patch = await json(await admin(`/vault/keys/${key.id}`, { method: "PATCH", body: { budget_id: family.id } }), 400);
    expect(patch.error.details.fields).toContainEqual({ path: "budget_id", message: "is not a known field" });
    expect(await json(await admin(`/vault/keys/${key.id}`), 200)).toMatchObject({ budget_id: null });
    const bad = await json(await mint(ADMIN_TOKEN, { budget_id: "", per_customer_usd_cap: 0 }), 400);
    expect(fieldsOf(bad).sort()).toEqual(["budget_id", "per_customer_usd_cap"]);
  });
});

describe("roles", () => {
  test("a viewer reads every budget and writes none", async () => {
    const family = await createBudget();
    const viewer = as((await newToken({ name: "budgets-viewer", role: "viewer" })).token);
    expect(((await json(await viewer("/budgets"), 200)).data as Json[]).map((b) => b.id)).toContain(family.id);
    expect(await json(await viewer(`/budgets/${family.id}`), 200)).toMatchObject({ id: family.id });
    for (const [path, method, body] of [
      ["/budgets", "POST", { name: "viewer's", daily_usd_cap: 1 }],
      [`/budgets/${family.id}`, "PATCH", { daily_usd_cap: 1 }],
      [`/budgets/${family.id}`, "DELETE", undefined],
    ] as const) {
      const res = await viewer(path, { method, body });
      expect({ path, method, status: res.status, code: res.headers.get("x-keybrake-error") }).toEqual({
        path,
        method,
        status: 403,
        code: "forbidden",
      });
    }
    expect(await json(await admin(`/budgets/${family.id}`), 200)).toEqual({ ...family });
  });

  test("an issuer reads only its policy's budget; a policy naming no budget that exists is refused", async () => {
    const own = await createBudget();
    const other = await createBudget();
    const refused = await json(
      await admin("/admin/tokens", { body: { name: "no-such-budget", role: "issuer", policy: { budget_id: "bud_nope" } } }),
      400,
    );
    expect(refused.error.details.fields).toEqual([{ path: "policy.budget_id", message: "no budget bud_nope" }]);

    const issuer = as((await newToken({ name: "budgets-issuer", role: "issuer", policy: { budget_id: own.id } })).token);
    expect(((await json(await issuer("/budgets"), 200)).data as Json[]).map((b) => b.id)).toEqual([own.id]);
    expect(await json(await issuer(`/budgets/${own.id}`), 200)).toMatchObject({ id: own.id });
    expect((await issuer(`/budgets/${other.id}`)).status).toBe(404);
    expect((await issuer(`/budgets/${own.id}`, { method: "PATCH", body: { daily_usd_cap: 1 } })).status).toBe(403);

    const unbudgeted = as((await newToken({ name: "budgets-issuer-none", role: "issuer" })).token);
    expect((await json(await unbudgeted("/budgets"), 200)).data).toEqual([]);
  });

  test("an issuer policy's budget_id is put on every key its token mints; another budget is refused (policy.budget_id)", async () => {
    const own = await createBudget();
    const other = await createBudget();
    const { id: tokenId, token } = await newToken({ name: "budget-pool", role: "issuer", policy: { budget_id: own.id } });

    expect(await json(await mint(token), 201)).toMatchObject({ budget_id: own.id });
    const named = await json(await mint(token, { budget_id: own.id }), 201);
    expect(named).toMatchObject({ budget_id: own.id });
    const another = await json(await mint(token, { budget_id: other.id, agent_run_label: "budgets/another" }), 403);
    expect(another.error).toMatchObject({ code: "issuer_policy_violation", details: { rule: "policy.budget_id" } });
    expect(another.message).toBe(`policy.budget_id: keys of this token draw from budget ${own.id}, not ${other.id}.`);
    expect((await json(await admin("/vault/keys?label=budgets/another"), 200)).data).toEqual([]);
    // Its keys stay PATCHable within the policy: the budget they draw from is the policy's.
    expect(await json(await as(token)(`/vault/keys/${named.id}`, { method: "PATCH", body: { daily_usd_cap: 50 } }), 200)).toMatchObject({
      daily_usd_cap: 50,
      budget_id: own.id,
    });
    const drawing = (await json(await admin(`/vault/keys?budget_id=${own.id}`), 200)).data as Json[];
    expect(drawing.map((k) => k.id)).toContain(named.id);
    expect((await json(await admin(`/admin/events?token_id=${tokenId}`), 200)).data.map((e: Json) => e.action)).toEqual([
      "key.update",
      "key.create",
      "key.create",
    ]);

    // A token whose policy names no budget mints keys that draw from none: it cannot spend another team's pool.
    const { token: plain } = await newToken({ name: "no-pool", role: "issuer" });
    const pooled = await json(await mint(plain, { budget_id: own.id }), 403);
    expect(pooled.error).toMatchObject({ code: "issuer_policy_violation", details: { rule: "policy.budget_id" } });
    expect(await json(await mint(plain), 201)).toMatchObject({ budget_id: null });
  });
});

describe("keybrake budgets (the CLI, in the test process)", () => {
  let dir: string;
  let env: Record<string, string>;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "keybrake-budgets-cli-"));
    // A Stripe secret configured, so that minting a key warns of nothing.
    env = { KEYBRAKE_DB: join(dir, "kb.db"), KEYBRAKE_STRIPE_SECRET_KEY: "sk_live_budgets_cli" };
    expect((await keybrake("migrate")).code).toBe(0);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const keybrake = (...args: string[]) => cliInProcess(args, env);
  /** A command that must succeed, its --json output parsed: a list of records (or `keys create`'s one). */
  async function ok(...args: string[]): Promise<any> {
    const result = await keybrake(...args, "--json");
    expect({ args, code: result.code, stderr: result.stderr }).toEqual({ args, code: 0, stderr: "" });
    return JSON.parse(result.stdout);
  }
  /** A command that prints one record (as a list of one with --json). */
  const record = async (...args: string[]): Promise<Json> => (await ok(...args))[0];

  test("create, list, show, update, delete; keys create --budget-id; refusals named by their flag", async () => {
    const top = await record("budgets", "create", "--name", "cli-family", "--daily-usd-cap", "100", "--alert-thresholds", "0.9");
    expect(top).toMatchObject({ name: "cli-family", daily_usd_cap: 100, alert_thresholds: [0.9], parent_id: null });
    const child = await record("budgets", "create", "--name", "cli-dag", "--total-usd-cap", "40", "--parent-id", top.id);
    expect(child).toMatchObject({ parent_id: top.id, total_usd_cap: 40, daily_usd_cap: null });
    expect((await ok("budgets", "list")).map((b: Json) => b.id)).toEqual([top.id, child.id]);
    expect(await record("budgets", "update", top.id, "--daily-usd-cap", "none", "--total-usd-cap", "900")).toMatchObject({
      daily_usd_cap: null,
      total_usd_cap: 900,
    });
    const key = await ok(
      "keys",
      "create",
      "--vendor",
      "stripe",
      "--daily-usd-cap",
      "5",
      "--allow",
      "POST /v1/refunds",
      "--label",
      "cli/refunds",
      "--budget-id",
      child.id,
      "--per-customer-usd-cap",
      "2",
    );
    expect(key).toMatchObject({ budget_id: child.id, per_customer_usd_cap: 2 });
    expect(await record("budgets", "show", child.id)).toMatchObject({ id: child.id, active_keys: 1 });
    expect((await ok("keys", "list", "--budget-id", child.id)).map((k: Json) => k.id)).toEqual([key.id]);

    const table = await keybrake("budgets", "list");
    expect(table.code).toBe(0);
    expect(table.stdout.split("\n")[0]).toMatch(/^id\s+name\s+spent_today\s+daily_cap/);
    expect(table.stdout).toContain("cli-dag");

    const inUse = await keybrake("budgets", "delete", child.id);
    expect(inUse.code).toBe(2);
    expect(inUse.stderr).toStartWith(`keybrake: budget_in_use: Budget ${child.id} was not deleted`);
    for (const [args, message] of [
      [
        ["keys", "create", "--vendor", "stripe", "--daily-usd-cap", "5", "--allow", "POST /v1/refunds", "--budget-id", "bud_nope"],
        "--budget-id: no budget bud_nope",
      ],
      [
        ["budgets", "create", "--name", "capless"],
        "--daily-usd-cap: daily_usd_cap or total_usd_cap is required; --total-usd-cap: daily_usd_cap or total_usd_cap is required",
      ],
      [["budgets", "create", "--name", "orphan", "--daily-usd-cap", "1", "--parent-id", "bud_nope"], "--parent-id: no budget bud_nope"],
      [["budgets", "update", top.id, "--daily-usd-cap", "lots"], "--daily-usd-cap: must be a number of US dollars"],
      [["budgets", "update", top.id], "nothing to change"],
      [["budgets", "remove", top.id], 'unknown command "remove"'],
    ] as const) {
      const refused = await keybrake(...args);
      expect({ args, code: refused.code }).toEqual({ args, code: 2 });
      expect(refused.stderr).toContain(message);
    }

    expect((await keybrake("keys", "revoke", key.id)).code).toBe(0);
    const deleted = await keybrake("budgets", "delete", child.id);
    expect(deleted).toMatchObject({ code: 0, stdout: `deleted ${child.id} (cli-dag)\n` });
    expect(await record("budgets", "delete", top.id)).toMatchObject({ id: top.id });
    expect(await ok("budgets", "list")).toEqual([]);
  }, 60_000);

  test("--help prints each subcommand's usage and opens nothing", async () => {
    const subs = ["", "create", "list", "show", "update", "delete"];
    const never = { KEYBRAKE_DB: join(dir, "never.db") };
    const results = await Promise.all(subs.map((sub) => cliInProcess(["budgets", sub, "--help"].filter(Boolean), never)));
    for (const [i, result] of results.entries()) {
      expect(result.code).toBe(0);
      expect(result.stdout).toContain(`usage: keybrake budgets ${subs[i]}`.trim());
    }
    expect((await cliInProcess(["--help"], never)).stdout).toContain("keybrake budgets ...");
    expect(existsSync(never.KEYBRAKE_DB)).toBe(false);
  });
});

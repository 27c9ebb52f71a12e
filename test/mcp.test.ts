import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { keybrakeCommand } from "./helpers/binary";
import { ADMIN_TOKEN, startKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, STRIPE_LIVE_SECRET, type MockStripe } from "./helpers/mock-stripe";
import { type Started, startProcess } from "./helpers/process";

// MCP at POST /mcp (SPEC §17), driven by the official SDK's client as an agent's would be.

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

async function connect(url: string, token: string): Promise<Client> {
  const client = new Client({ name: "keybrake-test-agent", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(`${url}/mcp`), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  return client;
}
const issuerToken = async (policy: Json) =>
  ((await (await kb.admin("/admin/tokens", { body: { name: `agent-${crypto.randomUUID()}`, role: "issuer", policy } })).json()) as Json)
    .token as string;
/** A tool's answer: its structured content, and whether it is an error. */
async function call(client: Client, name: string, args: Json): Promise<{ isError: boolean; value: Json }> {
  const result = (await client.callTool({ name, arguments: args })) as Json;
  const text = (result.content as { type: string; text: string }[])[0]!.text;
  expect(JSON.parse(text)).toEqual(result.structuredContent);
  return { isError: result.isError === true, value: result.structuredContent };
}

const MINT = {
  vendor: "stripe",
  daily_usd_cap: 50,
  allowed_endpoints: ["POST /v1/payment_intents"],
  expires_in: "1h",
  agent_run_label: "agent/run_1",
};

describe("MCP", () => {
  test("an issuer's agent lists the tools, mints within policy, is refused outside it with the rule named, prices, reads spend, revokes", async () => {
    const token = await issuerToken({ vendors: ["stripe"], label_prefix: "agent/", max_daily_usd_cap: 100 });
    const client = await connect(kb.url, token);
    try {
      const { tools } = await client.listTools();
      expect(tools.map((t) => t.name).sort()).toEqual(["mint_vault_key", "price_call", "revoke_vault_key", "spend_status"]);
      const mintTool = tools.find((t) => t.name === "mint_vault_key")!;
      expect(Object.keys(mintTool.inputSchema.properties ?? {})).toEqual(
        expect.arrayContaining(["vendor", "daily_usd_cap", "allowed_endpoints"]),
      );

      const minted = await call(client, "mint_vault_key", MINT);
      expect(minted.isError).toBe(false);
      expect(minted.value).toMatchObject({ vendor: "stripe", daily_usd_cap: 50, label: "agent/run_1", status: "active" });
      expect(minted.value.vault_key).toStartWith("kb_live_");

      const tooBig = await call(client, "mint_vault_key", { ...MINT, daily_usd_cap: 10_000 });
      expect(tooBig.isError).toBe(true);
      expect(tooBig.value).toMatchObject({ code: "issuer_policy_violation", error: { details: { rule: "policy.max_daily_usd_cap" } } });
      expect(tooBig.value.message).toStartWith("policy.max_daily_usd_cap: ");
      const otherLabel = await call(client, "mint_vault_key", { ...MINT, agent_run_label: "billing/run_1" });
      expect(otherLabel.value.error.details.rule).toBe("policy.label_prefix");
      // Nothing was created by the refusals.
      expect(((await (await kb.admin("/vault/keys?label_prefix=agent/")).json()) as Json).data).toHaveLength(1);

      const priced = await call(client, "price_call", {
        vault_key: minted.value.vault_key,
        path: "/stripe/v1/payment_intents",
        body: "amount=2900&currency=usd",
      });
      expect(priced).toEqual({ isError: false, value: expect.objectContaining({ dry_run: true, decision: "allowed", price_usd: 29 }) });
      const over = await call(client, "price_call", {
        vault_key: minted.value.vault_key,
        path: "/stripe/v1/payment_intents",
        body: { amount: 9900, currency: "usd" },
      });
      expect(over.value.decision).toBe("cap_exhausted");
      expect(stripe.received).toEqual([]);

      const status = await call(client, "spend_status", { id: minted.value.id });
      expect(status.value).toMatchObject({ id: minted.value.id, spent_today_usd: 0, remaining_today_usd: 50, status: "active" });
      expect((await call(client, "spend_status", {})).value.data.map((k: Json) => k.id)).toEqual([minted.value.id]);

      const revoked = await call(client, "revoke_vault_key", { id: minted.value.id });
      expect(revoked.value).toMatchObject({ id: minted.value.id, status: "revoked" });
      const res = await fetch(`${kb.url}/stripe/v1/payment_intents`, {
        method: "POST",
        headers: { authorization: `Bearer ${minted.value.vault_key}`, "content-type": "application/x-www-form-urlencoded" },
        body: "amount=100&currency=usd",
      });
      expect(res.headers.get("x-keybrake-error")).toBe("key_revoked");
    } finally {
      await client.close();
    }
  });

  test("another issuer's key is not found; the admin token mints without a policy", async () => {
    const admin = await connect(kb.url, ADMIN_TOKEN);
    const other = await connect(kb.url, await issuerToken({}));
    try {
      const minted = await call(admin, "mint_vault_key", { ...MINT, daily_usd_cap: 10_000 });
      expect(minted.isError).toBe(false);
      expect((await call(other, "revoke_vault_key", { id: minted.value.id })).value.code).toBe("not_found");
      expect((await call(other, "spend_status", { id: minted.value.id })).value.code).toBe("not_found");
    } finally {
      await Promise.all([admin.close(), other.close()]);
    }
  });

  test("a viewer token, a missing or unknown token: refused before any tool", async () => {
    const viewer = ((await (await kb.admin("/admin/tokens", { body: { name: "mcp-viewer", role: "viewer" } })).json()) as Json).token;
    await expect(connect(kb.url, viewer)).rejects.toThrow(/"code":"forbidden".*is a viewer/);
    await expect(connect(kb.url, "kb_iss_unknown")).rejects.toThrow(/"code":"unauthorized"/);
    const bare = await fetch(`${kb.url}/mcp`, { method: "POST", body: "{}" });
    expect(bare.status).toBe(401);
    expect((await fetch(`${kb.url}/mcp`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).status).toBe(405);
  });

  test("/docs lists POST /mcp with the roles it needs", async () => {
    const spec = (await (await fetch(`${kb.url}/docs/json`)).json()) as Json;
    expect(spec.paths["/mcp"].post.description).toContain("Roles: `admin`, `issuer`");
    expect(spec.paths["/mcp"].get.summary).toContain("405");
  });
});

describe("MCP in the built binary", () => {
  let server: Started;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "keybrake-mcp-"));
    server = await startProcess(await keybrakeCommand(), {
      cwd: dir,
      env: {
        KEYBRAKE_DB: join(dir, "kb.db"),
        KEYBRAKE_HOST: "127.0.0.1",
        KEYBRAKE_PORT: "0",
        KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
        KEYBRAKE_STRIPE_SECRET_KEY: STRIPE_LIVE_SECRET,
        KEYBRAKE_STRIPE_BASE_URL: stripe.url,
      },
    });
  }, 120_000);
  afterAll(async () => {
    server?.proc.kill("SIGTERM");
    await server?.proc.exited;
    rmSync(dir, { recursive: true, force: true });
  });

  test("lists the tools, mints and prices", async () => {
    const client = await connect(server.url, ADMIN_TOKEN);
    try {
      expect((await client.listTools()).tools).toHaveLength(4);
      const minted = await call(client, "mint_vault_key", MINT);
      const priced = await call(client, "price_call", {
        vault_key: minted.value.vault_key,
        path: "/stripe/v1/payment_intents",
        body: "amount=2900&currency=usd",
      });
      expect(priced.value).toMatchObject({ decision: "allowed", price_usd: 29 });
    } finally {
      await client.close();
    }
  });
});

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary } from "./helpers/binary";
import { ADMIN_TOKEN } from "./helpers/harness";
import { mockStripe, STRIPE_LIVE_SECRET } from "./helpers/mock-stripe";
import { run, startProcess } from "./helpers/process";

let dir: string;
let binary: string;

// The compiled single file, copied alone into an empty folder: SPEC §1 and the foundation issue's point 9.
beforeAll(async () => {
  const built = await ensureBinary();
  dir = mkdtempSync(join(tmpdir(), "keybrake-bin-"));
  binary = join(dir, "keybrake");
  copyFileSync(built, binary);
  Bun.spawnSync(["chmod", "+x", binary]);
}, 120_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("dist/keybrake alone in an empty folder", () => {
  test("starts on a fresh database, serves /docs from inside itself, issues a key that survives a restart", async () => {
    expect(readdirSync(dir)).toEqual(["keybrake"]);
    const env = { KEYBRAKE_PORT: "0", KEYBRAKE_HOST: "127.0.0.1" };
    const first = await startProcess([binary], { cwd: dir, env });
    const token = /kb_admin_[0-9A-Za-z]{40}/.exec(first.stderr())?.[0];
    expect(token).toBeString();
    const auth = { authorization: `Bearer ${token}`, "content-type": "application/json" };

    expect(await (await fetch(`${first.url}/healthz`)).json()).toMatchObject({ status: "ok", db: "ok" });
    const page = await (await fetch(`${first.url}/docs`)).text();
    expect(page).toContain("/docs/assets/swagger-ui-bundle.js");
    expect(page).not.toMatch(/https?:\/\//); // nothing from a CDN: works with no internet
    for (const asset of ["swagger-ui-bundle.js", "swagger-ui.css"]) {
      const res = await fetch(`${first.url}/docs/assets/${asset}`);
      expect(res.status).toBe(200);
      expect((await res.arrayBuffer()).byteLength).toBeGreaterThan(100_000);
    }
    // The dashboard too: its page, script (Preact bundled in by the build's macro) and styles.
    const ui = await fetch(`${first.url}/ui`);
    expect(ui.status).toBe(200);
    expect(await ui.text()).toContain('<script type="module" src="/ui/app.js');
    const script = await (await fetch(`${first.url}/ui/app.js`)).text();
    expect(script).toContain("Revoke family");
    expect((await fetch(`${first.url}/ui/app.css`)).headers.get("content-type")).toStartWith("text/css");
    const spec = (await (await fetch(`${first.url}/docs/json`)).json()) as {
      paths: Record<string, unknown>;
      components: { securitySchemes: Record<string, unknown> };
    };
    for (const path of ["/vault/keys", "/vault/keys/{id}", "/vault/keys/revoke", "/v1/keys", "/v1/keys/{id}", "/audit", "/healthz"])
      expect(spec.paths).toHaveProperty(path);
    expect(spec.components.securitySchemes.adminToken).toMatchObject({ type: "http", scheme: "bearer" });
    // The routes' zod schemas survive compilation and minification: documented, and enforced with field paths.
    const issue = (spec.paths["/vault/keys"] as Record<string, any>).post;
    expect(issue.requestBody.content["application/json"].schema).toMatchObject({
      required: ["vendor", "allowed_endpoints"],
      properties: { vendor: { enum: ["stripe", "twilio", "resend", "openai", "anthropic"] }, daily_usd_cap: { type: "number" } },
    });
    expect(issue.responses["201"].content["application/json"].schema.required).toContain("vault_key");
    expect(issue.responses["400"].content["application/json"].schema.required).toEqual(["code", "message", "error"]);
    const refused = await fetch(`${first.url}/vault/keys`, {
      method: "POST",
      headers: auth,
      body: JSON.stringify({ vendor: "stripe", daily_usd_cap: 0, allowed_endpoints: ["POST v1/x"] }),
    });
    expect(refused.status).toBe(400);
    const fields = ((await refused.json()) as { error: { details: { fields: { path: string }[] } } }).error.details.fields.map(
      (f) => f.path,
    );
    expect(fields).toEqual(["daily_usd_cap", "allowed_endpoints.0"]);

    const res = await fetch(`${first.url}/vault/keys`, {
      method: "POST",
      headers: auth,
      body: JSON.stringify({
        vendor: "stripe",
        daily_usd_cap: 500,
        allowed_endpoints: ["POST /v1/payment_intents"],
        expires_in: "6h",
        agent_run_label: "airflow-billing/run_2026_11_22",
      }),
    });
    expect(res.status).toBe(201);
    const key = (await res.json()) as { id: string };
    // The MCP SDK is loaded by the first POST /mcp (src/mcp/routes.ts), from inside the binary too.
    const tools = await fetch(`${first.url}/mcp`, {
      method: "POST",
      headers: { ...auth, accept: "application/json, text/event-stream" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list", params: {} }),
    });
    expect(tools.status).toBe(200);
    const listed = ((await tools.json()) as { result: { tools: { name: string }[] } }).result.tools.map((t) => t.name);
    expect(listed).toEqual(["mint_vault_key", "revoke_vault_key", "spend_status", "price_call"]);

    first.proc.kill("SIGTERM");
    expect(await first.proc.exited).toBe(0);
    expect(first.stderr()).toContain("stopped cleanly");

    const second = await startProcess([binary], { cwd: dir, env });
    expect(second.stderr()).not.toContain("kb_admin_"); // the token is printed once, on first start only
    const again = await fetch(`${second.url}/vault/keys/${key.id}`, { headers: auth });
    expect(again.status).toBe(200);
    expect(((await again.json()) as { label: string }).label).toBe("airflow-billing/run_2026_11_22");
    second.proc.kill("SIGTERM");
    expect(await second.proc.exited).toBe(0);
    expect(existsSync(join(dir, "keybrake.db"))).toBe(true);
  }, 60_000);

  test("the CLI: version, migrate, keys create|list|show|revoke with --json, on the same database", async () => {
    const env = { KEYBRAKE_DB: join(dir, "cli.db") };
    expect((await run([binary, "version"], { cwd: dir, env })).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    expect((await run([binary, "migrate"], { cwd: dir, env })).stdout).toContain("applied");
    expect((await run([binary, "migrate"], { cwd: dir, env })).stdout).toContain("already at the latest schema");

    const created = await run(
      [
        binary,
        "keys",
        "create",
        "--vendor",
        "stripe",
        "--daily-usd-cap",
        "50",
        "--allow",
        "POST /v1/payment_intents",
        "--label",
        "cli/run-1",
        "--json",
      ],
      { cwd: dir, env },
    );
    expect(created.code).toBe(0);
    const key = JSON.parse(created.stdout) as { id: string; vault_key: string; daily_usd_cap: number };
    expect(key.vault_key).toStartWith("kb_live_");
    expect(key.daily_usd_cap).toBe(50);

    const invalid = await run(
      [binary, "keys", "create", "--vendor", "stripe", "--daily-usd-cap", "0", "--allow", "POST /v1/payment_intents"],
      { cwd: dir, env },
    );
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toContain("--daily-usd-cap"); // the flag, not the API's field

    const listed = JSON.parse((await run([binary, "keys", "list", "--label-prefix", "cli/", "--json"], { cwd: dir, env })).stdout) as {
      id: string;
    }[];
    expect(listed.map((k) => k.id)).toEqual([key.id]);
    const table = (await run([binary, "keys", "list"], { cwd: dir, env })).stdout;
    expect(table).toContain(key.id);
    expect(table).not.toContain(key.vault_key);
    const shown = JSON.parse((await run([binary, "keys", "show", key.id, "--json"], { cwd: dir, env })).stdout) as { status: string }[];
    expect(shown[0]!.status).toBe("active");
    const revoked = JSON.parse((await run([binary, "keys", "revoke", "--label-prefix", "cli/", "--json"], { cwd: dir, env })).stdout) as {
      revoked: number;
    };
    expect(revoked).toEqual({ revoked: 1 });
    const missing = await run([binary, "keys", "show", "vk_missing"], { cwd: dir, env });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("not_found");
  }, 60_000);

  test("keeps the WAL bounded while serving: 3,000 priced calls leave keybrake.db-wal under 4 MB", async () => {
    const stripe = await mockStripe().start();
    const db = join(dir, "wal.db");
    const server = await startProcess([binary], {
      cwd: dir,
      env: {
        KEYBRAKE_DB: db,
        KEYBRAKE_PORT: "0",
        KEYBRAKE_HOST: "127.0.0.1",
        KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
        KEYBRAKE_STRIPE_SECRET_KEY: STRIPE_LIVE_SECRET,
        KEYBRAKE_STRIPE_BASE_URL: stripe.url,
      },
    });
    try {
      const issued = await fetch(`${server.url}/vault/keys`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({
          vendor: "stripe",
          daily_usd_cap: 1_000_000,
          allowed_endpoints: ["POST /v1/payment_intents"],
          agent_run_label: "wal/run",
        }),
      });
      const { vault_key } = (await issued.json()) as { vault_key: string };
      const walBytes = () => (existsSync(`${db}-wal`) ? statSync(`${db}-wal`).size : 0);
      let largest = 0;
      const statuses = new Map<number, number>();
      let next = 0;
      const caller = async () => {
        while (next < 3_000) {
          next++;
          const res = await fetch(`${server.url}/stripe/v1/payment_intents`, {
            method: "POST",
            headers: { authorization: `Bearer ${vault_key}`, "content-type": "application/x-www-form-urlencoded" },
            body: "amount=2900&currency=usd",
          });
          await res.arrayBuffer();
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          if (next % 250 === 0) largest = Math.max(largest, walBytes());
        }
      };
      await Promise.all(Array.from({ length: 32 }, caller));
      expect(Object.fromEntries(statuses)).toEqual({ 200: 3_000 });
      largest = Math.max(largest, walBytes());
      expect(largest).toBeLessThan(4 * 1024 * 1024);
      expect(server.stderr()).not.toMatch(/checkpoint/i);
    } finally {
      server.proc.kill("SIGTERM");
      await server.proc.exited;
      await stripe.stop();
    }
  }, 120_000);
});

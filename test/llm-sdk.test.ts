import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { ensureBinary } from "./helpers/binary";
import { ADMIN_TOKEN, startKeybrake } from "./helpers/harness";
import { ANTHROPIC_KEY, ANTHROPIC_RATE_LIMITED, mockAnthropic, type MockAnthropic } from "./helpers/mock-anthropic";
import { OPENAI_KEY, mockOpenAi, type MockOpenAi } from "./helpers/mock-openai";
import { startProcess } from "./helpers/process";

/**
 * The official `openai` and `@anthropic-ai/sdk` clients, with nothing changed but their base URL, through the
 * in-process server and through the built binary (SPEC §18, issue 28): streamed and not, Keybrake's refusals as
 * the SDKs' own error types.
 */

type Json = Record<string, any>;
const PRICES = "gpt-test=2/1/8/16384,claude-test=3/0.3/15/64000";

interface Target {
  url: string;
  admin(path: string, body?: unknown): Promise<Json>;
  stop(): Promise<void>;
}

let oa: MockOpenAi;
let an: MockAnthropic;
beforeAll(async () => {
  oa = await mockOpenAi().start();
  an = await mockAnthropic().start();
});
afterAll(async () => {
  await oa.stop();
  await an.stop();
});

const upstreams = () => ({ KEYBRAKE_OPENAI_BASE_URL: oa.url, KEYBRAKE_ANTHROPIC_BASE_URL: an.url, KEYBRAKE_LLM_PRICES: PRICES });

async function inProcess(): Promise<Target> {
  const kb = await startKeybrake(upstreams());
  return {
    url: kb.url,
    admin: async (path, body) => (await kb.admin(path, body === undefined ? undefined : { body })).json() as Promise<Json>,
    stop: () => kb.stop(),
  };
}

/** dist/keybrake alone in an empty folder, configured only by its environment. */
async function binary(): Promise<Target> {
  const dir = mkdtempSync(join(tmpdir(), "keybrake-llm-"));
  copyFileSync(await ensureBinary(), join(dir, "keybrake"));
  Bun.spawnSync(["chmod", "+x", join(dir, "keybrake")]);
  const server = await startProcess([join(dir, "keybrake")], {
    cwd: dir,
    env: {
      KEYBRAKE_PORT: "0",
      KEYBRAKE_HOST: "127.0.0.1",
      KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
      KEYBRAKE_OPENAI_API_KEY: OPENAI_KEY,
      KEYBRAKE_ANTHROPIC_API_KEY: ANTHROPIC_KEY,
      ...upstreams(),
    },
  });
  return {
    url: server.url,
    async admin(path, body) {
      const res = await fetch(server.url + path, {
        method: body === undefined ? "GET" : "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return (await res.json()) as Json;
    },
    async stop() {
      server.proc.kill("SIGTERM");
      await server.proc.exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

for (const [where, start] of [
  ["the in-process server", inProcess],
  ["dist/keybrake", binary],
] as const) {
  describe(`the official SDKs through ${where}`, () => {
    let kb: Target;
    beforeAll(async () => {
      kb = await start();
    }, 180_000);
    afterAll(() => kb.stop());

    const issue = (vendor: string, cap = 2) =>
      kb.admin("/vault/keys", { vendor, daily_usd_cap: cap, allowed_endpoints: ["/*"], expires_in: "1h", agent_run_label: "sdk/run" });
    const audit = async (keyId: string) => ((await kb.admin(`/audit?key_id=${keyId}`)).data as Json[]).reverse();
    /** Waits for `n` audit rows: a call's row is written with its settlement, a stream's as it ends. */
    const settledRows = async (keyId: string, n: number) => {
      for (let i = 0; i < 200; i++) {
        const rows = await audit(keyId);
        if (rows.length >= n) return rows;
        await Bun.sleep(10);
      }
      throw new Error("the calls did not settle");
    };

    test("openai: chat completions, streamed and not, and a streamed Responses call; each settled at its usage", async () => {
      oa.resetState();
      const key = await issue("openai");
      const client = new OpenAI({ apiKey: key.vault_key, baseURL: `${kb.url}/openai/v1` });
      const completion = await client.chat.completions.create({
        model: "gpt-test",
        max_tokens: 300,
        messages: [{ role: "user", content: "Refund?" }],
      });
      expect(completion.choices[0]!.message.content).toBe("Done with the task.");
      expect(completion.usage!.completion_tokens).toBe(120);

      const stream = await client.chat.completions.create({
        model: "gpt-test",
        max_tokens: 300,
        stream: true,
        messages: [{ role: "user", content: "Refund?" }],
      });
      let text = "";
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
      expect(text).toBe("Done with the task.");

      const events: string[] = [];
      for await (const event of await client.responses.create({
        model: "gpt-test",
        input: "Classify it.",
        max_output_tokens: 200,
        stream: true,
      }))
        events.push(event.type);
      expect(events.at(-1)).toBe("response.completed");

      expect(oa.received.every((r) => r.headers.authorization === `Bearer ${OPENAI_KEY}`)).toBe(true);
      expect(JSON.stringify(oa.received)).not.toContain(key.vault_key);
      const rows = await settledRows(key.id, 3);
      const bill = (b: (typeof oa.billed)[number]) => 2 * (b.input - b.cached) + b.cached + 8 * b.output;
      expect(rows.map((r) => [r.status, r.cost_source, Math.round(r.cost_usd * 1e6)])).toEqual(
        oa.billed.map((b) => [200, "response", bill(b)]),
      );
    });

    test("anthropic: messages, streamed and not, counted tokens; the key sent as the SDK sends it", async () => {
      an.resetState();
      const key = await issue("anthropic");
      const client = new Anthropic({ apiKey: key.vault_key, baseURL: `${kb.url}/anthropic` });
      const message = await client.messages.create({
        model: "claude-test",
        max_tokens: 400,
        messages: [{ role: "user", content: "Apologise." }],
      });
      expect(message.content[0]).toMatchObject({ type: "text", text: "Done." });
      const streamed = await client.messages
        .stream({ model: "claude-test", max_tokens: 400, messages: [{ role: "user", content: "Apologise." }] })
        .finalMessage();
      expect(streamed.usage.output_tokens).toBe(120);
      expect(
        (await client.messages.countTokens({ model: "claude-test", messages: [{ role: "user", content: "hi" }] })).input_tokens,
      ).toBeNumber();

      expect(an.received.every((r) => r.headers["x-api-key"] === ANTHROPIC_KEY && r.headers.authorization === undefined)).toBe(true);
      expect(an.received.every((r) => typeof r.headers["anthropic-version"] === "string")).toBe(true);
      const rows = await settledRows(key.id, 3);
      expect(rows.map((r) => [r.status, r.cost_source])).toEqual([
        [200, "response"],
        [200, "response"],
        [200, "request"], // count_tokens: free, nothing held
      ]);
      expect(rows.slice(0, 2).map((r) => Math.round(r.cost_usd * 1e6))).toEqual(
        an.billed.map((b) => Math.ceil(3 * b.input + 15 * b.output)),
      );
    });

    test("refusals are the SDKs' own errors: a vendor 429, Keybrake's cap_exhausted (not retried), an unpriced model", async () => {
      an.resetState();
      oa.resetState();
      const key = await issue("anthropic");
      const client = new Anthropic({ apiKey: key.vault_key, baseURL: `${kb.url}/anthropic`, maxRetries: 0 });
      an.failNext({ kind: "status", ...ANTHROPIC_RATE_LIMITED });
      const limited = await client.messages.create({ model: "claude-test", max_tokens: 10, messages: [] }).catch((e: unknown) => e);
      expect(limited).toBeInstanceOf(Anthropic.RateLimitError);

      // A cap too small for one call's ceiling; the SDK keeps its default retries but is told a retry cannot help.
      const small = await issue("openai", 0.001);
      const openai = new OpenAI({ apiKey: small.vault_key, baseURL: `${kb.url}/openai/v1` });
      const capped = (await openai.chat.completions
        .create({ model: "gpt-test", max_tokens: 4000, messages: [{ role: "user", content: "x" }] })
        .catch((e: unknown) => e)) as InstanceType<typeof OpenAI.RateLimitError>;
      expect(capped).toBeInstanceOf(OpenAI.RateLimitError);
      expect(capped.code).toBe("cap_exhausted");
      const unpriced = (await openai.chat.completions
        .create({ model: "gpt-9-secret", messages: [] })
        .catch((e: unknown) => e)) as InstanceType<typeof OpenAI.UnprocessableEntityError>;
      expect(unpriced).toBeInstanceOf(OpenAI.UnprocessableEntityError);
      expect(unpriced.code).toBe("model_not_priced");
      expect(oa.received).toHaveLength(0);
      expect((await audit(small.id)).map((r) => r.decision)).toEqual(["cap_exhausted", "model_not_priced"]);
    });
  });
}

/**
 * The streaming bench (issue 28): what Keybrake adds to the first byte of a streamed chat completion. The built
 * dist/keybrake in front of bench/llm-upstream.ts (first token after 20 ms, then 8 chunks); `calls` streamed
 * completions straight to the upstream and as many through Keybrake, taken in turn, one at a time; the first
 * byte is when the first chunk of the body reaches the client. Then the key's spend, which must be every
 * call's usage exactly (each settled at its final usage event, none left held).
 *
 * `bun run bench` calls runLlmStream; alone: `bun bench/llm-stream.ts` (uses dist/keybrake as built). BENCH_LLM_CALLS
 * (default 200).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, startBun, startKeybrakeBinary } from "./processes";

const ADMIN_TOKEN = "bench-llm-admin-token-0123456789abcdefghijklm";
/** $2 and $8 per million tokens: the upstream's usage (40 in, 8 out) costs 2 x 40 + 8 x 8 = 144 micro-dollars. */
const PRICES = "bench-model=2/1/8/16384";
const COST_MICROS = 144;

export interface StreamTimes {
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
}

export interface LlmStreamResult {
  calls: number;
  direct_first_byte: StreamTimes;
  keybrake_first_byte: StreamTimes;
  added_p50_ms: number;
  added_p99_ms: number;
  /** Every call settled at its stated usage, none still held. */
  settled_exactly: boolean;
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
const times = (ms: number[]): StreamTimes => {
  const sorted = ms.toSorted((a, b) => a - b);
  return { p50_ms: percentile(sorted, 0.5), p90_ms: percentile(sorted, 0.9), p99_ms: percentile(sorted, 0.99) };
};

/** Sends one streamed completion and reads it to its end: the ms to its first body chunk. */
async function firstByte(url: string, headers: Record<string, string>): Promise<number> {
  const sent = performance.now();
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ model: "bench-model", max_tokens: 64, stream: true, messages: [{ role: "user", content: "Say hello." }] }),
  });
  const reader = res.body!.getReader();
  let first = Number.NaN;
  for (;;) {
    const { done } = await reader.read();
    if (done) break;
    if (Number.isNaN(first)) first = performance.now() - sent;
  }
  if (res.status !== 200 || Number.isNaN(first)) throw new Error(`${url} answered ${res.status} with no body`);
  return first;
}

export async function runLlmStream(options: { bin: string; calls?: number }): Promise<LlmStreamResult> {
  const calls = options.calls ?? Number(process.env.BENCH_LLM_CALLS ?? 200);
  const children: { kill(signal?: number | NodeJS.Signals): void }[] = [];
  const work = mkdtempSync(join(tmpdir(), "keybrake-bench-llm-"));
  try {
    const [upPort, kbPort] = [await freePort(), await freePort()];
    await startBun(children, "llm-upstream.ts", upPort);
    const kb = `http://127.0.0.1:${kbPort}`;
    await startKeybrakeBinary(children, options.bin, kbPort, work, {
      KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
      KEYBRAKE_DB: join(work, "keybrake.db"),
      KEYBRAKE_OPENAI_API_KEY: "sk-bench-openai-0123456789",
      KEYBRAKE_OPENAI_BASE_URL: `http://127.0.0.1:${upPort}`,
      KEYBRAKE_LLM_PRICES: PRICES,
    });
    const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" };
    const key = (await (
      await fetch(`${kb}/vault/keys`, {
        method: "POST",
        headers: admin,
        body: JSON.stringify({
          vendor: "openai",
          daily_usd_cap: 1000,
          allowed_endpoints: ["POST /v1/chat/completions"],
          agent_run_label: "bench/llm",
        }),
      })
    ).json()) as { id: string; vault_key: string };
    const direct = () =>
      firstByte(`http://127.0.0.1:${upPort}/v1/chat/completions`, { authorization: "Bearer sk-bench-openai-0123456789" });
    const proxied = () => firstByte(`${kb}/openai/v1/chat/completions`, { authorization: `Bearer ${key.vault_key}` });
    // Warm both paths (connections, the key's cached policy), then take them in turn.
    await direct();
    await proxied();
    const directMs: number[] = [];
    const proxiedMs: number[] = [];
    for (let i = 0; i < calls; i++) {
      directMs.push(await direct());
      proxiedMs.push(await proxied());
    }
    const record = (await (await fetch(`${kb}/vault/keys/${key.id}`, { headers: admin })).json()) as {
      spent_total_usd: number;
      held_usd: number;
    };
    const d = times(directMs);
    const k = times(proxiedMs);
    return {
      calls,
      direct_first_byte: d,
      keybrake_first_byte: k,
      added_p50_ms: k.p50_ms - d.p50_ms,
      added_p99_ms: k.p99_ms - d.p99_ms,
      settled_exactly: Math.round(record.spent_total_usd * 1e6) === (calls + 1) * COST_MICROS && record.held_usd === 0,
    };
  } finally {
    for (const c of children) c.kill("SIGTERM");
    rmSync(work, { recursive: true, force: true });
  }
}

export function llmStreamTable(r: LlmStreamResult): string {
  const ms = (v: number) => `${v.toFixed(2)} ms`;
  return [
    "| streamed completion, first byte | p50 | p90 | p99 |",
    "|---|---|---|---|",
    `| the upstream directly | ${ms(r.direct_first_byte.p50_ms)} | ${ms(r.direct_first_byte.p90_ms)} | ${ms(r.direct_first_byte.p99_ms)} |`,
    `| through Keybrake | ${ms(r.keybrake_first_byte.p50_ms)} | ${ms(r.keybrake_first_byte.p90_ms)} | ${ms(r.keybrake_first_byte.p99_ms)} |`,
    `| added | ${ms(r.added_p50_ms)} | | ${ms(r.added_p99_ms)} |`,
  ].join("\n");
}

if (import.meta.main) {
  const result = await runLlmStream({ bin: join(import.meta.dir, "../dist/keybrake") });
  console.log(
    `${result.calls} streamed completions each way\n${llmStreamTable(result)}\nsettled at their usage exactly: ${result.settled_exactly}`,
  );
  process.exit(result.settled_exactly ? 0 : 1);
}

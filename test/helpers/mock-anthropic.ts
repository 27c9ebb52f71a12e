import type { Billed } from "./mock-openai";
import { MockVendor, mockId, type Received, type Reply } from "./mock-vendor";

export const ANTHROPIC_KEY = "sk-ant-api03-mockAnthropicLiveKey000000000000";
export const ANTHROPIC_TEST_KEY = "sk-ant-api03-mockAnthropicTestKey000000000000";

/** Anthropic's error body: `{ type: "error", error: { type, message } }`. */
const anthropicError = (status: number, type: string, message: string, headers?: Record<string, string>): Reply => ({
  status,
  body: { type: "error", error: { type, message } },
  headers,
});

export const ANTHROPIC_RATE_LIMITED = anthropicError(429, "rate_limit_error", "Number of request tokens has exceeded your rate limit.", {
  "retry-after": "1",
});
export const ANTHROPIC_OVERLOADED = anthropicError(529, "overloaded_error", "Overloaded");

const sse = (event: string, data: unknown) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

/**
 * A mock Anthropic: the key in `x-api-key` (a Bearer header is refused, as the API refuses an API key there),
 * `anthropic-version` required, Messages answering with `usage` (cache reads and writes as `state` says), streams
 * as Anthropic sends them (`message_start` with the input usage, `ping`, deltas, `message_delta` with the output
 * count, `message_stop`), its error bodies, and `request-id`. `billed` lists what it charged.
 */
export function mockAnthropic() {
  const state = { output: 120, cacheRead: 0, cacheWrite5m: 0, cacheWrite1h: 0, chunkGapMs: 0, cutStreamAt: null as number | null };
  const billed: (Billed & { cacheWrite5m: number; cacheWrite1h: number })[] = [];

  const answer = (req: Received, requestId: string): Reply => {
    const key = req.headers["x-api-key"];
    if (key !== ANTHROPIC_KEY && key !== ANTHROPIC_TEST_KEY) return anthropicError(401, "authentication_error", "invalid x-api-key");
    if (!req.headers["anthropic-version"]) return anthropicError(400, "invalid_request_error", "anthropic-version: header is required");
    if (req.method === "GET" && req.path === "/v1/models")
      return { status: 200, body: { data: [{ type: "model", id: "claude-test", display_name: "Claude Test" }], has_more: false } };
    let body: Record<string, any>;
    try {
      body = JSON.parse(req.body);
    } catch {
      return anthropicError(400, "invalid_request_error", "The request body is not valid JSON.");
    }
    const prompt = Math.ceil(Buffer.byteLength(JSON.stringify([body.system ?? "", body.messages ?? []])) / 4) + 5;
    if (req.method === "POST" && req.path === "/v1/messages/count_tokens") return { status: 200, body: { input_tokens: prompt } };
    if (req.method !== "POST" || req.path !== "/v1/messages") return anthropicError(404, "not_found_error", `Not found: ${req.path}`);
    if (typeof body.max_tokens !== "number") return anthropicError(400, "invalid_request_error", "max_tokens: Field required");
    const cacheRead = Math.min(state.cacheRead, prompt);
    const cacheWrite5m = Math.min(state.cacheWrite5m, prompt - cacheRead);
    const cacheWrite1h = Math.min(state.cacheWrite1h, prompt - cacheRead - cacheWrite5m);
    const input = prompt - cacheRead - cacheWrite5m - cacheWrite1h;
    const output = Math.min(state.output, body.max_tokens);
    billed.push({ path: req.path, requestId, input, cached: cacheRead, output, cacheWrite5m, cacheWrite1h });
    const usage = {
      input_tokens: input,
      cache_read_input_tokens: cacheRead,
      cache_creation_input_tokens: cacheWrite5m + cacheWrite1h,
      cache_creation: { ephemeral_5m_input_tokens: cacheWrite5m, ephemeral_1h_input_tokens: cacheWrite1h },
      output_tokens: output,
      service_tier: "standard",
    };
    const message = {
      id: mockId("msg_"),
      type: "message",
      role: "assistant",
      model: body.model,
      content: [{ type: "text", text: "Done." }],
      stop_reason: "end_turn",
      stop_sequence: null,
      usage,
    };
    if (body.stream !== true) return { status: 200, body: message };
    const words = ["Done", " with", " the", " task", "."];
    return {
      status: 200,
      body: null,
      stream: {
        chunks: [
          sse("message_start", {
            type: "message_start",
            message: { ...message, content: [], stop_reason: null, usage: { ...usage, output_tokens: 1 } },
          }),
          sse("content_block_start", { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }),
          sse("ping", { type: "ping" }),
          ...words.map((text) =>
            sse("content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text } }),
          ),
          sse("content_block_stop", { type: "content_block_stop", index: 0 }),
          sse("message_delta", {
            type: "message_delta",
            delta: { stop_reason: "end_turn", stop_sequence: null },
            usage: { output_tokens: output },
          }),
          sse("message_stop", { type: "message_stop" }),
        ],
        gapMs: state.chunkGapMs,
        cutAt: state.cutStreamAt ?? undefined,
      },
    };
  };

  // The request id is made with the answer, so `billed` can name it.
  const withRequestId = (req: Received): Reply => {
    const requestId = mockId("req_");
    const reply = answer(req, requestId);
    return { ...reply, headers: { "request-id": requestId, ...reply.headers } };
  };
  const mock = new MockVendor(withRequestId, "request-id", () => mockId("req_"));
  return Object.assign(mock, {
    state,
    billed,
    resetState() {
      mock.reset();
      billed.length = 0;
      Object.assign(state, { output: 120, cacheRead: 0, cacheWrite5m: 0, cacheWrite1h: 0, chunkGapMs: 0, cutStreamAt: null });
    },
  });
}

export type MockAnthropic = ReturnType<typeof mockAnthropic>;

import { MockVendor, mockId, type Received, type Reply } from "./mock-vendor";

export const OPENAI_KEY = "sk-proj-mockOpenAiLiveKey00000000000000000000";
export const OPENAI_TEST_KEY = "sk-proj-mockOpenAiTestKey00000000000000000000";

/** OpenAI's error body: `{ error: { message, type, param, code } }`. */
const openaiError = (status: number, type: string, code: string | null, message: string, headers?: Record<string, string>): Reply => ({
  status,
  body: { error: { message, type, param: null, code } },
  headers,
});

/** A 429 as OpenAI sends it when a project's request rate is used up (its SDKs retry it after `retry-after`). */
export const OPENAI_RATE_LIMITED = openaiError(429, "requests", "rate_limit_exceeded", "Rate limit reached for requests", {
  "retry-after": "1",
  "x-ratelimit-remaining-requests": "0",
});

/** What the mock billed one answer: the usage it stated (or would have, for a stream cut before it). */
export interface Billed {
  path: string;
  requestId: string;
  input: number;
  cached: number;
  output: number;
}

const sse = (data: unknown, event?: string) =>
  `${event ? `event: ${event}\n` : ""}data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;

/**
 * A mock OpenAI: Bearer keys, Chat Completions, Responses and embeddings answering with `usage`, streams of
 * server-sent events (a chat stream's usage only when `stream_options.include_usage` asks, in a last chunk with no
 * choices before `data: [DONE]`; a Responses stream's in `response.completed`), OpenAI's error bodies, and
 * `x-request-id`. It answers `state.text` (streamed `state.pieceChars` characters an event; the event carrying all of it in two writes with `state.halves`). Its input count is a quarter of the text's bytes (under any ceiling); its output, `state.output`
 * tokens within the request's limit. `billed` lists what it charged.
 */
export function mockOpenAi() {
  const fresh = () => ({
    output: 120,
    cached: 0,
    chunkGapMs: 0,
    cutStreamAt: null as number | null,
    text: "Done with the task.",
    pieceChars: 8,
    halves: false,
  });
  const state = fresh();
  const billed: Billed[] = [];

  const answer = (req: Received, requestId: string): Reply => {
    const auth = String(req.headers.authorization ?? "");
    if (auth !== `Bearer ${OPENAI_KEY}` && auth !== `Bearer ${OPENAI_TEST_KEY}`)
      return openaiError(401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided.");
    if (req.method === "GET" && req.path === "/v1/models")
      return { status: 200, body: { object: "list", data: [{ id: "gpt-test", object: "model", created: 0, owned_by: "openai" }] } };
    let body: Record<string, any>;
    try {
      body = JSON.parse(req.body);
    } catch {
      return openaiError(400, "invalid_request_error", null, "We could not parse the JSON body of your request.");
    }
    const input = Math.ceil(Buffer.byteLength(JSON.stringify(body.messages ?? body.input ?? "")) / 4) + 3;
    // Embeddings state no cached tokens.
    const cached = req.path === "/v1/embeddings" ? 0 : Math.min(state.cached, input);
    const limit = body.max_completion_tokens ?? body.max_tokens ?? body.max_output_tokens ?? Number.POSITIVE_INFINITY;
    const output = Math.min(state.output, limit) * (body.n ?? 1);
    const bill = () => billed.push({ path: req.path, requestId, input, cached, output: req.path === "/v1/embeddings" ? 0 : output });
    const cut = state.cutStreamAt ?? undefined;
    if (req.method === "POST" && req.path === "/v1/chat/completions") {
      bill();
      const usage = {
        prompt_tokens: input,
        completion_tokens: output,
        total_tokens: input + output,
        prompt_tokens_details: { cached_tokens: cached },
        completion_tokens_details: { reasoning_tokens: 0 },
      };
      const id = mockId("chatcmpl-");
      const base = { id, created: 1_800_000_000, model: body.model };
      if (body.stream !== true) {
        return {
          status: 200,
          body: {
            ...base,
            object: "chat.completion",
            choices: [{ index: 0, message: { role: "assistant", content: state.text }, finish_reason: "stop" }],
            usage,
          },
        };
      }
      const withUsage = body.stream_options?.include_usage === true;
      const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
        sse({ ...base, object: "chat.completion.chunk", choices, ...(withUsage ? { usage: null } : {}), ...extra });
      // The answer's text in pieces (8 characters by default), one chunk each, as a model streams tokens.
      const words = state.text.match(new RegExp(`.{1,${state.pieceChars}}`, "gs")) ?? [];
      const events = [
        chunk([{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }]),
        ...words.map((w) => chunk([{ index: 0, delta: { content: w }, finish_reason: null }])),
        chunk([{ index: 0, delta: {}, finish_reason: "stop" }]),
        ...(withUsage ? [chunk([], { usage })] : []),
        sse("[DONE]"),
      ];
      // `halves`: an event that carries the whole text is written in two halves split in the text's middle, as the
      // network may deliver it.
      const split = (e: string) => {
        const at = e.indexOf(JSON.stringify(state.text).slice(1, -1));
        const mid = at + (state.text.length >> 1);
        return state.halves && at >= 0 ? [e.slice(0, mid), e.slice(mid)] : [e];
      };
      const chunks = events.flatMap(split);
      return { status: 200, body: null, stream: { chunks, gapMs: state.chunkGapMs, cutAt: cut } };
    }
    if (req.method === "POST" && req.path === "/v1/responses") {
      bill();
      const response = {
        id: mockId("resp_"),
        object: "response",
        created_at: 1_800_000_000,
        model: body.model,
        status: "completed",
        output: [
          {
            id: mockId("msg_"),
            type: "message",
            role: "assistant",
            status: "completed",
            content: [{ type: "output_text", text: "Done.", annotations: [] }],
          },
        ],
        usage: {
          input_tokens: input,
          input_tokens_details: { cached_tokens: cached },
          output_tokens: output,
          output_tokens_details: { reasoning_tokens: 0 },
          total_tokens: input + output,
        },
      };
      if (body.stream !== true) return { status: 200, body: response };
      const events = [
        sse(
          { type: "response.created", sequence_number: 0, response: { ...response, status: "in_progress", output: [], usage: null } },
          "response.created",
        ),
        sse(
          {
            type: "response.output_text.delta",
            sequence_number: 1,
            item_id: response.output[0]!.id,
            output_index: 0,
            content_index: 0,
            delta: "Done.",
          },
          "response.output_text.delta",
        ),
        sse({ type: "response.completed", sequence_number: 2, response }, "response.completed"),
      ];
      return { status: 200, body: null, stream: { chunks: events, gapMs: state.chunkGapMs, cutAt: cut } };
    }
    if (req.method === "POST" && req.path === "/v1/embeddings") {
      bill();
      const inputs = Array.isArray(body.input) ? body.input : [body.input];
      return {
        status: 200,
        body: {
          object: "list",
          data: inputs.map((_: unknown, index: number) => ({ object: "embedding", index, embedding: [0.1, -0.2, 0.3] })),
          model: body.model,
          usage: { prompt_tokens: input, total_tokens: input },
        },
      };
    }
    return openaiError(404, "invalid_request_error", "unknown_url", `Invalid URL (${req.method} ${req.path})`);
  };

  // The request id is made with the answer, so `billed` can name it.
  const withRequestId = (req: Received): Reply => {
    const requestId = mockId("req_");
    const reply = answer(req, requestId);
    return { ...reply, headers: { "x-request-id": requestId, ...reply.headers } };
  };
  const mock = new MockVendor(withRequestId, "x-request-id", () => mockId("req_"));
  return Object.assign(mock, {
    state,
    billed,
    resetState() {
      mock.reset();
      billed.length = 0;
      Object.assign(state, fresh());
    },
  });
}

export type MockOpenAi = ReturnType<typeof mockOpenAi>;

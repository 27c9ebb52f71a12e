import { httpUrl, secret } from "../env";
import { memberValueSpan, unpriceable } from "./body";
import { Catalogue, credential, free, priced, refused } from "./catalogue";
import {
  type Ceiling,
  type LlmPrices,
  type ModelPrice,
  type Usage,
  type UsageStream,
  PROMPT_ALLOWANCE_TOKENS,
  asObject,
  jsonRequest,
  llmPriceTable,
  llmPrices,
  llmQuote,
  modelPrice,
  outputLimit,
  parseEvent,
  positiveInt,
  readableUsage,
  stringBytes,
  tokenCount,
} from "./llm";
import { bearerCredentialsByMode, type PriceFn, type Vendor } from "./types";

/**
 * The most tokens OpenAI bills for one image: gpt-4o-mini's 2,833 + 8 tiles x 5,667 = 48,169 at high detail is the
 * dearest count its vision guide documents; patch-based models (up to 1,536 patches times a multiplier under 2.5)
 * stay under it. Rounded up. An entry's own `/image_tokens` overrides it.
 */
export const OPENAI_IMAGE_TOKENS = 50_000;

/** What a content part of a message (Chat Completions) or an input item (Responses) is, for the ceiling. */
type PartKind = "text" | "image";

/** Parts whose tokens Keybrake cannot bound from the request: refused, with why. */
const REFUSED_PARTS: Record<string, string> = {
  input_audio: "audio input is billed per audio token at rates of its own",
  file: "a file part (a PDF) is billed by its pages, which Keybrake cannot count",
  input_file: "a file part (a PDF) is billed by its pages, which Keybrake cannot count",
};

/** The message parts Chat Completions and Responses accept, by what they cost. */
const PARTS: Record<string, PartKind> = {
  text: "text",
  refusal: "text",
  input_text: "text",
  output_text: "text",
  summary_text: "text",
  image_url: "image",
  input_image: "image",
};

/** Responses input items whose tokens are in the request's bytes (a reasoning item's encrypted content included). */
const TEXT_ITEMS = new Set([
  "message",
  "function_call",
  "function_call_output",
  "custom_tool_call",
  "custom_tool_call_output",
  "reasoning",
]);

/** Tools billed at the model's token rates only: anything else (web search, file search, code, images, MCP) has fees. */
const TOKEN_TOOLS = new Set(["function", "custom"]);

/** The images of a message's content (a string, or parts); refuses parts Keybrake cannot bound. */
function contentImages(content: unknown, images: unknown[]) {
  if (typeof content === "string" || content === null || content === undefined) return;
  if (!Array.isArray(content)) throw unpriceable("a message's content is neither text nor a list of parts");
  for (const part of content) {
    const type = asObject(part)?.type;
    if (typeof type !== "string") throw unpriceable("a content part has no type");
    if (REFUSED_PARTS[type]) throw unpriceable(REFUSED_PARTS[type]!);
    const kind = PARTS[type];
    if (!kind) throw unpriceable(`Keybrake does not know what a "${type}" part costs`);
    if (kind === "image") images.push(part);
  }
}

function checkTools(body: Record<string, unknown>) {
  const tools = body.tools;
  if (tools === undefined || tools === null) return;
  if (!Array.isArray(tools)) throw unpriceable('"tools" is not a list');
  for (const tool of tools) {
    const type = asObject(tool)?.type;
    if (typeof type !== "string" || !TOKEN_TOOLS.has(type))
      throw unpriceable(`the ${JSON.stringify(type)} tool has fees of its own, which Keybrake does not price`);
  }
}

/** Priority processing bills more than the table's standard rates; flex and the default bill at most those. */
function checkServiceTier(body: Record<string, unknown>) {
  if (body.service_tier === "priority") throw unpriceable("priority processing is billed above the standard rates");
}

/**
 * The body's bytes, less what its images' strings take (their URL or base64 data), plus the vendor's allowance:
 * the input's tokens at most, images apart.
 */
const textTokens = (bytes: number, images: unknown[]) =>
  bytes - images.reduce((n: number, part) => n + stringBytes(part), 0) + PROMPT_ALLOWANCE_TOKENS;

/** POST /v1/chat/completions: messages, with `n` answers of up to `max_completion_tokens` (or legacy `max_tokens`). */
function chatCeiling(body: Record<string, unknown>, bytes: number, price: ModelPrice): Ceiling {
  if (!Array.isArray(body.messages)) throw unpriceable('"messages" is not a list');
  const images: unknown[] = [];
  for (const message of body.messages) contentImages(asObject(message)?.content, images);
  checkTools(body);
  checkServiceTier(body);
  const modalities = body.modalities;
  if (body.audio != null || (Array.isArray(modalities) && modalities.includes("audio")))
    throw unpriceable("audio output is billed per audio token at rates of its own");
  if (body.prediction != null) throw unpriceable("a predicted output's rejected tokens are billed beyond the output limit");
  if (body.web_search_options != null) throw unpriceable("web search has fees of its own, which Keybrake does not price");
  const n = positiveInt(body, "n") ?? 1;
  return {
    textTokens: textTokens(bytes, images),
    images: images.length,
    outputTokens: outputLimit(body, ["max_completion_tokens", "max_tokens"], price) * n,
    cacheWrite: "none",
    ratePercent: 100,
  };
}

/**
 * POST /v1/responses. Input Keybrake cannot see is refused: an earlier response or a conversation the vendor adds
 * from its own storage, a stored prompt, references to stored items.
 */
function responsesCeiling(body: Record<string, unknown>, bytes: number, price: ModelPrice): Ceiling {
  for (const field of ["previous_response_id", "conversation", "prompt"]) {
    if (body[field] !== undefined && body[field] !== null)
      throw unpriceable(`"${field}" adds input from OpenAI's storage, which is not in this request's bytes`);
  }
  const images: unknown[] = [];
  if (Array.isArray(body.input)) {
    for (const item of body.input) {
      const object = asObject(item);
      const type = object?.type ?? "message";
      if (typeof type !== "string" || !TEXT_ITEMS.has(type))
        throw unpriceable(`an input item of type ${JSON.stringify(type)} is not priced by Keybrake`);
      contentImages(type === "message" ? object!.content : object!.output, images);
    }
  } else if (typeof body.input !== "string") {
    throw unpriceable('"input" is neither text nor a list of items');
  }
  checkTools(body);
  checkServiceTier(body);
  return {
    textTokens: textTokens(bytes, images),
    images: images.length,
    outputTokens: outputLimit(body, ["max_output_tokens"], price),
    cacheWrite: "none",
    ratePercent: 100,
  };
}

/** POST /v1/embeddings: input only (text, or token ids, each at least two bytes of JSON). */
const embeddingsCeiling = (_body: Record<string, unknown>, bytes: number): Ceiling => ({
  textTokens: bytes + PROMPT_ALLOWANCE_TOKENS,
  images: 0,
  outputTokens: 0,
  cacheWrite: "none",
  ratePercent: 100,
});

/** Chat Completions and embeddings: `prompt_tokens` (cached ones included) and `completion_tokens`. */
function promptCompletionUsage(usage: unknown): Usage | null {
  const u = asObject(usage);
  if (!u) return null;
  const prompt = tokenCount(u, "prompt_tokens", true);
  const cached = tokenCount(asObject(u.prompt_tokens_details), "cached_tokens");
  const uncached = prompt !== null && cached !== null && cached <= prompt ? prompt - cached : null;
  return readableUsage({
    input: uncached,
    cachedInput: cached,
    cacheWrite5m: 0,
    cacheWrite1h: 0,
    output: tokenCount(u, "completion_tokens"),
  });
}

/** Responses: `input_tokens` (cached ones included) and `output_tokens` (reasoning included). */
function responsesUsage(usage: unknown): Usage | null {
  const u = asObject(usage);
  if (!u) return null;
  const input = tokenCount(u, "input_tokens", true);
  const cached = tokenCount(asObject(u.input_tokens_details), "cached_tokens");
  const uncached = input !== null && cached !== null && cached <= input ? input - cached : null;
  return readableUsage({
    input: uncached,
    cachedInput: cached,
    cacheWrite5m: 0,
    cacheWrite1h: 0,
    output: tokenCount(u, "output_tokens", true),
  });
}

/** A chat stream: unnamed `data:` chunks, the usage in the last one before `data: [DONE]`. */
const chatStream = (): UsageStream => {
  let usage: Usage | null = null;
  let done = false;
  return {
    event(_name, data) {
      if (data === "[DONE]") done = true;
      else {
        const stated = parseEvent(data)?.usage;
        if (asObject(stated)) usage = promptCompletionUsage(stated);
      }
    },
    ended: () => done,
    usage: () => usage,
  };
};

/** The events that close a Responses stream; each carries the response with its usage. */
const RESPONSE_ENDS = new Set(["response.completed", "response.incomplete", "response.failed"]);

const responsesStream = (): UsageStream => {
  let usage: Usage | null = null;
  let done = false;
  return {
    event(_name, data) {
      const event = parseEvent(data);
      if (typeof event?.type !== "string" || !RESPONSE_ENDS.has(event.type)) return;
      done = true;
      usage = responsesUsage(asObject(event.response)?.usage);
    },
    ended: () => done,
    usage: () => usage,
  };
};

/**
 * A chat stream reports its usage only when asked (`stream_options.include_usage`): Keybrake asks, editing only
 * that member of the body's text. The job then sees one more chunk, with empty `choices` and the usage.
 */
function askForStreamUsage(text: string, body: Record<string, unknown>): Uint8Array | undefined {
  const options = asObject(body.stream_options);
  if (options?.include_usage === true) return undefined;
  const value = JSON.stringify({ ...options, include_usage: true });
  const span = memberValueSpan(text, "stream_options");
  const open = text.indexOf("{") + 1;
  const edited = span
    ? text.slice(0, span[0]) + value + text.slice(span[1])
    : `${text.slice(0, open)}"stream_options":${value},${text.slice(open)}`;
  return new TextEncoder().encode(edited);
}

interface OpenAiPrices {
  llm: LlmPrices;
}

type Endpoint = "chat" | "responses" | "embeddings";

const CEILINGS: Record<Endpoint, (body: Record<string, unknown>, bytes: number, price: ModelPrice) => Ceiling> = {
  chat: chatCeiling,
  responses: responsesCeiling,
  embeddings: embeddingsCeiling,
};

const priceCall =
  (endpoint: Endpoint): PriceFn<OpenAiPrices> =>
  async (input, ctx) => {
    const body = jsonRequest(input.contentType, input.body);
    const price = modelPrice(ctx.prices.llm, body.model);
    const ceiling = CEILINGS[endpoint](body, input.body.length, price);
    const streams = endpoint !== "embeddings" && body.stream === true;
    return llmQuote({
      price,
      ceiling,
      imageTokens: OPENAI_IMAGE_TOKENS,
      usageOf: (answer) => (endpoint === "responses" ? responsesUsage : promptCompletionUsage)(asObject(answer)?.usage),
      stream: streams ? (endpoint === "chat" ? chatStream : responsesStream) : null,
      forwardBody: streams && endpoint === "chat" ? askForStreamUsage(new TextDecoder().decode(input.body), body) : undefined,
    });
  };

const MOVES_MONEY = "money Keybrake does not price";

/** SPEC §6 and §18, OpenAI: every endpoint Keybrake forwards; reads of any of them are free. */
export const OPENAI_CATALOGUE = new Catalogue<PriceFn<OpenAiPrices>>([
  ...priced(
    "input at most its bytes (images at their maximum) + the output limit × n, settled at `usage`",
    priceCall("chat"),
    "/v1/chat/completions",
  ),
  ...priced(
    "input at most its bytes (images at their maximum) + `max_output_tokens`, settled at `usage`",
    priceCall("responses"),
    "/v1/responses",
  ),
  ...priced("input at most its bytes, settled at `usage`", priceCall("embeddings"), "/v1/embeddings"),
  ...free(
    ["GET"],
    "a read",
    "/v1/models",
    "/v1/models/{model}",
    "/v1/responses/{response}/input_items",
    "/v1/chat/completions/{completion}/messages",
  ),
  ...free(["POST", "DELETE"], "updates or deletes a stored completion: no tokens are billed", "/v1/chat/completions/{completion}"),
  ...free(["DELETE"], "deletes a stored response", "/v1/responses/{response}"),
  ...free(["POST"], "cancels a background response: nothing more is generated", "/v1/responses/{response}/cancel"),
  ...free(["POST"], "counts a request's input tokens: nothing is generated", "/v1/responses/input_tokens"),
  ...free(["POST"], "moderation is free of charge", "/v1/moderations"),
  ...refused(`legacy completions, with their own limits and defaults: ${MOVES_MONEY}`, "/v1/completions"),
  ...refused(`billed per image, second or character: ${MOVES_MONEY}`, "/v1/images/*", "/v1/audio/*", "/v1/videos", "/v1/videos/*"),
  ...refused(
    `billed for storage and for file search: ${MOVES_MONEY}`,
    "/v1/files",
    "/v1/files/*",
    "/v1/uploads",
    "/v1/uploads/*",
    "/v1/vector_stores",
    "/v1/vector_stores/*",
  ),
  ...refused(`billed per training token: ${MOVES_MONEY}`, "/v1/fine_tuning/*"),
  ...refused(`runs many calls later, none of them held: ${MOVES_MONEY}`, "/v1/batches", "/v1/batches/*"),
  ...refused(
    `runs model calls and containers Keybrake never sees: ${MOVES_MONEY}`,
    "/v1/assistants",
    "/v1/assistants/*",
    "/v1/threads",
    "/v1/threads/*",
    "/v1/containers",
    "/v1/containers/*",
    "/v1/evals",
    "/v1/evals/*",
  ),
  ...refused(`billed per audio token and minute: ${MOVES_MONEY}`, "/v1/realtime", "/v1/realtime/calls", "/v1/realtime/calls/*"),
  ...credential(
    "the organization's admin API: API keys, projects, service accounts, users, invites",
    "/v1/organization",
    "/v1/organization/*",
  ),
  ...credential(
    "mints client secrets: keys a browser uses for realtime or ChatKit sessions",
    "/v1/realtime/client_secrets",
    "/v1/realtime/sessions",
    "/v1/realtime/transcription_sessions",
    "/v1/chatkit/sessions",
    "/v1/chatkit/sessions/*",
  ),
]);

export const openai: Vendor<OpenAiPrices> = {
  name: "openai",
  env: {
    KEYBRAKE_OPENAI_API_KEY: secret,
    KEYBRAKE_OPENAI_TEST_API_KEY: secret,
    KEYBRAKE_OPENAI_BASE_URL: httpUrl("https://api.openai.com"),
    KEYBRAKE_LLM_PRICES: llmPriceTable,
  },
  secretVariables: ["KEYBRAKE_OPENAI_API_KEY", "KEYBRAKE_OPENAI_TEST_API_KEY"],
  configure: (env) => ({
    baseUrl: env.KEYBRAKE_OPENAI_BASE_URL as string,
    credentials: bearerCredentialsByMode(env, "KEYBRAKE_OPENAI_API_KEY", "KEYBRAKE_OPENAI_TEST_API_KEY"),
    prices: { llm: llmPrices(env) },
  }),
  // The openai SDKs take a base URL with a path: `/openai/v1` is the usual one; bare /v1 goes by the key's vendor.
  bareRoutes: ["/v1/*"],
  publicPath: (path) => path,
  catalogue: OPENAI_CATALOGUE,
  requestId: (headers) => headers.get("x-request-id"),
  // They choose the organization and project that pays.
  contextHeaders: ["openai-organization", "openai-project"],
  // OpenAI ignores Idempotency-Key: a retry of an ambiguous call is a new call with a hold of its own.
  honoursIdempotencyKey: false,
  // Its SDKs retry a 409 unless told not to.
  doNotRetryHeaders: { "x-should-retry": "false" },
};

import { httpUrl, secret } from "../env";
import { unpriceable } from "./body";
import { Catalogue, credential, free, priced, refused } from "./catalogue";
import {
  type CacheWrite,
  type Ceiling,
  type LlmPrices,
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
  readableUsage,
  stringBytes,
  tokenCount,
} from "./llm";
import { apiKeyCredentials, credentialsByMode, type PriceFn, type Vendor } from "./types";

/**
 * The most tokens Anthropic bills for one image. Its vision guide: about width x height / 750, images scaled to at
 * most 1.15 megapixels (about 1,600 tokens); models that read larger images stay under 10,000. Unsure for models
 * released after this was written: an entry's own `/image_tokens` overrides it.
 */
export const ANTHROPIC_IMAGE_TOKENS = 10_000;

/**
 * Anthropic-defined tools the job's code runs (bash, text editor, computer, memory) add definitions and a system
 * prompt the request does not carry: Anthropic documents 245 (bash) to 735 (computer, plus a 466 to 499 token
 * system prompt) tokens each. Held per such tool.
 */
export const CLIENT_TOOL_TOKENS = 2_000;
const CLIENT_TOOLS = /^(bash|text_editor|computer|memory)_\d+$/;

/** Content blocks whose tokens are in the request's bytes (thinking blocks carry the earlier reasoning, signed). */
const TEXT_BLOCKS = new Set(["text", "tool_use", "thinking", "redacted_thinking", "search_result"]);

/** Document sources whose text is in the request (plain text, or content blocks); PDFs are billed by their pages. */
const TEXT_DOCUMENTS = new Set(["text", "content"]);

/** The images of a message's content (a string, or blocks); refuses blocks Keybrake cannot bound. */
function contentImages(content: unknown, images: unknown[]) {
  if (typeof content === "string") return;
  if (!Array.isArray(content)) throw unpriceable("a message's content is neither text nor a list of blocks");
  for (const block of content) {
    const b = asObject(block);
    const type = b?.type;
    if (typeof type !== "string") throw unpriceable("a content block has no type");
    if (type === "image") images.push(block);
    else if (type === "tool_result") {
      if (b!.content !== undefined) contentImages(b!.content, images);
    } else if (type === "document") {
      const source = asObject(b!.source);
      if (!TEXT_DOCUMENTS.has(String(source?.type)))
        throw unpriceable("a PDF document is billed by its pages, which Keybrake cannot count; send its text instead");
      if (source!.type === "content") contentImages(source!.content, images);
    } else if (!TEXT_BLOCKS.has(type)) {
      throw unpriceable(`Keybrake does not know what a "${type}" block costs`);
    }
  }
}

/** Client tools (the job's own, or Anthropic-defined ones the job runs); server tools have fees and are refused. */
function clientTools(body: Record<string, unknown>): number {
  const tools = body.tools ?? [];
  if (!Array.isArray(tools)) throw unpriceable('"tools" is not a list');
  let defined = 0;
  for (const tool of tools) {
    const type = asObject(tool)?.type;
    if (type === undefined || type === null || type === "custom") continue;
    if (typeof type === "string" && CLIENT_TOOLS.test(type)) defined++;
    else throw unpriceable(`the ${JSON.stringify(type)} tool runs on Anthropic's servers with fees Keybrake does not price`);
  }
  return defined;
}

/** Whether any part asks for the prompt cache's 1-hour lifetime (`cache_control.ttl`), anywhere in the request. */
function asksForHourCache(value: unknown): boolean {
  if (Array.isArray(value)) return value.some(asksForHourCache);
  const object = asObject(value);
  if (!object) return false;
  if (asObject(object.cache_control)?.ttl === "1h") return true;
  return Object.values(object).some(asksForHourCache);
}

/**
 * Percent of the standard rates: inference kept in the US costs 1.1x (Anthropic's pricing page, "data residency";
 * unsure for models released after it). Other regions are refused until priced.
 */
function geoPercent(body: Record<string, unknown>): number {
  const geo = body.inference_geo;
  if (geo === undefined || geo === null || geo === "global") return 100;
  if (geo === "us") return 110;
  throw unpriceable(`inference_geo ${JSON.stringify(geo)} has rates Keybrake does not know`);
}

/** POST /v1/messages: system, messages and tools, and up to `max_tokens` of output (thinking included). */
function messagesCeiling(body: Record<string, unknown>, bytes: number, maxOutput: number): Ceiling {
  if (!Array.isArray(body.messages)) throw unpriceable('"messages" is not a list');
  const images: unknown[] = [];
  for (const message of body.messages) contentImages(asObject(message)?.content, images);
  if (Array.isArray(body.system)) contentImages(body.system, images);
  const defined = clientTools(body);
  if (body.mcp_servers != null) throw unpriceable("MCP servers add tool definitions Keybrake never sees");
  if (body.container != null) throw unpriceable("a code execution container is billed by the hour");
  if (body.speed != null && body.speed !== "standard") throw unpriceable("fast mode is billed above the standard rates");
  // Any input token may be written to the prompt cache, at 1.25x the input rate (2x for the 1-hour lifetime).
  const cacheWrite: CacheWrite = asksForHourCache(body) ? "1h" : "5m";
  return {
    textTokens:
      bytes - images.reduce((n: number, image) => n + stringBytes(image), 0) + PROMPT_ALLOWANCE_TOKENS + defined * CLIENT_TOOL_TOKENS,
    images: images.length,
    outputTokens: maxOutput,
    cacheWrite,
    ratePercent: geoPercent(body),
  };
}

/**
 * `input_tokens` (neither cache reads nor writes), `cache_read_input_tokens`, `cache_creation_input_tokens` (split
 * by lifetime in `cache_creation`; writes it does not split are priced at the dearest lifetime the request asked
 * for), `output_tokens`.
 */
function messagesUsage(usage: Record<string, unknown> | null, cacheWrite: CacheWrite): Usage | null {
  if (!usage) return null;
  const created = tokenCount(usage, "cache_creation_input_tokens");
  const split = asObject(usage.cache_creation);
  const w5 = tokenCount(split, "ephemeral_5m_input_tokens");
  const w1h = tokenCount(split, "ephemeral_1h_input_tokens");
  const unsplit = created !== null && w5 !== null && w1h !== null && w5 + w1h <= created ? created - w5 - w1h : null;
  return readableUsage({
    input: tokenCount(usage, "input_tokens", true),
    cachedInput: tokenCount(usage, "cache_read_input_tokens"),
    cacheWrite5m: unsplit === null || w5 === null ? null : w5 + (cacheWrite === "1h" ? 0 : unsplit),
    cacheWrite1h: unsplit === null || w1h === null ? null : w1h + (cacheWrite === "1h" ? unsplit : 0),
    output: tokenCount(usage, "output_tokens", true),
  });
}

/**
 * A message stream: `message_start` states the input (and a first output count), each `message_delta` the output
 * so far (and, on newer models, the input counts again), `message_stop` closes it. An `error` event ends it early.
 */
const messagesStream = (cacheWrite: CacheWrite) => (): UsageStream => {
  let usage: Record<string, unknown> | null = null;
  let done = false;
  return {
    event(_name, data) {
      const event = parseEvent(data);
      if (event?.type === "message_start") usage = { ...asObject(asObject(event.message)?.usage) };
      else if (event?.type === "message_delta" && usage) Object.assign(usage, asObject(event.usage));
      else if (event?.type === "message_stop") done = true;
    },
    ended: () => done,
    usage: () => messagesUsage(usage, cacheWrite),
  };
};

interface AnthropicPrices {
  llm: LlmPrices;
}

const messages: PriceFn<AnthropicPrices> = async (input, ctx) => {
  const body = jsonRequest(input.contentType, input.body);
  const price = modelPrice(ctx.prices.llm, body.model);
  const ceiling = messagesCeiling(body, input.body.length, outputLimit(body, ["max_tokens"], price));
  return llmQuote({
    price,
    ceiling,
    imageTokens: ANTHROPIC_IMAGE_TOKENS,
    usageOf: (answer) => messagesUsage(asObject(asObject(answer)?.usage), ceiling.cacheWrite),
    stream: body.stream === true ? messagesStream(ceiling.cacheWrite) : null,
  });
};

/** SPEC §6 and §18, Anthropic: every endpoint Keybrake forwards; reads of any of them are free. */
export const ANTHROPIC_CATALOGUE = new Catalogue<PriceFn<AnthropicPrices>>([
  ...priced(
    "input at most its bytes (images at their maximum, at the cache-write rate) + `max_tokens`, settled at `usage`",
    messages,
    "/v1/messages",
  ),
  ...free(["POST"], "counts a request's input tokens: nothing is generated", "/v1/messages/count_tokens"),
  ...free(["GET"], "a read", "/v1/models", "/v1/models/{model}"),
  ...refused("runs many calls later, none of them held: money Keybrake does not price", "/v1/messages/batches", "/v1/messages/batches/*"),
  ...credential(
    "the Admin API: API keys, workspaces, members, invites, usage and cost reports",
    "/v1/organizations",
    "/v1/organizations/*",
  ),
]);

export const anthropic: Vendor<AnthropicPrices> = {
  name: "anthropic",
  env: {
    KEYBRAKE_ANTHROPIC_API_KEY: secret,
    KEYBRAKE_ANTHROPIC_TEST_API_KEY: secret,
    KEYBRAKE_ANTHROPIC_BASE_URL: httpUrl("https://api.anthropic.com"),
    KEYBRAKE_LLM_PRICES: llmPriceTable,
  },
  secretVariables: ["KEYBRAKE_ANTHROPIC_API_KEY", "KEYBRAKE_ANTHROPIC_TEST_API_KEY"],
  configure: (env) => ({
    baseUrl: env.KEYBRAKE_ANTHROPIC_BASE_URL as string,
    // Anthropic reads its key from `x-api-key`.
    credentials: credentialsByMode(env, "KEYBRAKE_ANTHROPIC_API_KEY", "KEYBRAKE_ANTHROPIC_TEST_API_KEY", apiKeyCredentials),
    prices: { llm: llmPrices(env) },
  }),
  // The Anthropic SDKs take a base URL with a path: `/anthropic` is the usual one; bare /v1 goes by the key's vendor.
  bareRoutes: ["/v1/*"],
  publicPath: (path) => path,
  catalogue: ANTHROPIC_CATALOGUE,
  requestId: (headers) => headers.get("request-id"),
  // They change what the API does (its version, beta features such as a larger context).
  contextHeaders: ["anthropic-version", "anthropic-beta"],
  // Anthropic ignores Idempotency-Key: a retry of an ambiguous call is a new call with a hold of its own.
  honoursIdempotencyKey: false,
  // Its SDKs retry a 409 unless told not to.
  doNotRetryHeaders: { "x-should-retry": "false" },
};

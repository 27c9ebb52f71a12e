import { z } from "zod";
import { KeybrakeError } from "../errors";
import { parseStrictJson, unpriceable } from "./body";
import { SseReader } from "./sse";
import { unreadableAnswer, type Quote, type Settlement } from "./types";

/**
 * What OpenAI and Anthropic calls share (SPEC §18): the model price table, the ceiling a call is held at, and the
 * settlement at the usage the answer states, streamed or not.
 *
 * The hold is a ceiling, never an estimate. No tokenizer makes more tokens of a text than it has UTF-8 bytes (each
 * token stands for at least one byte), so a request's input is at most the bytes of its body, with two corrections:
 * an image is replaced by the most tokens an image can cost, and an allowance covers what the vendor adds around
 * the text (role markers, the system prompt that enables tools). Its output is at most the limit it sets (the
 * model's maximum when it sets none), times the answers it asks for.
 */

/** USD per million tokens, as integer micro-dollars per million tokens (so 0.075 is 75_000): exact arithmetic. */
export interface Rates {
  input: number;
  cachedInput: number;
  output: number;
}

export interface ModelPrice extends Rates {
  /** The most output tokens one answer can carry: held when the request sets no limit. */
  maxOutput: number;
  /** The most tokens one image can cost; null: the vendor's stated maximum. */
  imageTokens: number | null;
  /** Dearer rates on every token of a request whose input passes `threshold` tokens (long-context pricing). */
  above: { threshold: number; rates: Rates } | null;
}

export type LlmPrices = ReadonlyMap<string, ModelPrice>;

/**
 * Built-in prices, in KEYBRAKE_LLM_PRICES's form (see llmPriceTable); the operator's entries add to and override
 * them. Where a source left a rate open, the dearer reading is kept: a hold may be too high, never too low.
 */
export const DEFAULT_LLM_PRICES = [
  // OpenAI: developers.openai.com/api/docs/pricing as quoted on 2026-06-28 (benchr.org: "lists GPT-5.5 and GPT-5.4
  // only") and in June 2026 (morphllm.com). Prompts over 272K input tokens cost 2x input and 1.5x output (model
  // pages for gpt-5-5-2026-04-23 and gpt-5-5-pro, docs.oxen.ai). Unsure: gpt-5.5's maximum output (128K there, 272K at
  // vercel.com/ai-gateway: the larger is held), and whether the 5.4 mini and nano take the long-context rates too
  // (assumed, the safe side). The pro models publish no cached rate: cached input is billed at the input rate here.
  "gpt-5.5=5/0.5/30/272000>272000:10/1/45",
  "gpt-5.5-pro=30/30/180/272000>272000:60/60/270",
  "gpt-5.4=2.5/0.25/15/128000>272000:5/0.5/22.5",
  "gpt-5.4-pro=30/30/180/128000>272000:60/60/270",
  "gpt-5.4-mini=0.75/0.075/4.5/128000>272000:1.5/0.15/6.75",
  "gpt-5.4-nano=0.2/0.02/1.25/128000>272000:0.4/0.04/1.875",
  // OpenAI embeddings (input only): openai.com/api/pricing, unchanged since their launch (January 2024).
  "text-embedding-3-small=0.02/0.02/0/0",
  "text-embedding-3-large=0.13/0.13/0/0",
  "text-embedding-ada-002=0.1/0.1/0/0",
  // Anthropic: platform.claude.com/docs/en/about-claude/pricing and each model's overview page (the lineup of
  // December 2026: Fable 5.2, Opus 5.5, Sonnet 5.5, Haiku 5.5), cross-checked with trackers that re-read the page
  // (phuryn/claude-usage v1.5.7, checked 2026-12-01; kurofune/claudit v1.9.2, 2026-10-24). Cache reads as the
  // official page states them; unsure: Fable 5.2's cache read (trackers say $0.20: 10% of input is held) and
  // Sonnet 5.5's (cut to $0.10 on 2026-10-07 by the trackers; the page read shows $0.20: kept). Haiku 5.5 charges
  // 5x on every token of a prompt over 100K tokens; Sonnet 4.5 2x input and 1.5x output over 200K (1M-context beta).
  "claude-fable-5-2=8/0.8/40/128000",
  "claude-fable-5-1=10/0.25/50/128000",
  "claude-fable-5=10/1/50/128000",
  "claude-opus-5-5=4/0.2/20/128000",
  "claude-opus-5=5/0.5/25/128000",
  "claude-opus-4-8=5/0.5/25/128000",
  "claude-opus-4-7=5/0.5/25/128000",
  "claude-opus-4-6=5/0.5/25/128000",
  "claude-opus-4-5=5/0.5/25/64000",
  "claude-sonnet-5-5=2/0.2/10/128000",
  "claude-sonnet-5=2/0.2/10/128000",
  "claude-sonnet-4-6=3/0.3/15/64000",
  "claude-sonnet-4-5=3/0.3/15/64000>200000:6/0.6/22.5",
  "claude-haiku-5-5=0.1/0.01/0.5/128000>100000:0.5/0.05/2.5",
  "claude-haiku-4-5=1/0.1/5/64000",
].join(",");

const DECIMAL = String.raw`\d{1,6}(?:\.\d{1,6})?`;
const RATES = `(${DECIMAL})/(${DECIMAL})/(${DECIMAL})`;
const ENTRY = new RegExp(String.raw`^([A-Za-z0-9][A-Za-z0-9._:-]*)=${RATES}/(\d{1,9})(?:/(\d{1,9}))?(?:>(\d{1,9}):${RATES})?$`);
const FORM = "model=input/cached_input/output/max_output_tokens[/image_tokens][>threshold:input/cached_input/output]";

/** "2.5" -> 2_500_000: a USD price per million tokens as integer micro-dollars. */
const microRate = (usd: string): number => {
  const [whole, frac = ""] = usd.split(".");
  return Number(whole) * 1_000_000 + Number(frac.padEnd(6, "0"));
};

function parseEntry(part: string): [string, ModelPrice] | null {
  const m = ENTRY.exec(part);
  if (!m) return null;
  const [, name, input, cached, output, maxOutput, image, threshold, aboveIn, aboveCached, aboveOut] = m;
  return [
    name!,
    {
      input: microRate(input!),
      cachedInput: microRate(cached!),
      output: microRate(output!),
      maxOutput: Number(maxOutput),
      imageTokens: image === undefined ? null : Number(image),
      above:
        threshold === undefined
          ? null
          : {
              threshold: Number(threshold),
              rates: { input: microRate(aboveIn!), cachedInput: microRate(aboveCached!), output: microRate(aboveOut!) },
            },
    },
  ];
}

function parseTable(raw: string): Map<string, ModelPrice> | string {
  const table = new Map<string, ModelPrice>();
  for (const part of raw
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean)) {
    const entry = parseEntry(part);
    if (!entry) return `"${part}" is not ${FORM} (USD per million tokens, e.g. gpt-5.4=2.5/0.25/15/128000)`;
    table.set(...entry);
  }
  return table;
}

/**
 * KEYBRAKE_LLM_PRICES: `model=input/cached_input/output/max_output`, comma-separated, USD per million tokens (up
 * to 6 decimals), e.g. `gpt-5.4=2.5/0.25/15/128000`. Optional: `/image_tokens` (the most one image costs), and
 * `>threshold:input/cached_input/output` (the rates of every token once a prompt passes `threshold` tokens).
 * Entries add to and override DEFAULT_LLM_PRICES. OpenAI and Anthropic both read it.
 */
export const llmPriceTable = z
  .string()
  .default("")
  .transform((raw, ctx) => {
    const table = parseTable(raw);
    if (typeof table === "string") {
      ctx.addIssue({ code: "custom", message: table });
      return z.NEVER;
    }
    return table;
  });

const DEFAULTS = parseTable(DEFAULT_LLM_PRICES) as Map<string, ModelPrice>;

/** The defaults with the operator's table over them. */
export const llmPrices = (env: Record<string, unknown>): LlmPrices =>
  new Map([...DEFAULTS, ...(env.KEYBRAKE_LLM_PRICES as Map<string, ModelPrice>)]);

/** A dated snapshot (OpenAI `-2026-04-23`, Anthropic `-20251101`) or a `-latest` alias of a model in the table. */
const SNAPSHOT = /-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$/;

/**
 * The model's price: its own entry, else (a dated snapshot or `-latest` alias) its base model's. A snapshot priced
 * otherwise than its base needs an entry of its own. Unknown: 422 model_not_priced, nothing forwarded.
 */
export function modelPrice(prices: LlmPrices, model: unknown): ModelPrice {
  if (typeof model !== "string" || model === "") throw unpriceable('"model" is missing or not a string');
  const price = prices.get(model) ?? prices.get(model.replace(SNAPSHOT, ""));
  if (!price) {
    throw new KeybrakeError(
      "model_not_priced",
      `The model ${JSON.stringify(model.slice(0, 100))} has no price in KEYBRAKE_LLM_PRICES, so its call cannot be held; it was not forwarded.`,
    );
  }
  return price;
}

/**
 * What the vendor adds around a request's own text, in tokens: role markers, reply priming, and the system prompt
 * that enables tool use (Anthropic documents 313 to 346 tokens for it). Held on every call.
 */
export const PROMPT_ALLOWANCE_TOKENS = 1_000;

/** How dear the input of a call can be written to the prompt cache (Anthropic): none, 5 minutes (1.25x), 1 hour (2x). */
export type CacheWrite = "none" | "5m" | "1h";
/** Input rates in quarters: a 5-minute cache write costs 5/4 of the input rate, a 1-hour one 8/4. */
const QUARTERS: Record<CacheWrite, bigint> = { none: 4n, "5m": 5n, "1h": 8n };

/** The most a call can consume, read from its request. */
export interface Ceiling {
  /** Input tokens, images excepted: the body's bytes less its images', plus the allowances. */
  textTokens: number;
  images: number;
  /** The output limit, times the answers asked for. */
  outputTokens: number;
  cacheWrite: CacheWrite;
  /** Every rate in percent (Anthropic's US-only inference: 110). */
  ratePercent: number;
}

/** The tokens an answer states, by how they are billed. */
export interface Usage {
  /** Input tokens read at the input rate (neither cache reads nor cache writes). */
  input: number;
  cachedInput: number;
  cacheWrite5m: number;
  cacheWrite1h: number;
  output: number;
}

const ratesFor = (price: ModelPrice, promptTokens: number): Rates =>
  price.above && promptTokens > price.above.threshold ? price.above.rates : price;

/** Σ tokens × rate, in quarter-rates, to micro-dollars: scaled by the percentage and rounded up once. */
const toMicros = (quarterSum: bigint, ratePercent: number): number => {
  const den = 4n * 100n * 1_000_000n;
  return Number((quarterSum * BigInt(ratePercent) + den - 1n) / den);
};

/** The hold: every input token at the dearest rate it can be billed at, and the whole output limit. */
export function ceilingMicros(price: ModelPrice, ceiling: Ceiling, vendorImageTokens: number): number {
  const input = ceiling.textTokens + ceiling.images * (price.imageTokens ?? vendorImageTokens);
  const rates = ratesFor(price, input);
  const sum = BigInt(input) * BigInt(rates.input) * QUARTERS[ceiling.cacheWrite] + BigInt(ceiling.outputTokens) * BigInt(rates.output) * 4n;
  return toMicros(sum, ceiling.ratePercent);
}

/** What a stated usage costs. */
export function usageMicros(price: ModelPrice, usage: Usage, ratePercent: number): number {
  const prompt = usage.input + usage.cachedInput + usage.cacheWrite5m + usage.cacheWrite1h;
  const r = ratesFor(price, prompt);
  const sum =
    BigInt(usage.input) * BigInt(r.input) * 4n +
    BigInt(usage.cachedInput) * BigInt(r.cachedInput) * 4n +
    BigInt(usage.cacheWrite5m) * BigInt(r.input) * 5n +
    BigInt(usage.cacheWrite1h) * BigInt(r.input) * 8n +
    BigInt(usage.output) * BigInt(r.output) * 4n;
  return toMicros(sum, ratePercent);
}

/** Reads a vendor's stream events for the final usage. */
export interface UsageStream {
  /** One server-sent event: its name (null when unnamed) and its data. */
  event(name: string | null, data: string): void;
  /** Whether the stream's closing event has passed. */
  ended(): boolean;
  /** The final usage, once stated. */
  usage(): Usage | null;
}

export interface LlmCall {
  price: ModelPrice;
  ceiling: Ceiling;
  /** The vendor's stated maximum of tokens per image, for models whose entry states none. */
  imageTokens: number;
  /** The usage a (non-streamed) answer states, or null. */
  usageOf(answer: unknown): Usage | null;
  /** Set when the request streams: a reader of the vendor's events. */
  stream: (() => UsageStream) | null;
  forwardBody?: Uint8Array;
}

/** The quote of an LLM call: held at its ceiling, settled at its usage. */
export function llmQuote(call: LlmCall): Quote {
  const quote: Quote = {
    micros: ceilingMicros(call.price, call.ceiling, call.imageTokens),
    source: "request",
    currency: "usd",
    amountMinor: null,
  };
  const settled = (usage: Usage | null, where: string): Settlement =>
    usage
      ? { costMicros: usageMicros(call.price, usage, call.ceiling.ratePercent), source: "response", currency: "usd", amountMinor: null }
      : unreadableAnswer(quote, `the ${where} states no usage`);
  quote.settle = (answer) => settled(call.usageOf(answer), "answer");
  if (call.forwardBody) quote.forwardBody = call.forwardBody;
  const stream = call.stream;
  if (stream) {
    quote.stream = () => {
      const events = stream();
      const sse = new SseReader((name, data) => events.event(name, data));
      return {
        chunk: (bytes) => sse.push(bytes),
        settlement: () => (events.ended() ? settled(events.usage(), "stream") : null),
      };
    };
  }
  return quote;
}

// Reading requests and answers.

/** A JSON object's fields, or null when it is not an object. */
export const asObject = (value: unknown): Record<string, unknown> | null =>
  typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;

/** The JSON data of an event, or null when it is not JSON. */
export function parseEvent(data: string): Record<string, unknown> | null {
  try {
    return asObject(JSON.parse(data));
  } catch {
    return null;
  }
}

/**
 * The bytes a value's strings (keys too) take at the least in JSON text: as JSON.stringify escapes them, which is
 * never longer than any other valid spelling. What an image part's text is worth, at most, in the body's bytes.
 */
export function stringBytes(value: unknown): number {
  if (typeof value === "string") return Buffer.byteLength(JSON.stringify(value));
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + stringBytes(v), 0);
  const object = asObject(value);
  if (!object) return 0;
  return Object.entries(object).reduce((n, [k, v]) => n + stringBytes(k) + stringBytes(v), 0);
}

/** A limit the request sets (`max_tokens`, `n`): a positive integer, or undefined when absent or null. */
export function positiveInt(body: Record<string, unknown>, name: string): number | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) throw unpriceable(`"${name}" must be a positive integer`);
  return v;
}

/** The request's output limit: the largest of those it sets (the vendor refuses two), else the model's maximum. */
export function outputLimit(body: Record<string, unknown>, names: string[], price: ModelPrice): number {
  const given = names.map((name) => positiveInt(body, name)).filter((v): v is number => v !== undefined);
  return given.length > 0 ? Math.max(...given) : price.maxOutput;
}

/**
 * A token count an answer states: a non-negative integer. An optional count that is absent is 0; null when a
 * count cannot be read (the call then settles at its hold).
 */
export function tokenCount(object: Record<string, unknown> | null, name: string, required = false): number | null {
  const v = object?.[name];
  if (v === undefined || v === null) return required ? null : 0;
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0 ? v : null;
}

/** A usage whose every count was readable, else null. */
export function readableUsage(usage: { [K in keyof Usage]: number | null }): Usage | null {
  return Object.values(usage).every((v) => v !== null) ? (usage as Usage) : null;
}

/** The request's JSON object: what an LLM vendor takes. */
export function jsonRequest(contentType: string | null, body: Uint8Array): Record<string, unknown> {
  const type = (contentType ?? "").split(";")[0]!.trim().toLowerCase();
  if (type !== "application/json") throw unpriceable(`content type "${type || "none"}" is not JSON`);
  const object = asObject(parseStrictJson(new TextDecoder().decode(body)));
  if (!object) throw unpriceable("the JSON body is not an object");
  return object;
}

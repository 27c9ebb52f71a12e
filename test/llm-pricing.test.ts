import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { loadConfig } from "../src/config";
import { KeybrakeError } from "../src/errors";
import { ANTHROPIC_CATALOGUE, ANTHROPIC_IMAGE_TOKENS } from "../src/vendors/anthropic";
import { DEFAULT_LLM_PRICES, type ModelPrice, llmPriceTable, llmPrices, modelPrice, usageMicros } from "../src/vendors/llm";
import { OPENAI_CATALOGUE, OPENAI_IMAGE_TOKENS } from "../src/vendors/openai";
import type { Catalogue } from "../src/vendors/catalogue";
import type { PriceFn, Quote } from "../src/vendors/types";

/**
 * SPEC §18's ceiling, as a property: whatever a request holds, its hold covers the most any tokenizer could bill
 * for it. No tokenizer makes more tokens of a text than its UTF-8 bytes, so that most is every string the request
 * carries (keys too) at a byte a token, each image at the vendor's stated maximum, and the output limit times the
 * answers asked for, at the dearest rates that can apply (a long prompt's, Anthropic's cache writes).
 */

const TABLE = "prop-gpt=2.5/0.25/10/16000>5000:5/0.5/20,prop-claude=3/0.3/15/32000>8000:6/0.6/22.5";
const prices = llmPrices({ KEYBRAKE_LLM_PRICES: llmPriceTable.parse(TABLE) });
const ctx = { fx: {}, prices: { llm: prices }, findTracked: async () => null, preflight: async () => ({}) };

function priceOf(catalogue: Catalogue<PriceFn<any>>, path: string, body: string): Promise<Quote> {
  const endpoint = catalogue.classify("POST", path);
  if (endpoint.class !== "priced") throw new Error(`${path} is not priced`);
  const input = {
    method: "POST",
    path,
    query: new URLSearchParams(),
    contentType: "application/json",
    body: new TextEncoder().encode(body),
    keyId: "vk_prop",
    ids: [],
  };
  return endpoint.entry.price!(input, ctx);
}

/** The same request as three clients might write it: compact, indented, or with every non-ASCII character escaped. */
const spellings = (request: unknown) => [
  JSON.stringify(request),
  JSON.stringify(request, null, 2),
  JSON.stringify(request).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`),
];

/** Every string in the value (keys too), as UTF-8 bytes, and its images (which carry no text of their own). */
function worstInput(value: unknown, isImage: (o: Record<string, unknown>) => boolean): { bytes: number; images: number } {
  if (typeof value === "string") return { bytes: Buffer.byteLength(value), images: 0 };
  if (typeof value !== "object" || value === null) return { bytes: 0, images: 0 };
  if (!Array.isArray(value) && isImage(value as Record<string, unknown>)) return { bytes: 0, images: 1 };
  let bytes = 0;
  let images = 0;
  for (const [k, v] of Object.entries(value)) {
    const inner = worstInput(v, isImage);
    bytes += (Array.isArray(value) ? 0 : Buffer.byteLength(k)) + inner.bytes;
    images += inner.images;
  }
  return { bytes, images };
}

/** The most the vendor could bill, in micro-dollars (not rounded): `inputFactor` is Anthropic's cache-write rate. */
function worstMicros(price: ModelPrice, input: number, output: number, inputFactor = 1): number {
  const r = price.above && input > price.above.threshold ? price.above.rates : price;
  return (input * r.input * inputFactor + output * r.output) / 1e6;
}

const text = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 60 }),
  fc.string({ unit: "binary", maxLength: 60 }),
  fc.string({ maxLength: 3000 }),
);
const limit = fc.option(fc.integer({ min: 1, max: 20_000 }), { nil: undefined });

const chatPart = fc.oneof(
  text.map((t) => ({ type: "text", text: t })),
  fc.record({ url: text, detail: fc.constantFrom("low", "high", "auto") }).map((image_url) => ({ type: "image_url", image_url })),
);
const chatRequest = fc.record(
  {
    model: fc.constant("prop-gpt"),
    messages: fc.array(
      fc.record({
        role: fc.constantFrom("system", "user", "assistant", "tool"),
        content: fc.oneof(text, fc.array(chatPart, { maxLength: 4 })),
      }),
      { maxLength: 6 },
    ),
    max_completion_tokens: limit,
    n: fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined }),
    tools: fc.option(
      fc.array(
        fc.record({ name: fc.stringMatching(/^[a-z_]{1,12}$/), description: text }).map((f) => ({
          type: "function",
          function: { ...f, parameters: { type: "object", properties: { q: { type: "string", description: f.description } } } },
        })),
        { maxLength: 3 },
      ),
      { nil: undefined },
    ),
    stream: fc.boolean(),
  },
  { requiredKeys: ["model", "messages"] },
);

const responsesRequest = fc.record(
  {
    model: fc.constant("prop-gpt"),
    instructions: fc.option(text, { nil: undefined }),
    input: fc.oneof(
      text,
      fc.array(
        fc.oneof(
          fc.record({
            role: fc.constantFrom("user", "assistant"),
            content: fc.oneof(
              text,
              fc.array(
                fc.oneof(
                  text.map((t) => ({ type: "input_text", text: t })),
                  text.map((url) => ({ type: "input_image", image_url: url })),
                ),
                { maxLength: 3 },
              ),
            ),
          }),
          fc.record({ type: fc.constant("function_call_output"), call_id: fc.stringMatching(/^call_[a-z0-9]{1,8}$/), output: text }),
        ),
        { maxLength: 5 },
      ),
    ),
    max_output_tokens: limit,
  },
  { requiredKeys: ["model", "input"] },
);

const claudeImage = fc
  .string({ maxLength: 400 })
  .map((data) => ({ type: "image", source: { type: "base64", media_type: "image/png", data } }));
const claudeText = text.map((t) => ({ type: "text", text: t }));
const claudeBlock = fc.oneof(
  claudeText,
  claudeImage,
  fc.record({
    type: fc.constant("tool_result"),
    tool_use_id: fc.stringMatching(/^toolu_[a-z0-9]{1,8}$/),
    content: fc.oneof(text, fc.array(fc.oneof(claudeText, claudeImage), { maxLength: 3 })),
  }),
  text.map((data) => ({ type: "document", source: { type: "text", media_type: "text/plain", data } })),
);
const cacheControl = fc.option(fc.constantFrom({ type: "ephemeral" }, { type: "ephemeral", ttl: "5m" }, { type: "ephemeral", ttl: "1h" }), {
  nil: undefined,
});
const claudeRequest = fc.record(
  {
    model: fc.constant("prop-claude"),
    max_tokens: fc.integer({ min: 1, max: 32_000 }),
    system: fc.option(
      fc.oneof(
        text,
        fc.array(fc.record({ type: fc.constant("text"), text, cache_control: cacheControl }, { requiredKeys: ["type", "text"] }), {
          maxLength: 2,
        }),
      ),
      { nil: undefined },
    ),
    messages: fc.array(
      fc.record({ role: fc.constantFrom("user", "assistant"), content: fc.oneof(text, fc.array(claudeBlock, { maxLength: 4 })) }),
      {
        maxLength: 5,
      },
    ),
    tools: fc.option(
      fc.array(fc.record({ name: fc.stringMatching(/^[a-z_]{1,12}$/), description: text, input_schema: fc.constant({ type: "object" }) }), {
        maxLength: 2,
      }),
      {
        nil: undefined,
      },
    ),
  },
  { requiredKeys: ["model", "max_tokens", "messages"] },
);

const isOpenAiImage = (o: Record<string, unknown>) => o.type === "image_url" || o.type === "input_image";
const isClaudeImage = (o: Record<string, unknown>) => o.type === "image";

describe("the hold covers what any tokenizer could bill", () => {
  test("Chat Completions: every string at a byte a token, images at their maximum, the output limit times n", async () => {
    const price = modelPrice(prices, "prop-gpt");
    await fc.assert(
      fc.asyncProperty(chatRequest, async (request) => {
        const worst = worstInput(request, isOpenAiImage);
        const input = worst.bytes + worst.images * OPENAI_IMAGE_TOKENS;
        const output = (request.max_completion_tokens ?? price.maxOutput) * (request.n ?? 1);
        for (const body of spellings(request)) {
          const quote = await priceOf(OPENAI_CATALOGUE, "/v1/chat/completions", body);
          expect(quote.micros).toBeGreaterThanOrEqual(Math.ceil(worstMicros(price, input, output)));
          expect(quote.stream !== undefined).toBe(request.stream === true);
        }
      }),
      { numRuns: 300 },
    );
  });

  test("Responses: instructions, input items and tool outputs, images at their maximum, max_output_tokens", async () => {
    const price = modelPrice(prices, "prop-gpt");
    await fc.assert(
      fc.asyncProperty(responsesRequest, async (request) => {
        const worst = worstInput(request, isOpenAiImage);
        const input = worst.bytes + worst.images * OPENAI_IMAGE_TOKENS;
        for (const body of spellings(request)) {
          const quote = await priceOf(OPENAI_CATALOGUE, "/v1/responses", body);
          expect(quote.micros).toBeGreaterThanOrEqual(Math.ceil(worstMicros(price, input, request.max_output_tokens ?? price.maxOutput)));
        }
      }),
      { numRuns: 300 },
    );
  });

  test("Anthropic Messages: system, messages, tool results and documents, images at their maximum, at the cache-write rate", async () => {
    const price = modelPrice(prices, "prop-claude");
    await fc.assert(
      fc.asyncProperty(claudeRequest, async (request) => {
        const worst = worstInput(request, isClaudeImage);
        const input = worst.bytes + worst.images * ANTHROPIC_IMAGE_TOKENS;
        // Any input token may be written to the cache: 1.25x input, 2x for the 1-hour lifetime.
        const factor = JSON.stringify(request).includes('"ttl":"1h"') ? 2 : 1.25;
        for (const body of spellings(request)) {
          const quote = await priceOf(ANTHROPIC_CATALOGUE, "/v1/messages", body);
          expect(quote.micros).toBeGreaterThanOrEqual(Math.ceil(worstMicros(price, input, request.max_tokens, factor)));
        }
      }),
      { numRuns: 300 },
    );
  });

  test("whatever usage within that bound the answer states, its settlement is within the hold", async () => {
    const price = modelPrice(prices, "prop-claude");
    await fc.assert(
      fc.asyncProperty(claudeRequest, fc.nat(), fc.nat(), fc.nat(), fc.nat(), async (request, a, b, c, d) => {
        const quote = await priceOf(ANTHROPIC_CATALOGUE, "/v1/messages", JSON.stringify(request));
        const worst = worstInput(request, isClaudeImage);
        const prompt = worst.bytes + worst.images * ANTHROPIC_IMAGE_TOKENS;
        const hour = JSON.stringify(request).includes('"ttl":"1h"');
        // The prompt split any way between plain input, cache reads and cache writes (1-hour ones if asked for).
        const read = a % (prompt + 1);
        const written = b % (prompt - read + 1);
        const written1h = hour ? c % (written + 1) : 0;
        const usage = {
          input: prompt - read - written,
          cachedInput: read,
          cacheWrite5m: written - written1h,
          cacheWrite1h: written1h,
          output: d % (request.max_tokens + 1),
        };
        expect(usageMicros(price, usage, 100)).toBeLessThanOrEqual(quote.micros);
      }),
      { numRuns: 300 },
    );
  });
});

describe("the OpenAI and Anthropic catalogues", () => {
  test("every entry's own path classifies as that entry for every method it covers (no entry is shadowed)", () => {
    for (const catalogue of [OPENAI_CATALOGUE, ANTHROPIC_CATALOGUE] as Catalogue<unknown>[]) {
      for (const entry of catalogue.entries) {
        const path = entry.shape.replace(/\{\w+\}/g, "obj_1").replace(/\/\*$/, "/x/y");
        const methods = entry.methods === "*" ? ["POST", "DELETE", "GET"] : entry.methods;
        for (const method of methods) {
          const c = catalogue.classify(method, path);
          const shape = "entry" in c ? c.entry?.shape : undefined;
          if (method === "GET" && entry.class !== "credential") expect(c.class).toBe("free");
          else expect(`${method} ${path} -> ${c.class} ${shape}`).toBe(`${method} ${path} -> ${entry.class} ${entry.shape}`);
        }
      }
    }
  });
});

describe("KEYBRAKE_LLM_PRICES", () => {
  test("the defaults parse; the operator's entries add to and override them; a bad entry stops start-up naming the variable", () => {
    expect(DEFAULT_LLM_PRICES.split(",").length).toBe(llmPriceTable.parse(DEFAULT_LLM_PRICES).size);
    const config = loadConfig({ KEYBRAKE_LLM_PRICES: "gpt-5.4=3/0.3/16/64000, my-ft-model=1.5/0.75/6/4096/2000" });
    const table = (config.vendors.openai!.prices as { llm: Map<string, ModelPrice> }).llm;
    expect(table.get("gpt-5.4")).toMatchObject({
      input: 3_000_000,
      cachedInput: 300_000,
      output: 16_000_000,
      maxOutput: 64_000,
      above: null,
    });
    expect(table.get("my-ft-model")).toMatchObject({ imageTokens: 2000 });
    expect(table.get("claude-haiku-5-5")).toMatchObject({
      input: 100_000,
      above: { threshold: 100_000, rates: { input: 500_000, output: 2_500_000 } },
    });
    for (const bad of ["gpt-x=1/2/3", "gpt-x=1/2/3/4/5/6", "gpt-x=-1/0/1/10", "gpt-x=1/0.1234567/1/10", "=1/1/1/1", "gpt-x=1/1/1/10>5"]) {
      expect(() => loadConfig({ KEYBRAKE_LLM_PRICES: bad })).toThrow(/^KEYBRAKE_LLM_PRICES: /);
    }
  });

  test("a model is its own entry, else its dated snapshot's or -latest alias's base; anything else is model_not_priced", () => {
    const table = llmPrices({ KEYBRAKE_LLM_PRICES: llmPriceTable.parse("gpt-5.4-2026-03-05=9/9/9/9") });
    expect(modelPrice(table, "gpt-5.4-2026-03-05").input).toBe(9_000_000);
    expect(modelPrice(table, "gpt-5.4-2026-01-01")).toBe(modelPrice(table, "gpt-5.4"));
    expect(modelPrice(table, "claude-opus-4-5-20251101")).toBe(modelPrice(table, "claude-opus-4-5"));
    expect(modelPrice(table, "claude-opus-4-5-latest")).toBe(modelPrice(table, "claude-opus-4-5"));
    for (const unknown of ["gpt-5.4x", "ft:gpt-5.4:acme::1", "gpt-5.4-2026-03", "claude-opus-4-5-2025110"]) {
      expect(() => modelPrice(table, unknown)).toThrow(KeybrakeError);
    }
  });
});

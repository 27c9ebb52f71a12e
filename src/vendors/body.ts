import { KeybrakeError } from "../errors";

export const unpriceable = (why: string) =>
  new KeybrakeError("unpriceable_request", `The price of this call cannot be read unambiguously: ${why}. It was not forwarded.`);

/** A priced request's fields as the vendor will read them: form (bracket notation) or a JSON object. */
export interface PricedBody {
  /** The field's single value; undefined when absent. Throws unpriceable when given twice or nested. */
  scalar(name: string): string | number | boolean | null | undefined;
  /** Every value of a repeated form field or a JSON array/string field, for list-valued inputs. */
  list(name: string): unknown[];
}

export function readPricedBody(contentType: string | null, body: Uint8Array, query: URLSearchParams, fields: string[]): PricedBody {
  // A priced field in the query string could be read by the vendor instead of (or merged with) the body's.
  for (const key of query.keys()) {
    if (fields.some((f) => key === f || key.startsWith(`${f}[`))) throw unpriceable(`"${key}" is in the query string`);
  }
  const type = (contentType ?? "").split(";")[0]!.trim().toLowerCase();
  const text = new TextDecoder("utf-8", { fatal: false }).decode(body);
  if (type === "application/x-www-form-urlencoded") return formBody(new URLSearchParams(text));
  if (type === "application/json") return jsonBody(text);
  if (body.length === 0 && type === "") return formBody(new URLSearchParams());
  throw unpriceable(`content type "${type || "none"}" is not form-encoded or JSON`);
}

function formBody(params: URLSearchParams): PricedBody {
  return {
    scalar(name) {
      const hits = [...params.entries()].filter(([k]) => k === name || k.startsWith(`${name}[`));
      if (hits.length === 0) return undefined;
      if (hits.length > 1 || hits[0]![0] !== name) throw unpriceable(`"${name}" is given more than once or nested`);
      return hits[0]![1];
    },
    list(name) {
      return [...params.entries()]
        .filter(([k]) => k === name || (k.startsWith(name) && /^\[\d*\]$/.test(k.slice(name.length))))
        .map(([, v]) => v);
    },
  };
}

/**
 * JSON.parse keeps the last of two equal keys; another parser may keep the first. A body with a key twice in
 * any object is refused rather than guessed, so `{"amount":1,"amount":5000}` is never priced at $0.01.
 */
export function parseStrictJson(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw unpriceable("the JSON body does not parse");
  }
  const duplicate = duplicateKey(text);
  if (duplicate !== null) throw unpriceable(`"${duplicate}" is given more than once`);
  return value;
}

function jsonBody(text: string): PricedBody {
  const value = parseStrictJson(text);
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw unpriceable("the JSON body is not an object");
  const obj = value as Record<string, unknown>;
  return {
    scalar(name) {
      const v = obj[name];
      if (v !== null && typeof v === "object") throw unpriceable(`"${name}" is not a single value`);
      return v as string | number | boolean | null | undefined;
    },
    list(name) {
      const v = obj[name];
      if (v === undefined || v === null) return [];
      return Array.isArray(v) ? v : [v];
    },
  };
}

/** The first key that appears twice in one object of already-valid JSON text, or null. */
export function duplicateKey(text: string): string | null {
  // One entry per open container: the keys seen so far for an object, null for an array.
  const stack: ({ keys: Set<string>; expectKey: boolean } | null)[] = [];
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    const top = stack[stack.length - 1];
    if (ch === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (top?.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.keys.has(key)) return key;
        top.keys.add(key);
        top.expectKey = false;
      }
      i = j;
    } else if (ch === "{") {
      stack.push({ keys: new Set(), expectKey: true });
    } else if (ch === "[") {
      stack.push(null);
    } else if (ch === "}" || ch === "]") {
      stack.pop();
    } else if (ch === "," && top) {
      top.expectKey = true;
    }
  }
  return null;
}

/** A minor-unit amount: a non-negative integer, as a JSON number or (form) digits. Anything else is refused. */
export function readAmount(body: PricedBody, name: string, required: boolean): number | undefined {
  const v = body.scalar(name);
  if (v === undefined || v === null || v === "") {
    if (required) throw unpriceable(`"${name}" is missing`);
    return undefined;
  }
  const n = typeof v === "number" ? v : typeof v === "string" && /^\d{1,15}$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < 0) throw unpriceable(`"${name}" must be a non-negative integer in minor units`);
  return n;
}

export function readCurrency(body: PricedBody, required: boolean): string | undefined {
  const v = body.scalar("currency");
  if (v === undefined || v === null || v === "") {
    if (required) throw unpriceable(`"currency" is missing`);
    return undefined;
  }
  if (typeof v !== "string" || !/^[A-Za-z]{3}$/.test(v)) throw unpriceable(`"currency" is not a three-letter code`);
  return v.toLowerCase();
}

/**
 * Where the value of a top-level member of a JSON object is in its text: [start, end), or null when the object has
 * no such member. The text must be valid JSON (parseStrictJson has read it), so a value can be edited in place
 * and every other byte the job sent kept as it was.
 */
export function memberValueSpan(text: string, key: string): [number, number] | null {
  let i = text.indexOf("{") + 1;
  for (;;) {
    i = skipSpace(text, i);
    if (text[i] !== '"') return null;
    const keyEnd = stringEnd(text, i);
    const name = JSON.parse(text.slice(i, keyEnd)) as string;
    const start = skipSpace(text, skipSpace(text, keyEnd) + 1);
    const end = valueEnd(text, start);
    if (name === key) return [start, end];
    i = skipSpace(text, end);
    if (text[i] !== ",") return null;
    i++;
  }
}

const skipSpace = (text: string, i: number) => {
  while (i < text.length && " \t\n\r".includes(text[i]!)) i++;
  return i;
};

/** The index after the string that starts at `i`. */
const stringEnd = (text: string, i: number) => {
  let j = i + 1;
  while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
  return j + 1;
};

function valueEnd(text: string, i: number): number {
  if (text[i] === '"') return stringEnd(text, i);
  if (text[i] === "{" || text[i] === "[") {
    let depth = 0;
    for (let j = i; j < text.length; j++) {
      const ch = text[j];
      if (ch === '"') j = stringEnd(text, j) - 1;
      else if (ch === "{" || ch === "[") depth++;
      else if ((ch === "}" || ch === "]") && --depth === 0) return j + 1;
    }
  }
  let j = i;
  while (j < text.length && !",}] \t\n\r".includes(text[j]!)) j++;
  return j;
}

import type { Scrub } from "../config";

/**
 * SPEC §4: no configured secret ever leaves in an answer. The catalogue refuses the endpoints known to carry
 * credentials; this is the defence that holds for a resource nobody thought of (an echo, an error that quotes
 * the request, a new field). Each secret is looked for as sent and in the forms a JSON or URL encoder writes it.
 */
export interface ScrubbedAnswer {
  body: ArrayBuffer;
  /** How many occurrences were replaced, in the headers and the body. */
  replaced: number;
}

/** The spellings of a secret an answer may carry. */
function spellings(secret: string): string[] {
  const forms = [secret, JSON.stringify(secret).slice(1, -1), secret.replaceAll("/", "\\/"), encodeURIComponent(secret)];
  return [...new Set(forms)];
}

interface Needle {
  bytes: Buffer;
  text: string;
  replacement: string;
}

/** A streamed answer's scrubber: chunks in, scrubbed bytes out, holding back only what a secret could still need. */
export interface StreamScrub {
  push(chunk: Uint8Array): Uint8Array;
  /** What is still held back, once the stream has ended. */
  end(): Uint8Array;
  /** How many occurrences were replaced so far, in the headers and the body. */
  replaced(): number;
}

export interface Scrubber {
  answer(headers: Headers, body: ArrayBuffer): ScrubbedAnswer;
  /** Scrubs the headers now; the body as it passes. */
  stream(headers: Headers): StreamScrub;
}

/** A line that long without a break is held no longer than a secret's length needs (a stream should not stall). */
const MAX_HELD_LINE = 64 * 1024;

/** Built once per configuration; each answer is scanned with Buffer.indexOf (no copy unless a secret is there). */
export function answerScrubber(list: Scrub[]): Scrubber {
  // Longer first: a secret that contains another (a Basic credential's base64 never does, but a token might) is
  // replaced whole before its part is.
  const needles: Needle[] = list
    .flatMap(({ secret, replacement }) => spellings(secret).map((text) => ({ text, bytes: Buffer.from(text), replacement })))
    .sort((a, b) => b.text.length - a.text.length);
  const longest = Math.max(0, ...needles.map((n) => n.text.length));
  // Server-sent events are lines: where no spelling of a secret holds a line break, none spans one, so every
  // complete line can be sent on at once and only the line still being written is held back.
  const lineSafe = needles.every((n) => !/[\r\n]/.test(n.text));

  /** Replaces every needle in `text` (each byte one Latin-1 character), adding to `count.n`. */
  const replaceIn = (text: string, count: { n: number }): string => {
    let out = text;
    for (const n of needles) {
      if (!out.includes(n.text)) continue;
      count.n += out.split(n.text).length - 1;
      out = out.replaceAll(n.text, n.replacement);
    }
    return out;
  };
  const scrubHeaders = (headers: Headers, count: { n: number }) => {
    for (const [name, value] of [...headers.entries()]) {
      const clean = replaceIn(value, count);
      if (clean !== value) headers.set(name, clean);
    }
  };

  return {
    answer(headers, body) {
      const count = { n: 0 };
      scrubHeaders(headers, count);
      const bytes = Buffer.from(body);
      if (!needles.some((n) => bytes.indexOf(n.bytes) >= 0)) return { body, replaced: count.n };
      // Latin-1 maps every byte to one character and back: the body's other bytes stay exactly as they were,
      // whatever its encoding.
      const clean = Buffer.from(replaceIn(bytes.toString("latin1"), count), "latin1");
      return { body: clean.buffer.slice(clean.byteOffset, clean.byteOffset + clean.byteLength) as ArrayBuffer, replaced: count.n };
    },

    stream(headers) {
      const count = { n: 0 };
      scrubHeaders(headers, count);
      // Already scrubbed, and at most the start of a secret: the next chunk may complete it.
      let held = "";
      const release = (text: string, final: boolean): Uint8Array => {
        const clean = replaceIn(text, count);
        let cut = final || longest === 0 ? clean.length : lineSafe ? Math.max(clean.lastIndexOf("\n"), clean.lastIndexOf("\r")) + 1 : 0;
        if (!final && clean.length - cut > (lineSafe ? MAX_HELD_LINE : 0)) cut = Math.max(cut, clean.length - (longest - 1));
        held = clean.slice(cut);
        return Buffer.from(clean.slice(0, cut), "latin1");
      };
      return {
        push: (chunk) => release(held + Buffer.from(chunk).toString("latin1"), false),
        end: () => release(held, true),
        replaced: () => count.n,
      };
    },
  };
}

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

/** Built once per configuration; each answer is scanned with Buffer.indexOf (no copy unless a secret is there). */
export function answerScrubber(list: Scrub[]): (headers: Headers, body: ArrayBuffer) => ScrubbedAnswer {
  // Longer first: a secret that contains another (a Basic credential's base64 never does, but a token might) is
  // replaced whole before its part is.
  const needles: Needle[] = list
    .flatMap(({ secret, replacement }) => spellings(secret).map((text) => ({ text, bytes: Buffer.from(text), replacement })))
    .sort((a, b) => b.text.length - a.text.length);

  return (headers, body) => {
    let replaced = 0;
    const replaceIn = (text: string): string => {
      let out = text;
      for (const n of needles) {
        if (!out.includes(n.text)) continue;
        replaced += out.split(n.text).length - 1;
        out = out.replaceAll(n.text, n.replacement);
      }
      return out;
    };
    for (const [name, value] of [...headers.entries()]) {
      const clean = replaceIn(value);
      if (clean !== value) headers.set(name, clean);
    }
    const bytes = Buffer.from(body);
    if (!needles.some((n) => bytes.indexOf(n.bytes) >= 0)) return { body, replaced };
    // Latin-1 maps every byte to one character and back: the body's other bytes stay exactly as they were,
    // whatever its encoding.
    const clean = Buffer.from(replaceIn(bytes.toString("latin1")), "latin1");
    return { body: clean.buffer.slice(clean.byteOffset, clean.byteOffset + clean.byteLength) as ArrayBuffer, replaced };
  };
}

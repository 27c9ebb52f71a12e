import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { answerScrubber } from "../src/proxy/scrub";
import { SseReader } from "../src/vendors/sse";

/**
 * SPEC §4 for streamed answers: no configured secret reaches a job, even split between two chunks, and a stream is
 * not held back for it: every complete line goes on at once (no spelling of a secret spans a line break), only
 * the line still being written waits for its end.
 */

const SECRET = "sk-proj-liveSecret0123456789abcdef";
const R = "[redacted by Keybrake]";
const text = (bytes: Uint8Array) => Buffer.from(bytes).toString("latin1");

/** Pushes the chunks through one stream scrubber: what came out after each, and in all. */
function run(chunks: string[], secrets = [SECRET]) {
  const scrub = answerScrubber(secrets.map((secret) => ({ secret, replacement: R }))).stream(new Headers());
  const out = chunks.map((c) => text(scrub.push(Buffer.from(c, "latin1"))));
  out.push(text(scrub.end()));
  return { out, all: out.join(""), replaced: scrub.replaced() };
}

describe("a streamed answer's scrubber", () => {
  test("a secret split between two chunks is replaced, and counted once", () => {
    const { all, replaced } = run([`data: {"echo":"${SECRET.slice(0, 10)}`, `${SECRET.slice(10)}"}\n\n`, "data: [DONE]\n\n"]);
    expect(all).toBe(`data: {"echo":"${R}"}\n\ndata: [DONE]\n\n`);
    expect(replaced).toBe(1);
  });

  test("complete lines leave at once; only a line still being written waits", () => {
    const { out } = run(["data: one\n\ndata: tw", "o\n\n", "data: three\n\n"]);
    expect(out).toEqual(["data: one\n\n", "data: two\n\n", "data: three\n\n", ""]);
  });

  test("any split of any text with the secret in any spelling: nothing of it leaves, the rest is unchanged", () => {
    const spellings = [SECRET, encodeURIComponent(`${SECRET}/x`).slice(0, -1), JSON.stringify(`${SECRET}/`).slice(1, -2)];
    fc.assert(
      fc.property(
        fc.string({ maxLength: 200 }),
        fc.string({ maxLength: 200 }),
        fc.constantFrom(...spellings),
        fc.array(fc.nat(), { maxLength: 6 }),
        (a, b, secret, cuts) => {
          const whole = `${a}${secret}\n${b}`;
          const points = [...new Set(cuts.map((c) => c % (whole.length + 1)))].sort((x, y) => x - y);
          const chunks = [0, ...points].map((p, i, all) => whole.slice(p, all[i + 1] ?? whole.length));
          const { all } = run(chunks.map((c) => Buffer.from(c).toString("latin1")));
          expect(all).not.toContain(SECRET);
          const once = Buffer.from(whole).toString("latin1").replaceAll(SECRET, R);
          expect(all).toBe(once);
        },
      ),
    );
  });

  test("a secret with a line break in it: the scrubber holds back a secret's length instead of a line", () => {
    const odd = "line one of a secret\nline two of it";
    const first = `${"x".repeat(100)}${odd.slice(0, 25)}`;
    const { out, all } = run([first, `${odd.slice(25)}\nend\n`], [odd]);
    expect(all).toBe(`${"x".repeat(100)}${R}\nend\n`);
    // All but the last characters the longest spelling (URL-encoded) could still need.
    expect(out[0]).toBe(first.slice(0, first.length - (encodeURIComponent(odd).length - 1)));
  });

  test("a line longer than 64 KiB is not held to its end, only its last secret's length", () => {
    const long = "a".repeat(70_000);
    const { out } = run([long, "\n"]);
    expect(out[0]!.length).toBe(70_000 - (SECRET.length - 1));
  });
});

describe("the server-sent events reader", () => {
  test("events split anywhere, CRLF split between chunks, comments and multi-line data", () => {
    const stream = ': keep-alive\r\nevent: message_start\r\ndata: {"a":1}\r\n\r\ndata: line 1\ndata: line 2\n\ndata: [DONE]\n\n';
    fc.assert(
      fc.property(fc.array(fc.nat({ max: stream.length }), { maxLength: 8 }), (cuts) => {
        const events: [string | null, string][] = [];
        const reader = new SseReader((name, data) => events.push([name, data]));
        const points = [0, ...new Set(cuts)].sort((x, y) => x - y);
        for (const [i, p] of points.entries()) reader.push(Buffer.from(stream.slice(p, points[i + 1] ?? stream.length)));
        expect(events).toEqual([
          ["message_start", '{"a":1}'],
          [null, "line 1\nline 2"],
          [null, "[DONE]"],
        ]);
      }),
    );
  });
});

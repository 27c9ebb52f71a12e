import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import { sendEvent } from "../src/alerts/send";
import type { OutgoingEvent } from "../src/alerts/payload";
import { waitFor } from "./helpers/receiver";

// SPEC §12 / NOTES 0.2: a webhook receiver is a host the operator points Keybrake at, not one Keybrake controls.
// Its answer is read only as far as the one-line message in the deliveries list needs; a receiver answering with
// a gigabyte (here generated lazily, never allocated) must cost neither the memory nor the time to read it, and
// the connection must be dropped rather than drained.

const GIB = 1024 ** 3;
const CHUNK = new Uint8Array(64 * 1024).fill(0x78); // "xxxx…": one 64 KiB chunk, sent again and again

/** One answer in flight: how much of its gigabyte the receiver produced, and whether its stream was cancelled. */
interface Answer {
  produced: number;
  cancelled: boolean;
  finished: boolean;
}

/** A receiver on 127.0.0.1 answering every POST with `status` and a 1 GiB body produced chunk by chunk on demand. */
function hugeReceiver() {
  const answers: Answer[] = [];
  let status = 500;
  const server: Server<undefined> = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    fetch: async (req) => {
      await req.arrayBuffer();
      const answer: Answer = { produced: 0, cancelled: false, finished: false };
      answers.push(answer);
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (answer.produced >= GIB) {
            answer.finished = true;
            controller.close();
            return;
          }
          answer.produced += CHUNK.byteLength;
          controller.enqueue(CHUNK);
        },
        cancel() {
          answer.cancelled = true;
        },
      });
      return new Response(body, { status, headers: { "content-type": "text/plain" } });
    },
  });
  return {
    answers,
    url: `http://127.0.0.1:${server.port}/hook`,
    setStatus: (s: number) => {
      status = s;
    },
    stop: () => server.stop(true),
  };
}

const event: OutgoingEvent = {
  id: "evt_bounded_1",
  type: "cap_threshold",
  at: Date.now(),
  keyId: "key_bounded",
  label: "bounded/run",
  vendor: "stripe",
  mode: "live",
  data: { cap: "daily", threshold: 0.5, cap_usd: 100, spent_usd: 50, percent: 50 },
};
const webhook = { format: "json" as const, secret: "whsec_bounded_test" };

describe("a receiver answering with 1 GiB", () => {
  let receiver: ReturnType<typeof hugeReceiver>;
  beforeAll(() => {
    receiver = hugeReceiver();
  });
  afterAll(() => receiver.stop());

  test("each attempt reads a few KiB, returns at once with the right status, and leaves RSS flat", async () => {
    const attempts: { status: number; ok: boolean }[] = [];
    // A first attempt warms up fetch's and the server's own buffers, so the RSS measured below is the attempts'.
    receiver.setStatus(500);
    await sendEvent({ ...webhook, url: receiver.url }, event, { publicUrl: null });
    Bun.gc(true);
    const rssBefore = process.memoryUsage().rss;

    for (const status of [500, 200, 500, 200, 500, 200]) {
      receiver.setStatus(status);
      const started = performance.now();
      const result = await sendEvent({ ...webhook, url: receiver.url }, event, { publicUrl: null, timeoutMs: 10_000 });
      // Reading 1 GiB over loopback takes seconds; a few KiB, a few milliseconds.
      expect(performance.now() - started).toBeLessThan(1_000);
      expect(result.status).toBe(status);
      expect(result.ok).toBe(status === 200);
      if (status === 500) {
        // The message in the deliveries list still carries the start of what the receiver said, on one line.
        expect(result.error).toStartWith("HTTP 500: xxxx");
        expect(result.error!.length).toBeLessThanOrEqual(200);
      } else {
        expect(result.error).toBeNull();
      }
      attempts.push({ status: result.status!, ok: result.ok });
    }
    Bun.gc(true);
    const grownMb = (process.memoryUsage().rss - rssBefore) / 1024 ** 2;
    expect(grownMb).toBeLessThan(32);
    expect(attempts).toHaveLength(6);

    // Every answer's stream was cancelled by the dropped connection, long before its end: the receiver stopped
    // producing after the socket's buffers filled, and produces nothing more later.
    await waitFor(() => receiver.answers.every((a) => a.cancelled), 5_000, "every answer stream cancelled");
    const produced = receiver.answers.map((a) => a.produced);
    await Bun.sleep(300);
    expect(receiver.answers.map((a) => a.produced)).toEqual(produced);
    for (const a of receiver.answers) {
      expect(a.finished).toBe(false);
      expect(a.produced).toBeLessThan(64 * 1024 * 1024);
    }
  });

  test("an answer shorter than the limit is read whole", async () => {
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: () => new Response("receiver says: quota exceeded\nfor this hook", { status: 429 }),
    });
    try {
      const result = await sendEvent({ ...webhook, url: `http://127.0.0.1:${server.port}/hook` }, event, { publicUrl: null });
      expect(result).toMatchObject({ ok: false, status: 429, error: "HTTP 429: receiver says: quota exceeded for this hook" });
    } finally {
      server.stop(true);
    }
  });
});

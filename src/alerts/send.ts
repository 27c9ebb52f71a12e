import type { PresentedHeads } from "../store/audit-chain";
import { VERSION } from "../version";
import { eventBody, type OutgoingEvent, signature } from "./payload";

/** A receiver has this long to answer (headers and body) before the attempt counts as failed. */
export const DELIVERY_TIMEOUT_MS = 5_000;

export interface SendResult {
  ok: boolean;
  /** The receiver's HTTP status, when it answered. */
  status: number | null;
  /** Why the attempt failed, in one line (never the URL's path or the secret). */
  error: string | null;
  ms: number;
}

/**
 * How much of a receiver's answer is read: enough for the one-line message in the deliveries list. The rest is
 * never read (the body stream is cancelled and the request aborted, which closes the connection), so a receiver
 * answering with a huge or endless body costs a few KiB per attempt, not its size (SPEC §12; NOTES 0.2).
 */
export const ANSWER_READ_BYTES = 4096;

/** What an error message of the receiver's may say in the deliveries list: one line, short. */
const oneLine = (text: string, max = 200) => {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
};

function describeFailure(err: unknown, timeoutMs: number): string {
  const e = err as { name?: string; code?: string; message?: string } | null;
  if (e?.name === "TimeoutError") return `no answer within ${timeoutMs} ms`;
  if (e?.name === "AbortError") return "aborted (Keybrake stopping)";
  const code = e?.code && e.code !== "ERR_UNKNOWN" ? `${e.code}: ` : "";
  return oneLine(`${code}${e?.message ?? String(err)}`);
}

/**
 * One POST of an event to a webhook: signed, with its event id in the body and the `Keybrake-Event-Id` header,
 * bounded by `timeoutMs`. Redirects are not followed (a 3xx is a failed attempt). Only a 2xx delivers.
 */
export async function sendEvent(
  webhook: { url: string; format: "json" | "slack"; secret: string },
  event: OutgoingEvent,
  opts: { publicUrl: string | null; auditHead?: PresentedHeads; timeoutMs?: number; signal?: AbortSignal; nowMs?: number },
): Promise<SendResult> {
  const timeoutMs = opts.timeoutMs ?? DELIVERY_TIMEOUT_MS;
  const body = eventBody(event, webhook.format, opts.publicUrl, opts.auditHead);
  const t = Math.floor((opts.nowMs ?? Date.now()) / 1000);
  const timeout = AbortSignal.timeout(timeoutMs);
  // Ours to abort once the bounded read is done, so the connection is dropped rather than drained.
  const done = new AbortController();
  const signal = AbortSignal.any(opts.signal ? [timeout, opts.signal, done.signal] : [timeout, done.signal]);
  const started = performance.now();
  try {
    const res = await fetch(webhook.url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "user-agent": `Keybrake/${VERSION}`,
        "keybrake-event-id": event.id,
        "keybrake-event-type": event.type,
        "keybrake-signature": signature(webhook.secret, body, t),
      },
      body,
      redirect: "manual",
      signal,
    });
    // Read under the same deadline: a receiver that sends headers and then stalls still ends the attempt in time.
    const text = await readAtMost(res, ANSWER_READ_BYTES);
    const ms = performance.now() - started;
    if (res.status >= 200 && res.status < 300) return { ok: true, status: res.status, error: null, ms };
    return { ok: false, status: res.status, error: oneLine(`HTTP ${res.status}${text ? `: ${text}` : ""}`), ms };
  } catch (err) {
    return { ok: false, status: null, error: describeFailure(signal.reason ?? err, timeoutMs), ms: performance.now() - started };
  } finally {
    // After the result is built (an abort here must not become the failure's reason): drops the connection.
    done.abort();
  }
}

/**
 * The first `max` bytes of an answer's body, as text; the stream is then cancelled, so the rest is never read.
 * A read that fails after some bytes arrived (the deadline, or the receiver cutting the connection) rethrows:
 * the attempt failed either way.
 */
async function readAtMost(res: Response, max: number): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < max) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value.subarray(0, max - size));
      size += Math.min(value.byteLength, max - size);
    }
  } finally {
    // Not awaited: the cancel's completion can wait on the transport, and nothing more is needed from it.
    reader.cancel().catch(() => {});
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  // A multi-byte character cut at the limit decodes as U+FFFD: harmless in a one-line message.
  return new TextDecoder().decode(bytes);
}

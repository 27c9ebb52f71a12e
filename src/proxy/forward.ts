/** Hop-by-hop headers (RFC 9110 §7.6.1) plus what must never cross Keybrake: credentials and cookies. */
const DROP_REQUEST = new Set([
  "authorization",
  "x-api-key",
  "host",
  "cookie",
  "idempotency-key",
  "x-http-method-override",
  "forwarded",
  "x-real-ip",
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "content-length",
  "expect",
]);
/** The body is re-framed by Bun (and already decoded by fetch), so framing headers do not pass back either. */
const DROP_RESPONSE = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "set-cookie",
  "content-length",
  "content-encoding",
]);

const connectionListed = (headers: Headers) =>
  new Set(
    (headers.get("connection") ?? "")
      .split(",")
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean),
  );

/** What the vendor receives: the job's headers less what must not cross, the real credential, and the derived Idempotency-Key. */
export function upstreamRequestHeaders(incoming: Headers, auth: Record<string, string>, idempotencyKey: string | null): Headers {
  const listed = connectionListed(incoming);
  const out = new Headers();
  incoming.forEach((value, name) => {
    if (!DROP_REQUEST.has(name) && !listed.has(name) && !name.startsWith("x-keybrake-") && !name.startsWith("x-forwarded-"))
      out.set(name, value);
  });
  for (const [name, value] of Object.entries(auth)) out.set(name, value);
  if (idempotencyKey !== null) out.set("idempotency-key", idempotencyKey);
  return out;
}

export function clientResponseHeaders(upstream: Headers): Headers {
  const listed = connectionListed(upstream);
  const out = new Headers();
  upstream.forEach((value, name) => {
    if (!DROP_RESPONSE.has(name) && !listed.has(name)) out.append(name, value);
  });
  return out;
}

export type UpstreamResult =
  | { kind: "response"; status: number; headers: Headers; body: ArrayBuffer }
  /** Never reached the vendor: nothing can have been charged. */
  | { kind: "not_sent" }
  /** May have reached the vendor: treat as spent. */
  | { kind: "timeout" }
  | { kind: "lost" };

/** How a streamed answer's next read ended. */
export type StreamRead = { kind: "chunk"; bytes: Uint8Array } | { kind: "end" } | { kind: "timeout" } | { kind: "lost" };

/** A streamed answer, read chunk by chunk as the job takes them. */
export interface UpstreamStream {
  kind: "stream";
  status: number;
  headers: Headers;
  /** The next chunk; `timeout` when none came within the upstream timeout (the connection is then dropped). */
  read(): Promise<StreamRead>;
  /** The job has gone: the vendor's connection is dropped. */
  cancel(): void;
}

const NOT_SENT_CODES = new Set(["ECONNREFUSED", "ConnectionRefused", "ENOTFOUND", "EAI_AGAIN", "FailedToOpenSocket", "ERR_INVALID_URL"]);

interface UpstreamInit {
  method: string;
  headers: Headers;
  body: Uint8Array | null;
  timeoutMs: number;
}

/**
 * Sends the call; `answer` reads what came back. The timeout covers the whole call, answer included, unless
 * `answer` takes the timer over (a stream times out per chunk instead).
 */
async function send<T>(
  url: string,
  init: UpstreamInit,
  answer: (res: Response, timer: { clear(): void; signal: AbortSignal; abort(): void }) => Promise<T>,
): Promise<T | Exclude<UpstreamResult, { kind: "response" }>> {
  // Not AbortSignal.timeout(): its timer outlives the call (80 s by default), and at thousands of calls a second
  // the pending timers pile up. This one is cleared as soon as the answer is read.
  const controller = new AbortController();
  let timer: Timer | undefined = setTimeout(() => controller.abort(), init.timeoutMs);
  const clear = () => {
    clearTimeout(timer);
    timer = undefined;
  };
  const signal = controller.signal;
  try {
    const res = await fetch(url, {
      method: init.method,
      headers: init.headers,
      body: init.body && init.body.length > 0 ? init.body : undefined,
      redirect: "manual",
      signal,
    });
    return await answer(res, { clear, signal, abort: () => controller.abort() });
  } catch (err) {
    if (signal.aborted) return { kind: "timeout" };
    const code = (err as { code?: string }).code;
    return code && NOT_SENT_CODES.has(code) ? { kind: "not_sent" } : { kind: "lost" };
  } finally {
    clear();
  }
}

export async function callUpstream(url: string, init: UpstreamInit): Promise<UpstreamResult> {
  return send(url, init, async (res) => ({
    kind: "response" as const,
    status: res.status,
    headers: res.headers,
    body: await res.arrayBuffer(),
  }));
}

/**
 * Like callUpstream, but an answer that `streams(status, headers)` is handed over as soon as its headers are in,
 * its body read chunk by chunk as the job asks for it (no buffering), with the upstream timeout applying to the
 * wait for each chunk: a stream that keeps producing is never cut for its length.
 */
export async function callUpstreamStreaming(
  url: string,
  init: UpstreamInit,
  streams: (status: number, headers: Headers) => boolean,
): Promise<UpstreamResult | UpstreamStream> {
  return send<UpstreamResult | UpstreamStream>(url, init, async (res, timer) => {
    if (!res.body || !streams(res.status, res.headers)) {
      return { kind: "response", status: res.status, headers: res.headers, body: await res.arrayBuffer() };
    }
    timer.clear();
    const reader = res.body.getReader();
    let cancelled = false;
    return {
      kind: "stream",
      status: res.status,
      headers: res.headers,
      async read(): Promise<StreamRead> {
        const idle = setTimeout(() => timer.abort(), init.timeoutMs);
        try {
          const { done, value } = await reader.read();
          return done ? { kind: "end" } : { kind: "chunk", bytes: value };
        } catch {
          return timer.signal.aborted && !cancelled ? { kind: "timeout" } : { kind: "lost" };
        } finally {
          clearTimeout(idle);
        }
      },
      cancel() {
        cancelled = true;
        timer.abort();
      },
    };
  });
}

/** A vendor's JSON answer, or null when the body is not JSON. */
export function parseJson(body: ArrayBuffer): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(body));
  } catch {
    return null;
  }
}

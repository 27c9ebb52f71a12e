/** Hop-by-hop headers (RFC 9110 §7.6.1) plus what must never cross Keybrake: credentials and cookies. */
const DROP_REQUEST = new Set([
  "authorization",
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

const NOT_SENT_CODES = new Set(["ECONNREFUSED", "ConnectionRefused", "ENOTFOUND", "EAI_AGAIN", "FailedToOpenSocket", "ERR_INVALID_URL"]);

export async function callUpstream(
  url: string,
  init: { method: string; headers: Headers; body: Uint8Array | null; timeoutMs: number },
): Promise<UpstreamResult> {
  // Not AbortSignal.timeout(): its timer outlives the call (80 s by default), and at thousands of calls a second
  // the pending timers pile up. This one is cleared as soon as the answer is read.
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), init.timeoutMs);
  const signal = controller.signal;
  try {
    const res = await fetch(url, {
      method: init.method,
      headers: init.headers,
      body: init.body && init.body.length > 0 ? init.body : undefined,
      redirect: "manual",
      signal,
    });
    return { kind: "response", status: res.status, headers: res.headers, body: await res.arrayBuffer() };
  } catch (err) {
    if (signal.aborted) return { kind: "timeout" };
    const code = (err as { code?: string }).code;
    return code && NOT_SENT_CODES.has(code) ? { kind: "not_sent" } : { kind: "lost" };
  } finally {
    clearTimeout(timer);
  }
}

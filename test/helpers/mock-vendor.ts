import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface Received {
  method: string;
  path: string;
  search: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** What the next calls should do instead of answering normally. */
export type Fault =
  | { kind: "status"; status: number; body: unknown; headers?: Record<string, string> }
  | { kind: "delay"; ms: number }
  /** Answers once `until` settles: a call kept in flight exactly as long as a test needs. */
  | { kind: "wait"; until: Promise<unknown> }
  | { kind: "drop" }
  /** The vendor acts on the call, then the connection is lost before the answer: an ambiguous outcome that did cost. */
  | { kind: "drop_after" };

export interface Reply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
  /** A streamed answer (server-sent events) instead of `body`. */
  stream?: StreamedBody;
}

export interface StreamedBody {
  /** Written one at a time, as the vendor produces them (each flushed at once). */
  chunks: string[];
  /** The pause before each chunk after the first: the model producing it. */
  gapMs?: number;
  /** The connection is dropped instead of writing this chunk (its index): a stream cut off. */
  cutAt?: number;
}

/**
 * A real HTTP server on a free loopback port that records every request it receives and can, on demand, answer
 * with an error, answer late, or drop the connection after reading the request. Vendor mocks plug in `answer`.
 */
export class MockVendor {
  readonly received: Received[] = [];
  private faults: { fault: Fault; method?: string }[] = [];
  private persistentFault: Fault | null = null;
  private server: Server;
  url = "";

  /**
   * `isReplay`: the vendor already holds an answer for this request (its idempotency layer) and will replay it;
   * such a request meets no injected fault, as a real vendor never answers a retry with a fresh error.
   */
  constructor(
    private answer: (req: Received) => Reply,
    private requestIdHeader: string | null,
    private newRequestId: () => string,
    private isReplay: (req: Received) => boolean = () => false,
  ) {
    this.server = createServer((req, res) => void this.handle(req, res));
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** The next call (or the next `times` calls; only calls of `method` when given) meets this fault. */
  failNext(fault: Fault, times = 1, method?: string) {
    for (let i = 0; i < times; i++) this.faults.push({ fault, method });
  }

  /** Every call meets this fault until cleared with null. */
  failAlways(fault: Fault | null) {
    this.persistentFault = fault;
  }

  reset() {
    this.received.length = 0;
    this.faults = [];
    this.persistentFault = null;
  }

  count(method: string, path: string | RegExp) {
    return this.received.filter((r) => r.method === method && (typeof path === "string" ? r.path === path : path.test(r.path))).length;
  }

  private async handle(req: IncomingMessage, res: ServerResponse) {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const url = new URL(req.url ?? "/", "http://mock");
    const received: Received = {
      method: req.method ?? "GET",
      path: url.pathname,
      search: url.search,
      headers: req.headers,
      body: Buffer.concat(chunks).toString("utf8"),
    };
    this.received.push(received);

    const queued = this.isReplay(received) ? -1 : this.faults.findIndex((f) => f.method === undefined || f.method === received.method);
    const fault = (queued >= 0 ? this.faults.splice(queued, 1)[0]!.fault : undefined) ?? this.persistentFault;
    if (fault?.kind === "drop") {
      req.socket.destroy();
      return;
    }
    if (fault?.kind === "delay") await Bun.sleep(fault.ms);
    if (fault?.kind === "wait") await fault.until;
    const reply = fault?.kind === "status" ? { status: fault.status, body: fault.body, headers: fault.headers } : this.answer(received);
    if (fault?.kind === "drop_after") {
      req.socket.destroy();
      return;
    }
    if (res.destroyed) return;
    const headers: Record<string, string> = { "content-type": "application/json", ...reply.headers };
    // A request id the reply states itself (a test's fault) is kept; else a fresh one, as the vendor makes.
    const stated = Object.keys(headers).some((name) => name.toLowerCase() === this.requestIdHeader?.toLowerCase());
    if (this.requestIdHeader && !stated) headers[this.requestIdHeader] = this.newRequestId();
    if (reply.stream) return this.stream(req, res, reply.status, headers, reply.stream);
    res.writeHead(reply.status, headers);
    res.end(reply.body === undefined ? "" : JSON.stringify(reply.body));
  }

  private async stream(req: IncomingMessage, res: ServerResponse, status: number, headers: Record<string, string>, body: StreamedBody) {
    res.writeHead(status, { ...headers, "content-type": "text/event-stream", "cache-control": "no-cache" });
    res.flushHeaders();
    for (const [i, chunk] of body.chunks.entries()) {
      if (i > 0 && body.gapMs) await Bun.sleep(body.gapMs);
      if (i === body.cutAt) {
        req.socket.destroy();
        return;
      }
      if (res.destroyed) return;
      res.write(chunk);
    }
    res.end();
  }
}

let seq = 0;
export const mockId = (prefix: string) => `${prefix}${Date.now().toString(36)}${(++seq).toString(36).padStart(6, "0")}`;

import type { Server } from "bun";

/** A webhook POST as the receiver saw it. */
export interface Received {
  headers: Record<string, string>;
  body: string;
  json: Record<string, any>;
  at: number;
}

/** How the receiver answers: 200, 500, or never (it keeps the connection open until it is told otherwise). */
export type Mode = "ok" | "fail" | "hang";

/**
 * A local webhook receiver over real HTTP (Bun.serve on a free port): records every POST, answers per `mode`.
 * `down()` closes the port (connection refused) and `up()` opens it again on the same port.
 */
export class Receiver {
  readonly received: Received[] = [];
  mode: Mode = "ok";
  /** The most POSTs in flight at once, and how many are now. */
  maxConcurrent = 0;
  private concurrent = 0;
  private server: Server<undefined> | null = null;
  private hanging: (() => void)[] = [];
  port = 0;

  async up(): Promise<this> {
    this.server = Bun.serve({
      hostname: "127.0.0.1",
      port: this.port,
      idleTimeout: 0,
      fetch: async (req) => {
        const body = await req.text();
        let json: Record<string, any> = {};
        try {
          json = JSON.parse(body);
        } catch {
          // not JSON: kept as text
        }
        this.received.push({ headers: Object.fromEntries(req.headers), body, json, at: Date.now() });
        this.concurrent++;
        this.maxConcurrent = Math.max(this.maxConcurrent, this.concurrent);
        try {
          if (this.mode === "hang") await new Promise<void>((resolve) => this.hanging.push(resolve));
          return this.mode === "ok" ? new Response("ok") : new Response("receiver is down for maintenance", { status: 500 });
        } finally {
          this.concurrent--;
        }
      },
    });
    this.port = this.server.port!;
    return this;
  }

  get url() {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  /** Stops answering at all: the port is closed, so attempts are refused. */
  async down() {
    this.release();
    await this.server?.stop(true);
    this.server = null;
  }

  /** Lets the POSTs that hang go (answered per the mode then). */
  release() {
    for (const resolve of this.hanging.splice(0)) resolve();
  }

  ofType(type: string) {
    return this.received.filter((r) => r.json.type === type);
  }
}

export async function waitFor(predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = "condition") {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}

import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig, type Config } from "../../src/config";
import { startAlertWorker, type AlertWorkerOptions } from "../../src/alerts/worker";
import { listen } from "../../src/ops/listen";
import { Metrics } from "../../src/ops/metrics";
import { startReconciler, type ReconcilerOptions } from "../../src/proxy/reconciler";
import { createApp } from "../../src/server";
import { openStore, type Store } from "../../src/store/index";
import type { AnyElysia } from "elysia";
import { ANTHROPIC_KEY, ANTHROPIC_TEST_KEY } from "./mock-anthropic";
import { OPENAI_KEY, OPENAI_TEST_KEY } from "./mock-openai";
import { RESEND_KEY, RESEND_TEST_KEY } from "./mock-resend";
import { STRIPE_LIVE_SECRET, STRIPE_TEST_SECRET } from "./mock-stripe";
import { TWILIO_SID, TWILIO_TEST_SID, TWILIO_TEST_TOKEN, TWILIO_TOKEN } from "./mock-twilio";

export const ADMIN_TOKEN = "test-admin-token-0123456789abcdefghijklmnop";

export interface Harness {
  url: string;
  config: Config;
  store: Store;
  dir: string;
  dbPath: string;
  logs: string[];
  admin(path: string, init?: { method?: string; body?: unknown }): Promise<Response>;
  issueKey(body: Record<string, unknown>): Promise<{ id: string; vault_key: string } & Record<string, unknown>>;
  /**
   * Reads the database file on a connection of its own, as another process would. A call's settlement commits
   * right after its answer; a read through the server (here /healthz) commits whatever is still queued first.
   */
  readDb<T>(read: (db: Database) => T): Promise<T>;
  /** The reconciler, when started with the `reconciler` option (its `tick()` runs one pass now). */
  reconciler?: ReturnType<typeof startReconciler>;
  /** The alert delivery worker, when started with the `alerts` option (its `tick()` sends what is due now). */
  alerts?: ReturnType<typeof startAlertWorker>;
  stop(): Promise<void>;
}

export interface HarnessOptions {
  now?: () => number;
  /** Starts the Twilio final-price reconciler with the server, on the same clock and log. */
  reconciler?: ReconcilerOptions;
  /** Starts the alert delivery worker with the server, on the same clock, log and /metrics. */
  alerts?: AlertWorkerOptions;
  /** Answers once a call's settlement is committed, as several instances on PostgreSQL do. */
  answerAfterSettlement?: boolean;
}

/** The secrets every harness configures, by variable: the admin token and the real vendor credentials. */
const CONFIGURED = {
  KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
  KEYBRAKE_STRIPE_SECRET_KEY: STRIPE_LIVE_SECRET,
  KEYBRAKE_STRIPE_TEST_SECRET_KEY: STRIPE_TEST_SECRET,
  KEYBRAKE_TWILIO_ACCOUNT_SID: TWILIO_SID,
  KEYBRAKE_TWILIO_AUTH_TOKEN: TWILIO_TOKEN,
  KEYBRAKE_TWILIO_TEST_ACCOUNT_SID: TWILIO_TEST_SID,
  KEYBRAKE_TWILIO_TEST_AUTH_TOKEN: TWILIO_TEST_TOKEN,
  KEYBRAKE_RESEND_API_KEY: RESEND_KEY,
  KEYBRAKE_RESEND_TEST_API_KEY: RESEND_TEST_KEY,
  KEYBRAKE_OPENAI_API_KEY: OPENAI_KEY,
  KEYBRAKE_OPENAI_TEST_API_KEY: OPENAI_TEST_KEY,
  KEYBRAKE_ANTHROPIC_API_KEY: ANTHROPIC_KEY,
  KEYBRAKE_ANTHROPIC_TEST_API_KEY: ANTHROPIC_TEST_KEY,
};

/** The environment of one built-binary instance of a fleet on a shared PostgreSQL ledger, charging a mock Stripe. */
export const fleetInstanceEnv = (o: { databaseUrl: string; id: string; leaseS: number; stripeUrl: string }) => ({
  KEYBRAKE_DATABASE_URL: o.databaseUrl,
  KEYBRAKE_INSTANCE_ID: o.id,
  KEYBRAKE_INSTANCE_LEASE_S: String(o.leaseS),
  KEYBRAKE_HOST: "127.0.0.1",
  KEYBRAKE_PORT: "0",
  KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
  KEYBRAKE_STRIPE_SECRET_KEY: STRIPE_LIVE_SECRET,
  KEYBRAKE_STRIPE_BASE_URL: o.stripeUrl,
});

/** The real app listening on a free port over a fresh database, its upstreams pointed at the given mocks. */
export async function startKeybrake(env: Record<string, string> = {}, options: HarnessOptions = {}): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), "keybrake-test-"));
  const dbPath = join(dir, "keybrake.db");
  const config = loadConfig({
    KEYBRAKE_DB: dbPath,
    ...CONFIGURED,
    KEYBRAKE_UPSTREAM_TIMEOUT_MS: "1500",
    ...env,
  });
  const store = openStore(dbPath);
  const logs: string[] = [];
  const metrics = new Metrics();
  const app = createApp(config, store, {
    now: options.now,
    log: (m) => logs.push(m),
    metrics,
    answerAfterSettlement: options.answerAfterSettlement,
  });
  const server = listen(leakGuard(app), { hostname: "127.0.0.1", port: 0, maxRequestBodySize: config.maxBodyBytes + 65_536 });
  const url = `http://127.0.0.1:${server.port}`;
  const reconciler =
    options.reconciler && startReconciler(store, config, { now: options.now, log: (m) => logs.push(m), ...options.reconciler });
  const alerts =
    options.alerts && startAlertWorker(store, config, { now: options.now, log: (m) => logs.push(m), metrics, ...options.alerts });

  const admin = (path: string, init: { method?: string; body?: unknown } = {}) =>
    fetch(url + path, {
      method: init.method ?? (init.body === undefined ? "GET" : "POST"),
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });

  return {
    url,
    config,
    store,
    dir,
    dbPath,
    logs,
    admin,
    reconciler,
    alerts,
    async issueKey(body) {
      const res = await admin("/vault/keys", { body: { expires_in: "1h", ...body } });
      if (res.status !== 201) throw new Error(`issue failed: ${res.status} ${await res.text()}`);
      return (await res.json()) as { id: string; vault_key: string };
    },
    async readDb(read) {
      await fetch(`${url}/healthz`);
      const db = new Database(dbPath, { readonly: true });
      try {
        return read(db);
      } finally {
        db.close();
      }
    },
    async stop() {
      await reconciler?.stop();
      await alerts?.stop();
      await app.stop(true);
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A Keybrake of the test's own for the length of `body`, stopped however `body` ends. */
export async function withKeybrake<T>(env: Record<string, string>, options: HarnessOptions, body: (kb: Harness) => Promise<T>): Promise<T> {
  const kb = await startKeybrake(env, options);
  try {
    return await body(kb);
  } finally {
    await kb.stop();
  }
}

/**
 * Every value the harness configures that must never leave Keybrake in an answer, by the variable that holds it:
 * the admin token, each vendor secret, the Twilio account SIDs (answers show `{AccountSid}`) and the Basic
 * credential Keybrake sends Twilio for each account (base64 of `sid:token`). Built here rather than from
 * CONFIGURED_SECRETS (secrets.ts imports this module); test/secret-scrub.test.ts checks that it covers that list.
 */
export const WATCHED_SECRETS: Readonly<Record<string, string>> = {
  ...CONFIGURED,
  "base64(KEYBRAKE_TWILIO_ACCOUNT_SID:KEYBRAKE_TWILIO_AUTH_TOKEN)": btoa(`${TWILIO_SID}:${TWILIO_TOKEN}`),
  "base64(KEYBRAKE_TWILIO_TEST_ACCOUNT_SID:KEYBRAKE_TWILIO_TEST_AUTH_TOKEN)": btoa(`${TWILIO_TEST_SID}:${TWILIO_TEST_TOKEN}`),
};

/** A secret found in an answer of the in-process Keybrake: which one (by name, never its value), where, on which call. */
export interface Leak {
  secret: string;
  where: string;
  method: string;
  path: string;
}

/** Every leak the guard of any harness saw in this process; the guarded answer itself became a 599. */
export const leaks: Leak[] = [];

/** Content types whose answers are streamed (the audit export, server-sent events): scanned as they pass, never buffered. */
const STREAMED = /^(text\/event-stream|application\/x-ndjson|text\/csv)\b/i;

/** The spellings a secret can take in an answer: as is, JSON-escaped, with escaped slashes, URL-encoded. */
const spellingsOf = (secret: string) => [
  ...new Set([secret, JSON.stringify(secret).slice(1, -1), secret.replaceAll("/", "\\/"), encodeURIComponent(secret)]),
];

/**
 * Wraps an app for `listen` so that every answer it serves is searched for each secret (headers, and the body's
 * bytes): a buffered answer that carries one is replaced by a 599 naming the secret and the path; a streamed one
 * (STREAMED) is cut off with an error before the chunk that carries it leaves. Either way the leak is pushed to
 * `sink`. `listen` reads `fetch` and sets `server`, which reaches the app itself (its `stop` uses it).
 */
export function leakGuard<App extends Pick<AnyElysia, "fetch" | "server">>(
  app: App,
  secrets: Readonly<Record<string, string>> = WATCHED_SECRETS,
  sink: Leak[] = leaks,
): App {
  const needles = Object.entries(secrets).flatMap(([name, value]) => spellingsOf(value).map((text) => ({ name, text })));
  const longest = Math.max(...needles.map((n) => n.text.length));
  const found = (text: string) => [...new Set(needles.filter((n) => text.includes(n.text)).map((n) => n.name))];
  /** The path as the 599 may show it: a secret in the request path itself is named, not repeated. */
  const shown = (path: string) => needles.reduce((p, n) => p.replaceAll(n.text, `<${n.name}>`), path);

  const guard = async (request: Request, response: Response): Promise<Response> => {
    let path = request.url;
    try {
      path = new URL(request.url).pathname;
    } catch {}
    const call = { method: request.method, path: shown(path) };
    const hits: Leak[] = [];
    for (const [name, value] of response.headers) {
      for (const secret of found(`${name}: ${value}`)) hits.push({ secret, where: `header ${name}`, ...call });
    }
    const type = response.headers.get("content-type") ?? "";
    if (hits.length === 0 && response.body !== null && STREAMED.test(type)) {
      return new Response(response.body.pipeThrough(scanning(call)), {
        status: response.status,
        statusText: response.statusText,
        headers: response.headers,
      });
    }
    if (response.body !== null) {
      const body = Buffer.from(await response.clone().arrayBuffer()).toString("latin1");
      for (const secret of found(body)) hits.push({ secret, where: "body", ...call });
    }
    if (hits.length === 0) return response;
    sink.push(...hits);
    const what = hits.map((h) => `${h.secret} in the ${h.where}`).join(", ");
    return Response.json(
      { code: "secret_leaked", message: `${what} of the answer (${response.status}) to ${call.method} ${call.path}`, leaks: hits },
      { status: 599, headers: { "x-keybrake-error": "secret_leaked" } },
    );
  };

  /** Passes a stream on, holding back the bytes a secret split across chunks could still need; errors at a secret. */
  const scanning = (call: { method: string; path: string }) => {
    let held = "";
    return new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        const text = held + Buffer.from(chunk).toString("latin1");
        const hits = found(text);
        if (hits.length > 0) {
          sink.push(...hits.map((secret) => ({ secret, where: "streamed body", ...call })));
          controller.error(new Error(`secret_leaked: ${hits.join(", ")} in the streamed answer to ${call.method} ${call.path}`));
          return;
        }
        const keep = Math.min(text.length, longest - 1);
        held = text.slice(text.length - keep);
        if (text.length > keep) controller.enqueue(Buffer.from(text.slice(0, text.length - keep), "latin1"));
      },
      flush(controller) {
        if (held) controller.enqueue(Buffer.from(held, "latin1"));
      },
    });
  };

  const guarded = {
    fetch(request: Request) {
      const answer = app.fetch(request);
      const check = (response: Response) => (response instanceof Response ? guard(request, response) : response);
      return answer instanceof Promise ? answer.then(check) : check(answer);
    },
    get server() {
      return app.server;
    },
    set server(server) {
      app.server = server;
    },
  };
  // A narrow stand-in: `listen` uses no other member of the app.
  return guarded as unknown as App;
}

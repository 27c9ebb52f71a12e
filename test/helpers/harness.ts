import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig, type Config } from "../../src/config";
import { startAlertWorker, type AlertWorkerOptions } from "../../src/alerts/worker";
import { listen } from "../../src/ops/listen";
import { Metrics } from "../../src/ops/metrics";
import { startReconciler, type ReconcilerOptions } from "../../src/ops/reconciler";
import { createApp } from "../../src/server";
import { openStore, type Store } from "../../src/store/index";
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
}

/** The real app listening on a free port over a fresh database, its upstreams pointed at the given mocks. */
export async function startKeybrake(env: Record<string, string> = {}, options: HarnessOptions = {}): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), "keybrake-test-"));
  const dbPath = join(dir, "keybrake.db");
  const config = loadConfig({
    KEYBRAKE_DB: dbPath,
    KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
    KEYBRAKE_STRIPE_SECRET_KEY: STRIPE_LIVE_SECRET,
    KEYBRAKE_STRIPE_TEST_SECRET_KEY: STRIPE_TEST_SECRET,
    KEYBRAKE_TWILIO_ACCOUNT_SID: TWILIO_SID,
    KEYBRAKE_TWILIO_AUTH_TOKEN: TWILIO_TOKEN,
    KEYBRAKE_TWILIO_TEST_ACCOUNT_SID: TWILIO_TEST_SID,
    KEYBRAKE_TWILIO_TEST_AUTH_TOKEN: TWILIO_TEST_TOKEN,
    KEYBRAKE_RESEND_API_KEY: RESEND_KEY,
    KEYBRAKE_RESEND_TEST_API_KEY: RESEND_TEST_KEY,
    KEYBRAKE_UPSTREAM_TIMEOUT_MS: "1500",
    ...env,
  });
  const store = openStore(dbPath);
  const logs: string[] = [];
  const metrics = new Metrics();
  const app = createApp(config, store, { now: options.now, log: (m) => logs.push(m), metrics });
  const server = listen(app, { hostname: "127.0.0.1", port: 0, maxRequestBodySize: config.maxBodyBytes + 65_536 });
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

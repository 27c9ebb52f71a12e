import { resolve } from "node:path";
import { startAlertWorker } from "./alerts/worker";
import { announceAdminToken, ensureAdminToken } from "./auth/admin-auth";
import type { Config } from "./config";
import { type Logger, messageSink } from "./ops/log";
import { listen } from "./ops/listen";
import { Metrics } from "./ops/metrics";
import { startMaintenance } from "./ops/maintenance";
import { startTracing } from "./ops/tracing";
import { startReconciler } from "./proxy/reconciler";
import { createApp } from "./server";
import { ledgerLocation, openConfiguredStore } from "./store/open";
import type { HoldRecord } from "./store/types";
import { iso } from "./util";
import { VERSION } from "./version";

// `keybrake serve`: the ledger opened and recovered, the server listening, its workers started, and a clean stop on
// SIGTERM. main.ts loads this module only for serve, so the CLI's other commands do not evaluate the server.

/**
 * What the operator let through that Keybrake cannot price or see (SPEC §2): said at every start, so nobody runs
 * with it unknowingly.
 */
function logCatalogueWidening(config: Config, log: Logger) {
  for (const [vendor, { patterns }] of Object.entries(config.freeEndpoints)) {
    if (patterns.length === 0) continue;
    log.warn(
      "free_endpoints",
      `${vendor}: forwarded at $0 although Keybrake's catalogue does not know them (KEYBRAKE_${vendor.toUpperCase()}_FREE_ENDPOINTS): ${patterns.join(", ")}`,
      { vendor, patterns },
    );
  }
  for (const [vendor, settings] of Object.entries(config.vendors))
    for (const notice of settings.startNotices ?? []) log.warn("vendor_notice", `${vendor}: ${notice}`, { vendor });
}

/** The vendors and modes with a real secret configured, for the start line: "stripe live+test, resend not configured". */
function configuredVendors(config: Config): { text: string; list: string[] } {
  const list: string[] = [];
  const parts = Object.entries(config.vendors).map(([name, settings]) => {
    const modes = (["live", "test"] as const).filter((mode) => settings.credentials[mode] !== null);
    for (const mode of modes) list.push(`${name}:${mode}`);
    return `${name} ${modes.length ? modes.join("+") : "not configured"}`;
  });
  return { text: parts.join(", "), list };
}

/**
 * The upstreams moved off a vendor's own API by KEYBRAKE_<VENDOR>_BASE_URL, for the start line ("stripe=http://…"):
 * a mock or a staging host left in a production configuration shows at every start. Credentials in a URL are not
 * printed.
 */
function upstreamOverrides(config: Config, env: Record<string, string | undefined>): string[] {
  return Object.entries(config.vendors)
    .filter(([name]) => env[`KEYBRAKE_${name.toUpperCase()}_BASE_URL`] !== undefined)
    .map(([name, settings]) => {
      const url = new URL(settings.baseUrl);
      url.username = "";
      url.password = "";
      return `${name}=${url.href.replace(/\/$/, "")}`;
    });
}

const SHUTDOWN_GRACE_MS = 25_000;

export async function serve(config: Config, log: Logger, env: Record<string, string | undefined>) {
  const store = await openConfiguredStore(config, {
    onPrimaryMoved: (where) =>
      log.warn("primary_moved", `the ledger's primary is now ${where} (a failover): writing there from now on`, { host: where }),
  });
  await ensureAdminToken(config, store, (token) =>
    config.logFormat === "json"
      ? log.warn("admin_token_generated", "Keybrake generated an admin token; it is shown once and only its hash is stored", { token })
      : announceAdminToken(token),
  );
  const metrics = new Metrics();
  // The OpenTelemetry SDK is loaded only when the OTEL_* variables ask for traces: off, it costs nothing at start.
  const tracing = await startTracing(process.env, log);
  const fleet = store.kind === "postgres" ? store : null;
  if (fleet) metrics.carryOn(await fleet.spendCounters.own());
  const app = createApp(config, store, {
    metrics,
    rateLimiter: fleet?.rateLimiter,
    answerAfterSettlement: fleet !== null,
    otherInstancesSpend: fleet ? () => fleet.spendCounters.others() : undefined,
    tracing,
  });
  // The address is taken before the ledger is touched: a second serve on a busy address stops here, before its
  // recovery could mark the running server's in-flight holds orphaned. Calls wait until recovery has run.
  const recovered = Promise.withResolvers<void>();
  // Bun's own limit sits above ours so that oversized bodies get the contract's 413, not a bare one.
  const server = listen(app, {
    hostname: config.host,
    port: config.port,
    maxRequestBodySize: config.maxBodyBytes + 65_536,
    ready: recovered.promise,
  });
  const reportOrphaned = (orphaned: HoldRecord[]) => {
    if (orphaned.length === 0) return;
    log.warn(
      "orphaned_holds",
      `${orphaned.length} hold(s) of a stopped run were never settled; they stay counted as held until ` +
        "resolved: keybrake holds list, then keybrake holds settle|release <id>",
      { count: orphaned.length, hold_ids: orphaned.slice(0, 100).map((h) => h.id) },
    );
  };
  // On PostgreSQL this instance takes its lease first: recovery then takes only holds no live instance owns.
  await fleet?.startInstance({
    onRecovered: reportOrphaned,
    counters: () => metrics.spendCounters(),
    onWaitForLease: (holder) =>
      log.warn(
        "instance_id_leased",
        `KEYBRAKE_INSTANCE_ID "${fleet.instanceId}" is leased by another process (host ${holder.host}, pid ${holder.pid}) until ${iso(holder.until)}: waiting for it to lapse; if that process renews it, it is running and this start is refused`,
        { instance_id: fleet.instanceId, host: holder.host, pid: holder.pid, lease_until: iso(holder.until) },
      ),
  });
  reportOrphaned(await store.recoverOrphanedHolds(Date.now()));
  recovered.resolve();
  if (store.kind === "sqlite") store.checkpointInBackground(messageSink(log, "error", "checkpoint_worker"));
  const maintenance = startMaintenance(store, config.auditRetentionDays);
  void maintenance.tick();
  const reconciler = startReconciler(store, config);
  // After recovery, whose holds_need_attention events it sends; it polls the outbox on its own, beside the proxy.
  const alerts = startAlertWorker(store, config, { metrics });
  void alerts.tick();
  const vendors = configuredVendors(config);
  const upstreams = upstreamOverrides(config, env);
  const instance = fleet ? `, instance ${fleet.instanceId}` : "";
  log.info(
    "start",
    `listening on http://${config.host}:${server.port} (version ${VERSION}, db ${ledgerLocation(config, resolve)}${instance}); vendors: ${vendors.text}${upstreams.length ? `; upstreams: ${upstreams.join(", ")}` : ""}; docs at /docs`,
    {
      version: VERSION,
      host: config.host,
      port: server.port,
      db: ledgerLocation(config, resolve),
      ...(fleet && { instance_id: fleet.instanceId }),
      vendors: vendors.list,
      upstreams,
    },
  );
  logCatalogueWidening(config, log);

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("shutdown", `${signal}: no longer accepting; finishing in-flight calls`, { signal });
    // stop(false) resolves when in-flight requests have answered (and so settled); bounded by the timer. The app's
    // stop hook then writes the unauthenticated denials still only counted, before the store closes.
    maintenance.stop();
    const reconciled = reconciler.stop();
    // POSTs in flight are aborted and stay pending: they are sent again after the restart.
    const alerted = alerts.stop();
    // Elysia's stop does not wait for in-flight requests; Bun's does.
    await Promise.race([Promise.all([server.stop(false), app.stop(false), reconciled, alerted]), Bun.sleep(SHUTDOWN_GRACE_MS)]);
    await store.close();
    // The spans of the last calls are exported before the process goes.
    await tracing?.shutdown();
    log.info("stopped", "stopped cleanly");
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
}

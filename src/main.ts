#!/usr/bin/env bun
import { ConfigError, flagsToEnv, loadConfig, unknownVariables, type Config } from "./config";
import { KeybrakeError } from "./errors";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { startAlertWorker } from "./alerts/worker";
import { alertsCommand, alertsHelp, checkAlertsCommand } from "./cli/alerts";
import { approvalsCommand, approvalsHelp, checkApprovalsCommand } from "./cli/approvals";
import { parseFlags, wantsHelp } from "./cli/args";
import { SPEND_USAGE, auditCommand, auditHelp, spendCommand } from "./cli/audit";
import { budgetsCommand, budgetsHelp, checkBudgetsCommand } from "./cli/budgets";
import { checkKeysCommand, keysCommand, keysHelp, UsageError } from "./cli/keys";
import { announceAdminToken, ensureAdminToken } from "./auth/admin-auth";
import { createLogger, type Logger, messageSink } from "./ops/log";
import { listen } from "./ops/listen";
import { Metrics } from "./ops/metrics";
import { startMaintenance } from "./ops/maintenance";
import { startTracing } from "./ops/tracing";
import { startReconciler } from "./proxy/reconciler";
import { checkHoldsCommand, holdsCommand, holdsHelp } from "./cli/holds";
import { localUrl, PRICE_USAGE, priceCommand } from "./cli/price";
import { tokensCommand, tokensHelp } from "./cli/tokens";
import { createApp } from "./server";
import { type AnyStore, ledgerLocation, migrateConfiguredStore, openConfiguredStore } from "./store/open";
import type { HoldRecord } from "./store/types";
import { iso } from "./util";
import { VERSION } from "./version";

const USAGE = `keybrake ${VERSION} — a spend brake for jobs that call Stripe, Twilio, Resend, OpenAI and Anthropic

usage: keybrake [serve]           start the server (default)
       keybrake keys ...          create | list | show | revoke vault keys
       keybrake budgets ...       create | list | show | update | delete budgets (pools over run families)
       keybrake holds ...         list | settle | release orphaned and ambiguous holds
       keybrake approvals ...     list | approve | deny calls waiting for a person's approval
       keybrake alerts ...        add | list | remove | test alert webhooks; deliveries
       keybrake audit [filters]   audit rows (--request-id, --label-prefix, --since 2h, --format table|ndjson|csv)
       keybrake audit verify      recompute the audit's hash chain; exit 1 naming the first row that does not match
       keybrake spend [filters]   spend per --group-by label|key|vendor|day, the biggest first
       keybrake price --key K METHOD PATH [-d BODY]   what a call would cost and whether the key allows it
                                  (a dry run against the running server: nothing held or forwarded)
       keybrake backup <file>     an online, consistent copy of the database
       keybrake migrate           bring the database to the latest schema
       keybrake healthcheck       exit 0 when the local server answers /healthz (for container health checks)
       keybrake version

keybrake <command> --help describes each command; --help never acts.
Every KEYBRAKE_* variable can be given as a flag, anywhere: KEYBRAKE_DB=x is --db x (or --db=x),
KEYBRAKE_PORT=9000 is --port 9000; flags win over the environment.`;

const SERVE_USAGE = `usage: keybrake [serve] [--host H] [--port P] [--db FILE] [--KEYBRAKE-variable value ...]

Starts the server: the proxy (/stripe, /twilio, /resend, /openai, /anthropic), the admin API and the docs at /docs. Takes its
settings from the KEYBRAKE_* variables (README "Configuration"), each also a flag. Without
KEYBRAKE_ADMIN_TOKEN, the first start generates an admin token and prints it once.`;

const MIGRATE_USAGE = `usage: keybrake migrate [--db FILE]

Brings the database (KEYBRAKE_DB, default ./keybrake.db) to the latest schema, creating it if missing.
keybrake serve does the same at start-up.`;

const BACKUP_USAGE = `usage: keybrake backup <file> [--db FILE]

Writes an online, consistent copy of the database (KEYBRAKE_DB) to <file>, created owner-only (0600).
Refuses to overwrite an existing file. Safe while the server runs.`;

const HEALTHCHECK_USAGE = `usage: keybrake healthcheck [--port P] [--host H]

GETs /healthz from the server on this machine (KEYBRAKE_HOST, 127.0.0.1 when it listens on every address,
and KEYBRAKE_PORT); exits 0 when the ledger accepts writes, 1 otherwise. For Docker's HEALTHCHECK.`;

const VERSION_USAGE = `usage: keybrake version

Prints the version.`;

const COMMANDS = [
  "serve",
  "keys",
  "budgets",
  "holds",
  "approvals",
  "alerts",
  "tokens",
  "audit",
  "spend",
  "price",
  "backup",
  "migrate",
  "healthcheck",
  "version",
];

/** A command's usage for `keybrake <command> [sub] --help` and `keybrake help <command>`; null for one not known here. */
function helpFor(command: string, args: string[]): string | null {
  switch (command) {
    case "serve":
      return SERVE_USAGE;
    case "keys":
      return keysHelp(args);
    case "budgets":
      return budgetsHelp(args);
    case "holds":
      return holdsHelp(args);
    case "approvals":
      return approvalsHelp(args);
    case "alerts":
      return alertsHelp(args);
    case "audit":
      return auditHelp(args);
    case "spend":
      return SPEND_USAGE;
    case "price":
      return PRICE_USAGE;
    case "backup":
      return BACKUP_USAGE;
    case "migrate":
      return MIGRATE_USAGE;
    case "healthcheck":
      return HEALTHCHECK_USAGE;
    case "version":
      return VERSION_USAGE;
    case "tokens":
      return tokensHelp(args);
    default:
      return null;
  }
}

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

async function serve(config: Config, log: Logger, env: Record<string, string | undefined>) {
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

async function main(argv: string[]): Promise<number> {
  const { env: flagEnv, rest } = flagsToEnv(argv);
  const [first, ...args] = rest;
  if (first === "version" || first === "--version") {
    if (wantsHelp(args)) return help(VERSION_USAGE);
    parseFlags("keybrake version", args, {});
    console.log(VERSION);
    return 0;
  }
  if (first === "help" || first === "--help" || first === "-h") {
    return help((args[0] !== undefined && helpFor(args[0], args.slice(1))) || USAGE);
  }
  if (first?.startsWith("-")) throw new UsageError(`keybrake: unknown flag ${first} (keybrake --help)`);
  const command = first ?? "serve";
  // --help prints the command's usage and does nothing else: no configuration read, no file touched.
  if (wantsHelp(args)) {
    const text = helpFor(command, args);
    if (text !== null) return help(text);
  }
  const config = loadConfig(process.env, flagEnv);
  const log = createLogger(config.logFormat);
  for (const name of unknownVariables(process.env)) {
    log.warn("unknown_variable", `${name} is not a Keybrake variable; it is ignored`, { variable: name });
  }
  switch (command) {
    case "serve":
      parseFlags("keybrake serve", args, {});
      await serve(config, log, { ...process.env, ...flagEnv });
      return -1;
    case "migrate": {
      parseFlags("keybrake migrate", args, {});
      const applied = await migrateConfiguredStore(config);
      console.log(applied.length ? `applied ${applied.join(", ")}` : "already at the latest schema");
      return 0;
    }
    case "healthcheck":
      parseFlags("keybrake healthcheck", args, {});
      return healthcheck(config);
    case "price":
      return priceCommand(config, args);
    case "keys":
    case "budgets":
    case "holds":
    case "approvals":
    case "alerts":
    case "audit":
    case "spend": {
      if (command === "keys") checkKeysCommand(args);
      if (command === "budgets") checkBudgetsCommand(args);
      if (command === "holds") checkHoldsCommand(args);
      if (command === "approvals") checkApprovalsCommand(args);
      if (command === "alerts") checkAlertsCommand(args);
      // Opened once the command's flags are known to be good: a mistyped flag is named, whatever the database.
      let opened: Promise<AnyStore> | undefined;
      const store = () => (opened ??= openConfiguredStore(config, { create: false }));
      const actor = `cli:${process.env.USER ?? "local"}`;
      try {
        if (command === "keys") await keysCommand(store, args, actor, config);
        else if (command === "budgets") await budgetsCommand(store, args, actor);
        else if (command === "holds") await holdsCommand(store, args, actor);
        else if (command === "approvals") await approvalsCommand(store, args, actor);
        else if (command === "alerts") await alertsCommand(store, args, actor, config);
        else if (command === "audit") await auditCommand(store, args);
        else await spendCommand(store, args);
      } finally {
        await (await opened)?.close();
      }
      return 0;
    }
    case "tokens": {
      if (wantsHelp(args)) return help(tokensHelp(args));
      const store = await openConfiguredStore(config, { create: false });
      try {
        await tokensCommand(store, args, `cli:${process.env.USER ?? "local"}`);
      } finally {
        await store.close();
      }
      return 0;
    }
    case "backup": {
      const { positionals } = parseFlags("keybrake backup", args, {}, true);
      if (positionals.length !== 1) throw new UsageError("keybrake backup: give one file to write (keybrake backup --help)");
      const file = positionals[0]!;
      if (existsSync(file)) throw new UsageError(`keybrake backup: ${file} exists; choose a new file`);
      if (config.postgres) {
        throw new UsageError(
          'keybrake backup: the ledger is on PostgreSQL (KEYBRAKE_DATABASE_URL); back it up with pg_dump, e.g. pg_dump --format=custom --file=keybrake.dump "$KEYBRAKE_DATABASE_URL"',
        );
      }
      const store = await openConfiguredStore(config, { create: false });
      if (store.kind !== "sqlite") throw new Error("unreachable: a SQLite configuration opened another store");
      try {
        await store.backupTo(file);
      } finally {
        await store.close();
      }
      console.log(`backed up ${config.dbPath} to ${file}`);
      return 0;
    }
    default:
      throw new UsageError(`keybrake: unknown command "${command}"; one of ${COMMANDS.join(", ")} (keybrake --help)`);
  }
}

function help(text: string): number {
  console.log(text);
  return 0;
}

/** `keybrake healthcheck`: the local server's /healthz, for a container's HEALTHCHECK (distroless has no curl). */
async function healthcheck(config: Config): Promise<number> {
  const url = `${localUrl(config)}/healthz`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    const body = await res.text();
    console.log(`${url}: ${res.status} ${body}`);
    return res.status === 200 ? 0 : 1;
  } catch (err) {
    console.error(`keybrake healthcheck: ${url}: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

/** A reader that went away (`keybrake audit --format ndjson | head`): stop quietly, as a Unix filter does. */
const isBrokenPipe = (err: unknown) => (err as { code?: string } | null)?.code === "EPIPE";
process.stdout.on("error", (err) => {
  if (isBrokenPipe(err)) process.exit(0);
});

main(Bun.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    if (isBrokenPipe(err)) process.exit(0);
    if (err instanceof ConfigError) console.error(`keybrake: invalid configuration: ${err.message}`);
    else if (err instanceof UsageError) console.error(err.message);
    else if (err instanceof KeybrakeError) console.error(`keybrake: ${err.code}: ${err.message}`);
    else console.error(`keybrake: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(err instanceof ConfigError || err instanceof UsageError || err instanceof KeybrakeError ? 2 : 1);
  },
);

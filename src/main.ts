#!/usr/bin/env bun
import { ConfigError, flagsToEnv, loadConfig, unknownVariables, type Config } from "./config";
import { KeybrakeError } from "./errors";
import { existsSync } from "node:fs";
import { auditCommand, spendCommand } from "./cli/audit";
import { keysCommand, UsageError } from "./cli/keys";
import { announceAdminToken, ensureAdminToken } from "./ops/admin-auth";
import { listen } from "./ops/listen";
import { startMaintenance } from "./ops/maintenance";
import { startReconciler } from "./ops/reconciler";
import { holdsCommand } from "./cli/holds";
import { createApp } from "./server";
import { migrateDatabase, openStore } from "./store/index";
import { VERSION } from "./version";

const USAGE = `keybrake ${VERSION} — a spend brake for jobs that call Stripe, Twilio and Resend

usage: keybrake [serve]           start the server (default)
       keybrake keys ...          create | list | show | revoke vault keys (keybrake keys --help)
       keybrake holds ...         list | settle | release holds a crash left unsettled
       keybrake audit [filters]   audit rows (--format table|ndjson|csv; --label-prefix, --since, ...)
       keybrake spend             spend per --group-by label|key|vendor|day
       keybrake backup <file>     an online, consistent copy of the database
       keybrake migrate           bring the database to the latest schema
       keybrake version

Every KEYBRAKE_* variable can be given as a flag: KEYBRAKE_DB=x is --db x, KEYBRAKE_PORT=9000 is --port 9000.`;

const SHUTDOWN_GRACE_MS = 25_000;

async function serve(config: Config) {
  const store = openStore(config.dbPath, { synchronous: config.dbSynchronous });
  await ensureAdminToken(config, store, announceAdminToken);
  const app = createApp(config, store);
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
  const orphaned = await store.recoverOrphanedHolds(Date.now());
  recovered.resolve();
  if (orphaned.length > 0) {
    console.error(
      `keybrake: ${orphaned.length} hold(s) from a previous run were never settled; they stay counted as held until ` +
        "resolved: keybrake holds list, then keybrake holds settle|release <id>",
    );
  }
  store.checkpointInBackground();
  const maintenance = startMaintenance(store, config.auditRetentionDays);
  void maintenance.tick();
  const reconciler = startReconciler(store, config);
  console.error(`keybrake ${VERSION} listening on http://${config.host}:${server.port} (db ${config.dbPath}); docs at /docs`);

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.error(`keybrake: ${signal}: no longer accepting; finishing in-flight calls`);
    // stop(false) resolves when in-flight requests have answered (and so settled); bounded by the timer. The app's
    // stop hook then writes the unauthenticated denials still only counted, before the store closes.
    maintenance.stop();
    const reconciled = reconciler.stop();
    // Elysia's stop does not wait for in-flight requests; Bun's does.
    await Promise.race([Promise.all([server.stop(false), app.stop(false), reconciled]), Bun.sleep(SHUTDOWN_GRACE_MS)]);
    await store.close();
    console.error("keybrake: stopped cleanly");
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
}

async function main(argv: string[]): Promise<number> {
  const { env: flagEnv, rest } = flagsToEnv(argv);
  const [command = "serve", ...args] = rest;
  if (command === "version" || command === "--version") {
    console.log(VERSION);
    return 0;
  }
  if (command === "help" || command === "--help" || command === "-h") {
    console.log(USAGE);
    return 0;
  }
  const config = loadConfig(process.env, flagEnv);
  for (const name of unknownVariables(process.env)) console.error(`keybrake: warning: ${name} is not a Keybrake variable; it is ignored`);
  switch (command) {
    case "serve":
      await serve(config);
      return -1;
    case "migrate": {
      const applied = migrateDatabase(config.dbPath, { synchronous: config.dbSynchronous });
      console.log(applied.length ? `applied ${applied.join(", ")}` : "already at the latest schema");
      return 0;
    }
    case "keys":
    case "holds":
    case "audit":
    case "spend": {
      const store = openStore(config.dbPath, { synchronous: config.dbSynchronous, create: false });
      const actor = `cli:${process.env.USER ?? "local"}`;
      try {
        if (command === "keys") await keysCommand(store, args, actor);
        else if (command === "holds") await holdsCommand(store, args, actor);
        else if (command === "audit") await auditCommand(store, args);
        else await spendCommand(store, args);
      } finally {
        await store.close();
      }
      return 0;
    }
    case "backup": {
      if (args.length !== 1) throw new UsageError("usage: keybrake backup <file>");
      if (existsSync(args[0]!)) throw new UsageError(`keybrake backup: ${args[0]} exists; choose a new file`);
      const store = openStore(config.dbPath, { synchronous: config.dbSynchronous, create: false });
      try {
        await store.backupTo(args[0]!);
      } finally {
        await store.close();
      }
      console.log(`backed up ${config.dbPath} to ${args[0]}`);
      return 0;
    }
    default:
      console.error(USAGE);
      return 2;
  }
}

main(Bun.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    if (err instanceof ConfigError) console.error(`keybrake: invalid configuration: ${err.message}`);
    else if (err instanceof UsageError) console.error(err.message);
    else if (err instanceof KeybrakeError) console.error(`keybrake: ${err.code}: ${err.message}`);
    else console.error(`keybrake: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(err instanceof ConfigError || err instanceof UsageError || err instanceof KeybrakeError ? 2 : 1);
  },
);

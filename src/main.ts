#!/usr/bin/env bun
import { existsSync } from "node:fs";
import { parseFlags, UsageError, wantsHelp } from "./cli/args";
import { type CliIo, cliIo, withCliIo, writeErr, writeOut } from "./cli/io";
import { localUrl, PRICE_USAGE, priceCommand } from "./cli/price";
import { type Config, flagsToEnv, loadConfig, unknownVariables } from "./config";
import { ConfigError } from "./env";
import { KeybrakeError } from "./errors";
import { createLogger } from "./ops/log";
import type { AnyStore } from "./store/open";
import { VERSION } from "./version";

// Each command's modules are imported when that command runs (`await import`): `keybrake version`, a --help or a
// mistyped word answers without evaluating the server, the stores or the services it does not use.

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
async function helpFor(command: string, args: string[]): Promise<string | null> {
  switch (command) {
    case "serve":
      return SERVE_USAGE;
    case "keys":
      return (await import("./cli/keys")).keysHelp(args);
    case "budgets":
      return (await import("./cli/budgets")).budgetsHelp(args);
    case "holds":
      return (await import("./cli/holds")).holdsHelp(args);
    case "approvals":
      return (await import("./cli/approvals")).approvalsHelp(args);
    case "alerts":
      return (await import("./cli/alerts")).alertsHelp(args);
    case "audit":
      return (await import("./cli/audit")).auditHelp(args);
    case "spend":
      return (await import("./cli/audit")).SPEND_USAGE;
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
      return (await import("./cli/tokens")).tokensHelp(args);
    default:
      return null;
  }
}

async function main(argv: string[], io: CliIo): Promise<number> {
  const { env: flagEnv, rest } = flagsToEnv(argv);
  const [first, ...args] = rest;
  if (first === "version" || first === "--version") {
    if (wantsHelp(args)) return help(VERSION_USAGE);
    parseFlags("keybrake version", args, {});
    writeOut(VERSION);
    return 0;
  }
  if (first === "help" || first === "--help" || first === "-h") {
    return help((args[0] !== undefined && (await helpFor(args[0], args.slice(1)))) || USAGE);
  }
  if (first?.startsWith("-")) throw new UsageError(`keybrake: unknown flag ${first} (keybrake --help)`);
  const command = first ?? "serve";
  // --help prints the command's usage and does nothing else: no configuration read, no file touched.
  if (wantsHelp(args)) {
    const text = await helpFor(command, args);
    if (text !== null) return help(text);
  }
  if (!COMMANDS.includes(command)) {
    throw new UsageError(`keybrake: unknown command "${command}"; one of ${COMMANDS.join(", ")} (keybrake --help)`);
  }
  const config = loadConfig(io.env, flagEnv);
  const log = createLogger(config.logFormat, io.err);
  for (const name of unknownVariables(io.env)) {
    log.warn("unknown_variable", `${name} is not a Keybrake variable; it is ignored`, { variable: name });
  }
  switch (command) {
    case "serve":
      parseFlags("keybrake serve", args, {});
      await (await import("./serve")).serve(config, log, { ...io.env, ...flagEnv });
      return -1;
    case "migrate": {
      parseFlags("keybrake migrate", args, {});
      const applied = await (await import("./store/open")).migrateConfiguredStore(config);
      writeOut(applied.length ? `applied ${applied.join(", ")}` : "already at the latest schema");
      return 0;
    }
    case "healthcheck":
      parseFlags("keybrake healthcheck", args, {});
      return healthcheck(config);
    case "price":
      return priceCommand(config, args);
    case "tokens": {
      const { tokensCommand } = await import("./cli/tokens");
      const store = await openStoreOf(config);
      try {
        await tokensCommand(store, args, cliActor(io));
      } finally {
        await store.close();
      }
      return 0;
    }
    case "backup":
      return backup(config, args);
    default:
      return storeCommand(command, config, args, cliActor(io));
  }
}

/** Who the admin events of a command run from this shell name. */
const cliActor = (io: CliIo) => `cli:${io.env.USER ?? "local"}`;

/**
 * The ledger a one-shot command reads and writes. On PostgreSQL, a pool of two, not serve's sixteen: Bun opens
 * the whole pool at the first query, and a command runs one statement at a time (two lets a read go on beside a
 * transaction).
 */
const openStoreOf = async (config: Config) => (await import("./store/open")).openConfiguredStore(config, { create: false, connections: 2 });

/** The commands that read or change the ledger through its services: keys, budgets, holds, approvals, alerts, audit, spend. */
async function storeCommand(command: string, config: Config, args: string[], actor: string): Promise<number> {
  // The command's flags are checked before the database is opened: a mistyped flag is named, whatever the database.
  let run: (store: () => Promise<AnyStore>) => Promise<void>;
  switch (command) {
    case "keys": {
      const m = await import("./cli/keys");
      m.checkKeysCommand(args);
      run = (store) => m.keysCommand(store, args, actor, config);
      break;
    }
    case "budgets": {
      const m = await import("./cli/budgets");
      m.checkBudgetsCommand(args);
      run = (store) => m.budgetsCommand(store, args, actor);
      break;
    }
    case "holds": {
      const m = await import("./cli/holds");
      m.checkHoldsCommand(args);
      run = (store) => m.holdsCommand(store, args, actor);
      break;
    }
    case "approvals": {
      const m = await import("./cli/approvals");
      m.checkApprovalsCommand(args);
      run = (store) => m.approvalsCommand(store, args, actor);
      break;
    }
    case "alerts": {
      const m = await import("./cli/alerts");
      m.checkAlertsCommand(args);
      run = (store) => m.alertsCommand(store, args, actor, config);
      break;
    }
    case "audit": {
      const m = await import("./cli/audit");
      run = (store) => m.auditCommand(store, args);
      break;
    }
    default: {
      const m = await import("./cli/audit");
      run = (store) => m.spendCommand(store, args);
    }
  }
  let opened: Promise<AnyStore> | undefined;
  try {
    await run(() => (opened ??= openStoreOf(config)));
  } finally {
    await (await opened)?.close();
  }
  return 0;
}

async function backup(config: Config, args: string[]): Promise<number> {
  const { positionals } = parseFlags("keybrake backup", args, {}, true);
  if (positionals.length !== 1) throw new UsageError("keybrake backup: give one file to write (keybrake backup --help)");
  const file = positionals[0]!;
  if (existsSync(file)) throw new UsageError(`keybrake backup: ${file} exists; choose a new file`);
  if (config.postgres) {
    throw new UsageError(
      'keybrake backup: the ledger is on PostgreSQL (KEYBRAKE_DATABASE_URL); back it up with pg_dump, e.g. pg_dump --format=custom --file=keybrake.dump "$KEYBRAKE_DATABASE_URL"',
    );
  }
  const store = await openStoreOf(config);
  if (store.kind !== "sqlite") throw new Error("unreachable: a SQLite configuration opened another store");
  try {
    await store.backupTo(file);
  } finally {
    await store.close();
  }
  writeOut(`backed up ${config.dbPath} to ${file}`);
  return 0;
}

function help(text: string): number {
  writeOut(text);
  return 0;
}

/** `keybrake healthcheck`: the local server's /healthz, for a container's HEALTHCHECK (distroless has no curl). */
async function healthcheck(config: Config): Promise<number> {
  const url = `${localUrl(config)}/healthz`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    const body = await res.text();
    writeOut(`${url}: ${res.status} ${body}`);
    return res.status === 200 ? 0 : 1;
  } catch (err) {
    writeErr(`keybrake healthcheck: ${url}: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

/**
 * Runs one command as `keybrake <argv>` would, its words and environment from `io` (the process's by default), and
 * answers its exit code: 0, 1 for a failure, 2 for a usage, configuration or request error; -1 while `serve` runs.
 */
export function runCli(argv: string[], io: CliIo = cliIo()): Promise<number> {
  return withCliIo(io, () => main(argv, io).catch(exitCodeOf));
}

/** A reader that went away (`keybrake audit --format ndjson | head`): stop quietly, as a Unix filter does. */
const isBrokenPipe = (err: unknown) => (err as { code?: string } | null)?.code === "EPIPE";

function exitCodeOf(err: unknown): number {
  if (isBrokenPipe(err)) return 0;
  if (err instanceof ConfigError) writeErr(`keybrake: invalid configuration: ${err.message}`);
  else if (err instanceof UsageError) writeErr(err.message);
  else if (err instanceof KeybrakeError) writeErr(`keybrake: ${err.code}: ${err.message}`);
  else writeErr(`keybrake: ${err instanceof Error ? err.message : String(err)}`);
  return err instanceof ConfigError || err instanceof UsageError || err instanceof KeybrakeError ? 2 : 1;
}

if (import.meta.main) {
  process.stdout.on("error", (err) => {
    if (isBrokenPipe(err)) process.exit(0);
  });
  runCli(Bun.argv.slice(2)).then((code) => {
    if (code >= 0) process.exit(code);
  });
}

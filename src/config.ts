import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { parseArgs } from "node:util";
import { z } from "zod";
import { ConfigError, decimalTable, flag, int } from "./env";
import { type EndpointPattern, compilePattern, patternProblem } from "./endpoints";
import { parsePostgresUrl, takePoolSize } from "./postgres-url";
import { registeredVendors } from "./vendors/index";
import type { AnyVendor, VendorSettings } from "./vendors/types";

export { ConfigError } from "./env";

/** Core variables that hold secrets; each vendor lists its own. Each may also be given as NAME_FILE. */
// The PostgreSQL URL usually carries a password.
const CORE_SECRETS = ["KEYBRAKE_ADMIN_TOKEN", "KEYBRAKE_DATABASE_URL"];

/** Words of a token that was never replaced: deploy/keybrake.env.example ships `change-me-…`. */
const PLACEHOLDER = /change[-_]?me|replace[-_]?me|example|placeholder/i;
/** Random hex has 3.6 to 4 bits per character, base64 about 5; `aaaa…` has 0, `abab…` 1, one long run little. */
const MIN_BITS_PER_CHAR = 3;
const GENERATE = "generate one with: openssl rand -hex 32";

/** Shannon entropy of a string's character frequencies, in bits per character. */
function bitsPerChar(s: string): number {
  const chars = [...s];
  const counts = new Map<string, number>();
  for (const ch of chars) counts.set(ch, (counts.get(ch) ?? 0) + 1);
  let bits = 0;
  for (const n of counts.values()) bits -= (n / chars.length) * Math.log2(n / chars.length);
  return bits;
}

/**
 * The admin token guards every key and cap: a guessable or published one stops the start
 * (README "Run as a service").
 */
const adminToken = z
  .string()
  .min(32, "must be at least 32 characters")
  .refine((t) => !PLACEHOLDER.test(t), `is a placeholder, not a secret; ${GENERATE}`)
  .refine(
    (t) => bitsPerChar(t) >= MIN_BITS_PER_CHAR,
    `is too uniform (under ${MIN_BITS_PER_CHAR} bits of entropy per character); ${GENERATE}`,
  )
  .optional();
/** `EUR=1.08,GBP=1.27` -> { EUR: "1.08", GBP: "1.27" }; rates stay decimal strings so conversion is exact. */
const FX_FORM = "CODE=rate with a positive decimal rate (e.g. EUR=1.08)";
const fxTable = decimalTable(/[A-Za-z]{3}/, FX_FORM, (_code, rate, part) => (Number(rate) > 0 ? null : `"${part}" is not ${FX_FORM}`));

/** Keybrake's own variables; each vendor module adds its own (src/vendors/*.ts `env`). */
const CORE_ENV = {
  KEYBRAKE_HOST: z.string().min(1).default("0.0.0.0"),
  KEYBRAKE_PORT: int(0, 65535, 8080),
  KEYBRAKE_DB: z.string().min(1, "must be a file path").default("./keybrake.db"),
  // Several instances share one ledger on PostgreSQL (SPEC §13); unset, the SQLite file KEYBRAKE_DB is the ledger.
  // A list of hosts (a primary and its standbys, libpq's form) is followed through a failover (store/pg/client.ts).
  KEYBRAKE_DATABASE_URL: z
    .string()
    .refine(
      (v) => parsePostgresUrl(v) !== null,
      "must be a postgres://user:password@host:port/database URL (or host1:port1,host2:port2 for a primary and its standbys)",
    )
    .refine((v) => takePoolSize(v) !== null, "pool_max_conns must be a whole number from 1 to 100")
    .optional(),
  // What names this instance's holds in the shared ledger: a restart under the same id recovers its own unfinished
  // holds at once; holds of an id whose lease lapsed are recovered by any instance. Default: host name and port.
  KEYBRAKE_INSTANCE_ID: z
    .string()
    .regex(/^[A-Za-z0-9._:-]{1,100}$/, "must be 1 to 100 letters, digits, dots, dashes, colons or underscores")
    .optional(),
  KEYBRAKE_INSTANCE_LEASE_S: int(1, 3600, 15),
  KEYBRAKE_DB_SYNCHRONOUS: z.enum(["normal", "full"], { error: "must be normal or full" }).default("full"),
  KEYBRAKE_ADMIN_TOKEN: adminToken,
  KEYBRAKE_UPSTREAM_TIMEOUT_MS: int(1, 600_000, 80_000),
  KEYBRAKE_MAX_BODY_BYTES: int(1, 64 * 1024 * 1024, 1_048_576),
  KEYBRAKE_FX: fxTable,
  KEYBRAKE_METRICS_PUBLIC: flag,
  KEYBRAKE_AUDIT_RETENTION_DAYS: int(1, 36_500, 90),
  KEYBRAKE_LOG_FORMAT: z.enum(["text", "json"], { error: "must be text or json" }).default("text"),
  // Where people reach this Keybrake (behind its TLS proxy): alerts link to the dashboard from it (SPEC §12),
  // and an https one marks the dashboard's session cookie Secure.
  KEYBRAKE_PUBLIC_URL: z
    .string()
    .refine(
      (v) => URL.canParse(v) && /^https?:$/.test(new URL(v).protocol),
      "must be an http:// or https:// URL, e.g. https://keybrake.example.com",
    )
    .transform((v) => v.replace(/\/+$/, ""))
    .optional(),
};

/** KEYBRAKE_<VENDOR>_FREE_ENDPOINTS: the operator's own widening of a vendor's catalogue (SPEC §2, §6). */
const freeEndpointsVariable = (vendor: AnyVendor) => `KEYBRAKE_${vendor.name.toUpperCase()}_FREE_ENDPOINTS`;

/** `GET /v1/radar/value_lists, /v1/apple_pay/domains`: endpoint patterns (SPEC §5), comma-separated. */
const endpointList = z
  .string()
  .default("")
  .transform((raw, ctx) => {
    const patterns = raw
      .split(",")
      .map((p) => p.trim())
      .filter(Boolean);
    for (const pattern of patterns) {
      const problem = patternProblem(pattern);
      if (problem !== null) {
        ctx.addIssue({ code: "custom", message: `"${pattern}" ${problem}` });
        return z.NEVER;
      }
    }
    return patterns;
  });

/** Every variable Keybrake reads: its own and those of the vendors registered now. */
function envSchema() {
  const vendors = registeredVendors();
  const freeEndpoints = Object.fromEntries(vendors.map((v) => [freeEndpointsVariable(v), endpointList]));
  return z.object(Object.assign({}, CORE_ENV, freeEndpoints, ...vendors.map((v) => v.env)) as typeof CORE_ENV);
}

const secretVariables = () => [...CORE_SECRETS, ...registeredVendors().flatMap((v) => v.secretVariables)];

export interface Config {
  host: string;
  port: number;
  dbPath: string;
  dbSynchronous: "normal" | "full";
  /** PostgreSQL (SPEC §13): the shared ledger's URL, this instance's id and how long its lease lasts unrenewed. */
  /** `url` without `pool_max_conns`, which is `poolSize` (undefined: the store's default). */
  postgres: { url: string; poolSize?: number; instanceId: string; leaseMs: number } | null;
  adminToken?: string;
  upstreamTimeoutMs: number;
  maxBodyBytes: number;
  fx: Record<string, string>;
  metricsPublic: boolean;
  auditRetentionDays: number;
  /** How log lines are written on stderr: `keybrake: …` text, or one JSON object per line. */
  logFormat: "text" | "json";
  /** KEYBRAKE_PUBLIC_URL without a trailing slash (alert links to the dashboard, the cookie's Secure); null when unset. */
  publicUrl: string | null;
  /** Each registered vendor's settings (base URL, credentials per mode, prices), by vendor name. */
  vendors: Record<string, VendorSettings>;
  /** The operator's KEYBRAKE_<VENDOR>_FREE_ENDPOINTS, by vendor name: forwarded at $0 where the catalogue is silent. */
  freeEndpoints: Record<string, { patterns: string[]; compiled: EndpointPattern[] }>;
  /** Every configured secret, and what it becomes wherever a vendor's answer carries it (SPEC §4). */
  scrub: Scrub[];
}

export interface Scrub {
  secret: string;
  replacement: string;
}

/**
 * Shorter strings than this are no secret a vendor issues, and replacing them would mangle answers. Vendors'
 * secrets and SIDs are 30 to 100 characters; the admin token at least 32.
 */
const MIN_SCRUBBED_LENGTH = 12;

/**
 * What is replaced in answers: every secret variable's value (the vendors' keys, tokens and SIDs, the admin token,
 * the database password) and each credential header Keybrake sends (Twilio's Basic `sid:token` in base64). Twilio's
 * SID becomes its path placeholder, so URIs in its answers still work through Keybrake.
 */
function scrubList(env: Record<string, unknown>, vendors: Record<string, VendorSettings>): Scrub[] {
  const list: Scrub[] = [];
  const add = (secret: unknown, replacement = "[redacted by Keybrake]") => {
    if (typeof secret === "string" && secret.length >= MIN_SCRUBBED_LENGTH && !list.some((s) => s.secret === secret))
      list.push({ secret, replacement });
  };
  for (const vendor of registeredVendors()) {
    for (const name of vendor.secretVariables) add(env[name], vendor.scrubAs?.[name]);
    for (const creds of Object.values(vendors[vendor.name]?.credentials ?? {}))
      for (const value of Object.values(creds?.headers ?? {})) add(value.split(" ").at(-1));
  }
  add(env.KEYBRAKE_ADMIN_TOKEN);
  if (typeof env.KEYBRAKE_DATABASE_URL === "string") add(parsePostgresUrl(env.KEYBRAKE_DATABASE_URL)?.password);
  return list;
}

/** The flag of a variable: KEYBRAKE_UPSTREAM_TIMEOUT_MS -> upstream-timeout-ms. */
const flagOf = (variable: string) => variable.slice("KEYBRAKE_".length).toLowerCase().replace(/_/g, "-");

/**
 * The global flags, anywhere before `--`: `--db x`, `--db=x`, `--upstream-timeout-ms 5` -> KEYBRAKE_DB,
 * KEYBRAKE_UPSTREAM_TIMEOUT_MS. Read with `node:util` parseArgs; everything else is left, in order, for the
 * command. A value that is itself a flag (`--db --port 9000`) is refused: write `--db=--port` to mean it.
 */
export function flagsToEnv(argv: string[]): { env: Record<string, string>; rest: string[] } {
  const variables = Object.keys(envSchema().shape);
  const options = Object.fromEntries(variables.map((v) => [flagOf(v), { type: "string" as const }]));
  const { tokens } = parseArgs({ args: argv, options, strict: false, allowPositionals: true, tokens: true });
  const env: Record<string, string> = {};
  const taken = new Set<number>();
  for (const token of tokens) {
    if (token.kind === "option-terminator") break;
    if (token.kind !== "option" || !(token.name in options) || token.rawName !== `--${token.name}`) continue;
    const name = `KEYBRAKE_${token.name.replace(/-/g, "_").toUpperCase()}`;
    if (token.value === undefined || (!token.inlineValue && token.value.startsWith("-"))) {
      throw new ConfigError(`${name}: --${token.name} needs a value${token.value === undefined ? "" : ` (got the flag ${token.value})`}`);
    }
    env[name] = token.value;
    taken.add(token.index);
    if (!token.inlineValue) taken.add(token.index + 1);
  }
  return { env, rest: argv.filter((_, i) => !taken.has(i)) };
}

function readSecretFiles(env: Record<string, string | undefined>): Record<string, string | undefined> {
  const out = { ...env };
  for (const name of secretVariables()) {
    const file = env[`${name}_FILE`];
    if (!file) continue;
    if (env[name]) throw new ConfigError(`${name}: set either ${name} or ${name}_FILE, not both`);
    try {
      out[name] = readFileSync(file, "utf8").replace(/\r?\n$/, "");
    } catch {
      throw new ConfigError(`${name}_FILE: cannot read ${file}`);
    }
  }
  return out;
}

/** KEYBRAKE_* variables Keybrake does not know (a typo, a vendor not registered): start-up warns, naming each. */
export function unknownVariables(env: Record<string, string | undefined>): string[] {
  const known = new Set([...Object.keys(envSchema().shape), ...secretVariables().map((name) => `${name}_FILE`)]);
  return Object.keys(env).filter((name) => name.startsWith("KEYBRAKE_") && !known.has(name));
}

/** Environment (then flags on top) -> validated Config. Throws ConfigError with one line naming the variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env, flags: Record<string, string> = {}): Config {
  const schema = envSchema();
  const merged = readSecretFiles({ ...env, ...flags });
  // Empty variables count as unset, as shells and EnvironmentFile= often leave them.
  const present = Object.fromEntries(Object.entries(merged).filter(([k, v]) => k in schema.shape && v !== ""));
  const parsed = schema.safeParse(present);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(`${String(issue.path[0])}: ${issue.message}`);
  }
  const e = parsed.data;
  const vendors = Object.fromEntries(registeredVendors().map((v) => [v.name, v.configure(e as Record<string, unknown>)]));
  return {
    host: e.KEYBRAKE_HOST,
    port: e.KEYBRAKE_PORT,
    dbPath: e.KEYBRAKE_DB,
    dbSynchronous: e.KEYBRAKE_DB_SYNCHRONOUS,
    postgres: e.KEYBRAKE_DATABASE_URL
      ? {
          ...takePoolSize(e.KEYBRAKE_DATABASE_URL)!,
          instanceId: e.KEYBRAKE_INSTANCE_ID ?? `${hostname()}:${e.KEYBRAKE_PORT}`,
          leaseMs: e.KEYBRAKE_INSTANCE_LEASE_S * 1000,
        }
      : null,
    adminToken: e.KEYBRAKE_ADMIN_TOKEN,
    upstreamTimeoutMs: e.KEYBRAKE_UPSTREAM_TIMEOUT_MS,
    maxBodyBytes: e.KEYBRAKE_MAX_BODY_BYTES,
    fx: e.KEYBRAKE_FX,
    metricsPublic: e.KEYBRAKE_METRICS_PUBLIC,
    auditRetentionDays: e.KEYBRAKE_AUDIT_RETENTION_DAYS,
    logFormat: e.KEYBRAKE_LOG_FORMAT,
    publicUrl: e.KEYBRAKE_PUBLIC_URL ?? null,
    vendors,
    freeEndpoints: Object.fromEntries(
      registeredVendors().map((v) => {
        const patterns = (e as Record<string, unknown>)[freeEndpointsVariable(v)] as string[];
        return [v.name, { patterns, compiled: patterns.map((p) => compilePattern(p, v.publicPath)) }];
      }),
    ),
    scrub: scrubList(e as Record<string, unknown>, vendors),
  };
}

import { readFileSync } from "node:fs";
import { z } from "zod";
import { SMS_COUNTRIES } from "./vendors/sms";

/** Variables that hold secrets: each may also be given as NAME_FILE (systemd credentials, container secrets). */
export const SECRET_VARIABLES = [
  "KEYBRAKE_ADMIN_TOKEN",
  "KEYBRAKE_STRIPE_SECRET_KEY",
  "KEYBRAKE_STRIPE_TEST_SECRET_KEY",
  "KEYBRAKE_TWILIO_ACCOUNT_SID",
  "KEYBRAKE_TWILIO_AUTH_TOKEN",
  "KEYBRAKE_TWILIO_TEST_ACCOUNT_SID",
  "KEYBRAKE_TWILIO_TEST_AUTH_TOKEN",
  "KEYBRAKE_RESEND_API_KEY",
  "KEYBRAKE_RESEND_TEST_API_KEY",
] as const;

const secret = z.string().min(1, "must not be empty").optional();

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
  .refine((t) => bitsPerChar(t) >= MIN_BITS_PER_CHAR, `is too uniform (under ${MIN_BITS_PER_CHAR} bits of entropy per character); ${GENERATE}`)
  .optional();
const httpUrl = (fallback: string) =>
  z
    .url({ protocol: /^https?$/, error: "must be an http(s) URL" })
    .default(fallback)
    .transform((u) => u.replace(/\/+$/, ""));
const int = (min: number, max: number, fallback: number) =>
  z.coerce
    .number({ error: `must be an integer from ${min} to ${max}` })
    .int(`must be an integer from ${min} to ${max}`)
    .min(min, `must be an integer from ${min} to ${max}`)
    .max(max, `must be an integer from ${min} to ${max}`)
    .default(fallback);
const unitPrice = (fallback: number) =>
  z.coerce
    .number({ error: "must be a USD amount like 0.0083" })
    .nonnegative("must be a USD amount >= 0")
    .max(100, "must be a USD amount <= 100")
    .default(fallback);
const flag = z
  .enum(["0", "1", "true", "false"], { error: "must be 0 or 1" })
  .default("0")
  .transform((v) => v === "1" || v === "true");

/**
 * `A=1.08,B=2` -> { A: "1.08", B: "2" } (names upper-cased, values kept as decimal strings). `problem` says what is
 * wrong with one entry, or null; an entry not of the form NAME=decimal is refused with `form`.
 */
const decimalTable = (name: RegExp, form: string, problem: (name: string, value: string, part: string) => string | null) =>
  z
    .string()
    .default("")
    .transform((raw, ctx) => {
      const table: Record<string, string> = {};
      for (const part of raw.split(",").map((p) => p.trim()).filter(Boolean)) {
        const m = new RegExp(`^(${name.source})=(\\d+(?:\\.\\d+)?)$`).exec(part);
        const why = m ? problem(m[1]!.toUpperCase(), m[2]!, part) : `"${part}" is not ${form}`;
        if (why !== null) {
          ctx.addIssue({ code: "custom", message: why });
          return z.NEVER;
        }
        table[m![1]!.toUpperCase()] = m![2]!;
      }
      return table;
    });

/** `EUR=1.08,GBP=1.27` -> { EUR: "1.08", GBP: "1.27" }; rates stay decimal strings so conversion is exact. */
const FX_FORM = "CODE=rate with a positive decimal rate (e.g. EUR=1.08)";
const fxTable = decimalTable(/[A-Za-z]{3}/, FX_FORM, (_code, rate, part) => (Number(rate) > 0 ? null : `"${part}" is not ${FX_FORM}`));

/** `GB=0.0524,*=0.5`: USD per SMS segment by destination country (ISO 3166 alpha-2), `*` for any other. */
const smsPriceTable = decimalTable(/[A-Za-z]{2}|\*/, "COUNTRY=USD (e.g. GB=0.0524 or *=0.5)", (country, usd, part) => {
  if (Number(usd) > 100) return `"${part}": a price must be a USD amount <= 100`;
  if (country !== "*" && !SMS_COUNTRIES.has(country)) return `${country}: Keybrake cannot tell its phone numbers apart, so they are priced at *`;
  return null;
});

/**
 * SMS prices when KEYBRAKE_TWILIO_SMS_PRICES does not name the destination (it adds to and overrides these). The
 * US and Canada default to KEYBRAKE_TWILIO_SMS_USD; GB is Twilio's UK list price. `*` is any other destination,
 * held high on purpose: Twilio's dearest list prices reach about $0.30 a segment (Nepal, Trinidad and Tobago).
 */
export const DEFAULT_SMS_PRICES = { GB: 0.0524, "*": 0.5 };

const EnvSchema = z.object({
  KEYBRAKE_HOST: z.string().min(1).default("0.0.0.0"),
  KEYBRAKE_PORT: int(0, 65535, 8080),
  KEYBRAKE_DB: z.string().min(1, "must be a file path").default("./keybrake.db"),
  KEYBRAKE_DB_SYNCHRONOUS: z.enum(["normal", "full"], { error: "must be normal or full" }).default("full"),
  KEYBRAKE_ADMIN_TOKEN: adminToken,
  KEYBRAKE_STRIPE_SECRET_KEY: secret,
  KEYBRAKE_STRIPE_TEST_SECRET_KEY: secret,
  KEYBRAKE_TWILIO_ACCOUNT_SID: secret,
  KEYBRAKE_TWILIO_AUTH_TOKEN: secret,
  KEYBRAKE_TWILIO_TEST_ACCOUNT_SID: secret,
  KEYBRAKE_TWILIO_TEST_AUTH_TOKEN: secret,
  KEYBRAKE_RESEND_API_KEY: secret,
  KEYBRAKE_RESEND_TEST_API_KEY: secret,
  KEYBRAKE_STRIPE_BASE_URL: httpUrl("https://api.stripe.com"),
  KEYBRAKE_TWILIO_BASE_URL: httpUrl("https://api.twilio.com"),
  KEYBRAKE_RESEND_BASE_URL: httpUrl("https://api.resend.com"),
  KEYBRAKE_UPSTREAM_TIMEOUT_MS: int(1, 600_000, 80_000),
  KEYBRAKE_MAX_BODY_BYTES: int(1, 64 * 1024 * 1024, 1_048_576),
  KEYBRAKE_FX: fxTable,
  // Twilio US list prices (twilio.com/en-us/sms/pricing/us, /voice/pricing/us): outbound SMS per segment,
  // outbound MMS per message, outbound call per minute (a call holds TimeLimit's minutes).
  KEYBRAKE_TWILIO_SMS_USD: unitPrice(0.0083),
  KEYBRAKE_TWILIO_MMS_USD: unitPrice(0.022),
  KEYBRAKE_TWILIO_CALL_USD: unitPrice(0.014),
  KEYBRAKE_TWILIO_SMS_PRICES: smsPriceTable,
  // Resend Pro overage: $0.90 per 1,000 emails, each To/CC/BCC recipient counted (resend.com/pricing).
  KEYBRAKE_RESEND_EMAIL_USD: unitPrice(0.0009),
  KEYBRAKE_METRICS_PUBLIC: flag,
  KEYBRAKE_AUDIT_RETENTION_DAYS: int(1, 36_500, 90),
  KEYBRAKE_TWILIO_RECONCILE_AFTER_S: int(0, 7 * 86_400, 300),
});


export type SmsPrices = Record<string, number> & { "*": number };

export interface VendorSecrets {
  stripe: { live?: string; test?: string };
  twilio: { live?: { sid: string; token: string }; test?: { sid: string; token: string } };
  resend: { live?: string; test?: string };
}

export interface Config {
  host: string;
  port: number;
  dbPath: string;
  dbSynchronous: "normal" | "full";
  adminToken?: string;
  secrets: VendorSecrets;
  baseUrls: { stripe: string; twilio: string; resend: string };
  upstreamTimeoutMs: number;
  maxBodyBytes: number;
  fx: Record<string, string>;
  prices: {
    twilioSmsUsd: number;
    twilioMmsUsd: number;
    twilioCallUsd: number;
    /** USD per SMS segment by destination country; `*` for any other destination. */
    twilioSmsUsdTo: SmsPrices;
    resendEmailUsd: number;
  };
  metricsPublic: boolean;
  auditRetentionDays: number;
  /** How long after a call the reconciler first reads a final price the answer did not carry. */
  reconcileAfterMs: number;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** `--db x`, `--db=x`, `--upstream-timeout-ms 5` -> KEYBRAKE_DB, KEYBRAKE_UPSTREAM_TIMEOUT_MS. Returns the leftovers. */
export function flagsToEnv(argv: string[]): { env: Record<string, string>; rest: string[] } {
  const env: Record<string, string> = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const m = /^--([a-z][a-z0-9-]*)(?:=(.*))?$/.exec(arg);
    const name = m && `KEYBRAKE_${m[1]!.replace(/-/g, "_").toUpperCase()}`;
    if (!m || !name || !(name in EnvSchema.shape)) {
      rest.push(arg);
      continue;
    }
    const value = m[2] ?? argv[++i];
    if (value === undefined) throw new ConfigError(`${name}: --${m[1]} needs a value`);
    env[name] = value;
  }
  return { env, rest };
}

function readSecretFiles(env: Record<string, string | undefined>): Record<string, string | undefined> {
  const out = { ...env };
  for (const name of SECRET_VARIABLES) {
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

function smsPrices(usUsd: number, configured: Record<string, string>): SmsPrices {
  const table: SmsPrices = { US: usUsd, CA: usUsd, ...DEFAULT_SMS_PRICES };
  for (const [country, usd] of Object.entries(configured)) table[country] = Number(usd);
  return table;
}

function pair(sid?: string, token?: string, label = "") {
  if (!sid && !token) return undefined;
  if (!sid || !token) {
    throw new ConfigError(`KEYBRAKE_TWILIO_${label}ACCOUNT_SID: set together with KEYBRAKE_TWILIO_${label}AUTH_TOKEN`);
  }
  return { sid, token };
}

/** Environment (then flags on top) -> validated Config. Throws ConfigError with one line naming the variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env, flags: Record<string, string> = {}): Config {
  const merged = readSecretFiles({ ...env, ...flags });
  // Empty variables count as unset, as shells and EnvironmentFile= often leave them.
  const present = Object.fromEntries(Object.entries(merged).filter(([k, v]) => k in EnvSchema.shape && v !== ""));
  const parsed = EnvSchema.safeParse(present);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(`${String(issue.path[0])}: ${issue.message}`);
  }
  const e = parsed.data;
  return {
    host: e.KEYBRAKE_HOST,
    port: e.KEYBRAKE_PORT,
    dbPath: e.KEYBRAKE_DB,
    dbSynchronous: e.KEYBRAKE_DB_SYNCHRONOUS,
    adminToken: e.KEYBRAKE_ADMIN_TOKEN,
    secrets: {
      stripe: { live: e.KEYBRAKE_STRIPE_SECRET_KEY, test: e.KEYBRAKE_STRIPE_TEST_SECRET_KEY },
      twilio: {
        live: pair(e.KEYBRAKE_TWILIO_ACCOUNT_SID, e.KEYBRAKE_TWILIO_AUTH_TOKEN),
        test: pair(e.KEYBRAKE_TWILIO_TEST_ACCOUNT_SID, e.KEYBRAKE_TWILIO_TEST_AUTH_TOKEN, "TEST_"),
      },
      resend: { live: e.KEYBRAKE_RESEND_API_KEY, test: e.KEYBRAKE_RESEND_TEST_API_KEY },
    },
    baseUrls: { stripe: e.KEYBRAKE_STRIPE_BASE_URL, twilio: e.KEYBRAKE_TWILIO_BASE_URL, resend: e.KEYBRAKE_RESEND_BASE_URL },
    upstreamTimeoutMs: e.KEYBRAKE_UPSTREAM_TIMEOUT_MS,
    maxBodyBytes: e.KEYBRAKE_MAX_BODY_BYTES,
    fx: e.KEYBRAKE_FX,
    prices: {
      twilioSmsUsd: e.KEYBRAKE_TWILIO_SMS_USD,
      twilioMmsUsd: e.KEYBRAKE_TWILIO_MMS_USD,
      twilioCallUsd: e.KEYBRAKE_TWILIO_CALL_USD,
      twilioSmsUsdTo: smsPrices(e.KEYBRAKE_TWILIO_SMS_USD, e.KEYBRAKE_TWILIO_SMS_PRICES),
      resendEmailUsd: e.KEYBRAKE_RESEND_EMAIL_USD,
    },
    metricsPublic: e.KEYBRAKE_METRICS_PUBLIC,
    auditRetentionDays: e.KEYBRAKE_AUDIT_RETENTION_DAYS,
    reconcileAfterMs: e.KEYBRAKE_TWILIO_RECONCILE_AFTER_S * 1000,
  };
}

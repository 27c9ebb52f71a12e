import { policyViolation } from "../errors";
import type { IssuanceResult, KeyMode } from "../store/index";
import { microsToUsd, usdToMicros } from "../util";
import { uncoveredPattern } from "./coverage";
import type { Caller } from "../auth/admin-auth";
import { durationMs, type IssuerPolicy, IssuerPolicySchema } from "./model";

/** An issuer's policy, as its token stored it (validated when the token was created); null for other roles. */
export function issuerPolicy(caller: Caller | undefined): IssuerPolicy | null {
  return caller?.role === "issuer" && caller.policy ? IssuerPolicySchema.parse(caller.policy) : null;
}

const DAY_MS = 24 * 3600 * 1000;

/** A key as it would be after the mint or the PATCH: what an issuer policy bounds. */
export interface KeyDraft {
  vendor: string;
  mode: KeyMode;
  label: string | null;
  dailyCapMicros: number | null;
  totalCapMicros: number | null;
  /** As stored: the vendor's public form (Twilio's account as `{AccountSid}`). */
  allowedEndpoints: readonly string[];
  maxRequestsPerMinute: number | null;
  requireIdempotencyKey: boolean;
  createdAt: number;
  expiresAt: number;
  /** The budget it draws from (a mint may leave it out: none). */
  budgetId?: string | null;
  /** `observe`: its limits are reported, not enforced (a mint may leave it out: enforce). */
  enforcement?: "enforce" | "observe";
  /** Calls above it wait for a person (SPEC §15). */
  approvalAboveMicros?: number | null;
}

/**
 * The key an issuer mints, with the budget its policy puts on every key (SPEC §10) when it names none. A key
 * naming another budget keeps it, for enforcePolicy to refuse.
 */
export function withPolicyBudget<K extends KeyDraft>(policy: IssuerPolicy, key: K): K {
  return policy.budget_id === undefined || key.budgetId ? key : { ...key, budgetId: policy.budget_id };
}

const usd = (micros: number) => `${microsToUsd(micros)}`;

/** `6h`, `1d2h`, `90s`: a duration as the API writes them. */
export function formatDuration(ms: number): string {
  let s = Math.ceil(ms / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [
    ["d", 86400],
    ["h", 3600],
    ["m", 60],
    ["s", 1],
  ] as const) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  return parts.join("") || "0s";
}

/**
 * What a key can spend over its whole life, the amount `issued_usd_per_day` counts: its lifetime cap, or its
 * daily cap times the UTC days its life touches (a 6 h key that crosses midnight can spend its daily cap
 * twice), whichever is less.
 */
export function spendableMicros(key: Pick<KeyDraft, "dailyCapMicros" | "totalCapMicros" | "createdAt" | "expiresAt">): number {
  const days = Math.floor((key.expiresAt - 1) / DAY_MS) - Math.floor(key.createdAt / DAY_MS) + 1;
  const byDay = key.dailyCapMicros === null ? Number.POSITIVE_INFINITY : key.dailyCapMicros * Math.max(days, 1);
  return Math.min(byDay, key.totalCapMicros ?? Number.POSITIVE_INFINITY);
}

/**
 * Every field of the policy against the key as it would be; 403 issuer_policy_violation naming the first rule
 * broken. `publicPath` writes the policy's patterns as the key's are stored (the key's vendor's public form).
 */
export function enforcePolicy(policy: IssuerPolicy, key: KeyDraft, publicPath: (pattern: string) => string): void {
  if (policy.vendors && !policy.vendors.includes(key.vendor)) {
    throw policyViolation("policy.vendors", `this token mints keys for ${policy.vendors.join(", ")} only, not ${key.vendor}.`);
  }
  if (policy.modes && !policy.modes.includes(key.mode)) {
    throw policyViolation("policy.modes", `this token mints ${policy.modes.join(" or ")} keys only, not ${key.mode}.`);
  }
  if (policy.label_prefix !== undefined && !(key.label ?? "").startsWith(policy.label_prefix)) {
    throw policyViolation(
      "policy.label_prefix",
      `the key's label must start with "${policy.label_prefix}"${key.label === null ? " (this key has no label)" : `, not "${key.label}"`}.`,
    );
  }
  // An issuer's keys draw from its policy's budget or, without one, from none: a token never spends a pool it
  // was not given (and cannot read: GET /budgets shows an issuer only its policy's budget).
  const budget = key.budgetId ?? null;
  if (budget !== (policy.budget_id ?? null)) {
    throw policyViolation(
      "policy.budget_id",
      policy.budget_id === undefined
        ? `this token's policy names no budget, so its keys draw from none, not ${budget}.`
        : `keys of this token draw from budget ${policy.budget_id}, not ${budget}.`,
    );
  }
  capWithin("policy.max_daily_usd_cap", "daily_usd_cap", policy.max_daily_usd_cap, key.dailyCapMicros);
  capWithin("policy.max_total_usd_cap", "total_usd_cap", policy.max_total_usd_cap, key.totalCapMicros);
  if (policy.max_expires_in !== undefined && key.expiresAt - key.createdAt > durationMs(policy.max_expires_in)) {
    throw policyViolation(
      "policy.max_expires_in",
      `a key may live at most ${policy.max_expires_in} from its creation; this one would live ${formatDuration(key.expiresAt - key.createdAt)} (give expires_in; the default is 24h).`,
    );
  }
  if (policy.allowed_endpoints) {
    const uncovered = uncoveredPattern(policy.allowed_endpoints.map(publicPath), key.allowedEndpoints);
    if (uncovered !== null) {
      throw policyViolation(
        "policy.allowed_endpoints",
        `"${uncovered}" is not covered by any of the policy's allowed_endpoints (${policy.allowed_endpoints.join(", ")}): it allows requests they do not.`,
      );
    }
  }
  if (policy.max_requests_per_minute !== undefined) {
    const rate = key.maxRequestsPerMinute;
    if (rate === null || rate > policy.max_requests_per_minute) {
      throw policyViolation(
        "policy.max_requests_per_minute",
        `a key must carry max_requests_per_minute of at most ${policy.max_requests_per_minute}${rate === null ? " (this key has none)" : `, not ${rate}`}.`,
      );
    }
  }
  // A policy's approval threshold: its keys must ask a person above it, at most (SPEC §15).
  if (policy.max_approval_above_usd !== undefined) {
    const above = key.approvalAboveMicros ?? null;
    if (above === null || above > usdToMicros(policy.max_approval_above_usd)) {
      throw policyViolation(
        "policy.max_approval_above_usd",
        `a key must carry approval_above_usd of at most ${policy.max_approval_above_usd}${above === null ? " (this key has none)" : `, not ${microsToUsd(above)}`}.`,
      );
    }
  }
  // A key that only observes brakes nothing: a token that mints them must have been allowed to (SPEC §16).
  if (key.enforcement === "observe" && !policy.allow_observe) {
    throw policyViolation(
      "policy.allow_observe",
      'this token may not mint keys with "enforcement": "observe" (its policy would need "allow_observe": true).',
    );
  }
  if (policy.require_idempotency_key && !key.requireIdempotencyKey) {
    throw policyViolation("policy.require_idempotency_key", "keys of this token must be minted with require_idempotency_key: true.");
  }
}

function capWithin(rule: string, field: string, maxUsd: number | undefined, micros: number | null) {
  if (maxUsd === undefined) return;
  if (micros === null) throw policyViolation(rule, `a key must carry a ${field} of at most ${maxUsd} (this key has none).`);
  if (micros > usdToMicros(maxUsd)) throw policyViolation(rule, `${field} must be at most ${maxUsd}, not ${usd(micros)}.`);
}

/** The store's refusal of the limits that depend on what the token already minted, as the 403. */
export function issuanceRefusal(
  policy: IssuerPolicy,
  refused: Extract<IssuanceResult<unknown>, { kind: "refused" }>,
  micros: number,
): Error {
  if (refused.rule === "max_keys_per_hour") {
    return policyViolation(
      "policy.max_keys_per_hour",
      `this token minted ${refused.used} key(s) in the last hour; its policy allows ${policy.max_keys_per_hour}.`,
    );
  }
  return policyViolation(
    "policy.issued_usd_per_day",
    `this would issue ${usd(micros)} USD more (what the key can spend over its life); the token has issued ${usd(refused.used)} of its ${policy.issued_usd_per_day} USD today (UTC).`,
  );
}

/** The limits the store checks in the key's own transaction. */
export function issuanceLimits(policy: IssuerPolicy, tokenId: string, micros: number, now: number) {
  return {
    tokenId,
    micros,
    now,
    dayStart: Math.floor(now / DAY_MS) * DAY_MS,
    maxUsdPerDayMicros: policy.issued_usd_per_day === undefined ? null : usdToMicros(policy.issued_usd_per_day),
    maxKeysPerHour: policy.max_keys_per_hour ?? null,
  };
}

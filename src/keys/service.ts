import { KeybrakeError, invalidRequest, notFound } from "../errors";
import { ADMIN_MINTER, actorName, type Caller, eventBy } from "../auth/admin-auth";
import type { DayUsage, KeyFilter, KeyPatch, KeyRecord, KeySelection, NewKey, Store } from "../store/index";
import {
  enforcePolicy,
  issuanceLimits,
  issuanceRefusal,
  issuerPolicy,
  type KeyDraft,
  spendableMicros,
  withPolicyBudget,
} from "../tokens/policy";
import { capMicros, capUsd, iso, microsToUsd, randomBase62, sha256Hex, utcDay } from "../util";
import type { CreateKeyBody, ListKeysQuery, PatchKeyBody } from "./model";
import { MAX_LIFETIME_MS } from "../validation";
import { publicPattern } from "../endpoints";
import { vendorNamed } from "../vendors/index";

const DEFAULT_LIFETIME_MS = 24 * 3600 * 1000;

export interface KeyContext {
  store: Store;
  now: () => number;
  /** Who acts, as admin events record it: the token's fingerprint, or `cli:<user>`. */
  actor: string;
  /** The token behind an API request (SPEC §10); absent for the CLI, which acts with admin rights. */
  caller?: Caller;
}

/** An issuer sees and changes only the keys it minted: the minter to filter by, or undefined for everyone else. */
const scopeOf = (ctx: { caller?: Caller }) => (ctx.caller?.role === "issuer" ? ctx.caller.tokenId : undefined);

/** The key, when the caller may see it: another issuer's key is "not found", as if it did not exist. */
async function visibleKey(ctx: Pick<KeyContext, "store" | "caller">, id: string): Promise<KeyRecord> {
  const key = await ctx.store.findKeyById(id);
  const scope = scopeOf(ctx);
  if (!key || (scope !== undefined && key.mintedBy !== scope)) throw notFound("vault key");
  return key;
}

const publicPathOf = (vendor: string) => (pattern: string) => publicPattern(pattern, vendorNamed(vendor)!.publicPath);

/** The vault key secret: `kb_live_`/`kb_test_` + 40 base62 characters (~238 bits). */
export const newVaultKey = (mode: "live" | "test") => `kb_${mode}_${randomBase62(40)}`;

export function keyStatus(key: KeyRecord, now: number): "active" | "revoked" | "expired" {
  if (key.status === "revoked") return "revoked";
  return key.expiresAt <= now ? "expired" : "active";
}

/** A key record as the API shows it, with usage. */
export function presentKey(key: KeyRecord, today: DayUsage | undefined, now: number) {
  const settledToday = today?.settledMicros ?? 0;
  const heldToday = today?.heldMicros ?? 0;
  return {
    id: key.id,
    vendor: key.vendor,
    mode: key.mode,
    label: key.label,
    agent_run_label: key.label,
    key_hint: key.keyHint,
    daily_usd_cap: capUsd(key.dailyCapMicros),
    total_usd_cap: capUsd(key.totalCapMicros),
    allowed_endpoints: key.allowedEndpoints,
    max_requests_per_minute: key.maxRequestsPerMinute,
    require_idempotency_key: key.requireIdempotencyKey,
    metadata: key.metadata,
    status: keyStatus(key, now),
    created_at: iso(key.createdAt)!,
    expires_at: iso(key.expiresAt)!,
    revoked_at: iso(key.revokedAt),
    spent_today_usd: microsToUsd(settledToday),
    spent_total_usd: microsToUsd(key.spentTotalMicros),
    held_usd: microsToUsd(key.heldTotalMicros),
    // A revoked or expired key can spend nothing more; an overshoot (price_differential) leaves 0, not less.
    remaining_today_usd:
      keyStatus(key, now) !== "active"
        ? 0
        : key.dailyCapMicros === null
          ? null
          : microsToUsd(Math.max(0, key.dailyCapMicros - settledToday - heldToday)),
    calls: key.calls,
    last_used_at: iso(key.lastUsedAt),
    alert_thresholds: key.alertThresholds,
    budget_id: key.budgetId,
    per_customer_usd_cap: capUsd(key.perCustomerCapMicros),
    per_destination_usd_cap: capUsd(key.perDestinationCapMicros),
    enforcement: key.enforcement,
    approval_above_usd: capUsd(key.approvalAboveMicros),
    approval_ttl_s: key.approvalTtlMs === null ? null : key.approvalTtlMs / 1000,
  };
}

async function presentOne(ctx: Pick<KeyContext, "store" | "now">, key: KeyRecord) {
  const now = ctx.now();
  const usage = await ctx.store.dayUsage([key.id], utcDay(now));
  return presentKey(key, usage.get(key.id), now);
}

function expiryFrom(body: { expires_in?: number; expires_at?: number }, now: number, fallback: number): number {
  const at = body.expires_at ?? (body.expires_in !== undefined ? now + body.expires_in : fallback);
  if (at <= now) throw invalidRequest("expires_at must be in the future", [{ path: "expires_at", message: "must be in the future" }]);
  if (at - now > MAX_LIFETIME_MS)
    throw invalidRequest("expires_at must be at most 30 days away", [{ path: "expires_at", message: "must be at most 30 days away" }]);
  return at;
}

export async function issueKey(ctx: KeyContext, body: CreateKeyBody) {
  const now = ctx.now();
  const secret = newVaultKey(body.mode);
  const draft: NewKey = {
    id: `vk_${randomBase62(24)}`,
    keyHash: sha256Hex(secret),
    keyHint: `${secret.slice(0, 8)}…${secret.slice(-4)}`,
    vendor: body.vendor,
    mode: body.mode,
    label: body.agent_run_label ?? body.label ?? null,
    mintedBy: ctx.caller?.minter ?? ADMIN_MINTER,
    dailyCapMicros: capMicros(body.daily_usd_cap),
    totalCapMicros: capMicros(body.total_usd_cap),
    allowedEndpoints: body.allowed_endpoints.map(publicPathOf(body.vendor)),
    maxRequestsPerMinute: body.max_requests_per_minute ?? null,
    requireIdempotencyKey: body.require_idempotency_key,
    metadata: body.metadata,
    alertThresholds: body.alert_thresholds,
    budgetId: body.budget_id ?? null,
    perCustomerCapMicros: capMicros(body.per_customer_usd_cap),
    perDestinationCapMicros: capMicros(body.per_destination_usd_cap),
    enforcement: body.enforcement,
    approvalAboveMicros: capMicros(body.approval_above_usd),
    approvalTtlMs: body.approval_ttl ?? null,
    createdAt: now,
    expiresAt: expiryFrom(body, now, now + DEFAULT_LIFETIME_MS),
  };
  const key = await insertWithinPolicy(ctx, draft, now);
  await ctx.store.recordAdminEvent({
    at: now,
    ...eventBy(ctx),
    action: "key.create",
    target: key.id,
    details: {
      vendor: key.vendor,
      mode: key.mode,
      label: key.label,
      daily_usd_cap: body.daily_usd_cap ?? null,
      total_usd_cap: body.total_usd_cap ?? null,
      budget_id: key.budgetId,
      enforcement: key.enforcement,
    },
  });
  return { ...presentKey(key, undefined, now), vault_key: secret, token: secret };
}

/**
 * An issuer's key gets its policy's budget, is checked against its policy (403 issuer_policy_violation, nothing
 * created), and is written in one transaction with the check of what the token already minted
 * (issued_usd_per_day, max_keys_per_hour). A budget_id naming no budget is refused by the store, in the insert's
 * transaction, so a budget deleted meanwhile is never drawn from (400 naming budget_id).
 */
async function insertWithinPolicy(ctx: KeyContext, draft: NewKey, now: number): Promise<KeyRecord> {
  const caller = ctx.caller;
  const policy = issuerPolicy(caller);
  if (!caller || !policy) return ctx.store.insertKey(draft);
  const key = withPolicyBudget(policy, draft);
  enforcePolicy(policy, key, publicPathOf(key.vendor));
  const micros = spendableMicros(key);
  const result = await ctx.store.insertKeyWithin(key, issuanceLimits(policy, caller.tokenId, micros, now));
  if (result.kind === "refused") throw issuanceRefusal(policy, result, micros);
  return result.value;
}

export async function listKeys(ctx: Pick<KeyContext, "store" | "now" | "caller">, query: ListKeysQuery) {
  const filter: KeyFilter = {
    label: query.label,
    labelPrefix: query.label_prefix,
    vendor: query.vendor,
    budgetId: query.budget_id,
    status: query.status,
    mintedBy: scopeOf(ctx),
    limit: query.limit,
    cursor: query.cursor,
  };
  const now = ctx.now();
  const page = await ctx.store.listKeys(filter, now);
  const usage = await ctx.store.dayUsage(
    page.data.map((k) => k.id),
    utcDay(now),
  );
  return {
    data: page.data.map((k) => presentKey(k, usage.get(k.id), now)),
    next_cursor: page.nextCursor === null ? null : String(page.nextCursor),
  };
}

export async function getKey(ctx: Pick<KeyContext, "store" | "now" | "caller">, id: string) {
  return presentOne(ctx, await visibleKey(ctx, id));
}

export async function revokeKey(ctx: KeyContext, id: string) {
  const before = await visibleKey(ctx, id);
  const key = (await ctx.store.revokeKey(id, ctx.now(), actorName(ctx)))!;
  if (before.status !== "revoked") {
    await ctx.store.recordAdminEvent({ at: ctx.now(), ...eventBy(ctx), action: "key.revoke", target: id, details: null });
  }
  return presentOne(ctx, key);
}

export async function revokeMany(ctx: KeyContext, by: { ids: string[] } | { label_prefix: string }) {
  // An issuer's kill switch reaches only the keys it minted.
  const target: KeySelection = { ...("ids" in by ? { ids: by.ids } : { labelPrefix: by.label_prefix }), mintedBy: scopeOf(ctx) };
  const revoked = await ctx.store.revokeKeys(target, ctx.now(), actorName(ctx));
  await ctx.store.recordAdminEvent({
    at: ctx.now(),
    ...eventBy(ctx),
    action: "key.revoke_bulk",
    target: null,
    details: { ...by, revoked_ids: revoked },
  });
  return { revoked: revoked.length };
}

export async function patchKey(ctx: KeyContext, id: string, body: PatchKeyBody) {
  const key = await visibleKey(ctx, id);
  if (key.status === "revoked") throw new KeybrakeError("revoked_key_unchangeable");
  const now = ctx.now();
  const patch: KeyPatch = {};
  if (body.daily_usd_cap !== undefined) patch.dailyCapMicros = capMicros(body.daily_usd_cap);
  if (body.total_usd_cap !== undefined) patch.totalCapMicros = capMicros(body.total_usd_cap);
  if (body.max_requests_per_minute !== undefined) patch.maxRequestsPerMinute = body.max_requests_per_minute;
  if (body.alert_thresholds !== undefined) patch.alertThresholds = body.alert_thresholds;
  if (body.expires_in !== undefined || body.expires_at !== undefined) patch.expiresAt = expiryFrom(body, now, key.expiresAt);
  const daily = patch.dailyCapMicros !== undefined ? patch.dailyCapMicros : key.dailyCapMicros;
  const total = patch.totalCapMicros !== undefined ? patch.totalCapMicros : key.totalCapMicros;
  if (daily === null && total === null) {
    throw invalidRequest("A key needs daily_usd_cap or total_usd_cap.", [
      { path: "daily_usd_cap", message: "a key needs daily_usd_cap or total_usd_cap" },
    ]);
  }
  const updated = await updateWithinPolicy(ctx, key, patch, now);
  await ctx.store.recordAdminEvent({ at: now, ...eventBy(ctx), action: "key.update", target: id, details: { ...body } });
  return presentOne(ctx, updated);
}

/**
 * An issuer's PATCH: the key as it would be must still satisfy the policy, and what it can spend beyond what
 * it counted when minted (or last raised) is issued today, checked in the update's own transaction.
 */
async function updateWithinPolicy(ctx: KeyContext, key: KeyRecord, patch: KeyPatch, now: number): Promise<KeyRecord> {
  const caller = ctx.caller;
  const policy = issuerPolicy(caller);
  if (!caller || !policy) return (await ctx.store.updateKey(key.id, patch))!;
  const after: KeyDraft = { ...key, ...patch };
  enforcePolicy(policy, after, publicPathOf(key.vendor));
  const micros = spendableMicros(after);
  const result = await ctx.store.updateKeyWithin(key.id, patch, issuanceLimits(policy, caller.tokenId, micros, now));
  if (result.kind === "refused") throw issuanceRefusal(policy, result, micros);
  if (!result.value) throw notFound("vault key");
  return result.value;
}

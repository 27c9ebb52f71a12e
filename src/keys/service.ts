import { KeybrakeError, invalidRequest, notFound } from "../errors";
import type { DayUsage, KeyFilter, KeyPatch, KeyRecord, Store } from "../store/index";
import { iso, microsToUsd, randomBase62, sha256Hex, usdToMicros, utcDay } from "../util";
import type { CreateKeyBody, ListKeysQuery, PatchKeyBody } from "./model";
import { MAX_LIFETIME_MS } from "./model";
import { publicPattern } from "../proxy/endpoints";
import { vendorNamed } from "../vendors/index";

const DEFAULT_LIFETIME_MS = 24 * 3600 * 1000;

export interface KeyContext {
  store: Store;
  now: () => number;
  actor: string;
}

/**
 * Who mints keys today: the bootstrap admin token and the CLI both act with admin rights, so they share one
 * minter and a job's retries de-duplicate at the vendor whichever of them issued its key. Issuer tokens
 * (SPEC §10) will mint under their own ids.
 */
export const ADMIN_MINTER = "admin";

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
    daily_usd_cap: key.dailyCapMicros === null ? null : microsToUsd(key.dailyCapMicros),
    total_usd_cap: key.totalCapMicros === null ? null : microsToUsd(key.totalCapMicros),
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
    remaining_today_usd: key.dailyCapMicros === null ? null : microsToUsd(key.dailyCapMicros - settledToday - heldToday),
    calls: key.calls,
    last_used_at: iso(key.lastUsedAt),
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
  const key = await ctx.store.insertKey({
    id: `vk_${randomBase62(24)}`,
    keyHash: sha256Hex(secret),
    keyHint: `${secret.slice(0, 8)}…${secret.slice(-4)}`,
    vendor: body.vendor,
    mode: body.mode,
    label: body.agent_run_label ?? body.label ?? null,
    mintedBy: ADMIN_MINTER,
    dailyCapMicros: body.daily_usd_cap === undefined ? null : usdToMicros(body.daily_usd_cap),
    totalCapMicros: body.total_usd_cap === undefined ? null : usdToMicros(body.total_usd_cap),
    allowedEndpoints: body.allowed_endpoints.map((p) => publicPattern(p, vendorNamed(body.vendor)!.publicPath)),
    maxRequestsPerMinute: body.max_requests_per_minute ?? null,
    requireIdempotencyKey: body.require_idempotency_key,
    metadata: body.metadata,
    createdAt: now,
    expiresAt: expiryFrom(body, now, now + DEFAULT_LIFETIME_MS),
  });
  await ctx.store.recordAdminEvent({
    at: now,
    actor: ctx.actor,
    action: "key.create",
    target: key.id,
    details: {
      vendor: key.vendor,
      mode: key.mode,
      label: key.label,
      daily_usd_cap: body.daily_usd_cap ?? null,
      total_usd_cap: body.total_usd_cap ?? null,
    },
  });
  return { ...presentKey(key, undefined, now), vault_key: secret, token: secret };
}

export async function listKeys(ctx: Pick<KeyContext, "store" | "now">, query: ListKeysQuery) {
  const filter: KeyFilter = {
    label: query.label,
    labelPrefix: query.label_prefix,
    vendor: query.vendor,
    status: query.status,
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

export async function getKey(ctx: Pick<KeyContext, "store" | "now">, id: string) {
  const key = await ctx.store.findKeyById(id);
  if (!key) throw notFound("vault key");
  return presentOne(ctx, key);
}

export async function revokeKey(ctx: KeyContext, id: string) {
  const before = await ctx.store.findKeyById(id);
  if (!before) throw notFound("vault key");
  const key = (await ctx.store.revokeKey(id, ctx.now()))!;
  if (before.status !== "revoked") {
    await ctx.store.recordAdminEvent({ at: ctx.now(), actor: ctx.actor, action: "key.revoke", target: id, details: null });
  }
  return presentOne(ctx, key);
}

export async function revokeMany(ctx: KeyContext, by: { ids: string[] } | { label_prefix: string }) {
  const target = "ids" in by ? { ids: by.ids } : { labelPrefix: by.label_prefix };
  const revoked = await ctx.store.revokeKeys(target, ctx.now());
  await ctx.store.recordAdminEvent({
    at: ctx.now(),
    actor: ctx.actor,
    action: "key.revoke_bulk",
    target: null,
    details: { ...by, revoked_ids: revoked },
  });
  return { revoked: revoked.length };
}

export async function patchKey(ctx: KeyContext, id: string, body: PatchKeyBody) {
  const key = await ctx.store.findKeyById(id);
  if (!key) throw notFound("vault key");
  if (key.status === "revoked") throw new KeybrakeError("revoked_key_unchangeable");
  const now = ctx.now();
  const patch: KeyPatch = {};
  if (body.daily_usd_cap !== undefined) patch.dailyCapMicros = body.daily_usd_cap === null ? null : usdToMicros(body.daily_usd_cap);
  if (body.total_usd_cap !== undefined) patch.totalCapMicros = body.total_usd_cap === null ? null : usdToMicros(body.total_usd_cap);
  if (body.max_requests_per_minute !== undefined) patch.maxRequestsPerMinute = body.max_requests_per_minute;
  if (body.expires_in !== undefined || body.expires_at !== undefined) patch.expiresAt = expiryFrom(body, now, key.expiresAt);
  const daily = patch.dailyCapMicros !== undefined ? patch.dailyCapMicros : key.dailyCapMicros;
  const total = patch.totalCapMicros !== undefined ? patch.totalCapMicros : key.totalCapMicros;
  if (daily === null && total === null) {
    throw invalidRequest("A key needs daily_usd_cap or total_usd_cap.", [
      { path: "daily_usd_cap", message: "a key needs daily_usd_cap or total_usd_cap" },
    ]);
  }
  const updated = (await ctx.store.updateKey(id, patch))!;
  await ctx.store.recordAdminEvent({ at: now, actor: ctx.actor, action: "key.update", target: id, details: { ...body } });
  return presentOne(ctx, updated);
}

import { invalidRequest, notFound } from "../errors";
import { actorName, type Caller, eventBy } from "../auth/admin-auth";
import type { Role, Store, TokenRecord } from "../store/index";
import { iso, randomBase62, sha256Hex, utcDay } from "../util";
import type { CreateTokenBody } from "./model";

export interface TokenContext {
  store: Store;
  now: () => number;
  actor: string;
  caller?: Caller;
}

/** A token's secret starts with its role, so a leaked one says at a glance what it unlocks. */
export const TOKEN_PREFIX: Record<Role, string> = { admin: "kb_adm_", issuer: "kb_iss_", viewer: "kb_view_", approver: "kb_appr_" };

/** `kb_adm_`/`kb_iss_`/`kb_view_`/`kb_appr_` + 43 base62 characters (~256 bits) from the CSPRNG. */
export const newToken = (role: Role) => `${TOKEN_PREFIX[role]}${randomBase62(43)}`;

export function tokenStatus(t: TokenRecord, now: number): "active" | "revoked" | "expired" {
  if (t.revokedAt !== null) return "revoked";
  return t.expiresAt !== null && t.expiresAt <= now ? "expired" : "active";
}

export function presentToken(t: TokenRecord, now: number) {
  return {
    id: t.id,
    name: t.name,
    role: t.role,
    token_hint: t.tokenHint,
    policy: t.policy,
    status: tokenStatus(t, now),
    created_at: iso(t.createdAt)!,
    created_by: t.createdBy,
    expires_at: iso(t.expiresAt),
    revoked_at: iso(t.revokedAt),
  };
}

/** A new token: shown once in the answer, only its SHA-256 kept. */
export async function createToken(ctx: TokenContext, body: CreateTokenBody) {
  const now = ctx.now();
  const secret = newToken(body.role);
  const expiresAt = body.expires_at ?? (body.expires_in !== undefined ? now + body.expires_in : null);
  if (expiresAt !== null && expiresAt <= now) {
    throw invalidRequest("expires_at must be in the future", [{ path: "expires_at", message: "must be in the future" }]);
  }
  const budgetId = body.policy?.budget_id;
  if (budgetId !== undefined && !(await ctx.store.findBudget(budgetId, utcDay(now), now))) {
    throw invalidRequest(`policy.budget_id: no budget ${budgetId}`, [{ path: "policy.budget_id", message: `no budget ${budgetId}` }]);
  }
  const token = await ctx.store.insertToken({
    id: `tok_${randomBase62(20)}`,
    name: body.name,
    role: body.role,
    tokenHash: sha256Hex(secret),
    tokenHint: `${secret.slice(0, TOKEN_PREFIX[body.role].length + 4)}…${secret.slice(-4)}`,
    policy: body.role === "issuer" ? (body.policy ?? {}) : null,
    createdAt: now,
    createdBy: ctx.actor,
    expiresAt,
  });
  await ctx.store.recordAdminEvent({
    at: now,
    ...eventBy(ctx),
    action: "token.create",
    target: token.id,
    details: { name: token.name, role: token.role, expires_at: iso(token.expiresAt), policy: token.policy },
  });
  return { ...presentToken(token, now), token: secret };
}

export async function listTokens(ctx: Pick<TokenContext, "store" | "now">, query: { limit: number; cursor?: number }) {
  const page = await ctx.store.listTokens(query.limit, query.cursor);
  const now = ctx.now();
  return {
    data: page.data.map((t) => presentToken(t, now)),
    next_cursor: page.nextCursor === null ? null : String(page.nextCursor),
  };
}

export async function getToken(ctx: Pick<TokenContext, "store" | "now">, id: string) {
  const token = await ctx.store.findTokenById(id);
  if (!token) throw notFound("token");
  return presentToken(token, ctx.now());
}

/**
 * Revokes a token: its next request is refused (tokens are read on every request, never cached). With
 * `revokeKeys`, every key it minted is revoked too, effective on each key's next proxied call. Idempotent.
 */
export async function revokeToken(ctx: TokenContext, id: string, revokeKeys: boolean) {
  const before = await ctx.store.findTokenById(id);
  if (!before) throw notFound("token");
  const now = ctx.now();
  const token = (await ctx.store.revokeToken(id, now))!;
  const revokedKeys = revokeKeys ? await ctx.store.revokeKeys({ mintedBy: id }, now, actorName(ctx)) : [];
  if (before.revokedAt === null || revokedKeys.length > 0) {
    await ctx.store.recordAdminEvent({
      at: now,
      ...eventBy(ctx),
      action: "token.revoke",
      target: id,
      details: { name: token.name, role: token.role, revoke_keys: revokeKeys, revoked_key_ids: revokedKeys },
    });
  }
  return { ...presentToken(token, now), revoked_keys: revokedKeys.length };
}

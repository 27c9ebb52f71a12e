import { KeybrakeError, notFound } from "../errors";
import { type Caller, eventBy } from "../auth/admin-auth";
import type { HoldRecord, Store } from "../store/index";
import { iso, microsToUsd, usdToMicros } from "../util";

export interface HoldContext {
  store: Store;
  now: () => number;
  actor: string;
  caller?: Caller;
}

export const presentHold = (h: HoldRecord) => ({
  id: h.id,
  key_id: h.keyId,
  label: h.label,
  day: h.day,
  state: h.state,
  hold_usd: microsToUsd(h.holdMicros),
  cost_usd: h.costMicros === null ? null : microsToUsd(h.costMicros),
  created_at: iso(h.createdAt),
  settled_at: iso(h.settledAt),
});

export async function listHolds(ctx: Pick<HoldContext, "store">, state: "held" | "orphaned" | "ambiguous", limit: number) {
  return { data: (await ctx.store.listHolds(state, limit)).map(presentHold) };
}

/**
 * An operator's decision on a hold orphaned by a crash or an ambiguous call (vendor 5xx, timeout): `settle`
 * counts it as spent (at the hold, or at the cost the vendor's dashboard shows), `release` frees it. Only
 * orphaned and ambiguous holds can be resolved by hand.
 */
export async function resolveHold(ctx: HoldContext, id: string, outcome: "settled" | "released", costUsd?: number) {
  const hold = await ctx.store.findHold(id);
  if (!hold) throw notFound("hold");
  if (hold.state !== "orphaned" && hold.state !== "ambiguous") throw new KeybrakeError("hold_not_orphaned");
  const cost = costUsd === undefined ? hold.holdMicros : usdToMicros(costUsd);
  // Null when the hold was resolved in between (a retry re-forwarded it, another operator).
  const resolved = await ctx.store.resolveHold(id, outcome, cost, ctx.now());
  if (!resolved) throw new KeybrakeError("hold_not_orphaned");
  await ctx.store.recordAdminEvent({
    at: ctx.now(),
    ...eventBy(ctx),
    action: `hold.${outcome === "settled" ? "settle" : "release"}`,
    target: id,
    details: { key_id: resolved.keyId, cost_usd: microsToUsd(resolved.costMicros ?? 0) },
  });
  return presentHold(resolved);
}

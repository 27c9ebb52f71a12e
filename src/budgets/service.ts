import { type Caller, eventBy } from "../auth/admin-auth";
import { invalidRequest, KeybrakeError, notFound, noSuchBudget } from "../errors";
import type { BudgetPatch, BudgetWithUsage, Store } from "../store/index";
import { issuerPolicy } from "../tokens/policy";
import { capMicros, capUsd, iso, microsToUsd, randomBase62, utcDay } from "../util";
import { type CreateBudgetBody, MAX_BUDGET_LEVELS, type PatchBudgetBody } from "./model";

export interface BudgetContext {
  store: Store;
  now: () => number;
  /** Who acts, as admin events record it: the token's fingerprint, or `cli:<user>`. */
  actor: string;
  /** The token behind an API request; absent for the CLI, which acts with admin rights. */
  caller?: Caller;
}

/** A budget as the API shows it, with today's usage (UTC). */
export function presentBudget(b: BudgetWithUsage) {
  const { settledMicros, heldMicros } = b.today;
  return {
    id: b.id,
    name: b.name,
    parent_id: b.parentId,
    daily_usd_cap: capUsd(b.dailyCapMicros),
    total_usd_cap: capUsd(b.totalCapMicros),
    alert_thresholds: b.alertThresholds,
    created_at: iso(b.createdAt)!,
    spent_today_usd: microsToUsd(settledMicros),
    spent_total_usd: microsToUsd(b.spentTotalMicros),
    held_usd: microsToUsd(b.heldTotalMicros),
    // An overshoot (a price above its hold) leaves 0, not less.
    remaining_today_usd: b.dailyCapMicros === null ? null : microsToUsd(Math.max(0, b.dailyCapMicros - settledMicros - heldMicros)),
    active_keys: b.activeKeys,
  };
}

/**
 * What the caller may read: everything, or for an issuer only its policy's budget (the one its keys draw from);
 * any other is "not found", as if it did not exist.
 */
function visibleTo(caller: Caller | undefined): (id: string) => boolean {
  if (caller?.role !== "issuer") return () => true;
  const own = issuerPolicy(caller)?.budget_id;
  return (id) => id === own;
}

async function findVisible(ctx: Pick<BudgetContext, "store" | "now" | "caller">, id: string): Promise<BudgetWithUsage> {
  const now = ctx.now();
  const budget = visibleTo(ctx.caller)(id) ? await ctx.store.findBudget(id, utcDay(now), now) : null;
  if (!budget) throw notFound("budget");
  return budget;
}

export async function listBudgets(ctx: Pick<BudgetContext, "store" | "now" | "caller">) {
  const now = ctx.now();
  const visible = visibleTo(ctx.caller);
  const budgets = await ctx.store.listBudgets(utcDay(now), now);
  return { data: budgets.filter((b) => visible(b.id)).map(presentBudget) };
}

export async function getBudget(ctx: Pick<BudgetContext, "store" | "now" | "caller">, id: string) {
  return presentBudget(await findVisible(ctx, id));
}

/**
 * A new budget. Its parent must exist and its chain stay within MAX_BUDGET_LEVELS (400 naming parent_id). A
 * chain cannot loop: the parent exists before its child and never changes. The store checks the parent again
 * in the insert's transaction, so a parent deleted meanwhile is refused the same way.
 */
export async function createBudget(ctx: BudgetContext, body: CreateBudgetBody) {
  const now = ctx.now();
  const parentId = body.parent_id ?? null;
  if (parentId !== null) {
    const levels = await levelsFrom(ctx.store, parentId, now);
    if (levels + 1 > MAX_BUDGET_LEVELS) {
      const message = `${parentId} is already level ${levels} of its chain; a chain has at most ${MAX_BUDGET_LEVELS} levels`;
      throw invalidRequest(`Invalid body: parent_id: ${message}`, [{ path: "parent_id", message }]);
    }
  }
  const budget = await ctx.store.insertBudget({
    id: `bud_${randomBase62(20)}`,
    name: body.name,
    parentId,
    dailyCapMicros: capMicros(body.daily_usd_cap),
    totalCapMicros: capMicros(body.total_usd_cap),
    alertThresholds: body.alert_thresholds,
    createdAt: now,
    createdBy: ctx.actor,
  });
  await ctx.store.recordAdminEvent({
    at: now,
    ...eventBy(ctx),
    action: "budget.create",
    target: budget.id,
    details: {
      name: budget.name,
      parent_id: parentId,
      daily_usd_cap: body.daily_usd_cap ?? null,
      total_usd_cap: body.total_usd_cap ?? null,
    },
  });
  return presentBudget({ ...budget, today: { settledMicros: 0, heldMicros: 0 }, activeKeys: 0 });
}

/** How many levels the chain from `id` up has (1: a budget without a parent); 400 naming parent_id when it names none. */
async function levelsFrom(store: Store, id: string, now: number): Promise<number> {
  const byId = new Map((await store.listBudgets(utcDay(now), now)).map((b) => [b.id, b]));
  if (!byId.has(id)) throw noSuchBudget("parent_id", id);
  let levels = 0;
  // Past the most a chain may have, counting on proves nothing more (and ends whatever a hand-edited database says).
  for (let at = byId.get(id); at && levels <= MAX_BUDGET_LEVELS; at = byId.get(at.parentId ?? "")) levels++;
  return levels;
}

/** Caps, name and alert thresholds change; the parent never does (it fixes the chain the ledger moves). */
export async function patchBudget(ctx: BudgetContext, id: string, body: PatchBudgetBody) {
  const before = await findVisible(ctx, id);
  const patch: BudgetPatch = {};
  if (body.name !== undefined) patch.name = body.name;
  if (body.daily_usd_cap !== undefined) patch.dailyCapMicros = capMicros(body.daily_usd_cap);
  if (body.total_usd_cap !== undefined) patch.totalCapMicros = capMicros(body.total_usd_cap);
  if (body.alert_thresholds !== undefined) patch.alertThresholds = body.alert_thresholds;
  const daily = patch.dailyCapMicros !== undefined ? patch.dailyCapMicros : before.dailyCapMicros;
  const total = patch.totalCapMicros !== undefined ? patch.totalCapMicros : before.totalCapMicros;
  if (daily === null && total === null) {
    throw invalidRequest("A budget needs daily_usd_cap or total_usd_cap.", [
      { path: "daily_usd_cap", message: "a budget needs daily_usd_cap or total_usd_cap" },
    ]);
  }
  if (!(await ctx.store.updateBudget(id, patch))) throw notFound("budget");
  await ctx.store.recordAdminEvent({ at: ctx.now(), ...eventBy(ctx), action: "budget.update", target: id, details: { ...body } });
  return getBudget(ctx, id);
}

/**
 * Deletes a budget that nothing draws from any more; 409 budget_in_use, saying what still does, otherwise. The
 * answer is the budget as it was last.
 */
export async function deleteBudget(ctx: BudgetContext, id: string) {
  const before = await findVisible(ctx, id);
  const now = ctx.now();
  const result = await ctx.store.deleteBudget(id, now);
  if (result === "not_found") throw notFound("budget");
  if (result === "in_use") throw await inUse(ctx, id);
  await ctx.store.recordAdminEvent({ at: now, ...eventBy(ctx), action: "budget.delete", target: id, details: { name: before.name } });
  return presentBudget(before);
}

/** The 409, naming what still draws from the budget: its active keys, the budgets below, or a hold still open. */
async function inUse(ctx: BudgetContext, id: string): Promise<KeybrakeError> {
  const now = ctx.now();
  const budgets = await ctx.store.listBudgets(utcDay(now), now);
  const activeKeys = budgets.find((b) => b.id === id)?.activeKeys ?? 0;
  const below = budgets.filter((b) => b.parentId === id).map((b) => b.id);
  const what = [
    ...(activeKeys > 0 ? [`${activeKeys} active key(s) (GET /vault/keys?budget_id=${id}: revoke them first)`] : []),
    ...(below.length > 0 ? [`the budget(s) below it, ${below.join(", ")} (delete them first)`] : []),
  ];
  if (what.length === 0) what.push("a call of one of its keys still held, orphaned or ambiguous (GET /vault/holds: resolve it first)");
  const message = `Budget ${id} was not deleted: it is still drawn from by ${what.join(" and by ")}.`;
  return new KeybrakeError("budget_in_use", message, {}, { active_keys: activeKeys, budgets_below: below });
}

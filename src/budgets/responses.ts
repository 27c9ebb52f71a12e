import { z } from "zod";

/** What the budget routes answer; nothing but zod, like every responses.ts (see src/keys/responses.ts). */

export const BudgetSchema = z.object({
  id: z.string().describe("bud_…"),
  name: z.string(),
  parent_id: z.string().nullable().describe("The budget above it, or null"),
  daily_usd_cap: z.number().nullable(),
  total_usd_cap: z.number().nullable(),
  alert_thresholds: z.array(z.number()),
  created_at: z.string(),
  spent_today_usd: z.number().describe("Settled today (UTC) by its keys and the budgets below it, ambiguous outcomes included"),
  spent_total_usd: z.number().describe("Settled over its life"),
  held_usd: z.number().describe("Held by calls still in flight"),
  remaining_today_usd: z.number().nullable().describe("The daily cap minus spent and held today; null without a daily cap"),
  active_keys: z.number().describe("Active keys that draw from it directly (not those of the budgets below)"),
});

export const BudgetList = z.object({ data: z.array(BudgetSchema) });

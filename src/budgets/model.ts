import { z } from "zod";
import { alertThresholds, DEFAULT_ALERT_THRESHOLDS, type Doc, usdCap } from "../validation";

/** SPEC §14: a chain of budgets has at most three levels, the lowest included. */
export const MAX_BUDGET_LEVELS = 3;

const EXAMPLE_ID = "bud_4fTq9ZrWb2NcLm5Yd0Hx";

const name = z.string().min(1, "must not be empty").max(100, "must be at most 100 characters");
const budgetId = z.string().min(1, "must not be empty").max(100, "must be at most 100 characters");

const THRESHOLDS_DOC: Doc = {
  description:
    "Fractions of the budget's daily and of its lifetime cap, in (0, 1]: settled spend crossing one fires a budget_threshold alert, once per budget and cap window; [] for none",
  examples: [[0.5, 0.8, 1.0]],
};

const DAILY_CAP_DOC: Doc = {
  description:
    "USD the keys drawing from it and the budgets below it may spend together per UTC day (settled + held); this and/or total_usd_cap is required",
  examples: [2000],
};
const TOTAL_CAP_DOC: Doc = { description: "USD they may spend together over the budget's whole life", examples: [50000] };

/** Both caps named when neither is given: either one satisfies the rule. */
const NO_CAP = "daily_usd_cap or total_usd_cap is required";

export const CreateBudgetBody = z
  .strictObject({
    name: name.meta({ description: "What it pools: a DAG's runs, a team, a job host", examples: ["airflow-billing"] }),
    daily_usd_cap: usdCap.optional().meta(DAILY_CAP_DOC),
    total_usd_cap: usdCap.optional().meta(TOTAL_CAP_DOC),
    parent_id: budgetId.optional().meta({
      description: `The budget above it, which every call of its keys counts at too: a chain has at most ${MAX_BUDGET_LEVELS} levels, this one included. Set here, never changed`,
      examples: [EXAMPLE_ID],
    }),
    alert_thresholds: alertThresholds(THRESHOLDS_DOC).default(DEFAULT_ALERT_THRESHOLDS),
  })
  .superRefine((b, ctx) => {
    if (b.daily_usd_cap === undefined && b.total_usd_cap === undefined) {
      for (const field of ["daily_usd_cap", "total_usd_cap"]) ctx.addIssue({ code: "custom", path: [field], message: NO_CAP });
    }
  });
export type CreateBudgetBody = z.infer<typeof CreateBudgetBody>;

/** The README's budgets, as POST /budgets examples in /docs. */
export const CREATE_BUDGET_EXAMPLES = {
  family: {
    summary: "One ceiling over every run of a DAG",
    value: { name: "airflow-billing", daily_usd_cap: 2000, alert_thresholds: [0.5, 0.8, 1.0] },
  },
  nested: {
    summary: "A DAG's budget inside its team's (at most 3 levels)",
    value: { name: "billing-team/nightly-dag", daily_usd_cap: 300, total_usd_cap: 5000, parent_id: EXAMPLE_ID },
  },
};

export const PatchBudgetBody = z
  .strictObject({
    name: name.optional().meta({ description: "A new name", examples: ["airflow-billing (EU)"] }),
    daily_usd_cap: usdCap
      .nullable()
      .optional()
      .meta({ ...DAILY_CAP_DOC, description: "A new daily cap in USD; null removes it (a total_usd_cap must remain)" }),
    total_usd_cap: usdCap
      .nullable()
      .optional()
      .meta({ ...TOTAL_CAP_DOC, description: "A new lifetime cap in USD; null removes it (a daily_usd_cap must remain)" }),
    alert_thresholds: alertThresholds({ ...THRESHOLDS_DOC, description: `New alert thresholds. ${THRESHOLDS_DOC.description}` }).optional(),
  })
  .superRefine((b, ctx) => {
    if (Object.keys(b).length === 0) ctx.addIssue({ code: "custom", path: [], message: "nothing to change" });
  });
export type PatchBudgetBody = z.infer<typeof PatchBudgetBody>;

export const PATCH_BUDGET_EXAMPLES = {
  raise: { summary: "Raise the daily cap for a backfill", value: { daily_usd_cap: 3000 } },
  lifetime: { summary: "Replace the daily cap by a lifetime one", value: { daily_usd_cap: null, total_usd_cap: 20000 } },
};

export const BudgetId = z.object({ id: budgetId.meta({ description: "The budget's id (bud_…)", examples: [EXAMPLE_ID] }) });

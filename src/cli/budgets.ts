import { CreateBudgetBody, PatchBudgetBody } from "../budgets/model";
import * as service from "../budgets/service";
import type { Store } from "../store/index";
import { parseInput } from "../validation";
import { numberFlag, numberListFlag, parseFlags, UsageError, withFlagNames } from "./args";
import { writeOut } from "./io";
import { printRecord, printRecords } from "./output";

const CREATE_USAGE = `usage: keybrake budgets create --name NAME (--daily-usd-cap N | --total-usd-cap N) [options]

Creates a budget: one ceiling over every key that draws from it (keybrake keys create --budget-id) and over
the budgets below it. A call is admitted only if it fits its key and every budget up the chain.

  --name NAME                    what it pools: a DAG's runs, a team, a job host
  --daily-usd-cap N              USD per UTC day, settled + held (and/or --total-usd-cap N, over its life)
  --parent-id bud_…              the budget above it (at most 3 levels); set now, never changed
  --alert-thresholds 0.5,0.8,1   fractions of a cap whose crossing fires a budget_threshold alert (default
                                 0.5,0.8,1; "" for none)
  --json                         the record as JSON`;

const LIST_USAGE = `usage: keybrake budgets list [--json]

Every budget, oldest first (a parent before its children), with today's usage (UTC) and its active keys.`;

const SHOW_USAGE = `usage: keybrake budgets show <budget id> [--json]

One budget, every field, with today's usage.`;

const UPDATE_USAGE = `usage: keybrake budgets update <budget id> [--name NAME] [--daily-usd-cap N|none] [--total-usd-cap N|none]
                               [--alert-thresholds 0.5,0.8,1] [--json]

Changes a budget's name, caps or alert thresholds; "none" removes a cap (one must remain). Its parent never
changes. Takes effect on the next call of its keys.`;

const DELETE_USAGE = `usage: keybrake budgets delete <budget id> [--json]

Deletes a budget nothing draws from any more: refused (budget_in_use) while an active key or a budget below
draws from it, or a call of one of its keys is still held, orphaned or ambiguous.`;

const USAGE = `usage: keybrake budgets <command> [flags]

  create    a budget over a run family's keys   (keybrake budgets create --help)
  list      budgets with today's usage          (keybrake budgets list --help)
  show      one budget as a vertical record     (keybrake budgets show --help)
  update    change its caps, name or thresholds (keybrake budgets update --help)
  delete    delete one nothing draws from       (keybrake budgets delete --help)`;

const SUBCOMMANDS: Record<string, string> = {
  create: CREATE_USAGE,
  list: LIST_USAGE,
  show: SHOW_USAGE,
  update: UPDATE_USAGE,
  delete: DELETE_USAGE,
};

/** `keybrake budgets [sub] --help`. */
export const budgetsHelp = (args: string[]) => SUBCOMMANDS[args[0] ?? ""] ?? USAGE;

/** A missing or unknown subcommand, named before anything is opened. */
export function checkBudgetsCommand(args: string[]) {
  const [sub] = args;
  if (sub === undefined) throw new UsageError(USAGE);
  if (!(sub in SUBCOMMANDS)) {
    throw new UsageError(
      `keybrake budgets: unknown command "${sub}"; one of ${Object.keys(SUBCOMMANDS).join(", ")} (keybrake budgets --help)`,
    );
  }
}

/** The columns of `keybrake budgets list`, most wanted first: a narrow terminal loses the last ones. */
const COLUMNS = [
  "id",
  "name",
  "spent_today_usd",
  "daily_usd_cap",
  "remaining_today_usd",
  "held_usd",
  "spent_total_usd",
  "total_usd_cap",
  "active_keys",
  "parent_id",
];

/** A cap flag of `update`: "none" removes the cap. */
const capFlag = (v: string | undefined) => (v === "none" ? null : numberFlag(v));

/** The fields given, for the schema (a flag left out is a field left out). */
const given = (fields: Record<string, unknown>) => Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));

/** The one positional argument, the budget's id. */
function budgetIdOf(command: string, positionals: string[]): string {
  if (positionals.length !== 1) throw new UsageError(`${command}: give one budget id (${command} --help)`);
  return positionals[0]!;
}

/**
 * `keybrake budgets ...`: the budget API's operations on the same database, with the same validation and admin
 * events. The store is opened (`store()`) only once the command line is known to be good.
 */
export async function budgetsCommand(store: () => Promise<Store>, args: string[], actor: string): Promise<void> {
  const [sub, ...rest] = args;
  const ctx = async () => ({ store: await store(), now: Date.now, actor });
  const command = `keybrake budgets ${sub ?? ""}`.trim();
  const flags = {
    name: { type: "string" },
    "daily-usd-cap": { type: "string" },
    "total-usd-cap": { type: "string" },
    "alert-thresholds": { type: "string" },
    json: { type: "boolean" },
  } as const;
  switch (sub) {
    case "create": {
      const { values } = parseFlags(command, rest, { ...flags, "parent-id": { type: "string" } });
      const body = given({
        name: values.name,
        daily_usd_cap: numberFlag(values["daily-usd-cap"]),
        total_usd_cap: numberFlag(values["total-usd-cap"]),
        parent_id: values["parent-id"],
        alert_thresholds: numberListFlag(values["alert-thresholds"]),
      });
      const parsed = withFlagNames(command, {}, () => parseInput(CreateBudgetBody, body, "flags"));
      // The parent is checked against the database: its refusal names --parent-id too.
      const created = await withFlagNames(command, {}, async () => service.createBudget(await ctx(), parsed));
      return printRecord(created, values.json ?? false);
    }
    case "list": {
      const { values } = parseFlags(command, rest, { json: { type: "boolean" } });
      const { data } = await service.listBudgets(await ctx());
      if (data.length === 0 && !values.json) return writeOut("no budgets yet (keybrake budgets create --help)");
      return printRecords(data, values.json ?? false, COLUMNS);
    }
    case "show": {
      const { values, positionals } = parseFlags(command, rest, { json: { type: "boolean" } }, true);
      return printRecord(await service.getBudget(await ctx(), budgetIdOf(command, positionals)), values.json ?? false);
    }
    case "update": {
      const { values, positionals } = parseFlags(command, rest, flags, true);
      const id = budgetIdOf(command, positionals);
      const body = given({
        name: values.name,
        daily_usd_cap: capFlag(values["daily-usd-cap"]),
        total_usd_cap: capFlag(values["total-usd-cap"]),
        alert_thresholds: numberListFlag(values["alert-thresholds"]),
      });
      if (Object.keys(body).length === 0) throw new UsageError(`${command}: nothing to change (${command} --help)`);
      const parsed = withFlagNames(command, {}, () => parseInput(PatchBudgetBody, body, "flags"));
      const updated = await withFlagNames(command, {}, async () => service.patchBudget(await ctx(), id, parsed));
      return printRecord(updated, values.json ?? false);
    }
    case "delete": {
      const { values, positionals } = parseFlags(command, rest, { json: { type: "boolean" } }, true);
      const deleted = await service.deleteBudget(await ctx(), budgetIdOf(command, positionals));
      return values.json ? printRecord(deleted, true) : writeOut(`deleted ${deleted.id} (${deleted.name})`);
    }
    default:
      return checkBudgetsCommand(args);
  }
}

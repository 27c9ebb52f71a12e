import { listHolds, resolveHold } from "../holds/service";
import type { Store } from "../store/index";
import { pageLimitFlag, parseFlags, UsageError } from "./args";
import { printRecord, printRecords } from "./output";

const LIST_USAGE = `usage: keybrake holds list [--state orphaned|ambiguous|held] [--limit N] [--json]

Open holds, oldest first (default: orphaned).
  orphaned    a crash left the call unsettled: counted as held until resolved
  ambiguous   the vendor answered 5xx, timed out or the connection dropped: counted as spent at the hold
  held        calls in flight right now`;

const SETTLE_USAGE = `usage: keybrake holds settle <hold id> [--cost-usd N] [--json]

The vendor did charge: count an orphaned or ambiguous hold as spent, at N USD (what the vendor's dashboard
shows) or, without --cost-usd, at the hold.`;

const RELEASE_USAGE = `usage: keybrake holds release <hold id> [--json]

The vendor never charged: free an orphaned or ambiguous hold (its cost becomes 0).`;

const USAGE = `usage: keybrake holds <command> [flags]

  list      orphaned, ambiguous or in-flight holds   (keybrake holds list --help)
  settle    count a hold as spent                    (keybrake holds settle --help)
  release   free a hold the vendor never charged     (keybrake holds release --help)`;

const SUBCOMMANDS: Record<string, string> = { list: LIST_USAGE, settle: SETTLE_USAGE, release: RELEASE_USAGE };

/** `keybrake holds [sub] --help`. */
export const holdsHelp = (args: string[]) => SUBCOMMANDS[args[0] ?? ""] ?? USAGE;

/** A missing or unknown subcommand, named before anything is opened. */
export function checkHoldsCommand(args: string[]) {
  const [sub] = args;
  if (sub === undefined) throw new UsageError(USAGE);
  if (!(sub in SUBCOMMANDS))
    throw new UsageError(`keybrake holds: unknown command "${sub}"; one of list, settle, release (keybrake holds --help)`);
}

const COLUMNS = ["id", "key_id", "label", "state", "day", "hold_usd", "cost_usd", "created_at"];
const STATES = ["orphaned", "held", "ambiguous"] as const;

/** `keybrake holds ...`; the store is opened (`store()`) only once the command line is known to be good. */
export async function holdsCommand(store: () => Promise<Store>, args: string[], actor: string): Promise<void> {
  const [sub, ...rest] = args;
  const command = `keybrake holds ${sub ?? ""}`.trim();
  const ctx = async () => ({ store: await store(), now: Date.now, actor });
  switch (sub) {
    case "list": {
      const { values } = parseFlags(command, rest, { state: { type: "string" }, limit: { type: "string" }, json: { type: "boolean" } });
      const state = (values.state ?? "orphaned") as (typeof STATES)[number];
      if (!STATES.includes(state)) throw new UsageError(`${command}: --state is orphaned, ambiguous or held, not "${values.state}"`);
      const limit = pageLimitFlag(command, values.limit);
      return printRecords((await listHolds(await ctx(), state, limit)).data, values.json ?? false, COLUMNS);
    }
    case "settle":
    case "release": {
      const options = sub === "settle" ? { "cost-usd": { type: "string" }, json: { type: "boolean" } } : { json: { type: "boolean" } };
      const { values, positionals } = parseFlags(
        command,
        rest,
        options as { "cost-usd": { type: "string" }; json: { type: "boolean" } },
        true,
      );
      if (positionals.length !== 1) throw new UsageError(`${command}: give one hold id (${command} --help)`);
      const raw = values["cost-usd"];
      const cost = raw === undefined ? undefined : Number(raw);
      if (cost !== undefined && !(raw!.trim() !== "" && Number.isFinite(cost) && cost >= 0 && cost <= 10_000_000)) {
        throw new UsageError(`${command}: --cost-usd is a USD amount from 0 to 10000000, not "${raw}"`);
      }
      const hold = await resolveHold(await ctx(), positionals[0]!, sub === "settle" ? "settled" : "released", cost);
      return printRecord(hold, values.json ?? false);
    }
    default:
      return checkHoldsCommand(args);
  }
}

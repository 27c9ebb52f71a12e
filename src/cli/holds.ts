import { parseArgs } from "node:util";
import { listHolds, resolveHold } from "../holds/service";
import type { Store } from "../store/index";
import { UsageError } from "./keys";
import { printRecords } from "./output";

const USAGE = `usage:
  keybrake holds list [--state orphaned|held|ambiguous] [--json]
  keybrake holds settle <hold id> [--cost-usd N] [--json]    count it as spent (default: the held amount)
  keybrake holds release <hold id> [--json]                  the vendor never charged: free it`;

const COLUMNS = ["id", "key_id", "label", "state", "hold_usd", "cost_usd", "created_at"];

export async function holdsCommand(store: Store, args: string[], actor: string): Promise<void> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { state: { type: "string" }, "cost-usd": { type: "string" }, json: { type: "boolean" } },
  });
  const json = values.json ?? false;
  const ctx = { store, now: Date.now, actor };
  switch (sub) {
    case "list": {
      const state = (values.state ?? "orphaned") as "orphaned" | "held" | "ambiguous";
      if (!["orphaned", "held", "ambiguous"].includes(state)) throw new UsageError(USAGE);
      return printRecords((await listHolds(ctx, state, 1000)).data, json, COLUMNS);
    }
    case "settle":
    case "release": {
      if (positionals.length !== 1) throw new UsageError(USAGE);
      const cost = values["cost-usd"] === undefined ? undefined : Number(values["cost-usd"]);
      if (cost !== undefined && !(Number.isFinite(cost) && cost >= 0)) throw new UsageError(USAGE);
      const hold = await resolveHold(ctx, positionals[0]!, sub === "settle" ? "settled" : "released", cost);
      return printRecords([hold], json, COLUMNS);
    }
    default:
      throw new UsageError(USAGE);
  }
}

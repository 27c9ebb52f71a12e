import { parseArgs } from "node:util";
import { AuditQuery, ExportQuery, SpendQuery } from "../audit/model";
import { auditRows, csvHeader, csvLine, listAudit, spendBy } from "../audit/service";
import type { Store } from "../store/index";
import { parseInput } from "../validation";
import { UsageError } from "./keys";
import { printRecords } from "./output";

const FILTERS = {
  "key-id": { type: "string" },
  label: { type: "string" },
  "label-prefix": { type: "string" },
  vendor: { type: "string" },
  decision: { type: "string" },
  since: { type: "string" },
  until: { type: "string" },
} as const;

function filterQuery(values: Record<string, unknown>) {
  return {
    key_id: values["key-id"],
    label: values.label,
    label_prefix: values["label-prefix"],
    vendor: values.vendor,
    decision: values.decision,
    since: values.since,
    until: values.until,
  };
}

/** `keybrake audit [filters] [--format table|ndjson|csv] [--limit N]`: rows newest first; ndjson/csv stream all. */
export async function auditCommand(store: Store, args: string[]) {
  const { values } = parseArgs({ args, options: { ...FILTERS, format: { type: "string", default: "table" }, limit: { type: "string" } } });
  const format = values.format;
  if (format === "table") {
    const q = parseInput(AuditQuery, { ...filterQuery(values), limit: values.limit ?? "50" }, "flags");
    const page = await listAudit(store, q);
    return printRecords(page.data, false, [
      "at",
      "key_id",
      "label",
      "method",
      "path",
      "status",
      "decision",
      "cost_usd",
      "vendor_request_id",
    ]);
  }
  if (format !== "ndjson" && format !== "csv") throw new UsageError("--format is table, ndjson or csv");
  const { format: _f, ...filters } = parseInput(ExportQuery, { ...filterQuery(values), format }, "flags");
  const out = Bun.stdout.writer();
  if (format === "csv") out.write(csvHeader());
  for await (const page of auditRows(store, filters)) {
    for (const row of page) out.write(format === "csv" ? csvLine(row) : `${JSON.stringify(row)}\n`);
    await out.flush();
  }
  await out.end();
}

/** `keybrake spend --group-by label|key|vendor|day [filters] [--json]`. */
export async function spendCommand(store: Store, args: string[]) {
  const { values } = parseArgs({
    args,
    options: { ...FILTERS, "group-by": { type: "string", default: "label" }, json: { type: "boolean" } },
  });
  const { group_by, ...filters } = parseInput(SpendQuery, { ...filterQuery(values), group_by: values["group-by"] }, "flags");
  const result = await spendBy(store, group_by, filters);
  printRecords(result.data, values.json ?? false, ["group", "calls", "allowed", "denied", "spend_usd"]);
}

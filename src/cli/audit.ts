import { AuditQuery, ExportQuery, parseTime, SpendQuery, TIME_FORMS } from "../audit/model";
import { auditRows, csvHeader, csvLine, listAudit, spendBy } from "../audit/service";
import { verifyAudit } from "../audit/verify";
import type { Store } from "../store/index";
import { vendorChoices } from "../vendors/index";
import { parseInput } from "../validation";
import { type FlagNames, parseFlags, UsageError, withFlagNames } from "./args";
import { cliIo, writeErr, writeOut } from "./io";
import { printRecords } from "./output";

const FILTER_HELP = `filters (the same as GET /audit):
  --request-id kbr_…         one call: the X-Keybrake-Request-Id its answer carried
  --key-id vk_…              one vault key
  --label L                  one run label; --label-prefix P every label starting with P
  --vendor V                 ${vendorChoices()}
  --decision D               allowed, or a refusal's code (cap_exhausted, endpoint_not_allowed, …)
  --since T, --until T       ${TIME_FORMS.replace(/ or a duration/, "\n                             or a duration")}`;

export const AUDIT_USAGE = `usage: keybrake audit [filters] [--format table|ndjson|csv] [--limit N] [--cursor C]

Proxied calls, allowed and denied, newest first.
  --format table             (default) at most --limit rows (default 50, at most 1000); when more match, says
                             so on stderr with the --cursor of the next page
  --format ndjson|csv        every matching row, streamed (--limit does not apply)

${FILTER_HELP}

examples:
  keybrake audit --request-id kbr_4QfZ0c1hW2mXa7Lr9sTb3k
  keybrake audit --label-prefix airflow-billing/ --since 2h --decision cap_exhausted
  keybrake audit --since 1d --format csv > audit.csv`;

export const VERIFY_USAGE = `usage: keybrake audit verify [--head HASH]... [--since T] [--json]

Recomputes the audit's hash chain (SPEC §19; one per instance on PostgreSQL) from its rows, a page at a time,
and names the first row that does not match (its seq and request id) — a row edited, deleted or moved shows
there — then exits 1. Exits 0 when every chain verifies.
  --head HASH                a head recorded elsewhere (GET /audit/head, /metrics, a webhook's audit_head); it
                             must be in a chain, else rows up to it were deleted. Repeat for several chains.
  --since T                  only rows at or after T (${TIME_FORMS}),
                             each chain from the hash its row just before carries
  --json                     the report as JSON

examples:
  keybrake audit verify
  keybrake audit verify --head 5d0f…c21a --since 7d`;

/** `keybrake audit` and `keybrake audit verify`: the usage of the one asked for. */
export const auditHelp = (args: readonly string[]) => (args[0] === "verify" ? VERIFY_USAGE : AUDIT_USAGE);

export const SPEND_USAGE = `usage: keybrake spend [--group-by label|key|vendor|day] [filters] [--json]

Spend per run label (default), key, vendor or UTC day, the biggest first (days in order). calls counts every
call (allowed and refused), allowed the calls let through (replays included), denied the refused ones;
spend_usd is what they cost, ambiguous_usd the part of it still ambiguous (vendor 5xx or timeout: see
keybrake holds list --state ambiguous).

${FILTER_HELP}

examples:
  keybrake spend --since 1h                         which runs are burning money right now
  keybrake spend --group-by day --label-prefix airflow-billing/`;

const FILTERS = {
  "request-id": { type: "string" },
  "key-id": { type: "string" },
  label: { type: "string" },
  "label-prefix": { type: "string" },
  vendor: { type: "string" },
  decision: { type: "string" },
  since: { type: "string" },
  until: { type: "string" },
} as const;

/** The flag of each query field, for errors. */
const FLAGS: FlagNames = { group_by: "--group-by" };

function filterQuery(values: Record<string, unknown>) {
  return {
    request_id: values["request-id"],
    key_id: values["key-id"],
    label: values.label,
    label_prefix: values["label-prefix"],
    vendor: values.vendor,
    decision: values.decision,
    since: values.since,
    until: values.until,
  };
}

/** Most wanted first: a narrow terminal loses the ids, then the last ones (labels and paths are shortened instead). */
const TABLE_COLUMNS = [
  "at",
  "id",
  "label",
  "decision",
  "status",
  "cost_usd",
  "would_deny",
  "method",
  "path",
  "cost_source",
  "vendor_request_id",
];

/** `keybrake audit verify`: prints what it checked, and throws (exit 1) when a chain does not verify. */
async function verifyCommand(store: () => Promise<Store>, args: string[]) {
  const command = "keybrake audit verify";
  const { values } = parseFlags(command, args, {
    head: { type: "string", multiple: true },
    since: { type: "string" },
    json: { type: "boolean" },
  });
  const heads = values.head ?? [];
  for (const head of heads)
    if (!/^[0-9a-f]{64}$/.test(head)) throw new UsageError(`${command}: --head must be 64 lowercase hex digits (a SHA-256)`);
  const since = values.since === undefined ? undefined : parseTime(values.since, Date.now());
  if (since === null) throw new UsageError(`${command}: --since must be ${TIME_FORMS}`);
  const report = await verifyAudit(await store(), { since, heads });
  if (values.json) writeOut(JSON.stringify(report, null, 2));
  else {
    const rate = report.seconds > 0 ? `, ${Math.round(report.rows / report.seconds).toLocaleString("en-US")} rows/s` : "";
    writeOut(
      `${report.rows.toLocaleString("en-US")} rows in ${report.chains.length} chain(s) checked in ${report.seconds.toFixed(2)} s${rate}`,
    );
    for (const c of report.chains) {
      const head = c.head ? `head seq ${c.head.seq} ${c.head.hash}` : "no head";
      writeOut(`  chain ${c.chain === "" ? "(from before the chain)" : c.chain}: ${c.rows.toLocaleString("en-US")} rows, ${head}`);
    }
    for (const h of report.heads) if (h.seq !== null) writeOut(`  the head ${h.hash} is at seq ${h.seq}`);
    for (const p of report.problems) {
      const where = p.seq === null ? "" : `seq ${p.seq}${p.id ? ` (${p.id})` : ""}${p.chain ? ` in chain ${p.chain}` : ""}: `;
      writeOut(`FAIL ${where}${p.message}`);
    }
  }
  if (!report.ok) throw new Error(`audit verify: the audit does not verify (${report.problems.length} problem(s))`);
}

/** `keybrake audit [filters] [--format table|ndjson|csv] [--limit N]`: rows newest first; ndjson/csv stream all. */
export async function auditCommand(store: () => Promise<Store>, args: string[]) {
  if (args[0] === "verify") return verifyCommand(store, args.slice(1));
  const command = "keybrake audit";
  const { values } = parseFlags(command, args, {
    ...FILTERS,
    format: { type: "string", default: "table" },
    limit: { type: "string" },
    cursor: { type: "string" },
  });
  const format = values.format;
  if (format === "table") {
    const q = withFlagNames(command, FLAGS, () =>
      parseInput(AuditQuery, { ...filterQuery(values), limit: values.limit ?? "50", cursor: values.cursor }, "flags"),
    );
    const page = await listAudit(await store(), q);
    printRecords(page.data, false, TABLE_COLUMNS);
    if (page.next_cursor !== null) {
      writeErr(
        `keybrake: stopped at --limit ${q.limit}; more rows match: add --cursor ${page.next_cursor} for the next page, ` +
          "raise --limit (at most 1000), narrow with --since, or use --format ndjson|csv for every row",
      );
    }
    return;
  }
  if (format !== "ndjson" && format !== "csv") throw new UsageError(`${command}: --format is table, ndjson or csv, not "${format}"`);
  if (values.limit !== undefined || values.cursor !== undefined) {
    throw new UsageError(`${command}: --format ${format} streams every matching row; --limit and --cursor are for --format table`);
  }
  const { format: _f, ...filters } = withFlagNames(command, FLAGS, () =>
    parseInput(ExportQuery, { ...filterQuery(values), format }, "flags"),
  );
  const out = cliIo().stream();
  if (format === "csv") out.write(csvHeader());
  for await (const page of auditRows(await store(), filters)) {
    for (const row of page) out.write(format === "csv" ? csvLine(row) : `${JSON.stringify(row)}\n`);
    await out.flush();
  }
  await out.end();
}

/** `keybrake spend --group-by label|key|vendor|day [filters] [--json]`. */
export async function spendCommand(store: () => Promise<Store>, args: string[]) {
  const command = "keybrake spend";
  const { values } = parseFlags(command, args, { ...FILTERS, "group-by": { type: "string", default: "label" }, json: { type: "boolean" } });
  const { group_by, ...filters } = withFlagNames(command, FLAGS, () =>
    parseInput(SpendQuery, { ...filterQuery(values), group_by: values["group-by"] }, "flags"),
  );
  const result = await spendBy(await store(), group_by, filters);
  printRecords(result.data, values.json ?? false, ["group", "calls", "allowed", "denied", "spend_usd", "ambiguous_usd"]);
}

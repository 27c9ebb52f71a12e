/** Records as JSON (`--json`) or as an aligned table of their most useful columns. */
export function printRecords(records: Record<string, unknown>[], json: boolean, columns?: string[]) {
  if (json) return console.log(JSON.stringify(records, null, 2));
  const cols = columns ?? [
    "id",
    "vendor",
    "mode",
    "status",
    "label",
    "daily_usd_cap",
    "spent_today_usd",
    "held_usd",
    "calls",
    "expires_at",
  ];
  const cell = (v: unknown) => (v === null || v === undefined ? "-" : String(v).replace(/[\r\n\t]/g, " "));
  const widths = cols.map((c) => Math.max(c.length, ...records.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) =>
    vals
      .map((v, i) => v.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  console.log(line(cols));
  for (const r of records) console.log(line(cols.map((c) => cell(r[c]))));
}

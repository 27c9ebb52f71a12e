import { cliIo, writeErr, writeOut } from "./io";

/** The key columns `keybrake keys list` shows, most wanted first: a narrow terminal loses ids, then the last ones. */
const KEY_COLUMNS = [
  "id",
  "status",
  "enforcement",
  "label",
  "spent_today_usd",
  "remaining_today_usd",
  "last_used_at",
  "daily_usd_cap",
  "held_usd",
  "calls",
  "vendor",
  "mode",
  "expires_at",
];

/** Columns whose long values are shortened in the middle when the table is wider than the terminal. */
const SHRINKABLE = new Set(["label", "agent_run_label", "path", "group", "vendor_request_id", "allowed_endpoints", "metadata", "actor"]);
const MIN_SHRUNK = 12;
/**
 * Identifiers (`id`, `key_id`, `vendor_request_id`): long, and what a reader of a narrow table needs least; the
 * decision, status and money beside them are what it is read for. `--json` or a wider terminal shows them.
 */
const isId = (column: string) => column === "id" || column.endsWith("_id");
const GAP = "  ";

/** The width tables must fit: `COLUMNS`, else the terminal's; null (no limit) when writing to a pipe or file. */
export function terminalWidth(io = cliIo()): number | null {
  const fromEnv = Number(io.env.COLUMNS);
  if (Number.isInteger(fromEnv) && fromEnv > 0) return fromEnv;
  return io.columns;
}

/** `airflow-billing/run_2026_11_22T06:00` in 16 characters: `airflow-…T06:00`. */
export function shortenMiddle(text: string, width: number): string {
  if (text.length <= width) return text;
  if (width <= 1) return "…".slice(0, width);
  const keep = width - 1;
  const head = Math.ceil(keep / 2);
  return `${text.slice(0, head)}…${text.slice(text.length - (keep - head))}`;
}

const isMoney = (column: string) => /(?:^|_)usd(?:_|$)/.test(column);
/** Decimals a USD amount needs (micro-dollars at most). */
const decimalsOf = (n: number) => {
  const fixed = n.toFixed(6).replace(/0+$/, "");
  return fixed.length - fixed.indexOf(".") - 1;
};

/** An ISO time without its milliseconds (tables only; JSON keeps them). */
const compactTime = (v: string) => v.replace(/^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d{3}Z$/, "$1Z");

function text(value: unknown): string {
  if (value === null || value === undefined) return "-";
  if (Array.isArray(value)) return value.map(text).join(", ");
  if (typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>);
    return entries.length ? entries.map(([k, v]) => `${k}=${text(v)}`).join(", ") : "-";
  }
  return compactTime(String(value)).replace(/[\r\n\t]/g, " ");
}

/**
 * A column's header in a table: the field name without `_usd` (every amount is USD) or `_at`, so headers do not
 * make the table wider than its values (`remaining_today_usd` -> `remaining_today`). JSON keeps the names.
 */
const header = (column: string) => column.replace(/_usd(?=_|$)/, "").replace(/_at$/, "") || column;

/** Each column's cells as text, money with the same decimals down the column (2 to 6), numbers right-aligned. */
function render(records: Record<string, unknown>[], columns: string[]) {
  return columns.map((column) => {
    const values = records.map((r) => r[column]);
    const numeric =
      values.some((v) => typeof v === "number") && values.every((v) => v === null || v === undefined || typeof v === "number");
    if (isMoney(column) && numeric) {
      const decimals = Math.min(6, Math.max(2, ...values.map((v) => (typeof v === "number" ? decimalsOf(v) : 0))));
      return { column, title: header(column), right: true, cells: values.map((v) => (typeof v === "number" ? v.toFixed(decimals) : "-")) };
    }
    return { column, title: header(column), right: numeric, cells: values.map(text) };
  });
}

/**
 * Records as JSON (`--json`) or as a table of the given columns that fits the terminal (see tableLines); the
 * columns left out to fit are named on stderr.
 */
export function printRecords(records: Record<string, unknown>[], json: boolean, columns: string[] = KEY_COLUMNS) {
  if (json) return writeOut(JSON.stringify(records, null, 2));
  const table = tableLines(records, columns, terminalWidth());
  for (const line of table.lines) writeOut(line);
  if (table.hidden.length) writeErr(`(${table.hidden.join(", ")} left out to fit the terminal; --json shows every field)`);
}

/**
 * The table's lines. When wider than `width`, the widest shrinkable column (labels, paths) is shortened in the
 * middle, never below 12 characters; if that is not enough, id columns are left out first (the last listed
 * first), then the others from the last one listed backwards, labels and paths last; two columns always stay.
 */
export function tableLines(
  records: Record<string, unknown>[],
  columns: string[],
  width: number | null,
): { lines: string[]; hidden: string[] } {
  let cols = render(records, columns);
  const natural = () => cols.map((c) => Math.max(c.title.length, ...c.cells.map((cell) => cell.length)));
  let widths = natural();
  const hidden: string[] = [];
  if (width !== null) {
    const total = () => widths.reduce((a, b) => a + b, 0) + GAP.length * (widths.length - 1);
    const shrink = () => {
      widths = natural();
      while (total() > width) {
        let widest = -1;
        cols.forEach((c, i) => {
          const floor = Math.max(MIN_SHRUNK, c.title.length);
          if (SHRINKABLE.has(c.column) && widths[i]! > floor && (widest < 0 || widths[i]! > widths[widest]!)) widest = i;
        });
        if (widest < 0) return;
        widths[widest] = Math.max(MIN_SHRUNK, widths[widest]! - (total() - width), cols[widest]!.title.length);
      }
    };
    shrink();
    while (total() > width && cols.length > 2) {
      let drop = cols.findLastIndex((c) => isId(c.column));
      if (drop < 0) {
        // Leave out the last column that is not shrinkable (labels and paths are what a reader scans for).
        drop = cols.length - 1;
        while (drop > 1 && SHRINKABLE.has(cols[drop]!.column)) drop--;
        if (drop <= 1) drop = cols.length - 1;
      }
      hidden.unshift(cols[drop]!.column);
      cols = cols.filter((_, i) => i !== drop);
      shrink();
    }
  }
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => {
        const fitted = shortenMiddle(cell, widths[i]!);
        return cols[i]!.right ? fitted.padStart(widths[i]!) : fitted.padEnd(widths[i]!);
      })
      .join(GAP)
      .trimEnd();
  return { lines: [line(cols.map((c) => c.title)), ...records.map((_, row) => line(cols.map((c) => c.cells[row]!)))], hidden };
}

/**
 * One record as `field: value` lines (`keybrake keys show`): every field, nothing shortened. With `--json`, a
 * list of one, the shape these commands have always printed.
 */
export function printRecord(record: Record<string, unknown>, json: boolean) {
  if (json) return writeOut(JSON.stringify([record], null, 2));
  const width = Math.max(...Object.keys(record).map((k) => k.length));
  for (const [field, value] of Object.entries(record)) {
    const shown = isMoney(field) && typeof value === "number" ? value.toFixed(Math.max(2, decimalsOf(value))) : text(value);
    writeOut(`${`${field}:`.padEnd(width + 1)} ${shown}`);
  }
}

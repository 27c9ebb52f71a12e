/** USD for people: cents, or up to 4 decimals below a dollar ($0.0083). */
export function usd(value: number | null | undefined): string {
  if (value === null || value === undefined) return "—";
  const abs = Math.abs(value);
  const digits = abs !== 0 && abs < 1 ? Math.min(6, Math.max(2, -Math.floor(Math.log10(abs)) + 2)) : 2;
  const text = abs.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits });
  return `${value < 0 ? "-" : ""}$${text}`;
}

const pad = (n: number) => String(n).padStart(2, "0");

/** "2026-11-22 14:03 UTC": one zone for every reader of the same ledger. */
export function when(iso: string | null | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`;
}

/** "11-27 18:53:04": a row of the audit, in UTC. */
export function stamp(iso: string): string {
  const d = new Date(iso);
  return `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
}

export function clock(ms: number): string {
  const d = new Date(ms);
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
}

/** "3 min ago", "in 5 h". */
export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return "never";
  const diff = Date.parse(iso) - now;
  const abs = Math.abs(diff);
  if (abs < 10_000) return "just now";
  const [n, unit] =
    abs < 60_000
      ? [Math.round(abs / 1000), "s"]
      : abs < 3_600_000
        ? [Math.round(abs / 60_000), "min"]
        : abs < 172_800_000
          ? [Math.round(abs / 3_600_000), "h"]
          : [Math.round(abs / 86_400_000), "d"];
  return diff < 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`;
}

export const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** Today's UTC date, as /audit's `since` reads it. */
export const todayUtc = () => new Date().toISOString().slice(0, 10);

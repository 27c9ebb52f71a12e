import type { KeyRecord } from "./api";

/**
 * The Runs page's arithmetic, apart from its markup so that it can be tested alone: which family a label
 * belongs to, and the keys searched, filtered, sorted, grouped and paged as the page shows them.
 */

/** Where a run label's family ends: the seeds write `airflow-billing/<run>`, `celery-billing-<id>`, `kestra:<id>`. */
const SEPARATOR = /[/:-]/;

/**
 * The run family of a label: its part up to a `/` when it has one (`airflow-billing/`), else up to its first `-`
 * or `:` (`celery-`, `flask-`); null for a label with none of them, or no label. A finer family is any prefix
 * typed on the page.
 */
export function familyOf(label: string | null): string | null {
  if (!label) return null;
  const slash = label.indexOf("/");
  if (slash > 0) return label.slice(0, slash + 1);
  const at = label.search(SEPARATOR);
  return at > 0 ? label.slice(0, at + 1) : null;
}

export type SortBy = "label" | "spent" | "remaining" | "last_used";

export interface RunsView {
  /** Keys whose label or id contains it (case-insensitive). */
  search: string;
  sort: SortBy;
  /** Only keys whose spend today (settled and held) is at least this share of their daily cap (null: all keys). */
  nearCap: number | null;
  page: number;
  pageSize: number;
}

export interface Family {
  /** `airflow-billing/`, or null for the keys without a family. */
  prefix: string | null;
  /** This page's keys of the family. */
  keys: KeyRecord[];
  /** Every key of the family that matches the view, on every page: what its header counts. */
  all: KeyRecord[];
}

/** Today's spend (settled and held) over the daily cap; null without a daily cap. */
export const capShare = (k: KeyRecord) =>
  k.daily_usd_cap === null || k.daily_usd_cap <= 0 ? null : (k.spent_today_usd + k.held_usd) / k.daily_usd_cap;

const COMPARE: Record<SortBy, (a: KeyRecord, b: KeyRecord) => number> = {
  label: (a, b) => (a.label ?? a.id).localeCompare(b.label ?? b.id),
  // Biggest spenders, the least room, the most recently used first: what someone stopping a run looks for.
  spent: (a, b) => b.spent_today_usd + b.held_usd - (a.spent_today_usd + a.held_usd),
  remaining: (a, b) => (a.remaining_today_usd ?? Number.POSITIVE_INFINITY) - (b.remaining_today_usd ?? Number.POSITIVE_INFINITY),
  last_used: (a, b) => (b.last_used_at ?? "").localeCompare(a.last_used_at ?? ""),
};

/**
 * The keys as the page shows them: those matching the search and the near-cap filter, grouped by family (the
 * families in the order of their first key), sorted, and cut to one page of `pageSize` keys.
 */
export function arrange(keys: KeyRecord[], view: RunsView): { families: Family[]; matching: number; pages: number } {
  const needle = view.search.trim().toLowerCase();
  const matching = keys
    .filter((k) => !needle || (k.label ?? "").toLowerCase().includes(needle) || k.id.toLowerCase().includes(needle))
    .filter((k) => view.nearCap === null || (capShare(k) ?? 0) >= view.nearCap)
    .sort((a, b) => COMPARE[view.sort](a, b) || a.id.localeCompare(b.id));
  const byFamily = new Map<string | null, KeyRecord[]>();
  for (const k of matching) {
    const prefix = familyOf(k.label);
    byFamily.set(prefix, [...(byFamily.get(prefix) ?? []), k]);
  }
  // Families keep the order of their best key; the keys without a family come last.
  const ordered = [...byFamily.entries()].sort(([a], [b]) => (a === null ? 1 : b === null ? -1 : 0));
  const flat = ordered.flatMap(([, list]) => list);
  const pages = Math.max(1, Math.ceil(flat.length / view.pageSize));
  const page = Math.min(Math.max(view.page, 0), pages - 1);
  const shown = new Set(flat.slice(page * view.pageSize, (page + 1) * view.pageSize));
  const families = ordered
    .map(([prefix, list]) => ({ prefix, all: list, keys: list.filter((k) => shown.has(k)) }))
    .filter((f) => f.keys.length > 0);
  return { families, matching: matching.length, pages };
}

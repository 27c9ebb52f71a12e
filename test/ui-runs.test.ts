import { describe, expect, test } from "bun:test";
import type { KeyRecord } from "../src/ui/app/api";
import { arrange, familyOf, type RunsView } from "../src/ui/app/runs-model";

// The dashboard's Runs page (SPEC §11): families of every label the seeds write, search, sort, near-cap, pages.

const key = (label: string | null, extra: Partial<KeyRecord> = {}): KeyRecord =>
  ({
    id: `vk_${label ?? "none"}`,
    label,
    status: "active",
    daily_usd_cap: 100,
    spent_today_usd: 0,
    held_usd: 0,
    remaining_today_usd: 100,
    last_used_at: null,
    ...extra,
  }) as KeyRecord;
const VIEW: RunsView = { search: "", sort: "label", nearCap: null, page: 0, pageSize: 50 };
const prefixes = (keys: KeyRecord[], view: Partial<RunsView> = {}) =>
  arrange(keys, { ...VIEW, ...view }).families.map((f) => [f.prefix, f.keys.map((k) => k.label)]);

describe("run families", () => {
  test("a family ends at a /, else at the first - or :", () => {
    expect(familyOf("airflow-billing/run_2026_11_22")).toBe("airflow-billing/");
    expect(familyOf("celery-billing-order-81723")).toBe("celery-");
    expect(familyOf("flask-u1-r1")).toBe("flask-");
    expect(familyOf("kestra:exec-42")).toBe("kestra:");
    expect(familyOf("argo/billing-agent-x7k2p")).toBe("argo/");
    expect(familyOf("nightly")).toBeNull();
    expect(familyOf("-leading")).toBeNull();
    expect(familyOf(null)).toBeNull();
  });

  test("the seeds' Celery and Flask labels have families; keys without one come last", () => {
    const keys = [key("flask-u1-r1"), key("celery-billing-o-2"), key("nightly"), key("celery-billing-o-1"), key("airflow-billing/run_1")];
    expect(prefixes(keys)).toEqual([
      ["airflow-billing/", ["airflow-billing/run_1"]],
      ["celery-", ["celery-billing-o-1", "celery-billing-o-2"]],
      ["flask-", ["flask-u1-r1"]],
      [null, ["nightly"]],
    ]);
  });
});

describe("the view", () => {
  const keys = [
    key("celery-billing-o-1", { spent_today_usd: 10, remaining_today_usd: 90, last_used_at: "2026-11-22T06:00:00Z" }),
    key("celery-billing-o-2", { spent_today_usd: 85, held_usd: 5, remaining_today_usd: 10, last_used_at: "2026-11-22T07:00:00Z" }),
    key("flask-u1-r1", { spent_today_usd: 40, remaining_today_usd: 60 }),
    key("flask-u2-r1", { spent_today_usd: 79, remaining_today_usd: 21, daily_usd_cap: 100 }),
    key("airflow-billing/run_1", { daily_usd_cap: null, remaining_today_usd: null }),
  ];

  test("search matches labels and ids, case-insensitive", () => {
    expect(prefixes(keys, { search: "U1" })).toEqual([["flask-", ["flask-u1-r1"]]]);
    expect(prefixes(keys, { search: "vk_celery-billing-o-2" })).toEqual([["celery-", ["celery-billing-o-2"]]]);
  });

  test("sorting orders the families by their best key, and the keys within", () => {
    expect(prefixes(keys, { sort: "spent" })).toEqual([
      ["celery-", ["celery-billing-o-2", "celery-billing-o-1"]],
      ["flask-", ["flask-u2-r1", "flask-u1-r1"]],
      ["airflow-billing/", ["airflow-billing/run_1"]],
    ]);
    expect(prefixes(keys, { sort: "remaining" })[0]).toEqual(["celery-", ["celery-billing-o-2", "celery-billing-o-1"]]);
    expect(prefixes(keys, { sort: "last_used" })[0]![1]).toEqual(["celery-billing-o-2", "celery-billing-o-1"]);
  });

  test("near the cap: spend today and held at 80% of the daily cap or more; keys without a daily cap are never near it", () => {
    expect(prefixes(keys, { nearCap: 0.8 })).toEqual([["celery-", ["celery-billing-o-2"]]]);
  });

  test("pages cut the keys, not the families; a family's header counts all its keys", () => {
    const many = Array.from({ length: 120 }, (_, i) => key(`celery-billing-${String(i).padStart(3, "0")}`));
    const first = arrange(many, { ...VIEW, pageSize: 50 });
    expect(first.pages).toBe(3);
    expect(first.matching).toBe(120);
    expect(first.families[0]!.keys).toHaveLength(50);
    expect(first.families[0]!.all).toHaveLength(120);
    const last = arrange(many, { ...VIEW, pageSize: 50, page: 9 });
    expect(last.families[0]!.keys.map((k) => k.label)).toEqual(many.slice(100).map((k) => k.label));
  });
});

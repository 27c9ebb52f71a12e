import { getOrCreate, utcDay } from "../util";
import { Elysia } from "elysia";
import type { AuditRow, BudgetWithUsage, ChainHead, SpendCounter, Store } from "../store/index";
import { accessGuard, type Authenticator, PUBLIC_ROUTE } from "../auth/admin-auth";
import { rolesText } from "./openapi";

const UPSTREAM_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 80];
const OVERHEAD_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1];

class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly buckets: number[]) {
    this.counts = buckets.map(() => 0);
  }
  observe(seconds: number) {
    this.sum += seconds;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (seconds <= this.buckets[i]!) this.counts[i]!++;
  }
  render(name: string, labels: string): string[] {
    const sep = labels ? `${labels},` : "";
    return [
      ...this.buckets.map((le, i) => `${name}_bucket{${sep}le="${le}"} ${this.counts[i]}`),
      `${name}_bucket{${sep}le="+Inf"} ${this.count}`,
      `${name}_sum${labels ? `{${labels}}` : ""} ${this.sum}`,
      `${name}_count${labels ? `{${labels}}` : ""} ${this.count}`,
    ];
  }
}

const add = (counts: Map<string, number>, name: string, n: number) => counts.set(name, (counts.get(name) ?? 0) + n);

const label = (v: string | null) => (v ?? "none").replace(/["\\\n]/g, "_");

/** In-process counters fed by every audit row; rendered in the Prometheus text format (version 0.0.4). */
export class Metrics {
  private requests = new Map<string, number>();
  private capHits = new Map<string, number>();
  private wouldDenies = new Map<string, number>();
  private spendMicros = new Map<string, number>();
  private correctedMicros = new Map<string, number>();
  private upstream = new Map<string, Histogram>();
  private overhead = new Histogram(OVERHEAD_BUCKETS);
  private alertAttempts = new Map<string, number>();
  private alertOutcomes = new Map<string, number>();

  /** One delivery attempt of an alert (SPEC §12): delivered, failed and retried later, or failed for good. */
  alertDelivery(event: string, outcome: "delivered" | "retry" | "failed") {
    add(this.alertAttempts, `event="${label(event)}",result="${outcome === "delivered" ? "ok" : "error"}"`, 1);
    if (outcome !== "retry") add(this.alertOutcomes, `event="${label(event)}",status="${outcome}"`, 1);
  }

  /** This process's spend counters, by vendor (saved to the shared ledger on PostgreSQL). */
  spendCounters(): SpendCounter[] {
    const vendors = new Set([...this.spendMicros.keys(), ...this.correctedMicros.keys()]);
    return [...vendors].map((vendor) => ({
      vendor,
      spendMicros: this.spendMicros.get(vendor) ?? 0,
      correctedMicros: this.correctedMicros.get(vendor) ?? 0,
    }));
  }

  /** Counts on from what an earlier run under the same instance id counted: a counter never goes down. */
  carryOn(saved: SpendCounter[]) {
    for (const c of saved) {
      add(this.spendMicros, c.vendor, c.spendMicros);
      add(this.correctedMicros, c.vendor, c.correctedMicros);
    }
  }

  record(row: AuditRow) {
    const vendor = label(row.vendor);
    const key = `vendor="${vendor}",decision="${label(row.decision)}"`;
    add(this.requests, key, 1);
    if (row.decision === "cap_exhausted") add(this.capHits, vendor, 1);
    // An observe-mode key's call forwarded past a limit (SPEC §16); a dry run's verdict is no call.
    if (row.wouldDeny && row.decision === "allowed") add(this.wouldDenies, `vendor="${vendor}",code="${label(row.wouldDeny)}"`, 1);
    // A counter never goes down (Prometheus reads a drop as a restart): a re-settlement's negative difference,
    // counted as spend earlier, goes to a counter of its own.
    if (row.costMicros > 0) add(this.spendMicros, vendor, row.costMicros);
    if (row.costMicros < 0) add(this.correctedMicros, vendor, -row.costMicros);
    if (row.upstreamMs !== null) {
      getOrCreate(this.upstream, vendor, () => new Histogram(UPSTREAM_BUCKETS)).observe(row.upstreamMs / 1000);
    }
    if (row.overheadMs !== null) this.overhead.observe(row.overheadMs / 1000);
  }

  /**
   * `otherInstances`: the spend counted by the fleet's other instances (PostgreSQL), added to this one's.
   * `auditHeads`: where each audit chain stands (SPEC §19), so a scraper keeps the head outside Keybrake.
   */
  render(
    openHolds: number,
    pendingAlerts = 0,
    otherInstances: SpendCounter[] = [],
    budgets: BudgetWithUsage[] = [],
    auditHeads: ChainHead[] = [],
  ): string {
    const spend = new Map(this.spendMicros);
    const corrected = new Map(this.correctedMicros);
    for (const c of otherInstances) {
      if (c.spendMicros > 0) add(spend, label(c.vendor), c.spendMicros);
      if (c.correctedMicros > 0) add(corrected, label(c.vendor), c.correctedMicros);
    }
    const lines = [
      "# HELP keybrake_requests_total Proxied requests by vendor and decision (allowed or the denial code).",
      "# TYPE keybrake_requests_total counter",
      ...[...this.requests].map(([k, n]) => `keybrake_requests_total{${k}} ${n}`),
      "# HELP keybrake_cap_hits_total Calls refused because a cap would be exceeded.",
      "# TYPE keybrake_cap_hits_total counter",
      ...[...this.capHits].map(([v, n]) => `keybrake_cap_hits_total{vendor="${v}"} ${n}`),
      "# HELP keybrake_would_deny_total Calls of observe-mode keys forwarded although enforcing would have refused them, by vendor and the code it would have answered.",
      "# TYPE keybrake_would_deny_total counter",
      ...[...this.wouldDenies].map(([k, n]) => `keybrake_would_deny_total{${k}} ${n}`),
      "# HELP keybrake_spend_usd_total Spend counted through this Keybrake (every instance of a PostgreSQL ledger), in USD; corrections are in keybrake_spend_corrected_usd_total.",
      "# TYPE keybrake_spend_usd_total counter",
      ...[...spend].map(([v, m]) => `keybrake_spend_usd_total{vendor="${v}"} ${m / 1e6}`),
      "# HELP keybrake_spend_corrected_usd_total Spend counted earlier and taken back by a later settlement (an ambiguous call's retry showed a smaller or no charge), in USD. Net spend is keybrake_spend_usd_total minus this.",
      "# TYPE keybrake_spend_corrected_usd_total counter",
      ...[...corrected].map(([v, m]) => `keybrake_spend_corrected_usd_total{vendor="${v}"} ${m / 1e6}`),
      "# HELP keybrake_upstream_duration_seconds Time waiting for the vendor.",
      "# TYPE keybrake_upstream_duration_seconds histogram",
      ...[...this.upstream].flatMap(([v, h]) => h.render("keybrake_upstream_duration_seconds", `vendor="${v}"`)),
      "# HELP keybrake_overhead_duration_seconds Time spent in Keybrake per call, the vendor excluded.",
      "# TYPE keybrake_overhead_duration_seconds histogram",
      ...this.overhead.render("keybrake_overhead_duration_seconds", ""),
      "# HELP keybrake_open_holds Holds not yet settled (in flight, or orphaned by a crash).",
      "# TYPE keybrake_open_holds gauge",
      `keybrake_open_holds ${openHolds}`,
      "# HELP keybrake_alert_delivery_attempts_total Webhook POSTs of alert events, by event and result (ok: a 2xx; error: anything else, retried).",
      "# TYPE keybrake_alert_delivery_attempts_total counter",
      ...[...this.alertAttempts].map(([k, n]) => `keybrake_alert_delivery_attempts_total{${k}} ${n}`),
      "# HELP keybrake_alert_deliveries_total Alert deliveries finished, by event and status (delivered, or failed after 24 h of retries).",
      "# TYPE keybrake_alert_deliveries_total counter",
      ...[...this.alertOutcomes].map(([k, n]) => `keybrake_alert_deliveries_total{${k}} ${n}`),
      "# HELP keybrake_alert_deliveries_pending Alert deliveries not yet delivered (waiting for their next attempt).",
      "# TYPE keybrake_alert_deliveries_pending gauge",
      `keybrake_alert_deliveries_pending ${pendingAlerts}`,
      // Budgets' money is the ledger's, fleet-wide (SPEC §14): gauges, since a release or a retry takes spend back.
      "# HELP keybrake_budget_spent_today_usd A budget's settled spend today (UTC), its keys and the budgets below it together, in USD.",
      "# TYPE keybrake_budget_spent_today_usd gauge",
      ...budgets.map((b) => `keybrake_budget_spent_today_usd{${budgetLabels(b)}} ${b.today.settledMicros / 1e6}`),
      "# HELP keybrake_budget_held_usd What a budget holds for calls in flight (or orphaned), in USD.",
      "# TYPE keybrake_budget_held_usd gauge",
      ...budgets.map((b) => `keybrake_budget_held_usd{${budgetLabels(b)}} ${b.heldTotalMicros / 1e6}`),
      "# HELP keybrake_budget_spent_total_usd A budget's settled spend over its life, in USD.",
      "# TYPE keybrake_budget_spent_total_usd gauge",
      ...budgets.map((b) => `keybrake_budget_spent_total_usd{${budgetLabels(b)}} ${b.spentTotalMicros / 1e6}`),
      "# HELP keybrake_audit_head_seq The seq of each audit chain's newest row (one chain on SQLite, one per instance on PostgreSQL).",
      "# TYPE keybrake_audit_head_seq gauge",
      ...auditHeads.map((h) => `keybrake_audit_head_seq{chain="${label(h.chain)}"} ${h.seq}`),
      "# HELP keybrake_audit_head_info Each audit chain's head, its hash as a label (always 1): keybrake audit verify --head <hash> checks it.",
      "# TYPE keybrake_audit_head_info gauge",
      ...auditHeads.map((h) => `keybrake_audit_head_info{chain="${label(h.chain)}",seq="${h.seq}",hash="${h.hash}"} 1`),
    ];
    return `${lines.join("\n")}\n`;
  }
}

/** A budget's labels: its id, and its name escaped as Prometheus's text format wants a label value. */
const budgetLabels = (b: BudgetWithUsage) =>
  `budget="${b.id}",name="${b.name.replace(/[\\"\n]/g, (c) => (c === "\n" ? "\\n" : `\\${c}`))}"`;

/** GET /metrics: an admin or viewer token required unless KEYBRAKE_METRICS_PUBLIC=1. */
export function metricsRoutes(
  metrics: Metrics,
  store: Store,
  auth: Authenticator,
  isPublic: boolean,
  otherInstances: () => Promise<SpendCounter[]> = async () => [],
  now: () => number = Date.now,
) {
  const scrape = async () => {
    const budgets = await store.listBudgets(utcDay(now()), now());
    const text = metrics.render(
      await store.countOpenHolds(),
      await store.countPendingDeliveries(),
      await otherInstances(),
      budgets,
      await store.auditHeads(),
    );
    return new Response(text, { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } });
  };
  const detail = { summary: "Prometheus metrics", tags: ["Operations"] };
  const app = new Elysia({ name: "metrics", seed: metrics });
  if (isPublic) {
    return app.get("/metrics", scrape, {
      detail: { ...detail, security: [], description: `${rolesText("public")} (KEYBRAKE_METRICS_PUBLIC=1)`, ...PUBLIC_ROUTE },
    });
  }
  const access = ["admin", "viewer"] as const;
  return app
    .use(accessGuard(auth))
    .get("/metrics", scrape, { access, detail: { ...detail, security: [{ adminToken: [] }], description: rolesText(access) } });
}

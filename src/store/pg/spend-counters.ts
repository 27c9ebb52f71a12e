import type { SpendCounter } from "../types";
import { num, type Pg } from "./client";

/** Each instance's `keybrake_spend_usd_total` in the shared ledger (schema.ts `spend_counters`). */
export function pgSpendCounters(sql: Pg, instanceId: string) {
  const counters = (rows: Record<string, unknown>[]): SpendCounter[] =>
    rows.map((r) => ({ vendor: String(r.vendor), spendMicros: num(r.spend), correctedMicros: num(r.corrected) }));
  return {
    /** What an earlier run under this instance id counted. */
    async own(): Promise<SpendCounter[]> {
      return counters(
        await sql`SELECT vendor, spend_micros AS spend, corrected_micros AS corrected FROM spend_counters WHERE instance_id = ${instanceId}`,
      );
    },
    /** What every other instance counted, by vendor. */
    async others(): Promise<SpendCounter[]> {
      return counters(
        await sql`SELECT vendor, sum(spend_micros) AS spend, sum(corrected_micros) AS corrected FROM spend_counters
                   WHERE instance_id <> ${instanceId} GROUP BY vendor`,
      );
    },
    /** This instance's counters now; GREATEST: a late save of older values never lowers them. */
    async save(now: SpendCounter[]): Promise<void> {
      for (const c of now) {
        await sql`INSERT INTO spend_counters (instance_id, vendor, spend_micros, corrected_micros)
                  VALUES (${instanceId}, ${c.vendor}, ${c.spendMicros}, ${c.correctedMicros})
                  ON CONFLICT (instance_id, vendor) DO UPDATE
                  SET spend_micros = GREATEST(spend_counters.spend_micros, excluded.spend_micros),
                      corrected_micros = GREATEST(spend_counters.corrected_micros, excluded.corrected_micros)`;
      }
    },
  };
}

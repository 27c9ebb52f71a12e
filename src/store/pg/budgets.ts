import { noSuchBudget } from "../../errors";
import { OPEN_HOLDS } from "../schema";
import type { BudgetPatch, BudgetRecord, BudgetWithUsage, NewBudget } from "../types";
import { type Fragment, type Pg, num, numOrNull } from "./client";

/** Unqualified: no column of budget_days (joined for the usage) shares a name with these. */
const BUDGET_COLUMNS = `id, name, parent_id AS "parentId", daily_cap_micros AS "dailyCapMicros", total_cap_micros AS "totalCapMicros",
  alert_thresholds AS "alertThresholds", spent_total_micros AS "spentTotalMicros", held_total_micros AS "heldTotalMicros",
  created_at AS "createdAt", created_by AS "createdBy"`;

type RawBudget = Omit<
  BudgetRecord,
  "dailyCapMicros" | "totalCapMicros" | "alertThresholds" | "spentTotalMicros" | "heldTotalMicros" | "createdAt"
> & {
  dailyCapMicros: string | null;
  totalCapMicros: string | null;
  alertThresholds: string;
  spentTotalMicros: string;
  heldTotalMicros: string;
  createdAt: string;
};

const toRecord = (r: RawBudget): BudgetRecord => ({
  id: r.id,
  name: r.name,
  parentId: r.parentId,
  dailyCapMicros: numOrNull(r.dailyCapMicros),
  totalCapMicros: numOrNull(r.totalCapMicros),
  alertThresholds: JSON.parse(r.alertThresholds),
  spentTotalMicros: num(r.spentTotalMicros),
  heldTotalMicros: num(r.heldTotalMicros),
  createdAt: num(r.createdAt),
  createdBy: r.createdBy,
});

/**
 * Holds the budget for the rest of the transaction, or refuses (400 naming `field`) a row that would draw from a
 * budget that does not exist. FOR KEY SHARE: deleteBudget (FOR UPDATE) waits for the row being written, or this
 * waits for the delete and then finds nothing; the ledger's updates of the budget's money do not wait.
 */
export async function lockBudgetToDrawFrom(tx: Pg, id: string, field: "budget_id" | "parent_id"): Promise<void> {
  const [row] = await tx`SELECT id FROM budgets WHERE id = ${id} FOR KEY SHARE`;
  if (!row) throw noSuchBudget(field, id);
}

/**
 * Budgets (SPEC §14) on PostgreSQL: made, read with their usage, changed and deleted. Their money (spent, held,
 * budget_days) is moved by the ledger together with their keys'.
 */
export function pgBudgetQueries(sql: Pg) {
  /** The budgets `where` selects, each with its money on `day` and the active keys that draw from it directly. */
  const withUsage = async (where: Fragment, day: string, now: number): Promise<BudgetWithUsage[]> => {
    const rows: (RawBudget & { settled: string; held: string; activeKeys: string })[] = await sql`
      SELECT ${sql.unsafe(BUDGET_COLUMNS)},
             coalesce(d.settled_micros, 0) AS settled, coalesce(d.held_micros, 0) AS held,
             (SELECT count(*) FROM vault_keys k
               WHERE k.budget_id = budgets.id AND k.status = 'active' AND k.expires_at > ${now}) AS "activeKeys"
        FROM budgets LEFT JOIN budget_days d ON d.budget_id = budgets.id AND d.day = ${day}
       WHERE ${where}
       ORDER BY budgets.seq`;
    return rows.map(({ settled, held, activeKeys, ...budget }) => ({
      ...toRecord(budget),
      today: { settledMicros: num(settled), heldMicros: num(held) },
      activeKeys: num(activeKeys),
    }));
  };

  return {
    async insertBudget(b: NewBudget): Promise<BudgetRecord> {
      return sql.begin(async (tx) => {
        if (b.parentId !== null) await lockBudgetToDrawFrom(tx, b.parentId, "parent_id");
        const [row] = await tx`
          INSERT INTO budgets ${tx({
            id: b.id,
            name: b.name,
            parent_id: b.parentId,
            daily_cap_micros: b.dailyCapMicros,
            total_cap_micros: b.totalCapMicros,
            // Absent: the column's default.
            alert_thresholds: b.alertThresholds === undefined ? undefined : JSON.stringify(b.alertThresholds),
            created_at: b.createdAt,
            created_by: b.createdBy,
          })}
          RETURNING ${tx.unsafe(BUDGET_COLUMNS)}`;
        return toRecord(row);
      });
    },

    async findBudget(id: string, day: string, now: number): Promise<BudgetWithUsage | null> {
      const [budget] = await withUsage(sql`budgets.id = ${id}`, day, now);
      return budget ?? null;
    },

    listBudgets: (day: string, now: number) => withUsage(sql`TRUE`, day, now),

    async updateBudget(id: string, patch: BudgetPatch): Promise<BudgetRecord | null> {
      const columns = Object.fromEntries(
        Object.entries({
          name: patch.name,
          daily_cap_micros: patch.dailyCapMicros,
          total_cap_micros: patch.totalCapMicros,
          alert_thresholds: patch.alertThresholds === undefined ? undefined : JSON.stringify(patch.alertThresholds),
        }).filter(([, v]) => v !== undefined),
      );
      const [row] =
        Object.keys(columns).length === 0
          ? await sql`SELECT ${sql.unsafe(BUDGET_COLUMNS)} FROM budgets WHERE id = ${id}`
          : await sql`UPDATE budgets SET ${sql(columns)} WHERE id = ${id} RETURNING ${sql.unsafe(BUDGET_COLUMNS)}`;
      return row ? toRecord(row) : null;
    },

    /** In use: an active key, a budget below, or an open hold of one of its keys (any status) still draws from it. */
    async deleteBudget(id: string, now: number): Promise<"deleted" | "in_use" | "not_found"> {
      return sql.begin(async (tx): Promise<"deleted" | "in_use" | "not_found"> => {
        const [found] = await tx`SELECT id FROM budgets WHERE id = ${id} FOR UPDATE`;
        if (!found) return "not_found";
        const [{ used }] = await tx`
          SELECT EXISTS (SELECT 1 FROM vault_keys WHERE budget_id = ${id} AND status = 'active' AND expires_at > ${now})
              OR EXISTS (SELECT 1 FROM budgets WHERE parent_id = ${id})
              OR EXISTS (SELECT 1 FROM ledger_entries
                          WHERE ${tx.unsafe(OPEN_HOLDS)} AND key_id IN (SELECT id FROM vault_keys WHERE budget_id = ${id})) AS used`;
        if (used) return "in_use";
        await tx`DELETE FROM budget_days WHERE budget_id = ${id}`;
        await tx`DELETE FROM budgets WHERE id = ${id}`;
        return "deleted";
      });
    },
  };
}

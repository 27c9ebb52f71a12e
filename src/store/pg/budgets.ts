import { asc, eq } from "drizzle-orm";
import { noSuchBudget } from "../../errors";
import { budgetUsageFields, toBudgetRecord, toBudgetWithUsage } from "../admin-reads";
import { OPEN_HOLDS } from "../schema";
import type { BudgetPatch, BudgetRecord, BudgetWithUsage, NewBudget } from "../types";
import type { Pg } from "./client";
import { jsonText, orm } from "./orm";
import { budgetDays, budgets, vaultKeys } from "./schema";

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
  const db = orm(sql);
  /** Every budget (or one) with its money on `day` and the active keys that draw from it directly. */
  const withUsage = (day: string, now: number) => {
    const usage = budgetUsageFields(budgets, budgetDays, vaultKeys, day, now);
    return db.select(usage.fields).from(budgets).leftJoin(budgetDays, usage.join).$dynamic();
  };

  return {
    async insertBudget(b: NewBudget): Promise<BudgetRecord> {
      return sql.begin(async (tx) => {
        if (b.parentId !== null) await lockBudgetToDrawFrom(tx, b.parentId, "parent_id");
        const [row] = await orm(tx)
          .insert(budgets)
          .values({ ...b, alertThresholds: jsonText(b.alertThresholds) })
          .returning();
        return toBudgetRecord(row!);
      });
    },

    async findBudget(id: string, day: string, now: number): Promise<BudgetWithUsage | null> {
      const [row] = await withUsage(day, now).where(eq(budgets.id, id));
      return row ? toBudgetWithUsage(row) : null;
    },

    async listBudgets(day: string, now: number): Promise<BudgetWithUsage[]> {
      return (await withUsage(day, now).orderBy(asc(budgets.seq))).map(toBudgetWithUsage);
    },

    async updateBudget(id: string, patch: BudgetPatch): Promise<BudgetRecord | null> {
      // drizzle refuses an update that sets nothing.
      const [row] = Object.values(patch).every((v) => v === undefined)
        ? await db.select().from(budgets).where(eq(budgets.id, id))
        : await db
            .update(budgets)
            .set({ ...patch, alertThresholds: jsonText(patch.alertThresholds) })
            .where(eq(budgets.id, id))
            .returning();
      return row ? toBudgetRecord(row) : null;
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

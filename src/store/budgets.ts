import { and, asc, eq, gt, inArray, sql } from "drizzle-orm";
import { noSuchBudget } from "../errors";
import { budgetUsageFields, toBudgetRecord, toBudgetWithUsage } from "./admin-reads";
import type { Db } from "./sqlite";
import { budgetDays, budgets, ledgerEntries, OPEN_HOLDS, vaultKeys } from "./schema";
import type { BudgetPatch, BudgetRecord, BudgetWithUsage, NewBudget } from "./types";

/** A transaction, or the database outside one. */
type Tx = Pick<Db, "select">;

/**
 * Refuses (400 naming `field`) a row that would draw from a budget that does not exist. Called in the transaction
 * that writes the row, which deleteBudget's serializes with: no key or budget is ever left under a deleted one.
 */
export function assertBudgetExists(tx: Tx, id: string, field: "budget_id" | "parent_id"): void {
  if (!tx.select({ id: budgets.id }).from(budgets).where(eq(budgets.id, id)).get()) throw noSuchBudget(field, id);
}

/**
 * Budgets (SPEC §14) on SQLite: made, read with their usage, changed and deleted. Their money (spent, held,
 * budget_days) is moved by the ledger together with their keys'.
 */
export function budgetQueries(db: Db) {
  /** Every budget (or one) with its money on `day` and the active keys that draw from it directly. */
  const withUsage = (day: string, now: number) => {
    const usage = budgetUsageFields(budgets, budgetDays, vaultKeys, day, now);
    return db.select(usage.fields).from(budgets).leftJoin(budgetDays, usage.join).$dynamic();
  };

  /** What still draws from the budget: an active key, a budget below, or an open hold of one of its keys (any status). */
  const inUse = (tx: Tx, id: string, now: number) =>
    tx
      .select({ id: vaultKeys.id })
      .from(vaultKeys)
      .where(and(eq(vaultKeys.budgetId, id), eq(vaultKeys.status, "active"), gt(vaultKeys.expiresAt, now)))
      .get() ??
    tx.select({ id: budgets.id }).from(budgets).where(eq(budgets.parentId, id)).get() ??
    tx
      .select({ id: ledgerEntries.id })
      .from(ledgerEntries)
      // OPEN_HOLDS word for word: the partial index of open holds.
      .where(
        and(
          sql.raw(OPEN_HOLDS),
          inArray(ledgerEntries.keyId, tx.select({ id: vaultKeys.id }).from(vaultKeys).where(eq(vaultKeys.budgetId, id))),
        ),
      )
      .get();

  return {
    async insertBudget(budget: NewBudget): Promise<BudgetRecord> {
      return db.transaction(
        (tx) => {
          if (budget.parentId !== null) assertBudgetExists(tx, budget.parentId, "parent_id");
          return toBudgetRecord(tx.insert(budgets).values(budget).returning().get());
        },
        { behavior: "immediate" },
      );
    },

    async findBudget(id: string, day: string, now: number): Promise<BudgetWithUsage | null> {
      const row = withUsage(day, now).where(eq(budgets.id, id)).get();
      return row ? toBudgetWithUsage(row) : null;
    },

    async listBudgets(day: string, now: number): Promise<BudgetWithUsage[]> {
      return withUsage(day, now).orderBy(asc(budgets.seq)).all().map(toBudgetWithUsage);
    },

    async updateBudget(id: string, patch: BudgetPatch): Promise<BudgetRecord | null> {
      // Only what the patch gives: drizzle refuses an update that sets nothing.
      const given = Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined));
      const row =
        Object.keys(given).length === 0
          ? db.select().from(budgets).where(eq(budgets.id, id)).get()
          : db.update(budgets).set(given).where(eq(budgets.id, id)).returning().get();
      return row ? toBudgetRecord(row) : null;
    },

    async deleteBudget(id: string, now: number): Promise<"deleted" | "in_use" | "not_found"> {
      return db.transaction(
        (tx) => {
          if (!tx.select({ id: budgets.id }).from(budgets).where(eq(budgets.id, id)).get()) return "not_found";
          if (inUse(tx, id, now)) return "in_use";
          tx.delete(budgetDays).where(eq(budgetDays.budgetId, id)).run();
          tx.delete(budgets).where(eq(budgets.id, id)).run();
          return "deleted";
        },
        { behavior: "immediate" },
      );
    },
  };
}

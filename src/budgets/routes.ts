import { Elysia } from "elysia";
import { accessGuard, type Authenticator, type Caller } from "../auth/admin-auth";
import { routeDoc } from "../ops/openapi";
import type { Store } from "../store/index";
import { BudgetId, CreateBudgetBody, PatchBudgetBody } from "./model";
import { BudgetList, BudgetSchema } from "./responses";
import * as service from "./service";

const tags = ["Budgets"];
const ADMIN = ["admin"] as const;
const READERS = ["admin", "issuer", "viewer"] as const;
const OWN_BUDGET = "only the budget its policy names";

/** SPEC §14: budgets, pools of caps over run families, made and changed by admins and read by everyone. */
export function budgetRoutes(store: Store, auth: Authenticator, now: () => number) {
  const ctx = (caller: Caller) => ({ store, now, actor: caller.fingerprint, caller });
  return new Elysia({ name: "budgets", prefix: "/budgets", seed: store })
    .use(accessGuard(auth))
    .post(
      "",
      ({ body, caller, set }) => {
        set.status = 201;
        return service.createBudget(ctx(caller), body);
      },
      {
        body: CreateBudgetBody,
        parse: "json",
        ...routeDoc({
          summary: "Create a budget: one ceiling over the keys that draw from it",
          description:
            "Keys draw from it with budget_id at mint (or through an issuer token whose policy names it); a call is admitted only if it fits the key and every budget up the chain (429 budget_exhausted otherwise). An unknown parent_id, or one whose chain already has 3 levels, is 400 naming parent_id.",
          tags,
          ok: [201, BudgetSchema, "The budget, nothing spent yet"],
          errors: [400],
          access: ADMIN,
        }),
      },
    )
    .get("", ({ caller }) => service.listBudgets(ctx(caller)), {
      ...routeDoc({
        summary: "List budgets with today's usage",
        tags,
        ok: [200, BudgetList, "Every budget, oldest first (parents before their children)"],
        access: READERS,
        issuer: OWN_BUDGET,
      }),
    })
    .get("/:id", ({ params, caller }) => service.getBudget(ctx(caller), params.id), {
      params: BudgetId,
      ...routeDoc({
        summary: "One budget with today's usage",
        tags,
        ok: [200, BudgetSchema, "The budget"],
        errors: [404],
        access: READERS,
        issuer: OWN_BUDGET,
      }),
    })
    .patch("/:id", ({ params, body, caller }) => service.patchBudget(ctx(caller), params.id, body), {
      params: BudgetId,
      body: PatchBudgetBody,
      parse: "json",
      ...routeDoc({
        summary: "Change a budget's caps, name or alert thresholds (never its parent)",
        tags,
        ok: [200, BudgetSchema, "The changed budget"],
        errors: [400, 404],
        access: ADMIN,
      }),
    })
    .delete("/:id", ({ params, caller }) => service.deleteBudget(ctx(caller), params.id), {
      params: BudgetId,
      ...routeDoc({
        summary: "Delete a budget nothing draws from any more",
        description:
          "409 budget_in_use while an active key or a budget below draws from it, or a call of one of its keys is still held, orphaned or ambiguous; the message and error.details say which.",
        tags,
        ok: [200, BudgetSchema, "The deleted budget, as it was last"],
        errors: [404, 409],
        access: ADMIN,
      }),
    });
}

import type { KeybrakeError } from "../errors";
import { presentKey } from "../keys/service";
import { type BudgetState, decideHold } from "../ledger/rules";
import { type AuditRow, type HoldRequest, isStoreOutage, type KeyPolicy, type Store } from "../store/index";
import { formatUsd, microsToUsd, utcDay } from "../util";
import type { Quote } from "../vendors/types";
import { capExhausted, limitExhausted } from "./notices";
import { wouldDenyCode } from "./would-deny";

/**
 * Dry runs (SPEC §16): a proxied call with `X-Keybrake-Dry-Run` runs every check and the pricing (a pre-flight read
 * included) and answers 200 with what the call would meet, holding and forwarding nothing. Every check's refusal is
 * a `decision` at 200, so a job tests its key against its real calls with one status to handle; only an unknown
 * vault key (401 invalid_key: nobody to answer for) and an unreachable ledger (503) keep their status.
 */

/** Any value but 0, false or no asks for a dry run: a job that sent the header meant not to spend. */
export function isDryRun(headers: Headers): boolean {
  const value = headers.get("x-keybrake-dry-run");
  return value !== null && !/^\s*(?:0|false|no)\s*$/i.test(value);
}

/** Whether a refusal is a dry run's `decision` (200) rather than its own answer. */
export const isDryRunDecision = (request: Request, err: KeybrakeError) =>
  isDryRun(request.headers) && err.code !== "invalid_key" && err.code !== "store_unavailable";

/** What a dry run answers, beside `dry_run: true` and the ids. */
export interface DryRunVerdict {
  /** `allowed`, or the code the call would be refused with. */
  decision: string;
  /** An observe-mode key's call goes out (`allowed`) past this refusal; it is audited as `would_deny`. */
  wouldDeny: string | null;
  message: string | null;
  details: unknown;
  priceMicros: number | null;
  /** SPEC §6's class: `request` (from the body), `object` (a pre-flight read), `estimate` (a stated maximum), `free`. */
  priceClass: string | null;
  remainingTodayUsd: number | null;
  budgetId: string | null;
  approvalRequired: boolean;
}

/** A refusal met before the call was priced (the allowlist, the catalogue, a pre-flight that failed, …). */
export const refusedVerdict = (err: KeybrakeError): DryRunVerdict => ({
  decision: err.code,
  wouldDeny: null,
  message: err.message,
  details: err.details ?? null,
  priceMicros: null,
  priceClass: null,
  remainingTodayUsd: null,
  budgetId: null,
  approvalRequired: false,
});

/**
 * A priced call's verdict against the key's balances and every budget up its chain, read now and decided by the
 * rule book's own hold decision, whose writes are dropped. A counterparty cap is checked against the call's price
 * alone (today's spend per counterparty is the ledger's, read only inside a hold). An observe-mode key's refusal
 * becomes `would_deny`, as its real call would go out.
 */
export async function pricedVerdict(
  store: Store,
  key: KeyPolicy,
  quote: Quote,
  call: { requestId: string; method: string; path: string; priced: boolean; counterparty: HoldRequest["counterparty"] },
  now: number,
): Promise<DryRunVerdict> {
  const day = utcDay(now);
  const record = await store.findKeyById(key.id);
  const usage = (await store.dayUsage([key.id], day)).get(key.id);
  const budgets: BudgetState[] = [];
  for (let id = record?.budgetId ?? null; id !== null; ) {
    const b = await store.findBudget(id, day, now);
    if (!b) break;
    budgets.push({
      id: b.id,
      daily: b.dailyCapMicros,
      total: b.totalCapMicros,
      spent: b.spentTotalMicros,
      held: b.heldTotalMicros,
      day: { settled: b.today.settledMicros, held: b.today.heldMicros },
    });
    id = b.parentId;
  }
  const decision = decideHold(
    {
      holdId: "dry_run",
      keyId: key.id,
      day,
      micros: quote.micros,
      ledger: call.priced,
      reuseAmbiguous: false,
      now,
      call: { requestId: call.requestId, method: call.method, path: call.path },
      counterparty: call.counterparty,
    },
    {
      key: record && {
        status: record.status,
        daily: record.dailyCapMicros,
        total: record.totalCapMicros,
        spent: record.spentTotalMicros,
        held: record.heldTotalMicros,
      },
      day: { settled: usage?.settledMicros ?? 0, held: usage?.heldMicros ?? 0 },
      budgets,
      counterpartyDay: null,
      remembered: null,
      approval: null,
    },
  );
  if ("needsEntry" in decision) throw new Error("a dry run's hold decision asked for a ledger entry");
  const result = decision.result;
  const approvalRequired = call.priced && key.approvalAboveMicros !== null && quote.micros > key.approvalAboveMicros;
  const refusal =
    result.kind === "denied"
      ? result.reason === "daily_cap" || result.reason === "total_cap"
        ? capExhausted(null, key, result, quote.micros, now)
        : result.reason === "revoked"
          ? { code: wouldDenyCode("revoked")!, message: "This vault key has been revoked.", details: undefined }
          : limitExhausted(result, quote.micros, now)
      : approvalRequired
        ? {
            code: wouldDenyCode("approval_required")!,
            message: `This call's price (${formatUsd(quote.micros)} USD) is above the key's approval_above_usd (${formatUsd(key.approvalAboveMicros!)} USD): it would wait for a person's approval.`,
            details: undefined,
          }
        : null;
  const observed = refusal !== null && key.enforcement === "observe" && refusal.code !== "key_revoked";
  return {
    decision: refusal === null || observed ? "allowed" : refusal.code,
    wouldDeny: observed ? refusal.code : null,
    message: refusal?.message ?? null,
    details: refusal?.details ?? null,
    priceMicros: quote.micros,
    priceClass: call.priced ? quote.source : "free",
    remainingTodayUsd: record ? presentKey(record, usage, now).remaining_today_usd : null,
    budgetId: record?.budgetId ?? null,
    approvalRequired,
  };
}

/** The 200 answer, once its audit row (`decision: dry_run`, the refusal it would meet as `would_deny`) is written. */
export async function answerDryRun(store: Store, audit: AuditRow, verdict: DryRunVerdict): Promise<Response> {
  try {
    await store.recordAudit(audit);
  } catch (err) {
    // The verdict stands when the store is down; its row is lost with the store, as every write is.
    if (!isStoreOutage(err)) throw err;
  }
  const body = {
    dry_run: true,
    decision: verdict.decision,
    would_deny: verdict.wouldDeny,
    price_usd: verdict.priceMicros === null ? null : microsToUsd(verdict.priceMicros),
    price_class: verdict.priceClass,
    remaining_today_usd: verdict.remainingTodayUsd,
    budget_id: verdict.budgetId,
    approval_required: verdict.approvalRequired,
    message: verdict.message,
    // The refusal's numbers, as its error body would carry them in `error.details`.
    details: verdict.details,
    key_id: audit.keyId,
    request_id: audit.id,
  };
  const headers: Record<string, string> = {
    "content-type": "application/json",
    "x-keybrake-dry-run": "true",
    "x-keybrake-request-id": audit.id,
  };
  if (audit.keyId) headers["x-keybrake-key-id"] = audit.keyId;
  return new Response(JSON.stringify(body), { status: 200, headers });
}

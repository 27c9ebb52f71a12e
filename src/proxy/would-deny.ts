import type { DenialReason, HoldResult } from "../store/index";

/** What the ledger reports an observe-mode key's call went out past (SPEC §16). */
type Observed = NonNullable<Extract<HoldResult, { kind: "admitted" }>["wouldDeny"]>;

/**
 * The error code each refusal answers with when enforced: what an observed call's audit row says it `would_deny`,
 * and a dry run's `decision`. A new refusal of the rule book fails the type check here until it has its code.
 */
const CODES: Record<DenialReason | Observed, string> = {
  revoked: "key_revoked",
  daily_cap: "cap_exhausted",
  total_cap: "cap_exhausted",
  budget_daily_cap: "budget_exhausted",
  budget_total_cap: "budget_exhausted",
  counterparty_cap: "counterparty_cap_exhausted",
  approval_required: "approval_required",
};

export const wouldDenyCode = (reason: DenialReason | Observed | undefined): string | null => (reason === undefined ? null : CODES[reason]);

import { actorName, type Caller, eventBy } from "../auth/admin-auth";
import { KeybrakeError, notFound } from "../errors";
import type { ApprovalRecord, Store } from "../store/index";
import { iso, microsToUsd } from "../util";

export interface ApprovalContext {
  store: Store;
  now: () => number;
  actor: string;
  caller?: Caller;
}

/** The longest reason a denial keeps (the API's and the CLI's limit). */
export const MAX_REASON_CHARS = 500;

export const presentApproval = (a: ApprovalRecord) => ({
  id: a.id,
  key_id: a.keyId,
  label: a.label,
  vendor: a.vendor,
  method: a.method,
  path: a.path,
  price_usd: microsToUsd(a.priceMicros),
  idempotency_key: a.idempotencyKey,
  status: a.status,
  requested_at: iso(a.requestedAt)!,
  requested_by: a.requestedBy,
  expires_at: iso(a.expiresAt)!,
  decided_at: iso(a.decidedAt),
  decided_by: a.decidedBy,
  reason: a.reason,
});

/** Pending first, newest first; an issuer sees the approvals of the keys it minted only. */
export async function listApprovals(ctx: ApprovalContext, q: { status?: ApprovalRecord["status"]; limit: number; cursor?: number }) {
  const mintedBy = ctx.caller?.role === "issuer" ? ctx.caller.tokenId : undefined;
  const page = await ctx.store.listApprovals({ ...q, mintedBy });
  return { data: page.data.map(presentApproval), next_cursor: page.nextCursor === null ? null : String(page.nextCursor) };
}

export async function showApproval(ctx: ApprovalContext, id: string) {
  const approval = await ctx.store.findApproval(id);
  if (!approval) throw notFound("approval");
  return presentApproval(approval);
}

/**
 * A person's decision (SPEC §15): approved, the call goes out once when the job retries it; denied, its hold is
 * released and the retry is refused. Of two people deciding at once one wins: the other gets 409 with the
 * decision that stands. Who decided is recorded (admin events, the approval, `approval_decided`).
 */
export async function decide(ctx: ApprovalContext, id: string, status: "approved" | "denied", reason: string | null) {
  const by = actorName(ctx);
  const outcome = await ctx.store.decideApproval(id, status, by, reason, ctx.now());
  if (outcome === "not_found") throw notFound("approval");
  const approval = (await ctx.store.findApproval(id))!;
  if (outcome === "not_pending") {
    // Still pending in the store yet refused: it lapsed, and the sweep has not marked it expired yet.
    const state = approval.status === "pending" ? `lapsed at ${iso(approval.expiresAt)}` : approval.status;
    throw new KeybrakeError(
      "approval_not_pending",
      `Approval ${id} is ${state}${approval.decidedBy ? ` (by ${approval.decidedBy})` : ""}: it can no longer be decided.`,
      {},
      { status: approval.status, decided_by: approval.decidedBy },
    );
  }
  await ctx.store.recordAdminEvent({
    at: ctx.now(),
    ...eventBy(ctx),
    action: status === "approved" ? "approval.approve" : "approval.deny",
    target: id,
    details: { key_id: approval.keyId, price_usd: microsToUsd(approval.priceMicros), reason },
  });
  return presentApproval(approval);
}

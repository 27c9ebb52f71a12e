import { Elysia } from "elysia";
import { z } from "zod";
import { accessGuard, type Authenticator, type Caller } from "../auth/admin-auth";
import { routeDoc } from "../ops/openapi";
import type { Store } from "../store/index";
import { pageCursor, pageLimit } from "../validation";
import { APPROVAL_STATUSES, ApprovalPage, ApprovalSchema } from "./responses";
import { decide, listApprovals, MAX_REASON_CHARS, showApproval } from "./service";

const ListQuery = z.strictObject({
  status: z
    .enum(APPROVAL_STATUSES)
    .optional()
    .meta({ description: "Only approvals in this state", examples: ["pending"] }),
  limit: pageLimit("At most this many approvals, newest first"),
  cursor: pageCursor(),
});
const ApprovalId = z.object({
  id: z.string().meta({ description: "The approval's id (apr_…)", examples: ["apr_7Gf2kQ9xLm3Pz8Rt1Vb6Nc"] }),
});
const DenyBody = z
  .strictObject({
    reason: z
      .string()
      .max(MAX_REASON_CHARS)
      .optional()
      .meta({ description: "Why, for the job's owner (the audit and the alert carry it)", examples: ["not this customer"] }),
  })
  .optional();
const tags = ["Approvals"];
/** Who may decide (SPEC §15): admins and approvers. Viewers and issuers read them. */
const DECIDERS = ["admin", "approver"] as const;

const ctx = (store: Store, now: () => number, caller: Caller) => ({ store, now, actor: caller.fingerprint, caller });

/** SPEC §15: a person says yes before a call above a key's `approval_above_usd` goes out. */
export const approvalRoutes = (store: Store, auth: Authenticator, now: () => number) =>
  new Elysia({ name: "approvals", prefix: "/approvals", seed: store })
    .use(accessGuard(auth))
    .get("", ({ query, caller }) => listApprovals(ctx(store, now, caller), query), {
      query: ListQuery,
      ...routeDoc({
        summary: "Approvals: the calls waiting for a person, and those decided",
        tags,
        ok: [200, ApprovalPage, "Newest first; follow next_cursor for more"],
        errors: [400],
        access: ["admin", "approver", "viewer", "issuer"],
        issuer: "only its keys' approvals",
      }),
    })
    .get("/:id", ({ params, caller }) => showApproval(ctx(store, now, caller), params.id), {
      params: ApprovalId,
      ...routeDoc({
        summary: "One approval",
        tags,
        ok: [200, ApprovalSchema, "The approval"],
        errors: [404],
        access: ["admin", "approver", "viewer"],
      }),
    })
    .post("/:id/approve", ({ params, caller }) => decide(ctx(store, now, caller), params.id, "approved", null), {
      params: ApprovalId,
      ...routeDoc({
        summary: "Approve: the call goes out once when the job retries it with the same Idempotency-Key",
        tags,
        ok: [200, ApprovalSchema, "The approval, approved"],
        errors: [404, 409],
        access: DECIDERS,
      }),
    })
    .post("/:id/deny", ({ params, body, caller }) => decide(ctx(store, now, caller), params.id, "denied", body?.reason ?? null), {
      params: ApprovalId,
      body: DenyBody,
      ...routeDoc({
        summary: "Deny: the reserved hold is released; the call's retry gets 403 approval_denied",
        tags,
        ok: [200, ApprovalSchema, "The approval, denied"],
        errors: [400, 404, 409],
        access: DECIDERS,
      }),
    });

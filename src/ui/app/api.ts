/**
 * The dashboard's one way to the server: the admin API (the same routes as the CLI and /docs), authenticated
 * by the HttpOnly session cookie the browser sends by itself. The CSRF token lives in this module's memory
 * only (never in localStorage or sessionStorage) and goes out in X-CSRF-Token on every write.
 */

import type { z } from "zod";
import type * as alerts from "../../alerts/responses";
import type * as approvals from "../../approvals/responses";
import type * as audit from "../../audit/responses";
import type * as budgets from "../../budgets/responses";
import type * as holds from "../../holds/responses";
import type * as keys from "../../keys/responses";
import type * as tokens from "../../tokens/responses";
import type * as ui from "../responses";

// The admin API's answers, inferred from the zod schemas the routes document them with: a field renamed on the
// server fails the dashboard's type check. Type-only imports: the bundle carries none of the server's code.
// A list's answer is a …List here (…Page names the dashboard's pages).
export type Session = z.infer<typeof ui.SessionSchema>;
export type Role = Session["role"];
export type KeyRecord = z.infer<typeof keys.KeyRecordSchema>;
export type KeyList = z.infer<typeof keys.KeyPage>;
export type RevokedCount = z.infer<typeof keys.RevokedCount>;
/** A budget (SPEC §14) with today's usage, as GET /budgets shows it. */
export type Budget = z.infer<typeof budgets.BudgetSchema>;
export type BudgetList = z.infer<typeof budgets.BudgetList>;
export type AuditList = z.infer<typeof audit.AuditPage>;
export type AuditRow = AuditList["data"][number];
export type SpendList = z.infer<typeof audit.SpendPage>;
export type SpendRow = SpendList["data"][number];
export type Hold = z.infer<typeof holds.HoldSchema>;
export type HoldList = z.infer<typeof holds.HoldList>;
export type TokenRecord = z.infer<typeof tokens.TokenRecordSchema>;
export type TokenList = z.infer<typeof tokens.TokenPage>;
export type IssuedToken = z.infer<typeof tokens.IssuedTokenSchema>;
export type RevokedToken = z.infer<typeof tokens.RevokedTokenSchema>;
/** A call waiting for a person's approval, or decided (SPEC §15), as GET /approvals shows it. */
export type Approval = z.infer<typeof approvals.ApprovalSchema>;
export type ApprovalList = z.infer<typeof approvals.ApprovalPage>;
export type WebhookList = z.infer<typeof alerts.WebhookList>;
export type DeliveryList = z.infer<typeof alerts.DeliveryPage>;

/** Whether a role changes keys (revoke, caps, expiry): admins and issuers. Viewers and approvers read them (SPEC §10). */
export const writesKeys = (role: Role) => role === "admin" || role === "issuer";

/** Whether a role decides approvals (SPEC §15): admins and approvers. */
export const decidesApprovals = (role: Role) => role === "admin" || role === "approver";

export interface FieldIssue {
  path: string;
  message: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly fields: FieldIssue[] = [],
  ) {
    super(message);
  }
}

let csrf: string | null = null;
let signedOut: (() => void) | null = null;

export function useSession(session: Session | null, onSignedOut: () => void) {
  csrf = session?.csrf_token ?? null;
  signedOut = onSignedOut;
}

/** A query string from the values that are set: `qs({ a: "x", b: "" })` -> "?a=x". */
export function qs(params: Record<string, string | number | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") search.set(k, String(v));
  const text = search.toString();
  return text ? `?${text}` : "";
}

export async function api<T>(path: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
  const method = init.method ?? (init.body === undefined ? "GET" : "POST");
  const headers: Record<string, string> = { accept: "application/json" };
  if (init.body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && csrf) headers["x-csrf-token"] = csrf;
  const res = await fetch(path, {
    method,
    headers,
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
    credentials: "same-origin",
    cache: "no-store",
  });
  const text = await res.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const body = (data ?? {}) as { code?: string; message?: string; error?: { details?: { fields?: FieldIssue[] } } };
    const err = new ApiError(
      res.status,
      body.code ?? `http_${res.status}`,
      body.message ?? `${res.status} ${res.statusText}`,
      body.error?.details?.fields,
    );
    // The session ended (expired, signed out elsewhere, its token revoked): back to the sign-in form.
    if (res.status === 401 && !path.startsWith("/ui/session")) signedOut?.();
    throw err;
  }
  return data as T;
}

/** Every page of a list route (data + next_cursor), up to `max` rows: `all<KeyList>("/vault/keys", {})`. */
export async function all<List extends { data: unknown[]; next_cursor: string | null }>(
  path: string,
  params: Record<string, string | number | undefined>,
  max = 10_000,
): Promise<List["data"]> {
  const rows: List["data"][number][] = [];
  let cursor: string | undefined;
  do {
    const page = await api<List>(path + qs({ ...params, limit: 1000, cursor }));
    rows.push(...page.data);
    cursor = page.next_cursor ?? undefined;
  } while (cursor && rows.length < max);
  return rows;
}

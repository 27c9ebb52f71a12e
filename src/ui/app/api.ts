/**
 * The dashboard's one way to the server: the admin API (the same routes as the CLI and /docs), authenticated
 * by the HttpOnly session cookie the browser sends by itself. The CSRF token lives in this module's memory
 * only (never in localStorage or sessionStorage) and goes out in X-CSRF-Token on every write.
 */

export type Role = "admin" | "issuer" | "viewer" | "approver";

/** Whether a role changes keys (revoke, caps, expiry): admins and issuers. Viewers and approvers read them (SPEC §10). */
export const writesKeys = (role: Role) => role === "admin" || role === "issuer";

/** Whether a role decides approvals (SPEC §15): admins and approvers. */
export const decidesApprovals = (role: Role) => role === "admin" || role === "approver";

export interface Session {
  role: Role;
  token_id: string;
  token_name: string;
  csrf_token: string;
  expires_at: string;
  /** The vendors this Keybrake serves. */
  vendors: string[];
  /** By vendor: what the operator lets through at $0 although the catalogue does not know it. */
  free_endpoints: Record<string, string[]>;
}

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

/** Every page of a list route (data + next_cursor), up to `max` rows. */
export async function all<T>(path: string, params: Record<string, string | number | undefined>, max = 10_000): Promise<T[]> {
  const rows: T[] = [];
  let cursor: string | undefined;
  do {
    const page = await api<{ data: T[]; next_cursor: string | null }>(path + qs({ ...params, limit: 1000, cursor }));
    rows.push(...page.data);
    cursor = page.next_cursor ?? undefined;
  } while (cursor && rows.length < max);
  return rows;
}

export interface KeyRecord {
  id: string;
  vendor: string;
  mode: "live" | "test";
  label: string | null;
  key_hint: string;
  daily_usd_cap: number | null;
  total_usd_cap: number | null;
  allowed_endpoints: string[];
  max_requests_per_minute: number | null;
  require_idempotency_key: boolean;
  metadata: Record<string, string>;
  status: "active" | "revoked" | "expired";
  created_at: string;
  expires_at: string;
  revoked_at: string | null;
  spent_today_usd: number;
  spent_total_usd: number;
  held_usd: number;
  remaining_today_usd: number | null;
  calls: number;
  last_used_at: string | null;
  budget_id: string | null;
  per_customer_usd_cap: number | null;
  per_destination_usd_cap: number | null;
  /** observe: calls over its limits go out anyway, audited as would_deny (SPEC §16). */
  enforcement: "enforce" | "observe";
}

/** A budget (SPEC §14) with today's usage, as GET /budgets shows it. */
export interface Budget {
  id: string;
  name: string;
  parent_id: string | null;
  daily_usd_cap: number | null;
  total_usd_cap: number | null;
  alert_thresholds: number[];
  created_at: string;
  spent_today_usd: number;
  spent_total_usd: number;
  held_usd: number;
  remaining_today_usd: number | null;
  active_keys: number;
}

export interface AuditRow {
  id: string;
  at: string;
  key_id: string | null;
  label: string | null;
  vendor: string | null;
  mode: string | null;
  method: string;
  path: string;
  status: number;
  decision: string;
  hold_usd: number;
  cost_usd: number;
  cost_source: string | null;
  vendor_request_id: string | null;
  idempotency_key: string | null;
  upstream_ms: number | null;
  overhead_ms: number | null;
  client_ip: string | null;
  requests: number;
  /** The code enforcing would have answered: an observe-mode key's call, or a dry run's verdict. */
  would_deny: string | null;
}

export interface SpendRow {
  group: string | null;
  calls: number;
  allowed: number;
  denied: number;
  spend_usd: number;
  ambiguous_usd: number;
}

export interface Hold {
  id: string;
  key_id: string;
  label: string | null;
  day: string;
  state: "held" | "settled" | "released" | "ambiguous" | "orphaned";
  hold_usd: number;
  cost_usd: number | null;
  created_at: string | null;
  settled_at: string | null;
}

export interface TokenRecord {
  id: string;
  name: string;
  role: Role;
  token_hint: string;
  policy: Record<string, unknown> | null;
  status: "active" | "revoked" | "expired";
  created_at: string;
  created_by: string;
  expires_at: string | null;
  revoked_at: string | null;
}

/** A call waiting for a person's approval, or decided (SPEC §15), as GET /approvals shows it. */
export interface Approval {
  id: string;
  key_id: string;
  label: string | null;
  vendor: string | null;
  method: string;
  path: string;
  price_usd: number;
  idempotency_key: string;
  status: "pending" | "approved" | "denied" | "expired" | "used";
  requested_at: string;
  requested_by: string | null;
  expires_at: string;
  decided_at: string | null;
  decided_by: string | null;
  reason: string | null;
}

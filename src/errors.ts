/**
 * Every error Keybrake answers with on purpose: one status and one default message per code (SPEC §3, §4).
 * Audit rows record the code as the call's `decision`.
 */
export const ERRORS = {
  // admin API
  unauthorized: { status: 401, message: "A valid admin bearer token is required." },
  forbidden: { status: 403, message: "This token's role does not allow this route." },
  issuer_policy_violation: { status: 403, message: "The request is outside this issuer token's policy; nothing was created or changed." },
  not_found: { status: 404, message: "No such route." },
  invalid_request: { status: 400, message: "The request is invalid." },
  revoked_key_unchangeable: { status: 409, message: "A revoked key cannot be changed." },
  approval_not_pending: { status: 409, message: "This approval was already decided, or it lapsed." },
  budget_in_use: { status: 409, message: "An active key or a budget below still draws from this budget; it was not deleted." },
  // The code predates ambiguous holds; kept so that clients matching on it keep working.
  hold_not_orphaned: { status: 409, message: "Only orphaned or ambiguous holds can be settled or released by hand." },
  // the dashboard's session cookie (src/ui/sessions.ts)
  csrf_failed: { status: 403, message: "A write made with the dashboard session needs its CSRF token in the X-CSRF-Token header." },
  cross_site_request: { status: 403, message: "The dashboard session cannot be used by a request from another site." },
  internal_error: { status: 500, message: "Keybrake hit an unexpected error; nothing was forwarded after it." },
  // proxy, in the order of SPEC §4's checks
  invalid_key: { status: 401, message: "No valid vault key was presented." },
  key_revoked: { status: 401, message: "This vault key has been revoked." },
  key_expired: { status: 401, message: "This vault key has expired." },
  vendor_mismatch: { status: 403, message: "This vault key is for another vendor." },
  bad_path: { status: 400, message: "The request path is not a plain vendor path (encoded separators, dots, control bytes or //)." },
  endpoint_not_allowed: { status: 403, message: "This endpoint is not in the key's allowed_endpoints." },
  credential_endpoint_refused: {
    status: 403,
    message: "This endpoint manages the vendor's credentials or accounts; Keybrake never forwards it.",
  },
  endpoint_not_catalogued: {
    status: 422,
    message: "Keybrake's catalogue for this vendor does not know this endpoint, so it cannot tell what it costs; nothing was forwarded.",
  },
  body_too_large: { status: 413, message: "The request body is too large." },
  request_aborted: { status: 400, message: "The request body was cut off before its end; nothing was forwarded." },
  rate_limited: { status: 429, message: "This key's request rate limit is reached." },
  invalid_idempotency_key: { status: 400, message: "An Idempotency-Key must be 1 to 255 characters and not blank." },
  idempotency_key_required: { status: 400, message: "This key requires an Idempotency-Key header on calls that spend money." },
  idempotency_in_flight: { status: 409, message: "A call with this Idempotency-Key is still in flight; retry shortly." },
  idempotency_conflict: { status: 409, message: "This Idempotency-Key was used with a different request; nothing was forwarded." },
  currency_not_priced: { status: 422, message: "The call's currency has no KEYBRAKE_FX rate; it was not forwarded." },
  unpriceable_request: { status: 422, message: "The price of this call cannot be read unambiguously; it was not forwarded." },
  model_not_priced: { status: 422, message: "The model has no price in KEYBRAKE_LLM_PRICES; the call was not forwarded." },
  method_not_priced: { status: 405, message: "Only GET, HEAD and POST are allowed on a priced path." },
  preflight_failed: { status: 502, message: "The object this call is priced from could not be read; nothing was forwarded." },
  approval_required: {
    status: 403,
    message:
      "This call's price is above the key's approval threshold: it waits for a person's approval, its hold reserved. Retry it later with the same Idempotency-Key.",
  },
  approval_denied: { status: 403, message: "A person denied this call; its hold was released and nothing was forwarded." },
  approval_expired: {
    status: 403,
    message: "This call's approval lapsed before it was used; its hold was released and nothing was forwarded.",
  },
  vendor_not_configured: { status: 503, message: "No real secret is configured for this vendor and mode." },
  store_unavailable: { status: 503, message: "Keybrake's ledger cannot be reached; nothing was forwarded. Retry later." },
  cap_exhausted: { status: 429, message: "This call would exceed the key's USD cap." },
  budget_exhausted: { status: 429, message: "This call would exceed a budget the key draws from." },
  counterparty_cap_exhausted: { status: 429, message: "This call would exceed the key's daily cap for one counterparty." },
  upstream_unreachable: { status: 502, message: "The vendor could not be reached." },
  upstream_timeout: { status: 504, message: "The vendor did not answer in time." },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

export class KeybrakeError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string = ERRORS[code].message,
    readonly headers: Record<string, string> = {},
    readonly details?: unknown,
  ) {
    super(message);
    this.name = "KeybrakeError";
    this.status = ERRORS[code].status;
  }
}

export interface ErrorBody {
  code: string;
  message: string;
  error: { type: "keybrake_error"; code: string; message: string; details?: unknown };
}

export function errorBody(code: string, message: string, details?: unknown): ErrorBody {
  const error: ErrorBody["error"] = { type: "keybrake_error", code, message };
  if (details !== undefined) error.details = details;
  return { code, message, error };
}

/** The one place an error becomes a response: used by `onError` and by the proxy's denials. */
export function errorResponse(err: KeybrakeError, extraHeaders: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(errorBody(err.code, err.message, err.details)), {
    status: err.status,
    headers: {
      "content-type": "application/json",
      "x-keybrake-error": err.code,
      ...err.headers,
      ...extraHeaders,
    },
  });
}

export const unauthorized = (message?: string) => new KeybrakeError("unauthorized", message);
export const forbidden = (message?: string) => new KeybrakeError("forbidden", message);
/** 403 naming the issuer policy's rule (`policy.max_daily_usd_cap`, …) in the message and `error.details.rule`. */
export const policyViolation = (rule: string, message: string) =>
  new KeybrakeError("issuer_policy_violation", `${rule}: ${message}`, {}, { rule });
export const notFound = (what = "route") => new KeybrakeError("not_found", `No such ${what}.`);
export const invalidRequest = (message: string, fields: { path: string; message: string }[]) =>
  new KeybrakeError("invalid_request", message, {}, { fields });
/**
 * A key's budget_id or a budget's parent_id that names no budget (or one deleted meanwhile: the stores check it
 * in the transaction that writes the row): 400 naming the field.
 */
export const noSuchBudget = (field: "budget_id" | "parent_id", id: string) =>
  invalidRequest(`Invalid body: ${field}: no budget ${id}`, [{ path: field, message: `no budget ${id}` }]);

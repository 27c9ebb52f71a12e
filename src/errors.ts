/** Every error Keybrake answers with on purpose. `onError` turns it into the contract's body. */
export class KeybrakeError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly details?: unknown,
  ) {
    super(message);
    this.name = "KeybrakeError";
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

export const unauthorized = () => new KeybrakeError(401, "unauthorized", "A valid admin bearer token is required.");
export const notFound = (what = "route") => new KeybrakeError(404, "not_found", `No such ${what}.`);
export const invalidRequest = (message: string, fields: { path: string; message: string }[]) =>
  new KeybrakeError(400, "invalid_request", message, {}, { fields });

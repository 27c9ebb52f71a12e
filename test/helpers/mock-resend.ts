import { MockVendor, type Received, type Reply } from "./mock-vendor";

export const RESEND_KEY = "re_live_mockResendKey0000000000000";
export const RESEND_TEST_KEY = "re_test_mockResendKey0000000000000";

const resendError = (statusCode: number, name: string, message: string): Reply => ({
  status: statusCode,
  body: { statusCode, name, message },
});

/** A mock Resend: JSON only, Bearer re_ keys, `{ id }` and `{ data: [{ id }] }`, and no request-id header. */
export function mockResend() {
  const answer = (req: Received): Reply => {
    const auth = String(req.headers.authorization ?? "");
    if (auth !== `Bearer ${RESEND_KEY}` && auth !== `Bearer ${RESEND_TEST_KEY}`)
      return resendError(401, "validation_error", "API key is invalid");
    let body: unknown;
    try {
      body = JSON.parse(req.body);
    } catch {
      return resendError(422, "validation_error", "Invalid JSON");
    }
    if (req.method === "POST" && req.path === "/emails") {
      if (!(body as { to?: unknown }).to) return resendError(422, "validation_error", "Missing `to` field.");
      return { status: 200, body: { id: crypto.randomUUID() } };
    }
    if (req.method === "POST" && req.path === "/emails/batch" && Array.isArray(body)) {
      return { status: 200, body: { data: body.map(() => ({ id: crypto.randomUUID() })) } };
    }
    return resendError(404, "not_found", "Route not found");
  };
  return new MockVendor(answer, null, () => "");
}

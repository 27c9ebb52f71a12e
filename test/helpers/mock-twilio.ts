import { MockVendor, mockId, type Received, type Reply } from "./mock-vendor";

export const TWILIO_SID = "AC11111111111111111111111111111111";
export const TWILIO_TOKEN = "twilio_live_auth_token_000000000000";
export const TWILIO_TEST_SID = "AC22222222222222222222222222222222";
export const TWILIO_TEST_TOKEN = "twilio_test_auth_token_000000000000";

const twilioError = (status: number, code: number, message: string): Reply => ({
  status,
  body: { code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status },
});

/** A mock Twilio: Basic auth, the account SID in the path, 201 message/call resources, Twilio-Request-Id. */
export function mockTwilio() {
  const state = { price: null as string | null, priceUnit: "USD" };
  const accounts: Record<string, string> = { [TWILIO_SID]: TWILIO_TOKEN, [TWILIO_TEST_SID]: TWILIO_TEST_TOKEN };

  const answer = (req: Received): Reply => {
    const [user, pass] = Buffer.from(String(req.headers.authorization ?? "").replace(/^Basic /, ""), "base64").toString().split(":");
    if (!user || accounts[user] !== pass) return twilioError(401, 20003, "Authenticate");
    const m = /^\/2010-04-01\/Accounts\/([^/]+)\/(Messages|Calls)\.json$/.exec(req.path);
    if (!m) return twilioError(404, 20404, `The requested resource ${req.path} was not found`);
    if (m[1] !== user) return twilioError(403, 20003, "Account SID in the path does not match the credentials");
    const form = new URLSearchParams(req.body);
    if (!form.get("To")) return twilioError(400, 21604, "A 'To' phone number is required.");
    const common = { account_sid: user, to: form.get("To"), from: form.get("From"), status: "queued", price: state.price, price_unit: state.priceUnit, date_created: new Date().toUTCString() };
    if (m[2] === "Calls") return { status: 201, body: { sid: mockId("CA"), ...common } };
    const body = form.get("Body") ?? "";
    return { status: 201, body: { sid: mockId("SM"), ...common, body, num_segments: "1", num_media: String(form.getAll("MediaUrl").length), uri: `/2010-04-01/Accounts/${user}/Messages/x.json` } };
  };

  return Object.assign(new MockVendor(answer, "Twilio-Request-Id", () => mockId("RQ")), { state });
}
export type MockTwilio = ReturnType<typeof mockTwilio>;

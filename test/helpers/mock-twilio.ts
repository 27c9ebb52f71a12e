import { MockVendor, mockId, type Received, type Reply } from "./mock-vendor";

export const TWILIO_SID = "AC11111111111111111111111111111111";
export const TWILIO_TOKEN = "twilio_live_auth_token_000000000000";
export const TWILIO_TEST_SID = "AC22222222222222222222222222222222";
export const TWILIO_TEST_TOKEN = "twilio_test_auth_token_000000000000";

const twilioError = (status: number, code: number, message: string): Reply => ({
  status,
  body: { code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status },
});

/** `Messages`, `Messages.json`, `Messages.xml` in any case: Twilio routes them all to one create. */
const CREATE = /^\/2010-04-01\/Accounts\/([^/]+)\/(Messages|Calls)(?:\.json|\.xml)?\/?$/i;
const FETCH = /^\/2010-04-01\/Accounts\/([^/]+)\/(Messages|Calls)\/([^/]+)\.json$/;

/**
 * A mock Twilio: Basic auth, the account SID in the path, 201 message/call resources, Twilio-Request-Id. A
 * created resource can be fetched again (GET …/Messages/{sid}.json): its price is null and its status pending
 * until the test states its final price with `finalPrices.set(sid, "-0.0166")`. Answers are JSON even where
 * the real Twilio answers XML (`.xml`, no extension).
 */
export function mockTwilio() {
  const state = { price: null as string | null, priceUnit: "USD" };
  const finalPrices = new Map<string, string>();
  const created = new Map<string, Record<string, unknown>>();
  const accounts: Record<string, string> = { [TWILIO_SID]: TWILIO_TOKEN, [TWILIO_TEST_SID]: TWILIO_TEST_TOKEN };

  const create = (account: string, resource: string, req: Received): Reply => {
    const form = new URLSearchParams(req.body);
    if (!form.get("To")) return twilioError(400, 21604, "A 'To' phone number is required.");
    const isCall = resource.toLowerCase() === "calls";
    const sid = mockId(isCall ? "CA" : "SM");
    const common = {
      sid,
      account_sid: account,
      to: form.get("To"),
      from: form.get("From"),
      price: state.price,
      price_unit: state.priceUnit,
      date_created: new Date().toUTCString(),
    };
    const path = `/2010-04-01/Accounts/${account}/${isCall ? "Calls" : "Messages"}/${sid}.json`;
    const body = isCall
      ? { ...common, status: "queued", uri: path }
      : {
          ...common,
          status: "queued",
          body: form.get("Body") ?? "",
          num_segments: "1",
          num_media: String(form.getAll("MediaUrl").length),
          uri: path,
        };
    created.set(sid, body);
    return { status: 201, body };
  };

  const fetchResource = (sid: string): Reply => {
    const resource = created.get(sid);
    if (!resource) return twilioError(404, 20404, `The requested resource ${sid} was not found`);
    const final = finalPrices.get(sid);
    const done = sid.startsWith("CA") ? "completed" : "delivered";
    return { status: 200, body: { ...resource, status: final === undefined ? "sending" : done, price: final ?? null } };
  };

  const answer = (req: Received): Reply => {
    const [user, pass] = Buffer.from(String(req.headers.authorization ?? "").replace(/^Basic /, ""), "base64")
      .toString()
      .split(":");
    if (!user || accounts[user] !== pass) return twilioError(401, 20003, "Authenticate");
    const m = req.method === "POST" ? CREATE.exec(req.path) : req.method === "GET" ? FETCH.exec(req.path) : null;
    if (!m) return twilioError(404, 20404, `The requested resource ${req.path} was not found`);
    if (m[1] !== user) return twilioError(403, 20003, "Account SID in the path does not match the credentials");
    return req.method === "POST" ? create(user, m[2]!, req) : fetchResource(m[3]!);
  };

  const mock = Object.assign(new MockVendor(answer, "Twilio-Request-Id", () => mockId("RQ")), { state, finalPrices });
  const reset = mock.reset.bind(mock);
  mock.reset = () => {
    reset();
    finalPrices.clear();
    created.clear();
    state.price = null;
    state.priceUnit = "USD";
  };
  return mock;
}
export type MockTwilio = ReturnType<typeof mockTwilio>;

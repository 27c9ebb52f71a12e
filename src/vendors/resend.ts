import { parseStrictJson, unpriceable } from "./body";
import { unitPriceMicros } from "./currency";
import { httpUrl, secret, unitPrice } from "../env";
import { bearerCredentialsByMode, type PathClass, type Vendor } from "./types";

/**
 * Resend bills each To, CC and BCC recipient as one email. `to` is an address or a list; a string is counted
 * per comma-separated part, which can only over-count (a display name with a comma), never under-count.
 */
export function recipients(email: unknown): number {
  if (typeof email !== "object" || email === null || Array.isArray(email)) throw unpriceable("an email is not a JSON object");
  const e = email as Record<string, unknown>;
  if (e.to === undefined || e.to === null) throw unpriceable('"to" is missing');
  return countAddresses(e.to, "to") + countAddresses(e.cc, "cc") + countAddresses(e.bcc, "bcc");
}

function countAddresses(value: unknown, field: string): number {
  if (value === undefined || value === null) return 0;
  const list = Array.isArray(value) ? value : [value];
  let n = 0;
  for (const address of list) {
    if (typeof address !== "string") throw unpriceable(`"${field}" holds something other than addresses`);
    n += address.split(",").filter((part) => part.trim() !== "").length;
  }
  return n;
}

const EMAILS = /^\/emails\/?$/i;
const BATCH = /^\/emails\/batch\/?$/i;
/** Broadcasts send to a whole audience: money Keybrake does not price, so refused rather than forwarded free. */
const BROADCAST_SEND = /^\/broadcasts\/[^/]+\/send\/?$/i;

export const resend: Vendor<{ emailUsd: number }> = {
  name: "resend",
  env: {
    KEYBRAKE_RESEND_API_KEY: secret,
    KEYBRAKE_RESEND_TEST_API_KEY: secret,
    KEYBRAKE_RESEND_BASE_URL: httpUrl("https://api.resend.com"),
    // Resend Pro overage: $0.90 per 1,000 emails, each To/CC/BCC recipient counted (resend.com/pricing).
    KEYBRAKE_RESEND_EMAIL_USD: unitPrice(0.0009),
  },
  secretVariables: ["KEYBRAKE_RESEND_API_KEY", "KEYBRAKE_RESEND_TEST_API_KEY"],
  configure: (env) => ({
    baseUrl: env.KEYBRAKE_RESEND_BASE_URL as string,
    credentials: bearerCredentialsByMode(env, "KEYBRAKE_RESEND_API_KEY", "KEYBRAKE_RESEND_TEST_API_KEY"),
    prices: { emailUsd: env.KEYBRAKE_RESEND_EMAIL_USD as number },
  }),
  bareRoutes: ["/emails", "/emails/*"],
  publicPath: (path) => path,
  classify(_method, path): PathClass {
    if (EMAILS.test(path) || BATCH.test(path)) return "priced";
    return BROADCAST_SEND.test(path) ? "refused" : "free";
  },
  // Resend sends no request-id header: none is recorded rather than one made up.
  requestId: () => null,
  contextHeaders: [],
  honoursIdempotencyKey: true,
  doNotRetryHeaders: {},
  async price(input, ctx) {
    if (!(input.contentType ?? "").toLowerCase().startsWith("application/json")) throw unpriceable("Resend takes JSON bodies");
    const parsed = parseStrictJson(new TextDecoder().decode(input.body));
    let count: number;
    if (EMAILS.test(input.path)) count = recipients(parsed);
    else if (Array.isArray(parsed)) count = parsed.reduce((sum: number, email) => sum + recipients(email), 0);
    else throw unpriceable("a batch must be a JSON array");
    return { micros: unitPriceMicros(ctx.prices.emailUsd, count), source: "request", currency: "usd", amountMinor: null };
  },
};

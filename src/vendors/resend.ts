import { parseStrictJson, unpriceable } from "./body";
import { unitPriceMicros } from "./currency";
import { httpUrl, secret, unitPrice } from "../env";
import { Catalogue, credential, free, priced, refused } from "./catalogue";
import { bearerCredentialsByMode, FREE, type PriceFn, type Vendor } from "./types";

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

/** One email or a batch: each recipient of each email is one email billed. */
const emails =
  (batch: boolean): PriceFn<ResendPrices> =>
  async (input, ctx) => {
    if (!(input.contentType ?? "").toLowerCase().startsWith("application/json")) throw unpriceable("Resend takes JSON bodies");
    const parsed = parseStrictJson(new TextDecoder().decode(input.body));
    let count: number;
    if (!batch) count = recipients(parsed);
    else if (Array.isArray(parsed)) count = parsed.reduce((sum: number, email) => sum + recipients(email), 0);
    else throw unpriceable("a batch must be a JSON array");
    return { micros: unitPriceMicros(ctx.prices.emailUsd, count), source: "request", currency: "usd", amountMinor: null };
  };

/**
 * A broadcast created as a draft sends nothing; `send: true` (or a `scheduled_at`) sends it to its whole audience,
 * which Keybrake cannot count: refused, never free.
 */
const broadcastDraft: PriceFn<ResendPrices> = async (input) => {
  if (!(input.contentType ?? "").toLowerCase().startsWith("application/json")) throw unpriceable("Resend takes JSON bodies");
  const parsed = parseStrictJson(new TextDecoder().decode(input.body));
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw unpriceable("a broadcast is a JSON object");
  const { send, scheduled_at } = parsed as Record<string, unknown>;
  if ((send !== undefined && send !== false) || (scheduled_at !== undefined && scheduled_at !== null))
    throw unpriceable("a broadcast that sends emails a whole audience: money Keybrake does not price");
  return FREE;
};

interface ResendPrices {
  emailUsd: number;
}

/** SPEC §6, Resend: every endpoint Keybrake forwards; reads of any of them are free. */
export const RESEND_CATALOGUE = new Catalogue<PriceFn<ResendPrices>>([
  ...priced("class 1: (to + cc + bcc) × the email price", emails(false), "/emails"),
  ...priced("class 1: the sum over the batch", emails(true), "/emails/batch"),
  ...free(
    ["PATCH", "POST"],
    "reschedules or cancels an email already counted when it was created",
    "/emails/{email}",
    "/emails/{email}/cancel",
  ),
  ...free(
    ["POST", "PATCH", "DELETE"],
    "sending domains: set-up, no email is sent",
    "/domains",
    "/domains/{domain}",
    "/domains/{domain}/verify",
  ),
  ...free(
    ["POST", "PATCH", "DELETE"],
    "contact lists: nothing is sent until a broadcast is (refused)",
    "/audiences",
    "/audiences/{audience}",
    "/audiences/{audience}/contacts",
    "/audiences/{audience}/contacts/{contact}",
    "/contacts",
    "/contacts/{contact}",
  ),
  ...priced("free as a draft; refused when it sends (`send`, `scheduled_at`): a whole audience", broadcastDraft, "/broadcasts"),
  ...free(["PATCH", "DELETE"], "a broadcast draft; sending it is refused", "/broadcasts/{broadcast}"),
  ...refused("sending a broadcast emails a whole audience: money Keybrake does not price", "/broadcasts/{broadcast}/send"),
  ...credential("API keys are full-access credentials", "/api-keys", "/api-keys/{key}"),
  ...credential("webhooks carry their signing secret", "/webhooks", "/webhooks/{webhook}"),
]);

export const resend: Vendor<ResendPrices> = {
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
  catalogue: RESEND_CATALOGUE,
  // Resend sends no request-id header: none is recorded rather than one made up.
  requestId: () => null,
  contextHeaders: [],
  honoursIdempotencyKey: true,
  // A validation error (400, 422) means the retry was checked before anything ran under its key; Resend's
  // idempotency errors (409 `concurrent_idempotent_requests`, `invalid_idempotent_request`), 429, 401/403 and 5xx
  // say nothing of whether the first attempt sent its emails.
  speaksForFirstAttempt(status, _headers, body) {
    if (status !== 400 && status !== 422) return false;
    const name = (body as { name?: unknown } | null)?.name;
    return !(typeof name === "string" && name.includes("idempot"));
  },
  doNotRetryHeaders: {},
};

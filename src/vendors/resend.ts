import { parseStrictJson, unpriceable } from "./body";
import { unitPriceMicros } from "./currency";
import { FREE, type Vendor } from "./types";

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

export const resend: Vendor = {
  name: "resend",
  bareRoutes: ["/emails", "/emails/*"],
  baseUrl: (config) => config.baseUrls.resend,
  credentials(config, mode) {
    const key = config.secrets.resend[mode];
    return key ? { authorization: `Bearer ${key}` } : null;
  },
  upstreamPath: (path) => path,
  isPriced: (method, path) => method === "POST" && (path === "/emails" || path === "/emails/batch"),
  // Resend sends no request-id header: none is recorded rather than one made up.
  requestId: () => null,

  async price(input, ctx) {
    if (!resend.isPriced(input.method, input.path)) return FREE;
    if (!(input.contentType ?? "").toLowerCase().startsWith("application/json")) throw unpriceable("Resend takes JSON bodies");
    const parsed = parseStrictJson(new TextDecoder().decode(input.body));
    let count: number;
    if (input.path === "/emails") count = recipients(parsed);
    else if (Array.isArray(parsed)) count = parsed.reduce((sum: number, email) => sum + recipients(email), 0);
    else throw unpriceable("a batch must be a JSON array");
    return { micros: unitPriceMicros(ctx.prices.resendEmailUsd, count), needsHeadroom: false, source: "request", currency: "usd", amountMinor: null };
  },
};

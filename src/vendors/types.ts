import type { Config } from "../config";
import type { KeyMode, TrackedObject, VendorName } from "../store/types";

export interface PricingInput {
  method: string;
  path: string;
  query: URLSearchParams;
  contentType: string | null;
  body: Uint8Array;
  keyId: string;
}

export interface PricingContext {
  fx: Record<string, string>;
  prices: Config["prices"];
  findTracked(objectId: string): Promise<TrackedObject | null>;
}

export interface Settlement {
  costMicros: number;
  source: "request" | "response" | "estimate";
  currency: string | null;
  amountMinor: number | null;
  track?: TrackedObject;
}

/** What a call commits, read from the request before it is forwarded. */
export interface Quote {
  /** The hold: what the cap must have room for. */
  micros: number;
  /** The price is known only from the response: admit only while headroom is left. */
  needsHeadroom: boolean;
  source: Settlement["source"];
  currency: string | null;
  amountMinor: number | null;
  /** The cost of a 2xx answer; absent means the hold is the cost. */
  settle?(response: unknown): Settlement;
}

export const FREE: Quote = { micros: 0, needsHeadroom: false, source: "request", currency: null, amountMinor: null };

export interface Credentials {
  /** The Authorization header value the vendor expects. */
  authorization: string;
  /** Twilio's account SID, put into the path in place of the caller's. */
  accountSid?: string;
}

/** Everything vendor-specific. The proxy pipeline knows nothing else about a vendor. */
export interface Vendor {
  name: VendorName;
  /** Elysia routes of the vendor's bare paths (no /vendor prefix), e.g. "/v1/*". */
  bareRoutes: string[];
  baseUrl(config: Config): string;
  credentials(config: Config, mode: KeyMode): Credentials | null;
  /** The path sent upstream (and matched against the allowlist). */
  upstreamPath(path: string, creds: Credentials | null): string;
  /** Whether the call commits money (so `require_idempotency_key` applies). */
  isPriced(method: string, path: string): boolean;
  price(input: PricingInput, ctx: PricingContext): Promise<Quote>;
  requestId(headers: Headers): string | null;
}

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
  /**
   * Class 2 (SPEC §6): reads an object from the vendor with the real secret before the call, so the hold is what
   * the object says the call can move. Throws 502 `preflight_failed` when the read fails or is not a JSON object.
   */
  preflight(path: string): Promise<Record<string, unknown>>;
}

/** Where a cost came from, as audit rows say it (SPEC §8). */
export type CostSource = "request" | "response" | "object" | "hold" | "estimate" | "reconciled";

export interface Settlement {
  costMicros: number;
  source: CostSource;
  currency: string | null;
  amountMinor: number | null;
  track?: TrackedObject;
  /** Why the answer could not be priced (settled at the hold instead); logged. */
  unreadable?: string;
  /** Where the final price can be read later (a Twilio message or call), for the reconciler. */
  reconcilePath?: string;
}

/** What a call commits, read before it is forwarded. */
export interface Quote {
  /** The hold: what the cap must have room for, never less than what the call can move. */
  micros: number;
  source: CostSource;
  currency: string | null;
  amountMinor: number | null;
  /** The cost of a 2xx answer (parsed JSON, or null); absent means the hold is the cost. */
  settle?(response: unknown): Settlement;
}

export const FREE: Quote = { micros: 0, source: "request", currency: null, amountMinor: null };

/** The hold as the cost, with `source` saying why. */
export const atHold = (q: Quote, source: CostSource = q.source): Settlement => ({
  costMicros: q.micros,
  source,
  currency: q.currency,
  amountMinor: q.amountMinor,
});

/** An answer whose amount cannot be read or converted: it settles at the hold, never at $0 (SPEC §6). */
export const unreadableAnswer = (q: Quote, why: string): Settlement => ({ ...atHold(q, "hold"), unreadable: why });

export interface Credentials {
  /** Headers the vendor authenticates with (set on every forwarded call and pre-flight). */
  headers: Record<string, string>;
  /** Rewrites the job's path into the one sent upstream (Twilio puts the real account SID in). */
  upstreamPath(path: string): string;
  /** The answer as the job may see it: Twilio's carries the real account SID, written back as the placeholder. */
  publicAnswer?(body: ArrayBuffer): ArrayBuffer;
}

/** How a path is priced (SPEC §6): free, priced on POST, or a money mover Keybrake refuses to forward. */
export type PathClass = "free" | "priced" | "refused";

/** Everything vendor-specific. The proxy pipeline knows nothing else about a vendor. */
export interface Vendor {
  name: VendorName;
  /** Elysia routes of the vendor's bare paths (no /vendor prefix), e.g. "/v1/*". */
  bareRoutes: string[];
  baseUrl(config: Config): string;
  credentials(config: Config, mode: KeyMode): Credentials | null;
  /**
   * The path as allowlists and audit rows see it: Twilio's account segment stands as `{AccountSid}`, so the
   * real SID never reaches a job or an audit row.
   */
  publicPath(path: string): string;
  classify(method: string, path: string): PathClass;
  price(input: PricingInput, ctx: PricingContext): Promise<Quote>;
  requestId(headers: Headers): string | null;
  /** Request headers that change what the vendor does: part of the idempotency fingerprint and sent on pre-flights. */
  contextHeaders: string[];
  /** Whether the vendor honours a forwarded Idempotency-Key (its answer to a retry then speaks for the first attempt). */
  honoursIdempotencyKey: boolean;
  /** Reads a final price the answer did not carry (Twilio), from the object at `reconcilePath`. */
  finalPrice?(object: unknown, fx: Record<string, string>): Settlement | null;
}

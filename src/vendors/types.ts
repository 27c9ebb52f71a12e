import type { z } from "zod";
import type { KeyMode, TrackedObject } from "../ledger/types";
import type { Catalogue } from "./catalogue";

export interface PricingInput {
  method: string;
  path: string;
  query: URLSearchParams;
  contentType: string | null;
  body: Uint8Array;
  keyId: string;
  /** The `{name}` segments of the catalogue entry's path, in order (object ids). */
  ids: string[];
}

export interface PricingContext<Prices = unknown> {
  fx: Record<string, string>;
  /** The vendor's own prices, from its settings. */
  prices: Prices;
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
  /**
   * What the object had already moved when it was read before the call, deducted from the answer's total (a
   * capture's or a pay's new money). A retry's 2xx that replays the first attempt is then priced too low.
   */
  deductedMicros?: number;
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
  /** What is sent to the vendor instead of the job's body (an OpenAI stream asked to report its usage). */
  forwardBody?: Uint8Array;
  /**
   * Set when the request asks for a streamed answer: a 2xx `text/event-stream` is then passed to the job chunk by
   * chunk as it arrives, and read on its way by a watcher made for it.
   */
  stream?(): StreamWatcher;
  /**
   * Who the call moves money to or from (SPEC §14): a Stripe customer (null: the call names none), a Twilio
   * destination. A key's per-customer or per-destination cap counts it under them.
   */
  counterparty?: Counterparty;
}

export interface Counterparty {
  kind: "customer" | "destination";
  id: string | null;
}

/** Reads a streamed answer as it passes, for the settlement once it has ended. */
export interface StreamWatcher {
  /** Each chunk, as the vendor sent it. */
  chunk(bytes: Uint8Array): void;
  /**
   * Once the stream has ended: its settlement, or null when it ended before stating its final cost (cut off, or
   * an error event): the call is then ambiguous at its hold.
   */
  settlement(): Settlement | null;
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
}

/** A secret sent in one header as `<prefix><secret>`, or null when the mode has none. */
const headerCredentials = (header: string, prefix: string, secret: string | undefined): Credentials | null =>
  secret ? { headers: { [header]: `${prefix}${secret}` }, upstreamPath: (path) => path } : null;

/** A bearer secret (Stripe, Resend, OpenAI), or null when the mode has none. */
export const bearerCredentials = (secret: string | undefined): Credentials | null => headerCredentials("authorization", "Bearer ", secret);

/** An `x-api-key` secret (Anthropic), or null when the mode has none. */
export const apiKeyCredentials = (secret: string | undefined): Credentials | null => headerCredentials("x-api-key", "", secret);

/** Live and test credentials from the two variables that hold their secrets. */
export const credentialsByMode = (
  env: Record<string, unknown>,
  liveVariable: string,
  testVariable: string,
  make: (secret: string | undefined) => Credentials | null,
) => ({
  live: make(env[liveVariable] as string | undefined),
  test: make(env[testVariable] as string | undefined),
});

/** Live and test bearer credentials (Stripe, Resend, OpenAI). */
export const bearerCredentialsByMode = (env: Record<string, unknown>, liveVariable: string, testVariable: string) =>
  credentialsByMode(env, liveVariable, testVariable, bearerCredentials);

/** How a priced catalogue entry is priced: what the call commits, read before it is forwarded. */
export type PriceFn<Prices = unknown> = (input: PricingInput, ctx: PricingContext<Prices>) => Promise<Quote>;

/** What a vendor's variables configure: where it is, its credentials per mode, its prices. */
export interface VendorSettings<Prices = unknown> {
  baseUrl: string;
  /** Null for a mode without a real secret: its calls get 503 vendor_not_configured. */
  credentials: Record<KeyMode, Credentials | null>;
  prices: Prices;
  /** How long after a call the reconciler first reads a final price the answer did not carry. */
  reconcileAfterMs?: number;
  /** What the operator's settings let through unpriced, logged at every start (SPEC §2). */
  startNotices?: string[];
}

/**
 * Everything vendor-specific, in one module per vendor (src/vendors/<name>.ts) registered in vendors/index.ts.
 * The pipeline, the configuration and the store know nothing else about a vendor.
 */
export interface Vendor<Prices = unknown> {
  name: string;
  /** Its KEYBRAKE_* variables, with their defaults: merged into the configuration's schema. */
  env: z.ZodRawShape;
  /** Those of its variables that hold secrets: they also accept NAME_FILE and are never logged. */
  secretVariables: string[];
  /** Its parsed variables (all of the configuration's) -> its settings. Throws ConfigError naming a variable. */
  configure(env: Record<string, unknown>): VendorSettings<Prices>;
  /** Elysia routes of the vendor's bare paths (no /vendor prefix), e.g. "/v1/*": served for keys of this vendor. */
  bareRoutes: string[];
  /**
   * The path as allowlists and audit rows see it: Twilio's account segment stands as `{AccountSid}`, so the
   * real SID never reaches a job or an audit row.
   */
  publicPath(path: string): string;
  /** Every endpoint Keybrake forwards for this vendor, with its class (SPEC §6); anything else is refused. */
  catalogue: Catalogue<PriceFn<Prices>>;
  /**
   * Secret variables scrubbed from answers as something other than "[redacted]": Twilio's account SID becomes
   * the `{AccountSid}` placeholder, so the URIs in its answers still work through Keybrake.
   */
  scrubAs?: Record<string, string>;
  requestId(headers: Headers): string | null;
  /** Request headers that change what the vendor does: part of the idempotency fingerprint and sent on pre-flights. */
  contextHeaders: string[];
  /**
   * Whether the vendor honours a forwarded Idempotency-Key: a retry of an ambiguous call is then forwarded again
   * on the same ledger entry, and `speaksForFirstAttempt` says which of its answers resolve that entry.
   */
  honoursIdempotencyKey: boolean;
  /**
   * SPEC §7: whether a retry's non-2xx answer (status, parsed JSON body or null) is one the vendor gives only when
   * no attempt under the forwarded Idempotency-Key has run or is running (a replayed stored error, a validation
   * error), so the ambiguous first attempt moved no money. Anything else leaves the entry ambiguous at its hold.
   */
  speaksForFirstAttempt?(status: number, headers: Headers, body: unknown): boolean;
  /** Response headers that tell the vendor's SDKs not to retry a call Keybrake refused for good (a conflict). */
  doNotRetryHeaders: Record<string, string>;
  /** Reads a final price the answer did not carry (Twilio), from the object at its `reconcilePath`. */
  finalPrice?(object: unknown, fx: Record<string, string>): Settlement | null;
}

/** A vendor of any prices, as the registry holds them. */
// biome-ignore lint/suspicious/noExplicitAny: each vendor types its own prices; the registry holds all kinds.
export type AnyVendor = Vendor<any>;

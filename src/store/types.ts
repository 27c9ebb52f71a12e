/**
 * What the rest of Keybrake may ask of a store. Every method returns a Promise so that a PostgreSQL store can
 * sit beside the SQLite one without touching routes or the proxy. Money is integer micro-dollars, times are ms.
 */
export type VendorName = "stripe" | "twilio" | "resend";
export type KeyMode = "live" | "test";

export interface KeyRecord {
  id: string;
  keyHint: string;
  vendor: VendorName;
  mode: KeyMode;
  label: string | null;
  dailyCapMicros: number | null;
  totalCapMicros: number | null;
  allowedEndpoints: string[];
  maxRequestsPerMinute: number | null;
  requireIdempotencyKey: boolean;
  metadata: Record<string, string>;
  status: "active" | "revoked";
  createdAt: number;
  expiresAt: number;
  revokedAt: number | null;
  spentTotalMicros: number;
  heldTotalMicros: number;
  calls: number;
  lastUsedAt: number | null;
}

export type NewKey = Omit<KeyRecord, "revokedAt" | "spentTotalMicros" | "heldTotalMicros" | "calls" | "lastUsedAt" | "status"> & {
  keyHash: string;
};

export interface KeyPatch {
  dailyCapMicros?: number | null;
  totalCapMicros?: number | null;
  expiresAt?: number;
  maxRequestsPerMinute?: number | null;
}

export interface KeyFilter {
  label?: string;
  labelPrefix?: string;
  vendor?: VendorName;
  status?: "active" | "revoked" | "expired";
  limit: number;
  cursor?: number;
}

export interface Page<T> {
  data: T[];
  nextCursor: number | null;
}

export interface DayUsage {
  settledMicros: number;
  heldMicros: number;
}

export type HoldResult =
  | { admitted: true }
  | { admitted: false; reason: "daily_cap" | "total_cap" | "revoked" };

export interface HoldRequest {
  holdId: string;
  keyId: string;
  day: string;
  micros: number;
  /** Price known only from the response: admit only while some headroom is left. */
  needsHeadroom: boolean;
  now: number;
}

export type Outcome = "settled" | "released" | "ambiguous";

export interface AuditRow {
  id: string;
  at: number;
  keyId: string | null;
  label: string | null;
  vendor: VendorName | null;
  mode: KeyMode | null;
  method: string;
  path: string;
  status: number;
  decision: string;
  holdMicros: number;
  costMicros: number;
  costSource: "request" | "response" | "estimate" | "replay" | null;
  currency: string | null;
  amountMinor: number | null;
  vendorRequestId: string | null;
  idempotencyKey: string | null;
  upstreamMs: number | null;
  overheadMs: number | null;
  clientIp: string | null;
}

/** What an object created through Keybrake (a Stripe PaymentIntent) has already been charged on the cap. */
export interface TrackedObject {
  objectId: string;
  keyId: string;
  currency: string;
  amountMinor: number;
  countedMicros: number;
}

export interface SettleRequest {
  keyId: string;
  day: string;
  /** The hold to settle; absent for calls that held nothing. */
  holdId?: string;
  holdMicros: number;
  outcome: Outcome;
  costMicros: number;
  now: number;
  audit: AuditRow;
  track?: TrackedObject;
}

export interface AuditFilter {
  keyId?: string;
  label?: string;
  labelPrefix?: string;
  vendor?: VendorName;
  decision?: string;
  since?: number;
  until?: number;
  limit: number;
  cursor?: number;
}

export interface AdminEvent {
  seq: number;
  at: number;
  actor: string;
  action: string;
  target: string | null;
  details: Record<string, unknown> | null;
}

export interface Store {
  // keys
  insertKey(key: NewKey): Promise<KeyRecord>;
  findKeyById(id: string): Promise<KeyRecord | null>;
  findKeyByHash(hash: string): Promise<KeyRecord | null>;
  listKeys(filter: KeyFilter, now: number): Promise<Page<KeyRecord>>;
  revokeKey(id: string, now: number): Promise<KeyRecord | null>;
  revokeKeys(by: { ids: string[] } | { labelPrefix: string }, now: number): Promise<string[]>;
  updateKey(id: string, patch: KeyPatch): Promise<KeyRecord | null>;
  dayUsage(keyIds: string[], day: string): Promise<Map<string, DayUsage>>;
  // ledger
  holdSpend(req: HoldRequest): Promise<HoldResult>;
  settleCall(req: SettleRequest): Promise<DayUsage>;
  findTracked(objectId: string): Promise<TrackedObject | null>;
  // audit
  recordAudit(row: AuditRow): Promise<void>;
  listAudit(filter: AuditFilter): Promise<Page<AuditRow>>;
  // admin
  recordAdminEvent(event: Omit<AdminEvent, "seq">): Promise<void>;
  listAdminEvents(limit: number, cursor?: number): Promise<Page<AdminEvent>>;
  getSetting(name: string): Promise<string | null>;
  setSetting(name: string, value: string): Promise<void>;
  // operations
  checkWritable(): Promise<boolean>;
  close(): void;
}

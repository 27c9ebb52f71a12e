import type { auditEvents } from "./schema";

// The ledger's own vocabulary (holds, their results, balances): the rule book's, re-exported for the stores.
export type * from "../ledger/types";
import type { HoldRequest, HoldResult, IdempotencyResult, KeyMode, Outcome, TrackedObject } from "../ledger/types";

/**
 * What the rest of Keybrake may ask of a store. Every method returns a Promise so that a PostgreSQL store can
 * sit beside the SQLite one without touching routes or the proxy. Money is integer micro-dollars, times are ms.
 */
/** A registered vendor's name (src/vendors/index.ts): the store holds any, vendors are plug-ins. */
export type VendorName = string;

export interface KeyRecord {
  id: string;
  keyHint: string;
  vendor: VendorName;
  mode: KeyMode;
  label: string | null;
  /** Who minted the key; the vendor's idempotency keys are derived from it (SPEC §7). */
  mintedBy: string;
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
  /** Fractions of the daily and of the lifetime cap whose crossing fires `cap_threshold` (SPEC §12). */
  alertThresholds: number[];
  /** The budget it draws from (SPEC §14), set at mint, never changed. */
  budgetId: string | null;
  /** Per UTC day and counterparty: a Stripe customer, a Twilio destination (SPEC §14). */
  perCustomerCapMicros: number | null;
  perDestinationCapMicros: number | null;
  /** A priced call above this waits for a person's approval (SPEC §15); its request lives `approvalTtlMs`. */
  approvalAboveMicros: number | null;
  approvalTtlMs: number | null;
  /** `observe`: would-be refusals of caps, budgets and approvals are audited, not enforced (SPEC §16). */
  enforcement: "enforce" | "observe";
}

/** What a proxied call needs to know about its key: everything but the counters every call moves. */
export type KeyPolicy = Omit<KeyRecord, "revokedAt" | "spentTotalMicros" | "heldTotalMicros" | "calls" | "lastUsedAt" | "alertThresholds">;

export type NewKey = Omit<
  KeyRecord,
  | "revokedAt"
  | "spentTotalMicros"
  | "heldTotalMicros"
  | "calls"
  | "lastUsedAt"
  | "status"
  | "alertThresholds"
  | "budgetId"
  | "perCustomerCapMicros"
  | "perDestinationCapMicros"
  | "approvalAboveMicros"
  | "approvalTtlMs"
  | "enforcement"
> & {
  keyHash: string;
  /** Default: [0.5, 0.8, 1]. */
  alertThresholds?: number[];
  budgetId?: string | null;
  perCustomerCapMicros?: number | null;
  perDestinationCapMicros?: number | null;
  approvalAboveMicros?: number | null;
  approvalTtlMs?: number | null;
  enforcement?: "enforce" | "observe";
};

/** A person's approval of one call (SPEC §15), as the API shows it. */
export interface ApprovalRecord {
  /** `apr_…` */
  id: string;
  keyId: string;
  label: string | null;
  vendor: string | null;
  idempotencyKey: string;
  method: string;
  path: string;
  priceMicros: number;
  status: "pending" | "approved" | "denied" | "expired" | "used";
  requestedAt: number;
  /** The token (id and name) that minted the key whose call asked, when known. */
  requestedBy: string | null;
  expiresAt: number;
  decidedAt: number | null;
  decidedBy: string | null;
  reason: string | null;
}

export interface ApprovalFilter {
  status?: ApprovalRecord["status"];
  /** Only the approvals of keys this token minted (an issuer's view). */
  mintedBy?: string;
  limit: number;
  cursor?: number;
}

/** A budget (SPEC §14): a pool of caps over the keys that draw from it and the budgets below it. */
export interface BudgetRecord {
  id: string;
  name: string;
  /** The budget above it (at most three levels), set at creation, never changed. */
  parentId: string | null;
  dailyCapMicros: number | null;
  totalCapMicros: number | null;
  /** Fractions of its caps whose crossing fires `budget_threshold`. */
  alertThresholds: number[];
  spentTotalMicros: number;
  heldTotalMicros: number;
  createdAt: number;
  createdBy: string;
}

/** A budget with its usage: today's settled and held, and the active keys drawing from it directly. */
export type BudgetWithUsage = BudgetRecord & { today: DayUsage; activeKeys: number };

export type NewBudget = Pick<BudgetRecord, "id" | "name" | "parentId" | "dailyCapMicros" | "totalCapMicros" | "createdAt" | "createdBy"> & {
  /** Default: [0.5, 0.8, 1]. */
  alertThresholds?: number[];
};

export interface BudgetPatch {
  name?: string;
  dailyCapMicros?: number | null;
  totalCapMicros?: number | null;
  alertThresholds?: number[];
}

export interface KeyPatch {
  dailyCapMicros?: number | null;
  totalCapMicros?: number | null;
  expiresAt?: number;
  maxRequestsPerMinute?: number | null;
  alertThresholds?: number[];
}

export interface KeyFilter {
  label?: string;
  labelPrefix?: string;
  vendor?: VendorName;
  /** Only the keys that draw from this budget. */
  budgetId?: string;
  status?: "active" | "revoked" | "expired";
  /** Only the keys this token minted (an issuer's view, SPEC §10). */
  mintedBy?: string;
  limit: number;
  cursor?: number;
}

/** Which keys a bulk revocation takes: every condition given must hold (at least one is required). */
export interface KeySelection {
  ids?: string[];
  labelPrefix?: string;
  mintedBy?: string;
}

export interface Page<T> {
  data: T[];
  nextCursor: number | null;
}

export interface DayUsage {
  settledMicros: number;
  heldMicros: number;
}

/**
 * One audit row (SPEC §8), as the audit table holds it (schema.ts), with the columns' meanings narrowed.
 * `requests`: how many requests the row stands for when more than one (an aggregate of unauthenticated denials).
 */
export type AuditRow = Omit<typeof auditEvents.$inferSelect, "seq" | "hash" | "mode" | "costSource" | "requests"> & {
  mode: KeyMode | null;
  costSource: "request" | "response" | "object" | "hold" | "estimate" | "reconciled" | "replay" | null;
  requests?: number;
};

/** An audit column's value, as the hash chain reads it (audit-chain.ts). */
export type ChainValue = string | number | null;

/** An audit row as the chain reads it back: its place, its chain, its stored hash (null before the chain) and its values. */
export interface ChainRow {
  seq: number;
  chain: string;
  hash: string | null;
  /** In the canonical form's order (audit-chain.ts CHAIN_FIELDS). */
  values: ChainValue[];
}

/**
 * A chain's hash after its row `seq`, kept apart from the rows: `pruned` stands for the rows retention deleted
 * (the first row left links to it), `sealed` for rows from before the chain, which carry no hash of their own.
 */
export interface Checkpoint {
  chain: string;
  seq: number;
  hash: string;
  at: number;
  reason: "sealed" | "pruned";
}

/** Where a chain stands: its newest row (or the checkpoint that replaced it), as /audit/head reports it. */
export interface ChainHead {
  chain: string;
  seq: number;
  hash: string;
}

export interface SettleRequest {
  keyId: string;
  day: string;
  /** The ledger entry to settle; absent for calls that have none. */
  holdId?: string;
  outcome: Outcome;
  costMicros: number;
  now: number;
  audit: AuditRow;
  track?: TrackedObject;
  idempotency?: { key: string; result: IdempotencyResult };
  /** Where and from when the vendor's final price can be read (the reconciler re-settles the entry to it). */
  reconcile?: { path: string; at: number };
}

/** A settled entry whose final price the vendor states only later (SPEC §6: Twilio), due to be read. */
export interface DueReconciliation {
  id: string;
  keyId: string;
  label: string | null;
  vendor: VendorName;
  mode: KeyMode;
  holdMicros: number;
  costMicros: number;
  /** Where the vendor states the final price, as a public path (Twilio's account as `{AccountSid}`). */
  reconcilePath: string;
  /** Reads that found no final price yet. */
  attempts: number;
  settledAt: number;
  /** The call that made the entry. */
  method: string;
  path: string;
}

export interface ReconcileRequest {
  /** The ledger entry. */
  id: string;
  /** Its final price. */
  costMicros: number;
  /** The reconciliation's audit row; its cost is set to the difference from what the entry counted. */
  audit: AuditRow;
}

export interface HoldRecord {
  id: string;
  keyId: string;
  label: string | null;
  day: string;
  holdMicros: number;
  costMicros: number | null;
  state: "held" | "settled" | "released" | "ambiguous" | "orphaned";
  createdAt: number;
  settledAt: number | null;
}

export interface AuditFilter {
  /** The audit row's id: the X-Keybrake-Request-Id a job saw. */
  requestId?: string;
  keyId?: string;
  /** Only rows of keys this token minted (an issuer's view, SPEC §10). */
  mintedBy?: string;
  label?: string;
  labelPrefix?: string;
  vendor?: VendorName;
  decision?: string;
  since?: number;
  until?: number;
  limit: number;
  cursor?: number;
}

export type SpendGroup = "label" | "key" | "vendor" | "day";

export interface SpendRow {
  group: string | null;
  calls: number;
  allowed: number;
  denied: number;
  spendMicros: number;
  /** The part of spendMicros that is ambiguous entries still counted at their hold (see HoldRecord `ambiguous`). */
  ambiguousMicros: number;
}

export interface AdminEvent {
  seq: number;
  at: number;
  actor: string;
  action: string;
  target: string | null;
  details: Record<string, unknown> | null;
  /** The token that acted (`tok_…`, "admin" for the bootstrap token); null for the CLI. */
  tokenId: string | null;
  tokenName: string | null;
}

export type Role = "admin" | "issuer" | "viewer" | "approver";

export interface TokenRecord {
  id: string;
  name: string;
  role: Role;
  tokenHint: string;
  /** An issuer's policy as it was given (the API's JSON); null for other roles. */
  policy: Record<string, unknown> | null;
  createdAt: number;
  createdBy: string;
  expiresAt: number | null;
  revokedAt: number | null;
}

export type NewToken = Omit<TokenRecord, "revokedAt"> & { tokenHash: string };

/**
 * The limits of an issuer's policy that depend on what it already minted, checked and recorded in the same
 * transaction as the key is written, so concurrent mints cannot pass them together.
 */
export interface Issuance {
  tokenId: string;
  /** What the key can spend over its life (a mint), or that amount after a PATCH (the increase is recorded). */
  micros: number;
  now: number;
  /** Start of the UTC day `now` is in: `issued_usd_per_day` sums from here. */
  dayStart: number;
  maxUsdPerDayMicros: number | null;
  maxKeysPerHour: number | null;
}

export type IssuanceResult<T> =
  | { kind: "ok"; value: T }
  | { kind: "refused"; rule: "issued_usd_per_day" | "max_keys_per_hour"; used: number };

/**
 * What a proxied call runs on its own path. These neither wait for the queued writes to commit nor force them
 * to: that would end every group commit after one call.
 */
export interface CallPathStore {
  /** The key a proxied call presents (by SHA-256 of the secret); cached, see keys.ts. */
  findKeyByHash(hash: string): Promise<KeyPolicy | null>;
  /**
   * The fingerprint remembered for a job's Idempotency-Key, or null. Read before pricing so that a conflicting
   * reuse is refused before anything (a pre-flight included) reaches the vendor; a fingerprint never changes
   * once claimed, so this read needs no queued settlement committed first.
   */
  idempotencyFingerprint(keyId: string, idempotencyKey: string, now: number): Promise<string | null>;
  holdSpend(req: HoldRequest): Promise<HoldResult>;
  /** Closes the call's entry and writes its audit row; resolves to what the call added to spend (the row's cost). */
  settleCall(req: SettleRequest): Promise<number>;
  recordAudit(row: AuditRow): Promise<void>;
}

/**
 * Everything else. Read-your-writes: each of these first commits what the call path has queued, so an admin
 * read, a spend query or the pricing of a confirm right after its create sees every answered call settled.
 */
export interface AdminStore {
  // budgets (SPEC §14); their money moves with their keys' in the ledger
  insertBudget(budget: NewBudget): Promise<BudgetRecord>;
  /** With usage on `day` (a UTC day). */
  findBudget(id: string, day: string, now: number): Promise<BudgetWithUsage | null>;
  /** Every budget with its usage on `day`, oldest first. */
  listBudgets(day: string, now: number): Promise<BudgetWithUsage[]>;
  updateBudget(id: string, patch: BudgetPatch): Promise<BudgetRecord | null>;
  /** Deleted, or refused while an active key or a budget below draws from it. */
  deleteBudget(id: string, now: number): Promise<"deleted" | "in_use" | "not_found">;
  // approvals (SPEC §15): requested by a hold, decided by a person, lapsed by the sweep
  findApproval(id: string): Promise<ApprovalRecord | null>;
  listApprovals(filter: ApprovalFilter): Promise<Page<ApprovalRecord>>;
  /** The approvals of these calls (a key and its Idempotency-Key each), for the audit rows that name them. */
  approvalsOfCalls(calls: { keyId: string; idempotencyKey: string }[]): Promise<ApprovalRecord[]>;
  /** A person's decision: `decided`, or `not_pending` (someone decided first, or it lapsed). */
  decideApproval(
    id: string,
    decision: "approved" | "denied",
    by: string,
    reason: string | null,
    now: number,
  ): Promise<"decided" | "not_pending" | "not_found">;
  /** Lapses approvals past their expiry (pending, or approved and never used), their holds released; how many. */
  expireApprovals(now: number, limit: number): Promise<number>;
  // keys
  insertKey(key: NewKey): Promise<KeyRecord>;
  findKeyById(id: string): Promise<KeyRecord | null>;
  listKeys(filter: KeyFilter, now: number): Promise<Page<KeyRecord>>;
  /** Revokes the key (a `key_revoked` alert in the same transaction); `by` is who, as the alert names them. */
  revokeKey(id: string, now: number, by?: string): Promise<KeyRecord | null>;
  revokeKeys(by: KeySelection, now: number, actor?: string): Promise<string[]>;
  updateKey(id: string, patch: KeyPatch): Promise<KeyRecord | null>;
  /** insertKey within an issuer's limits (`used`: micro-dollars issued today, or keys minted in the last hour). */
  insertKeyWithin(key: NewKey, issuance: Issuance): Promise<IssuanceResult<KeyRecord>>;
  /** updateKey within an issuer's limits: what the key can spend beyond what it counted is issued today. */
  updateKeyWithin(id: string, patch: KeyPatch, issuance: Issuance): Promise<IssuanceResult<KeyRecord | null>>;
  dayUsage(keyIds: string[], day: string): Promise<Map<string, DayUsage>>;
  // ledger
  /** At start-up: holds a dead process never settled become `orphaned` (still counted as held) and are audited. */
  recoverOrphanedHolds(now: number): Promise<HoldRecord[]>;
  listHolds(state: "held" | "orphaned" | "ambiguous", limit: number): Promise<HoldRecord[]>;
  findHold(id: string): Promise<HoldRecord | null>;
  /** An operator's decision on an orphaned or ambiguous hold: spent (at `costMicros`) or released; null if it is neither. */
  resolveHold(id: string, outcome: "settled" | "released", costMicros: number, now: number): Promise<HoldRecord | null>;
  pruneIdempotency(now: number, batch: number): Promise<number>;
  findTracked(objectId: string): Promise<TrackedObject | null>;
  // reconciliation (store/reconcile.ts)
  /** Entries whose final price is due to be read (reconcile_at <= now), the longest due first. */
  dueReconciliations(now: number, limit: number): Promise<DueReconciliation[]>;
  /** Re-settles an entry at its final price and audits the difference; false when it no longer awaits one. */
  reconcileEntry(req: ReconcileRequest): Promise<boolean>;
  /** When to read the entry's final price next; null stops trying (the entry keeps its cost). */
  postponeReconciliation(id: string, nextAt: number | null): Promise<void>;
  // audit
  listAudit(filter: AuditFilter): Promise<Page<AuditRow>>;
  spendBy(group: SpendGroup, filter: Omit<AuditFilter, "limit" | "cursor">): Promise<SpendRow[]>;
  /** Deletes the oldest rows, older than `before`, as a prefix of every chain, leaving a checkpoint (SPEC §19). */
  pruneAudit(before: number, batch: number): Promise<number>;
  // the audit's hash chain (SPEC §19, audit-chain.ts)
  /** Each chain's head: its newest row, or the checkpoint that stands for it. */
  auditHeads(): Promise<ChainHead[]>;
  auditCheckpoints(): Promise<Checkpoint[]>;
  /** Up to `limit` rows after `afterSeq`, every chain's, in seq order. */
  auditChainPage(afterSeq: number, limit: number): Promise<ChainRow[]>;
  /** The stored hash of `chain`'s row just before `seq`; null when there is none or it has none. */
  auditHashBefore(chain: string, seq: number): Promise<string | null>;
  /** The seq of the first row at or after `at`; null when there is none. */
  auditSeqSince(at: number): Promise<number | null>;
  countOpenHolds(): Promise<number>;
  // admin
  recordAdminEvent(event: Omit<AdminEvent, "seq">): Promise<void>;
  listAdminEvents(limit: number, cursor?: number, tokenId?: string): Promise<Page<AdminEvent>>;
  // tokens (SPEC §10)
  insertToken(token: NewToken): Promise<TokenRecord>;
  /** Read from the database on every call (no cache): a revoked token fails on its very next request. */
  findTokenByHash(hash: string): Promise<(TokenRecord & { tokenHash: string }) | null>;
  findTokenById(id: string): Promise<TokenRecord | null>;
  listTokens(limit: number, cursor?: number): Promise<Page<TokenRecord>>;
  revokeToken(id: string, now: number): Promise<TokenRecord | null>;
  getSetting(name: string): Promise<string | null>;
  setSetting(name: string, value: string): Promise<void>;
  // alerts (SPEC §12, store/alerts.ts)
  insertWebhook(webhook: NewWebhook): Promise<WebhookRecord>;
  /** A webhook not deleted, with its secret (to sign a test delivery); null when there is none. */
  findWebhook(id: string): Promise<(WebhookRecord & { secret: string }) | null>;
  listWebhooks(): Promise<WebhookRecord[]>;
  /** Deletes the webhook; its pending deliveries are cancelled. Null when there is no such webhook. */
  deleteWebhook(id: string, now: number): Promise<WebhookRecord | null>;
  listDeliveries(filter: DeliveryFilter): Promise<Page<DeliveryRecord>>;
  listAlertEvents(filter: AlertEventFilter): Promise<Page<AlertEventRecord>>;
  /** Pending deliveries due by `now`, the longest due first, with what the worker needs to send them. */
  dueDeliveries(now: number, limit: number, skip: readonly number[]): Promise<DueDelivery[]>;
  /** An attempt's result: delivered, pending again from `nextAttemptAt`, or failed for good. */
  recordDeliveryAttempt(attempt: DeliveryAttempt): Promise<void>;
  countPendingDeliveries(): Promise<number>;
  /** Deletes events older than `before` whose deliveries are all finished, with those deliveries and old marks. */
  pruneAlerts(before: number, batch: number): Promise<number>;
  // operations
  checkWritable(): Promise<boolean>;
  /** Commits what is queued and closes. */
  close(): Promise<void>;
}

/** What the rest of Keybrake may ask of any store: SQLite (index.ts) or PostgreSQL (pg/index.ts, SPEC §13). */
export type Store = CallPathStore & AdminStore;

/** The SQLite store's own operations, which another store has no counterpart of. */
export interface SqliteStore extends Store {
  kind: "sqlite";
  /** A consistent copy of the whole database, taken while it is in use (VACUUM INTO), created owner-only. */
  backupTo(path: string): Promise<void>;
  /** The server's mode: WAL checkpoints on a background thread instead of on commits; `log` hears if it fails. */
  checkpointInBackground(log?: (message: string) => void): void;
}

/** What an instance counted as spend for a vendor (`keybrake_spend_usd_total`), and the corrections. */
export interface SpendCounter {
  vendor: string;
  spendMicros: number;
  correctedMicros: number;
}

/** The alert events of SPEC §12. */
export const ALERT_EVENTS = [
  "cap_threshold",
  "cap_exhausted",
  "key_revoked",
  "holds_need_attention",
  "price_differential",
  "budget_threshold",
  "budget_exhausted",
  "approval_requested",
  "approval_decided",
] as const;
export type AlertEventType = (typeof ALERT_EVENTS)[number];

export interface WebhookRecord {
  /** `wh_…` */
  id: string;
  url: string;
  events: AlertEventType[];
  labelPrefix: string | null;
  format: "json" | "slack";
  createdAt: number;
  createdBy: string;
  deletedAt: number | null;
}

export type NewWebhook = Omit<WebhookRecord, "deletedAt"> & { secret: string };

export interface AlertEventRecord {
  seq: number;
  id: string;
  type: AlertEventType;
  at: number;
  /** The key as it was when the event fired. */
  keyId: string | null;
  label: string | null;
  vendor: string | null;
  mode: string | null;
  /** The event's own fields (caps, spend, thresholds, holds), as its webhooks receive them. */
  data: Record<string, unknown>;
}

export interface AlertEventFilter {
  type?: AlertEventType;
  keyId?: string;
  labelPrefix?: string;
  limit: number;
  cursor?: number;
}

export type DeliveryStatus = "pending" | "delivered" | "failed" | "cancelled";

export interface DeliveryRecord {
  seq: number;
  eventId: string;
  eventType: AlertEventType;
  keyId: string | null;
  label: string | null;
  webhookId: string;
  /** The destination's origin (scheme, host, port): a Slack webhook's path is a credential. */
  url: string | null;
  status: DeliveryStatus;
  attempts: number;
  createdAt: number;
  nextAttemptAt: number | null;
  lastAttemptAt: number | null;
  lastStatus: number | null;
  lastError: string | null;
  deliveredAt: number | null;
}

export interface DeliveryFilter {
  status?: DeliveryStatus;
  webhookId?: string;
  eventId?: string;
  limit: number;
  cursor?: number;
}

/** A delivery the worker is to send: the event, and where and how. */
export interface DueDelivery {
  /** The delivery's row: the worker skips those it is sending now (`skip`). */
  seq: number;
  attempts: number;
  createdAt: number;
  event: AlertEventRecord;
  webhook: { id: string; url: string; format: "json" | "slack"; secret: string };
}

export interface DeliveryAttempt {
  seq: number;
  at: number;
  outcome: "delivered" | "retry" | "failed";
  status: number | null;
  error: string | null;
  nextAttemptAt: number | null;
}

/**
 * Counts a call of a key with `max_requests_per_minute`; resolves to seconds to wait when over, else 0. In memory
 * for one process (proxy/rate-limit.ts); shared by the fleet on PostgreSQL (pg/rate.ts).
 */
export interface RequestLimiter {
  take(keyId: string, limit: number, now: number): number | Promise<number>;
}

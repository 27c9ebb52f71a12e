import { sql } from "drizzle-orm";
import {
  bigint,
  boolean,
  check,
  customType,
  doublePrecision,
  index,
  integer,
  pgTable,
  primaryKey,
  text,
  uniqueIndex,
} from "drizzle-orm/pg-core";
import { DENIED_ROWS, OPEN_HOLDS } from "../schema";

/**
 * The PostgreSQL twin of ../schema.ts: the same tables, columns and indexes, so both stores answer the same
 * queries. Money columns are integer micro-dollars (1 USD = 1,000,000); times are Unix milliseconds. Both are
 * bigint, which the client returns as strings (read them with `num()`). JSON-valued columns are text holding
 * JSON, as in SQLite: JSON.stringify on write, JSON.parse on read.
 */

/** A bigint read as a JS number: money and times stay below 2^53. */
const int8 = (name: string) => bigint(name, { mode: "number" });

/** A table's own sequence number, for cursors: never reused, even after rows are deleted. */
const seq = () => int8("seq").primaryKey().generatedByDefaultAsIdentity();

const bytea = customType<{ data: Buffer; driverData: Buffer }>({ dataType: () => "bytea" });

export const vaultKeys = pgTable(
  "vault_keys",
  {
    seq: seq(),
    id: text("id").notNull(),
    keyHash: text("key_hash").notNull(),
    keyHint: text("key_hint").notNull(),
    // Any registered vendor's name (src/vendors/index.ts).
    vendor: text("vendor").notNull(),
    mode: text("mode", { enum: ["live", "test"] }).notNull(),
    label: text("label"),
    dailyCapMicros: int8("daily_cap_micros"),
    totalCapMicros: int8("total_cap_micros"),
    // JSON: string[].
    allowedEndpoints: text("allowed_endpoints").notNull(),
    maxRequestsPerMinute: integer("max_requests_per_minute"),
    requireIdempotencyKey: boolean("require_idempotency_key").notNull().default(false),
    // JSON: Record<string, string>.
    metadata: text("metadata").notNull(),
    status: text("status", { enum: ["active", "revoked"] })
      .notNull()
      .default("active"),
    createdAt: int8("created_at").notNull(),
    expiresAt: int8("expires_at").notNull(),
    revokedAt: int8("revoked_at"),
    spentTotalMicros: int8("spent_total_micros").notNull().default(0),
    heldTotalMicros: int8("held_total_micros").notNull().default(0),
    calls: int8("calls").notNull().default(0),
    lastUsedAt: int8("last_used_at"),
    // Who minted the key ("admin" for the bootstrap token and the CLI): the vendor's idempotency keys are
    // derived from it, so retries under fresh keys of one minter de-duplicate and two minters never collide.
    mintedBy: text("minted_by").notNull().default("admin"),
    // JSON: the fractions of the daily and of the lifetime cap whose crossing (by settled spend) fires
    // `cap_threshold` (SPEC §12).
    alertThresholds: text("alert_thresholds").notNull().default("[0.5,0.8,1]"),
    // The budget the key draws from (SPEC §14), set at mint and never changed; its holds count up the budget's chain.
    budgetId: text("budget_id"),
    // Per UTC day and counterparty (a Stripe customer, a Twilio destination): the most one of them may be moved.
    perCustomerCapMicros: int8("per_customer_cap_micros"),
    perDestinationCapMicros: int8("per_destination_cap_micros"),
    // A priced call above this waits for a person's approval (SPEC §15), its request kept this long.
    approvalAboveMicros: int8("approval_above_micros"),
    approvalTtlMs: int8("approval_ttl_ms"),
    // `observe`: never refused for its caps, budgets, counterparty caps or approvals; would-be refusals audited (SPEC §16).
    enforcement: text("enforcement", { enum: ["enforce", "observe"] })
      .notNull()
      .default("enforce"),
  },
  (t) => [
    uniqueIndex("vault_keys_id").on(t.id),
    index("vault_keys_budget").on(t.budgetId).where(sql`${t.budgetId} IS NOT NULL`),
    uniqueIndex("vault_keys_key_hash").on(t.keyHash),
    // text_pattern_ops: a label prefix (LIKE 'prefix%') is a range of this index whatever the database's collation.
    index("vault_keys_label").on(t.label.op("text_pattern_ops")),
    // An issuer token lists, revokes and reads the audit of only the keys it minted (SPEC §10).
    index("vault_keys_minted_by").on(t.mintedBy, t.seq),
    check("vault_keys_has_cap", sql`${t.dailyCapMicros} IS NOT NULL OR ${t.totalCapMicros} IS NOT NULL`),
  ],
);

/** Per key and UTC day: what is settled and what is held. The cap check reads one row, never sums the ledger. */
export const spendDays = pgTable(
  "spend_days",
  {
    keyId: text("key_id").notNull(),
    day: text("day").notNull(),
    settledMicros: int8("settled_micros").notNull().default(0),
    heldMicros: int8("held_micros").notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.keyId, t.day] })],
);

/**
 * A pool over a run family's keys (SPEC §14): its own daily and lifetime caps, and at most two budgets above it.
 * Its parent never changes, so a hold's chain is the same when it is taken and when it settles.
 */
export const budgets = pgTable(
  "budgets",
  {
    seq: seq(),
    id: text("id").notNull(),
    name: text("name").notNull(),
    parentId: text("parent_id"),
    dailyCapMicros: int8("daily_cap_micros"),
    totalCapMicros: int8("total_cap_micros"),
    alertThresholds: text("alert_thresholds").notNull().default("[0.5,0.8,1]"),
    spentTotalMicros: int8("spent_total_micros").notNull().default(0),
    heldTotalMicros: int8("held_total_micros").notNull().default(0),
    createdAt: int8("created_at").notNull(),
    createdBy: text("created_by").notNull(),
  },
  (t) => [
    uniqueIndex("budgets_id").on(t.id),
    index("budgets_parent").on(t.parentId),
    check("budgets_has_cap", sql`${t.dailyCapMicros} IS NOT NULL OR ${t.totalCapMicros} IS NOT NULL`),
  ],
);

/**
 * A person's approval of one call (SPEC §15): the call's fingerprint under the job's Idempotency-Key, the hold it
 * reserves while pending, and who decided and when. `used` once the approved call went out: later retries replay.
 */
export const approvals = pgTable(
  "approvals",
  {
    seq: seq(),
    id: text("id").notNull(),
    keyId: text("key_id").notNull(),
    idempotencyKey: text("idempotency_key").notNull(),
    fingerprint: text("fingerprint").notNull(),
    holdId: text("hold_id").notNull(),
    method: text("method").notNull(),
    path: text("path").notNull(),
    priceMicros: int8("price_micros").notNull(),
    status: text("status", { enum: ["pending", "approved", "denied", "expired", "used"] }).notNull(),
    requestedAt: int8("requested_at").notNull(),
    requestedBy: text("requested_by"),
    expiresAt: int8("expires_at").notNull(),
    decidedAt: int8("decided_at"),
    decidedBy: text("decided_by"),
    reason: text("reason"),
  },
  (t) => [
    uniqueIndex("approvals_id").on(t.id),
    uniqueIndex("approvals_call").on(t.keyId, t.idempotencyKey),
    index("approvals_status").on(t.status, t.expiresAt),
  ],
);

/** Per budget and UTC day: settled and held, as spend_days is per key. */
export const budgetDays = pgTable(
  "budget_days",
  {
    budgetId: text("budget_id").notNull(),
    day: text("day").notNull(),
    settledMicros: int8("settled_micros").notNull().default(0),
    heldMicros: int8("held_micros").notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.budgetId, t.day] })],
);

/** Per key, UTC day and counterparty: settled and held, for the counterparty caps (SPEC §14). */
export const counterpartyDays = pgTable(
  "counterparty_days",
  {
    keyId: text("key_id").notNull(),
    day: text("day").notNull(),
    counterparty: text("counterparty").notNull(),
    settledMicros: int8("settled_micros").notNull().default(0),
    heldMicros: int8("held_micros").notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.keyId, t.day, t.counterparty] })],
);

/** One row per hold: the ledger. Never pruned. */
export const ledgerEntries = pgTable(
  "ledger_entries",
  {
    id: text("id").primaryKey(),
    keyId: text("key_id").notNull(),
    day: text("day").notNull(),
    holdMicros: int8("hold_micros").notNull(),
    costMicros: int8("cost_micros"),
    // orphaned: held by a process that died before settling; counted as held until an operator resolves it.
    state: text("state", { enum: ["held", "settled", "released", "ambiguous", "orphaned"] }).notNull(),
    createdAt: int8("created_at").notNull(),
    settledAt: int8("settled_at"),
    // The call that took the hold, so a hold orphaned by a crash can still be audited.
    requestId: text("request_id"),
    method: text("method"),
    path: text("path"),
    // Where the vendor states the final price later (a Twilio message or call), and when to read it next.
    reconcilePath: text("reconcile_path"),
    reconcileAt: int8("reconcile_at"),
    reconcileAttempts: integer("reconcile_attempts").notNull().default(0),
    // Who the call moves money to or from, when its key caps counterparties (SPEC §14): "customer:cus_…", "to:+1…".
    counterparty: text("counterparty"),
    // The instance that took the hold: a restarting instance recovers its own holds and those of instances
    // whose lease ran out, never a live instance's (SPEC §13).
    instanceId: text("instance_id"),
  },
  // Only open and ambiguous holds are ever looked up by state: partial indexes keep settled rows out of them.
  (t) => [
    index("ledger_entries_open").on(t.state).where(sql.raw(OPEN_HOLDS)),
    index("ledger_entries_reconcile").on(t.reconcileAt).where(sql`${t.reconcileAt} IS NOT NULL`),
    index("ledger_entries_instance").on(t.instanceId).where(sql`${t.state} = 'held'`),
  ],
);

export const auditEvents = pgTable(
  "audit_events",
  {
    // Retention deletes only the oldest rows and an identity never reuses a value, so cursors stay monotonic.
    seq: seq(),
    id: text("id").notNull(),
    at: int8("at").notNull(),
    keyId: text("key_id"),
    label: text("label"),
    vendor: text("vendor"),
    mode: text("mode"),
    method: text("method").notNull(),
    path: text("path").notNull(),
    status: integer("status").notNull(),
    decision: text("decision").notNull(),
    holdMicros: int8("hold_micros").notNull().default(0),
    costMicros: int8("cost_micros").notNull().default(0),
    costSource: text("cost_source"),
    currency: text("currency"),
    amountMinor: int8("amount_minor"),
    vendorRequestId: text("vendor_request_id"),
    idempotencyKey: text("idempotency_key"),
    upstreamMs: doublePrecision("upstream_ms"),
    overheadMs: doublePrecision("overhead_ms"),
    clientIp: text("client_ip"),
    // How many requests the row stands for: 1, or a client's unauthenticated denials of one minute counted
    // together (see proxy/unauthenticated.ts), so a flood of bad keys cannot grow the table a row per request.
    requests: integer("requests").notNull().default(1),
    // How many configured secrets (or Twilio account SIDs) were replaced in the vendor's answer before the job saw it.
    secretsScrubbed: integer("secrets_scrubbed").notNull().default(0),
    // What an observe-mode key would have been refused with, had it been enforced (SPEC §16).
    wouldDeny: text("would_deny"),
    // The chain the row is in (SPEC §19): the instance id of the instance that wrote it; null in rows from before
    // the chain (the pre-chain, sealed by checkpoints).
    chain: text("chain"),
    // SHA-256 of the previous hash of its chain and this row's canonical form (../audit-chain.ts); null before the chain.
    hash: text("hash"),
  },
  // Every index is a page written per call: only what the audit queries filter on.
  // `id` is the request id a job sees (X-Keybrake-Request-Id): operators look calls up by it.
  // text_pattern_ops on labels, as on vault_keys_label, for label prefixes.
  (t) => [
    index("audit_events_at").on(t.at),
    index("audit_events_key").on(t.keyId, t.seq),
    index("audit_events_label").on(t.label.op("text_pattern_ops"), t.seq),
    index("audit_events_id").on(t.id),
    index("audit_events_denied").on(t.decision, t.seq).where(sql.raw(DENIED_ROWS)),
    // Rows without a chain (written by a binary older than the chain, during a rolling upgrade), found to seal
    // them without reading the audit; no row written since the chain has a page in it.
    index("audit_events_unchained").on(t.seq).where(sql`${t.chain} IS NULL`),
  ],
);

/** The twin of ../schema.ts auditCheckpoints, per chain (an instance's, or the pre-chain's ""). */
export const auditCheckpoints = pgTable(
  "audit_checkpoints",
  {
    chain: text("chain").notNull(),
    seq: int8("seq").notNull(),
    hash: text("hash").notNull(),
    at: int8("at").notNull(),
    reason: text("reason").notNull(),
  },
  (t) => [primaryKey({ columns: [t.chain, t.seq] })],
);

/**
 * Each chain's head (SPEC §19): its newest row's seq and hash. A transaction that appends to a chain locks its
 * head's row first, so the rows of one chain are appended one transaction after another, in seq order, whichever
 * instance or process writes them.
 */
export const auditHeads = pgTable("audit_heads", {
  chain: text("chain").primaryKey(),
  seq: int8("seq").notNull(),
  hash: text("hash").notNull(),
});

/**
 * The SQLite store's spend rollup (../schema.ts auditDays), in step with its schema. The PostgreSQL store does not
 * maintain it and its spend views scan the audit (pg/audit.ts): the table stays empty here.
 */
export const auditDays = pgTable(
  "audit_days",
  {
    day: text("day").notNull(),
    keyId: text("key_id"),
    label: text("label"),
    vendor: text("vendor"),
    rowCount: int8("row_count").notNull(),
    calls: int8("calls").notNull(),
    allowed: int8("allowed").notNull(),
    denied: int8("denied").notNull(),
    spendMicros: int8("spend_micros").notNull(),
  },
  (t) => [index("audit_days_group").on(t.keyId, t.day, t.label, t.vendor)],
);

export const adminEvents = pgTable(
  "admin_events",
  {
    seq: seq(),
    at: int8("at").notNull(),
    actor: text("actor").notNull(),
    action: text("action").notNull(),
    target: text("target"),
    // JSON: Record<string, unknown>.
    details: text("details"),
    // The token that acted (SPEC §10): `tok_…`, "admin" for the bootstrap token; null for the CLI, which has none.
    tokenId: text("token_id"),
    tokenName: text("token_name"),
  },
  (t) => [index("admin_events_at").on(t.at), index("admin_events_token").on(t.tokenId, t.seq)],
);

/**
 * API tokens (SPEC §10): `admin`, `issuer` (mints keys within `policy`) and `viewer`. Only the SHA-256 of a token
 * is stored; the bootstrap admin token is not here (its hash is a setting, or it is KEYBRAKE_ADMIN_TOKEN).
 */
export const apiTokens = pgTable(
  "api_tokens",
  {
    seq: seq(),
    id: text("id").notNull(),
    name: text("name").notNull(),
    role: text("role", { enum: ["admin", "issuer", "viewer", "approver"] }).notNull(),
    tokenHash: text("token_hash").notNull(),
    tokenHint: text("token_hint").notNull(),
    // JSON: an issuer's policy as it was given (the API's JSON); null for other roles.
    policy: text("policy"),
    createdAt: int8("created_at").notNull(),
    createdBy: text("created_by").notNull(),
    expiresAt: int8("expires_at"),
    revokedAt: int8("revoked_at"),
  },
  (t) => [uniqueIndex("api_tokens_id").on(t.id), uniqueIndex("api_tokens_token_hash").on(t.tokenHash)],
);

/**
 * What an issuer token has unlocked: one row per key it minted (what the key can spend over its life) and per
 * PATCH that raised that amount (the increase). `issued_usd_per_day` and `max_keys_per_hour` are read from here,
 * in the same transaction as the key is written.
 */
export const keyIssuance = pgTable(
  "key_issuance",
  {
    seq: seq(),
    tokenId: text("token_id").notNull(),
    keyId: text("key_id").notNull(),
    kind: text("kind", { enum: ["mint", "raise"] }).notNull(),
    at: int8("at").notNull(),
    micros: int8("micros").notNull(),
  },
  (t) => [index("key_issuance_token").on(t.tokenId, t.at), index("key_issuance_key").on(t.keyId)],
);

export const settings = pgTable("settings", {
  name: text("name").primaryKey(),
  value: text("value").notNull(),
});

/** Objects created through Keybrake (Stripe PaymentIntents) and what their creation already charged. */
export const trackedObjects = pgTable("tracked_objects", {
  objectId: text("object_id").primaryKey(),
  keyId: text("key_id").notNull(),
  currency: text("currency").notNull(),
  amountMinor: int8("amount_minor").notNull(),
  countedMicros: int8("counted_micros").notNull(),
  updatedAt: int8("updated_at").notNull(),
});

/**
 * What Keybrake remembers of a call sent with an Idempotency-Key, per vault key, for 24 hours: enough to replay
 * a completed answer, refuse a concurrent duplicate, and re-forward an ambiguous one on the same hold.
 */
export const idempotencyEntries = pgTable(
  "idempotency_entries",
  {
    keyId: text("key_id").notNull(),
    idempotencyKey: text("idempotency_key").notNull(),
    fingerprint: text("fingerprint").notNull(),
    state: text("state", { enum: ["in_flight", "completed", "ambiguous"] }).notNull(),
    holdId: text("hold_id"),
    day: text("day").notNull(),
    status: integer("status"),
    // JSON: [name, value][].
    headers: text("headers"),
    body: bytea("body"),
    bodyTooLarge: boolean("body_too_large").notNull().default(false),
    vendorRequestId: text("vendor_request_id"),
    createdAt: int8("created_at").notNull(),
    expiresAt: int8("expires_at").notNull(),
    // The instance whose call claimed the entry: an `in_flight` entry of an instance that is gone is ambiguous.
    instanceId: text("instance_id"),
  },
  (t) => [primaryKey({ columns: [t.keyId, t.idempotencyKey] }), index("idempotency_entries_expires").on(t.expiresAt)],
);

/**
 * Alert destinations (SPEC §12). The secret signs each delivery (HMAC-SHA256), so it is kept as it is, like any
 * signing secret; it is shown once when the webhook is created and never logged or returned again.
 */
export const alertWebhooks = pgTable(
  "alert_webhooks",
  {
    seq: seq(),
    id: text("id").notNull(),
    url: text("url").notNull(),
    // JSON: string[].
    events: text("events").notNull(),
    labelPrefix: text("label_prefix"),
    format: text("format", { enum: ["json", "slack"] }).notNull(),
    secret: text("secret").notNull(),
    createdAt: int8("created_at").notNull(),
    createdBy: text("created_by").notNull(),
    deletedAt: int8("deleted_at"),
  },
  (t) => [uniqueIndex("alert_webhooks_id").on(t.id)],
);

/**
 * The outbox: one row per alert event, written in the same transaction as the ledger or key change that causes
 * it. `data` is the event's own fields (caps, spend, thresholds) as its webhooks receive them.
 */
export const alertEvents = pgTable(
  "alert_events",
  {
    seq: seq(),
    id: text("id").notNull(),
    type: text("type").notNull(),
    at: int8("at").notNull(),
    // The key as it was when the event fired.
    keyId: text("key_id"),
    label: text("label"),
    vendor: text("vendor"),
    mode: text("mode"),
    // JSON: Record<string, unknown>.
    data: text("data").notNull(),
  },
  (t) => [uniqueIndex("alert_events_id").on(t.id), index("alert_events_at").on(t.at), index("alert_events_key").on(t.keyId, t.seq)],
);

/**
 * One row per event and webhook it goes to, written with the event. The delivery worker sends those `pending`
 * and due (`next_attempt_at`), and records each attempt: `delivered`, `pending` again later, or `failed` after 24 h.
 */
export const alertDeliveries = pgTable(
  "alert_deliveries",
  {
    seq: seq(),
    eventId: text("event_id").notNull(),
    webhookId: text("webhook_id").notNull(),
    status: text("status", { enum: ["pending", "delivered", "failed", "cancelled"] }).notNull(),
    attempts: integer("attempts").notNull().default(0),
    createdAt: int8("created_at").notNull(),
    nextAttemptAt: int8("next_attempt_at"),
    lastAttemptAt: int8("last_attempt_at"),
    lastStatus: integer("last_status"),
    lastError: text("last_error"),
    deliveredAt: int8("delivered_at"),
    // Claimed by one instance's worker until then, so two instances never send a delivery at once.
    leaseUntil: int8("lease_until"),
  },
  (t) => [
    // The worker's poll reads only pending rows: a partial index keeps delivered ones out of it.
    index("alert_deliveries_due").on(t.nextAttemptAt).where(sql`${t.status} = 'pending'`),
    index("alert_deliveries_webhook").on(t.webhookId, t.seq),
    index("alert_deliveries_event").on(t.eventId),
  ],
);

/**
 * What has already fired per key and cap window (`day:2026-11-22` for the daily cap, `total` for the lifetime
 * one): each threshold (`threshold:0.8`) and the first refusal (`exhausted`) fire once, also across restarts.
 */
export const alertMarks = pgTable(
  "alert_marks",
  {
    keyId: text("key_id").notNull(),
    window: text("window").notNull(),
    mark: text("mark").notNull(),
    at: int8("at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.keyId, t.window, t.mark] })],
);

/**
 * One row per running Keybrake process: a lease it renews. Holds and in-flight idempotency entries of an
 * instance whose lease ran out are recovered by the others; a live instance's never are.
 */
export const instances = pgTable("instances", {
  id: text("id").primaryKey(),
  host: text("host").notNull(),
  pid: integer("pid").notNull(),
  startedAt: int8("started_at").notNull(),
  heartbeatAt: int8("heartbeat_at").notNull(),
  leaseUntil: int8("lease_until").notNull(),
});

/** The sliding log behind `max_requests_per_minute`, shared so that every instance counts every instance's requests. */
export const rateLimitHits = pgTable(
  "rate_limit_hits",
  {
    keyId: text("key_id").notNull(),
    at: int8("at").notNull(),
  },
  (t) => [index("rate_limit_hits_key").on(t.keyId, t.at)],
);

/**
 * Each instance's spend counters (`keybrake_spend_usd_total` and its corrections), saved every lease renewal, so
 * that /metrics at any instance shows the whole fleet's spend and an instance restarted under its id carries on
 * counting from where it stopped (a Prometheus counter never goes down).
 */
export const spendCounters = pgTable(
  "spend_counters",
  {
    instanceId: text("instance_id").notNull(),
    vendor: text("vendor").notNull(),
    spendMicros: int8("spend_micros").notNull().default(0),
    correctedMicros: int8("corrected_micros").notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.instanceId, t.vendor] })],
);

import { sql } from "drizzle-orm";
import { blob, check, index, integer, primaryKey, real, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

/** Money columns are integer micro-dollars (1 USD = 1,000,000); times are Unix milliseconds. */

export const vaultKeys = sqliteTable(
  "vault_keys",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    id: text("id").notNull(),
    keyHash: text("key_hash").notNull(),
    keyHint: text("key_hint").notNull(),
    // Any registered vendor's name (src/vendors/index.ts).
    vendor: text("vendor").notNull(),
    mode: text("mode", { enum: ["live", "test"] }).notNull(),
    label: text("label"),
    dailyCapMicros: integer("daily_cap_micros"),
    totalCapMicros: integer("total_cap_micros"),
    allowedEndpoints: text("allowed_endpoints", { mode: "json" }).$type<string[]>().notNull(),
    maxRequestsPerMinute: integer("max_requests_per_minute"),
    requireIdempotencyKey: integer("require_idempotency_key", { mode: "boolean" }).notNull().default(false),
    metadata: text("metadata", { mode: "json" }).$type<Record<string, string>>().notNull(),
    status: text("status", { enum: ["active", "revoked"] })
      .notNull()
      .default("active"),
    createdAt: integer("created_at").notNull(),
    expiresAt: integer("expires_at").notNull(),
    revokedAt: integer("revoked_at"),
    spentTotalMicros: integer("spent_total_micros").notNull().default(0),
    heldTotalMicros: integer("held_total_micros").notNull().default(0),
    calls: integer("calls").notNull().default(0),
    lastUsedAt: integer("last_used_at"),
    // Who minted the key ("admin" for the bootstrap token and the CLI): the vendor's idempotency keys are
    // derived from it, so retries under fresh keys of one minter de-duplicate and two minters never collide.
    mintedBy: text("minted_by").notNull().default("admin"),
    // Fractions of the daily and of the lifetime cap whose crossing (by settled spend) fires `cap_threshold` (SPEC §12).
    alertThresholds: text("alert_thresholds", { mode: "json" }).$type<number[]>().notNull().default([0.5, 0.8, 1]),
    // The budget the key draws from (SPEC §14), set at mint and never changed; its holds count up the budget's chain.
    budgetId: text("budget_id"),
    // Per UTC day and counterparty (a Stripe customer, a Twilio destination): the most one of them may be moved.
    perCustomerCapMicros: integer("per_customer_cap_micros"),
    perDestinationCapMicros: integer("per_destination_cap_micros"),
    // A priced call above this waits for a person's approval (SPEC §15), its request kept this long.
    approvalAboveMicros: integer("approval_above_micros"),
    approvalTtlMs: integer("approval_ttl_ms"),
    // `observe`: never refused for its caps, budgets, counterparty caps or approvals; would-be refusals audited (SPEC §16).
    enforcement: text("enforcement", { enum: ["enforce", "observe"] })
      .notNull()
      .default("enforce"),
  },
  (t) => [
    uniqueIndex("vault_keys_id").on(t.id),
    index("vault_keys_budget").on(t.budgetId).where(sql`${t.budgetId} IS NOT NULL`),
    uniqueIndex("vault_keys_key_hash").on(t.keyHash),
    index("vault_keys_label").on(t.label),
    // An issuer token lists, revokes and reads the audit of only the keys it minted (SPEC §10).
    index("vault_keys_minted_by").on(t.mintedBy, t.seq),
    check("vault_keys_has_cap", sql`${t.dailyCapMicros} IS NOT NULL OR ${t.totalCapMicros} IS NOT NULL`),
  ],
);

/** Per key and UTC day: what is settled and what is held. The cap check reads one row, never sums the ledger. */
export const spendDays = sqliteTable(
  "spend_days",
  {
    keyId: text("key_id").notNull(),
    day: text("day").notNull(),
    settledMicros: integer("settled_micros").notNull().default(0),
    heldMicros: integer("held_micros").notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.keyId, t.day] })],
);

/**
 * A pool over a run family's keys (SPEC §14): its own daily and lifetime caps, and at most two budgets above it.
 * Its parent never changes, so a hold's chain is the same when it is taken and when it settles.
 */
export const budgets = sqliteTable(
  "budgets",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    id: text("id").notNull(),
    name: text("name").notNull(),
    parentId: text("parent_id"),
    dailyCapMicros: integer("daily_cap_micros"),
    totalCapMicros: integer("total_cap_micros"),
    alertThresholds: text("alert_thresholds", { mode: "json" }).$type<number[]>().notNull().default([0.5, 0.8, 1]),
    spentTotalMicros: integer("spent_total_micros").notNull().default(0),
    heldTotalMicros: integer("held_total_micros").notNull().default(0),
    createdAt: integer("created_at").notNull(),
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
export const approvals = sqliteTable(
  "approvals",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    id: text("id").notNull(),
    keyId: text("key_id").notNull(),
    idempotencyKey: text("idempotency_key").notNull(),
    fingerprint: text("fingerprint").notNull(),
    holdId: text("hold_id").notNull(),
    method: text("method").notNull(),
    path: text("path").notNull(),
    priceMicros: integer("price_micros").notNull(),
    status: text("status", { enum: ["pending", "approved", "denied", "expired", "used"] }).notNull(),
    requestedAt: integer("requested_at").notNull(),
    requestedBy: text("requested_by"),
    expiresAt: integer("expires_at").notNull(),
    decidedAt: integer("decided_at"),
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
export const budgetDays = sqliteTable(
  "budget_days",
  {
    budgetId: text("budget_id").notNull(),
    day: text("day").notNull(),
    settledMicros: integer("settled_micros").notNull().default(0),
    heldMicros: integer("held_micros").notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.budgetId, t.day] })],
);

/** Per key, UTC day and counterparty: settled and held, for the counterparty caps (SPEC §14). */
export const counterpartyDays = sqliteTable(
  "counterparty_days",
  {
    keyId: text("key_id").notNull(),
    day: text("day").notNull(),
    counterparty: text("counterparty").notNull(),
    settledMicros: integer("settled_micros").notNull().default(0),
    heldMicros: integer("held_micros").notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.keyId, t.day, t.counterparty] })],
);

/**
 * The partial index's condition. SQLite uses a partial index only when a query repeats its condition word for
 * word, so every query for holds by state includes OPEN_HOLDS (see ledger.ts).
 */
export const OPEN_HOLDS = "state IN ('held', 'orphaned', 'ambiguous')";
/**
 * A held entry reserved for a call that waits on a person (SPEC §15) is not left behind by a crash: its approval
 * settles it, so recovery leaves it held (no orphan row, no alert asking an operator to resolve it).
 */
export const WAITING_ON_APPROVAL = (entry: string) =>
  `EXISTS (SELECT 1 FROM approvals a WHERE a.hold_id = ${entry}.id AND a.status IN ('pending', 'approved'))`;

/** One row per hold: the ledger. Never pruned. */
export const ledgerEntries = sqliteTable(
  "ledger_entries",
  {
    id: text("id").primaryKey(),
    keyId: text("key_id").notNull(),
    day: text("day").notNull(),
    holdMicros: integer("hold_micros").notNull(),
    costMicros: integer("cost_micros"),
    // orphaned: held by a process that died before settling; counted as held until an operator resolves it.
    state: text("state", { enum: ["held", "settled", "released", "ambiguous", "orphaned"] }).notNull(),
    createdAt: integer("created_at").notNull(),
    settledAt: integer("settled_at"),
    // The call that took the hold, so a hold orphaned by a crash can still be audited.
    requestId: text("request_id"),
    method: text("method"),
    path: text("path"),
    // Where the vendor states the final price later (a Twilio message or call), and when to read it next.
    reconcilePath: text("reconcile_path"),
    reconcileAt: integer("reconcile_at"),
    reconcileAttempts: integer("reconcile_attempts").notNull().default(0),
    // Who the call moves money to or from, when its key caps counterparties (SPEC §14): "customer:cus_…", "to:+1…".
    counterparty: text("counterparty"),
  },
  // Only open and ambiguous holds are ever looked up by state: a partial index keeps settled rows out of it.
  (t) => [
    index("ledger_entries_open").on(t.state).where(sql.raw(OPEN_HOLDS)),
    index("ledger_entries_reconcile").on(t.reconcileAt).where(sql`${t.reconcileAt} IS NOT NULL`),
  ],
);

/** The partial index on denials' condition (audit_events_denied). */
export const DENIED_ROWS = "decision <> 'allowed'";

export const auditEvents = sqliteTable(
  "audit_events",
  {
    // A plain rowid, not AUTOINCREMENT: that would rewrite sqlite_sequence on every call. Retention deletes only
    // the oldest rows, so the newest seq is never reused and cursors stay monotonic.
    seq: integer("seq").primaryKey(),
    id: text("id").notNull(),
    at: integer("at").notNull(),
    keyId: text("key_id"),
    label: text("label"),
    vendor: text("vendor"),
    mode: text("mode"),
    method: text("method").notNull(),
    path: text("path").notNull(),
    status: integer("status").notNull(),
    decision: text("decision").notNull(),
    holdMicros: integer("hold_micros").notNull().default(0),
    costMicros: integer("cost_micros").notNull().default(0),
    costSource: text("cost_source"),
    currency: text("currency"),
    amountMinor: integer("amount_minor"),
    vendorRequestId: text("vendor_request_id"),
    idempotencyKey: text("idempotency_key"),
    upstreamMs: real("upstream_ms"),
    overheadMs: real("overhead_ms"),
    clientIp: text("client_ip"),
    // How many requests the row stands for: 1, or a client's unauthenticated denials of one minute counted
    // together (see proxy/unauthenticated.ts), so a flood of bad keys cannot grow the table a row per request.
    requests: integer("requests").notNull().default(1),
    // How many configured secrets (or Twilio account SIDs) were replaced in the vendor's answer before the job saw it.
    secretsScrubbed: integer("secrets_scrubbed").notNull().default(0),
    // What an observe-mode key would have been refused with, had it been enforced (SPEC §16).
    wouldDeny: text("would_deny"),
    // SHA-256 of the previous row's hash and this row's canonical form (SPEC §19, audit-chain.ts); null in rows
    // from before the chain, which a `sealed` checkpoint stands for.
    hash: text("hash"),
  },
  // Every index is a page written per call: only what the audit queries filter on.
  // `id` is the request id a job sees (X-Keybrake-Request-Id): operators look calls up by it.
  (t) => [
    index("audit_events_at").on(t.at),
    index("audit_events_key").on(t.keyId, t.seq),
    index("audit_events_label").on(t.label, t.seq),
    index("audit_events_id").on(t.id),
    // Denials only, so allowed calls (nearly every row) write no page of it: a rare decision is found without
    // reading the audit from its newest row to its oldest. Queries repeat DENIED_ROWS word for word (see OPEN_HOLDS).
    index("audit_events_denied").on(t.decision, t.seq).where(sql.raw(DENIED_ROWS)),
  ],
);

/**
 * Where an audit chain stood after its row `seq` (SPEC §19, audit-chain.ts), for rows that are not there to say
 * it: `pruned`, the last row retention deleted (the rows left link to it); `sealed`, the last row from before
 * the chain, whose rows carry no hash. SQLite has one chain, `main`.
 */
export const auditCheckpoints = sqliteTable(
  "audit_checkpoints",
  {
    chain: text("chain").notNull(),
    seq: integer("seq").notNull(),
    hash: text("hash").notNull(),
    at: integer("at").notNull(),
    reason: text("reason", { enum: ["sealed", "pruned"] }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.chain, t.seq] })],
);

/**
 * What the audit rows of one UTC day add up to, per key, label and vendor: the spend views (`spendBy`) read this
 * instead of every audit row whenever their filters allow, so they stay fast however long the audit grows. Kept
 * exact by triggers on audit_events (drizzle/0010_audit_days.sql), whoever writes or prunes a row. `calls`,
 * `allowed` and `denied` count as spendBy does (a row may stand for several requests; hold events are no calls);
 * `row_count` is the rows behind it, and a group whose last row is pruned is deleted. key_id, label and vendor
 * may be NULL (unauthenticated denials), so the triggers match them with IS: no unique constraint could.
 */
export const auditDays = sqliteTable(
  "audit_days",
  {
    day: text("day").notNull(),
    keyId: text("key_id"),
    label: text("label"),
    vendor: text("vendor"),
    rowCount: integer("row_count").notNull(),
    calls: integer("calls").notNull(),
    allowed: integer("allowed").notNull(),
    denied: integer("denied").notNull(),
    spendMicros: integer("spend_micros").notNull(),
  },
  (t) => [index("audit_days_group").on(t.keyId, t.day, t.label, t.vendor)],
);

export const adminEvents = sqliteTable(
  "admin_events",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    at: integer("at").notNull(),
    actor: text("actor").notNull(),
    action: text("action").notNull(),
    target: text("target"),
    details: text("details", { mode: "json" }).$type<Record<string, unknown>>(),
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
export const apiTokens = sqliteTable(
  "api_tokens",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    id: text("id").notNull(),
    name: text("name").notNull(),
    role: text("role", { enum: ["admin", "issuer", "viewer", "approver"] }).notNull(),
    tokenHash: text("token_hash").notNull(),
    tokenHint: text("token_hint").notNull(),
    // An issuer's policy as it was given (the API's JSON); null for other roles.
    policy: text("policy", { mode: "json" }).$type<Record<string, unknown>>(),
    createdAt: integer("created_at").notNull(),
    createdBy: text("created_by").notNull(),
    expiresAt: integer("expires_at"),
    revokedAt: integer("revoked_at"),
  },
  (t) => [uniqueIndex("api_tokens_id").on(t.id), uniqueIndex("api_tokens_token_hash").on(t.tokenHash)],
);

/**
 * What an issuer token has unlocked: one row per key it minted (what the key can spend over its life) and per
 * PATCH that raised that amount (the increase). `issued_usd_per_day` and `max_keys_per_hour` are read from here,
 * in the same transaction as the key is written.
 */
export const keyIssuance = sqliteTable(
  "key_issuance",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    tokenId: text("token_id").notNull(),
    keyId: text("key_id").notNull(),
    kind: text("kind", { enum: ["mint", "raise"] }).notNull(),
    at: integer("at").notNull(),
    micros: integer("micros").notNull(),
  },
  (t) => [index("key_issuance_token").on(t.tokenId, t.at), index("key_issuance_key").on(t.keyId)],
);

export const settings = sqliteTable("settings", {
  name: text("name").primaryKey(),
  value: text("value").notNull(),
});

/** Objects created through Keybrake (Stripe PaymentIntents) and what their creation already charged. */
export const trackedObjects = sqliteTable("tracked_objects", {
  objectId: text("object_id").primaryKey(),
  keyId: text("key_id").notNull(),
  currency: text("currency").notNull(),
  amountMinor: integer("amount_minor").notNull(),
  countedMicros: integer("counted_micros").notNull(),
  updatedAt: integer("updated_at").notNull(),
});

/**
 * What Keybrake remembers of a call sent with an Idempotency-Key, per vault key, for 24 hours: enough to replay
 * a completed answer, refuse a concurrent duplicate, and re-forward an ambiguous one on the same hold.
 */
export const idempotencyEntries = sqliteTable(
  "idempotency_entries",
  {
    keyId: text("key_id").notNull(),
    idempotencyKey: text("idempotency_key").notNull(),
    fingerprint: text("fingerprint").notNull(),
    state: text("state", { enum: ["in_flight", "completed", "ambiguous"] }).notNull(),
    holdId: text("hold_id"),
    day: text("day").notNull(),
    status: integer("status"),
    headers: text("headers", { mode: "json" }).$type<[string, string][]>(),
    body: blob("body", { mode: "buffer" }),
    bodyTooLarge: integer("body_too_large", { mode: "boolean" }).notNull().default(false),
    vendorRequestId: text("vendor_request_id"),
    createdAt: integer("created_at").notNull(),
    expiresAt: integer("expires_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.keyId, t.idempotencyKey] }), index("idempotency_entries_expires").on(t.expiresAt)],
);

/**
 * Alert destinations (SPEC §12). The secret signs each delivery (HMAC-SHA256), so it is kept as it is, like any
 * signing secret; it is shown once when the webhook is created and never logged or returned again.
 */
export const alertWebhooks = sqliteTable(
  "alert_webhooks",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    id: text("id").notNull(),
    url: text("url").notNull(),
    events: text("events", { mode: "json" }).$type<string[]>().notNull(),
    labelPrefix: text("label_prefix"),
    format: text("format", { enum: ["json", "slack"] }).notNull(),
    secret: text("secret").notNull(),
    createdAt: integer("created_at").notNull(),
    createdBy: text("created_by").notNull(),
    deletedAt: integer("deleted_at"),
  },
  (t) => [uniqueIndex("alert_webhooks_id").on(t.id)],
);

/**
 * The outbox: one row per alert event, written in the same transaction as the ledger or key change that causes
 * it. `data` is the event's own fields (caps, spend, thresholds) as its webhooks receive them.
 */
export const alertEvents = sqliteTable(
  "alert_events",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    id: text("id").notNull(),
    type: text("type").notNull(),
    at: integer("at").notNull(),
    // The key as it was when the event fired.
    keyId: text("key_id"),
    label: text("label"),
    vendor: text("vendor"),
    mode: text("mode"),
    data: text("data", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
  },
  (t) => [uniqueIndex("alert_events_id").on(t.id), index("alert_events_at").on(t.at), index("alert_events_key").on(t.keyId, t.seq)],
);

/**
 * One row per event and webhook it goes to, written with the event. The delivery worker sends those `pending`
 * and due (`next_attempt_at`), and records each attempt: `delivered`, `pending` again later, or `failed` after 24 h.
 */
export const alertDeliveries = sqliteTable(
  "alert_deliveries",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    eventId: text("event_id").notNull(),
    webhookId: text("webhook_id").notNull(),
    status: text("status", { enum: ["pending", "delivered", "failed", "cancelled"] }).notNull(),
    attempts: integer("attempts").notNull().default(0),
    createdAt: integer("created_at").notNull(),
    nextAttemptAt: integer("next_attempt_at"),
    lastAttemptAt: integer("last_attempt_at"),
    lastStatus: integer("last_status"),
    lastError: text("last_error"),
    deliveredAt: integer("delivered_at"),
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
export const alertMarks = sqliteTable(
  "alert_marks",
  {
    keyId: text("key_id").notNull(),
    window: text("window").notNull(),
    mark: text("mark").notNull(),
    at: integer("at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.keyId, t.window, t.mark] })],
);

import { num, numOrNull } from "./pg/client";
import type { KeyPolicy } from "./types";

/**
 * What the SQLite (keys.ts) and PostgreSQL (pg/keys.ts) key queries read alike: the columns of a key's policy,
 * valid in both dialects (quoted aliases keep their case in PostgreSQL), and the policy made of such a row.
 */
export const KEY_POLICY_COLUMNS = `id, key_hint AS "keyHint", vendor, mode, label, minted_by AS "mintedBy",
  daily_cap_micros AS "dailyCapMicros", total_cap_micros AS "totalCapMicros", allowed_endpoints AS "allowedEndpoints",
  max_requests_per_minute AS "maxRequestsPerMinute", require_idempotency_key AS "requireIdempotencyKey", metadata, status,
  created_at AS "createdAt", expires_at AS "expiresAt", budget_id AS "budgetId",
  per_customer_cap_micros AS "perCustomerCapMicros", per_destination_cap_micros AS "perDestinationCapMicros",
  approval_above_micros AS "approvalAboveMicros", approval_ttl_ms AS "approvalTtlMs", enforcement`;

/** PostgreSQL returns a bigint as text; SQLite returns a number. */
type Int8 = number | string;

/** A row of KEY_POLICY_COLUMNS: JSON as text, the flag as SQLite's 0/1 or PostgreSQL's boolean. */
export type RawKeyPolicy = Omit<
  KeyPolicy,
  | "allowedEndpoints"
  | "metadata"
  | "requireIdempotencyKey"
  | "dailyCapMicros"
  | "totalCapMicros"
  | "createdAt"
  | "expiresAt"
  | "perCustomerCapMicros"
  | "perDestinationCapMicros"
  | "approvalAboveMicros"
  | "approvalTtlMs"
> & {
  allowedEndpoints: string;
  metadata: string;
  requireIdempotencyKey: number | boolean;
  dailyCapMicros: Int8 | null;
  totalCapMicros: Int8 | null;
  perCustomerCapMicros: Int8 | null;
  perDestinationCapMicros: Int8 | null;
  approvalAboveMicros: Int8 | null;
  approvalTtlMs: Int8 | null;
  createdAt: Int8;
  expiresAt: Int8;
};

/** Frozen: the SQLite store hands one cached policy to every call that presents the key. */
export const toKeyPolicy = (r: RawKeyPolicy): KeyPolicy =>
  Object.freeze({
    ...r,
    dailyCapMicros: numOrNull(r.dailyCapMicros),
    totalCapMicros: numOrNull(r.totalCapMicros),
    perCustomerCapMicros: numOrNull(r.perCustomerCapMicros),
    perDestinationCapMicros: numOrNull(r.perDestinationCapMicros),
    approvalAboveMicros: numOrNull(r.approvalAboveMicros),
    approvalTtlMs: numOrNull(r.approvalTtlMs),
    createdAt: num(r.createdAt),
    expiresAt: num(r.expiresAt),
    allowedEndpoints: Object.freeze(JSON.parse(r.allowedEndpoints)),
    metadata: Object.freeze(JSON.parse(r.metadata)),
    requireIdempotencyKey: r.requireIdempotencyKey === 1 || r.requireIdempotencyKey === true,
  });

/** A LIKE pattern matching what starts with `prefix`: its `%`, `_` and `\` are plain characters (ESCAPE '\'). */
export const likePrefix = (prefix: string) => `${prefix.replace(/[\\%_]/g, "\\$&")}%`;

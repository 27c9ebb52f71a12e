import { KEY_POLICY_COLUMNS, likePrefix, type RawKeyPolicy, toKeyPolicy } from "../keys-shared";
import type { DayUsage, Issuance, IssuanceResult, KeyFilter, KeyPatch, KeyPolicy, KeyRecord, KeySelection, NewKey, Page } from "../types";
import type { PgAlertOutbox } from "./alerts";
import { lockBudgetToDrawFrom } from "./budgets";
import { allOf, type Fragment, type Pg, num, numOrNull } from "./client";

const KEY_COLUMNS = `seq, ${KEY_POLICY_COLUMNS}, revoked_at AS "revokedAt", spent_total_micros AS "spentTotalMicros",
  held_total_micros AS "heldTotalMicros", calls, last_used_at AS "lastUsedAt", alert_thresholds AS "alertThresholds"`;

type RawKey = RawKeyPolicy & {
  seq: string;
  revokedAt: string | null;
  spentTotalMicros: string;
  heldTotalMicros: string;
  calls: string;
  lastUsedAt: string | null;
  alertThresholds: string;
};

const toRecord = ({ seq: _seq, ...r }: RawKey): KeyRecord => ({
  // Copied out of the frozen policy: a record is the caller's to change.
  ...toKeyPolicy(r),
  allowedEndpoints: JSON.parse(r.allowedEndpoints),
  metadata: JSON.parse(r.metadata),
  revokedAt: numOrNull(r.revokedAt),
  spentTotalMicros: num(r.spentTotalMicros),
  heldTotalMicros: num(r.heldTotalMicros),
  calls: num(r.calls),
  lastUsedAt: numOrNull(r.lastUsedAt),
  alertThresholds: JSON.parse(r.alertThresholds),
});

/** The columns a PATCH writes (only those it gives). */
function patchColumns(patch: KeyPatch): Record<string, unknown> {
  return {
    daily_cap_micros: patch.dailyCapMicros,
    total_cap_micros: patch.totalCapMicros,
    expires_at: patch.expiresAt,
    max_requests_per_minute: patch.maxRequestsPerMinute,
    alert_thresholds: patch.alertThresholds === undefined ? undefined : JSON.stringify(patch.alertThresholds),
  };
}

/**
 * Vault keys on PostgreSQL. Nothing is cached: every instance reads the key on every call, so a revocation or a
 * PATCH at any instance counts on the very next call everywhere (SPEC §13). Writes that change a key's status
 * lock its row as the money writes do (ascending id order for several), so they never deadlock with them.
 */
export function pgKeyQueries(sql: Pg, alerts: PgAlertOutbox) {
  const byId = async (db: Pg, id: string): Promise<KeyRecord | null> => {
    const [row] = await db`SELECT ${db.unsafe(KEY_COLUMNS)} FROM vault_keys WHERE id = ${id}`;
    return row ? toRecord(row) : null;
  };

  /** Writes a key, in the caller's transaction: the budget it draws from must exist as it is written. */
  const insert = async (db: Pg, key: NewKey): Promise<KeyRecord> => {
    if (key.budgetId) await lockBudgetToDrawFrom(db, key.budgetId, "budget_id");
    const [row] = await db`
      INSERT INTO vault_keys ${db({
        id: key.id,
        key_hash: key.keyHash,
        key_hint: key.keyHint,
        vendor: key.vendor,
        mode: key.mode,
        label: key.label,
        minted_by: key.mintedBy,
        daily_cap_micros: key.dailyCapMicros,
        total_cap_micros: key.totalCapMicros,
        allowed_endpoints: JSON.stringify(key.allowedEndpoints),
        max_requests_per_minute: key.maxRequestsPerMinute,
        require_idempotency_key: key.requireIdempotencyKey,
        metadata: JSON.stringify(key.metadata),
        created_at: key.createdAt,
        expires_at: key.expiresAt,
        // Absent: the column's default.
        alert_thresholds: key.alertThresholds === undefined ? undefined : JSON.stringify(key.alertThresholds),
        budget_id: key.budgetId ?? null,
        per_customer_cap_micros: key.perCustomerCapMicros ?? null,
        per_destination_cap_micros: key.perDestinationCapMicros ?? null,
        approval_above_micros: key.approvalAboveMicros ?? null,
        approval_ttl_ms: key.approvalTtlMs ?? null,
        enforcement: key.enforcement ?? "enforce",
      })}
      RETURNING ${db.unsafe(KEY_COLUMNS)}`;
    return toRecord(row);
  };

  const update = async (db: Pg, id: string, patch: KeyPatch): Promise<KeyRecord | null> => {
    const columns = patchColumns(patch);
    if (Object.values(columns).every((v) => v === undefined)) return byId(db, id);
    const [row] = await db`UPDATE vault_keys SET ${db(columns)} WHERE id = ${id} RETURNING ${db.unsafe(KEY_COLUMNS)}`;
    return row ? toRecord(row) : null;
  };

  /** Revokes the active keys `selection` matches (rows locked in ascending id order), with their `key_revoked` alerts. */
  const revoke = async (tx: Pg, selection: Fragment, now: number, actor: string | null): Promise<string[]> => {
    const locked: { id: string }[] =
      await tx`SELECT id FROM vault_keys WHERE ${selection} AND status = 'active' ORDER BY id COLLATE "C" FOR UPDATE`;
    const ids = locked.map((r) => r.id);
    if (ids.length === 0) return ids;
    await tx`UPDATE vault_keys SET status = 'revoked', revoked_at = ${now} WHERE id = ANY(${ids}::text[])`;
    await alerts.keysRevoked(tx, ids, now, actor);
    return ids;
  };

  /**
   * Takes the issuer's issuance lock for the rest of the transaction. The limits count rows of key_issuance that
   * a concurrent mint is about to add, so no row lock can cover them; this lock makes every mint and PATCH of one
   * issuer token, at every instance, check and record one after another. It is held only by issuance
   * transactions, which lock no other key row while waiting for it, so it cannot deadlock with the money writes.
   * Two tokens whose ids hash alike merely wait for each other.
   */
  const lockIssuer = (tx: Pg, tokenId: string) => tx`SELECT pg_advisory_xact_lock(hashtext('key_issuance'), hashtext(${tokenId}))`;

  /** Refusal when issuing `micros` more would take the token past its issued_usd_per_day, else null. */
  const issuedToday = async (tx: Pg, issuance: Issuance, micros: number): Promise<IssuanceResult<never> | null> => {
    if (issuance.maxUsdPerDayMicros === null) return null;
    const [row] = await tx`SELECT coalesce(sum(micros), 0) AS used FROM key_issuance
                            WHERE token_id = ${issuance.tokenId} AND at >= ${issuance.dayStart}`;
    const used = num(row.used);
    return used + micros > issuance.maxUsdPerDayMicros ? { kind: "refused", rule: "issued_usd_per_day", used } : null;
  };

  const recordIssuance = (tx: Pg, issuance: Issuance, keyId: string, kind: "mint" | "raise", micros: number) =>
    tx`INSERT INTO key_issuance (token_id, key_id, kind, at, micros) VALUES (${issuance.tokenId}, ${keyId}, ${kind}, ${issuance.now}, ${micros})`;

  return {
    async findKeyByHash(hash: string): Promise<KeyPolicy | null> {
      const [row] = await sql`SELECT ${sql.unsafe(KEY_POLICY_COLUMNS)} FROM vault_keys WHERE key_hash = ${hash}`;
      return row ? toKeyPolicy(row) : null;
    },

    insertKey: (key: NewKey) => sql.begin((tx) => insert(tx, key)),

    findKeyById: (id: string) => byId(sql, id),

    async listKeys(f: KeyFilter, now: number): Promise<Page<KeyRecord>> {
      const where: Fragment[] = [];
      if (f.label !== undefined) where.push(sql`label = ${f.label}`);
      if (f.labelPrefix !== undefined) where.push(sql`label LIKE ${likePrefix(f.labelPrefix)} ESCAPE '\\'`);
      if (f.vendor) where.push(sql`vendor = ${f.vendor}`);
      if (f.budgetId !== undefined) where.push(sql`budget_id = ${f.budgetId}`);
      if (f.mintedBy !== undefined) where.push(sql`minted_by = ${f.mintedBy}`);
      if (f.status === "revoked") where.push(sql`status = 'revoked'`);
      if (f.status === "active") where.push(sql`status = 'active' AND expires_at > ${now}`);
      if (f.status === "expired") where.push(sql`status = 'active' AND expires_at <= ${now}`);
      if (f.cursor !== undefined) where.push(sql`seq < ${f.cursor}`);
      const rows: RawKey[] = await sql`
        SELECT ${sql.unsafe(KEY_COLUMNS)} FROM vault_keys WHERE ${allOf(sql, where)} ORDER BY seq DESC LIMIT ${f.limit + 1}`;
      const data = rows.slice(0, f.limit);
      return { data: data.map(toRecord), nextCursor: rows.length > f.limit ? num(data[data.length - 1]!.seq) : null };
    },

    /** The `key_revoked` alert commits with the revocation (SPEC §12). */
    async revokeKey(id: string, now: number, actor?: string): Promise<KeyRecord | null> {
      return sql.begin(async (tx) => {
        await revoke(tx, sql`id = ${id}`, now, actor ?? null);
        return byId(tx, id);
      });
    },

    async revokeKeys(by: KeySelection, now: number, actor?: string): Promise<string[]> {
      const target: Fragment[] = [];
      if (by.ids !== undefined) target.push(sql`id = ANY(${by.ids}::text[])`);
      if (by.labelPrefix !== undefined) target.push(sql`label LIKE ${likePrefix(by.labelPrefix)} ESCAPE '\\'`);
      if (by.mintedBy !== undefined) target.push(sql`minted_by = ${by.mintedBy}`);
      // A selection of nothing must never become "every key".
      if (target.length === 0) throw new Error("revokeKeys needs ids, labelPrefix or mintedBy");
      return sql.begin((tx) => revoke(tx, allOf(sql, target), now, actor ?? null));
    },

    updateKey: (id: string, patch: KeyPatch) => update(sql, id, patch),

    async insertKeyWithin(key: NewKey, issuance: Issuance): Promise<IssuanceResult<KeyRecord>> {
      return sql.begin(async (tx): Promise<IssuanceResult<KeyRecord>> => {
        await lockIssuer(tx, issuance.tokenId);
        if (issuance.maxKeysPerHour !== null) {
          const [row] = await tx`SELECT count(*) AS n FROM key_issuance
                                  WHERE token_id = ${issuance.tokenId} AND at > ${issuance.now - 3_600_000} AND kind = 'mint'`;
          const minted = num(row.n);
          if (minted + 1 > issuance.maxKeysPerHour) return { kind: "refused", rule: "max_keys_per_hour", used: minted };
        }
        const refused = await issuedToday(tx, issuance, issuance.micros);
        if (refused) return refused;
        const record = await insert(tx, key);
        await recordIssuance(tx, issuance, key.id, "mint", issuance.micros);
        return { kind: "ok", value: record };
      });
    },

    /** What the key can spend beyond what its issuance already counted is issued today. */
    async updateKeyWithin(id: string, patch: KeyPatch, issuance: Issuance): Promise<IssuanceResult<KeyRecord | null>> {
      return sql.begin(async (tx): Promise<IssuanceResult<KeyRecord | null>> => {
        await lockIssuer(tx, issuance.tokenId);
        const [row] = await tx`SELECT coalesce(sum(micros), 0) AS micros FROM key_issuance WHERE key_id = ${id}`;
        const raise = issuance.micros - num(row.micros);
        if (raise > 0) {
          const refused = await issuedToday(tx, issuance, raise);
          if (refused) return refused;
          await recordIssuance(tx, issuance, id, "raise", raise);
        }
        return { kind: "ok", value: await update(tx, id, patch) };
      });
    },

    async dayUsage(keyIds: string[], day: string): Promise<Map<string, DayUsage>> {
      const usage = new Map<string, DayUsage>();
      if (keyIds.length === 0) return usage;
      const rows: { keyId: string; settled: string; held: string }[] = await sql`
        SELECT key_id AS "keyId", settled_micros AS settled, held_micros AS held
          FROM spend_days WHERE key_id = ANY(${keyIds}::text[]) AND day = ${day}`;
      for (const r of rows) usage.set(r.keyId, { settledMicros: num(r.settled), heldMicros: num(r.held) });
      return usage;
    },
  };
}

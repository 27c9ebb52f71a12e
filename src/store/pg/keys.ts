import { eq, like } from "drizzle-orm";
import { keyFilter, newestFirst, type PrefixMatch, toKeyRecord } from "../admin-reads";
import { KEY_POLICY_COLUMNS, likePrefix, toKeyPolicy } from "../keys-shared";
import type { DayUsage, Issuance, IssuanceResult, KeyFilter, KeyPatch, KeyPolicy, KeyRecord, KeySelection, NewKey, Page } from "../types";
import type { PgAlertOutbox } from "./alerts";
import { lockBudgetToDrawFrom } from "./budgets";
import { allOf, type Fragment, type Pg, num } from "./client";
import { jsonText, orm } from "./orm";
import { vaultKeys } from "./schema";

/**
 * PostgreSQL's LIKE escapes with a backslash unless told otherwise, so likePrefix's pattern matches the prefix
 * as written, and it is a range of the labels' text_pattern_ops index.
 */
export const labelHasPrefix: PrefixMatch = (column, prefix) => like(column, likePrefix(prefix));

/**
 * Vault keys on PostgreSQL. Nothing is cached: every instance reads the key on every call, so a revocation or a
 * PATCH at any instance counts on the very next call everywhere (SPEC §13). Writes that change a key's status
 * lock its row as the money writes do (ascending id order for several), so they never deadlock with them.
 */
export function pgKeyQueries(sql: Pg, alerts: PgAlertOutbox) {
  const byId = async (db: Pg, id: string): Promise<KeyRecord | null> => {
    const [row] = await orm(db).select().from(vaultKeys).where(eq(vaultKeys.id, id));
    return row ? toKeyRecord(row) : null;
  };

  /** Writes a key, in the caller's transaction: the budget it draws from must exist as it is written. */
  const insert = async (db: Pg, key: NewKey): Promise<KeyRecord> => {
    if (key.budgetId) await lockBudgetToDrawFrom(db, key.budgetId, "budget_id");
    const [row] = await orm(db)
      .insert(vaultKeys)
      .values({
        ...key,
        allowedEndpoints: jsonText(key.allowedEndpoints),
        metadata: jsonText(key.metadata),
        alertThresholds: jsonText(key.alertThresholds),
      })
      .returning();
    return toKeyRecord(row!);
  };

  const update = async (db: Pg, id: string, patch: KeyPatch): Promise<KeyRecord | null> => {
    // drizzle refuses an update that sets nothing.
    if (Object.values(patch).every((v) => v === undefined)) return byId(db, id);
    const columns = { ...patch, alertThresholds: jsonText(patch.alertThresholds) };
    const [row] = await orm(db).update(vaultKeys).set(columns).where(eq(vaultKeys.id, id)).returning();
    return row ? toKeyRecord(row) : null;
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
      const where = keyFilter(vaultKeys, f, now, labelHasPrefix);
      return newestFirst(orm(sql).select().from(vaultKeys), vaultKeys.seq, where, f.limit, toKeyRecord);
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

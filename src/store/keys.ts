import { and, eq, gt, gte, inArray, sql, type SQL } from "drizzle-orm";
import { keyFilter, newestFirst, type PrefixMatch, toKeyRecord } from "./admin-reads";
import type { AlertOutbox } from "./alerts";
import { assertBudgetExists } from "./budgets";
import { KEY_POLICY_COLUMNS, type RawKeyPolicy, toKeyPolicy } from "./keys-shared";
import type { Db } from "./sqlite";
import { keyIssuance, spendDays, vaultKeys } from "./schema";
import type { DayUsage, Issuance, IssuanceResult, KeyFilter, KeyPatch, KeyPolicy, KeyRecord, KeySelection, NewKey, Page } from "./types";

/** Enough for every key a busy server has live; past it the cache starts over rather than grow without bound. */
const MAX_CACHED_KEYS = 10_000;

/**
 * Every proxied call starts by finding its key, and the row (with its JSON allowlist) changes far less often
 * than it is read, so policies are cached by hash. The cache is emptied by every write to vault_keys through this store, and whenever
 * `PRAGMA data_version` shows that another connection (the CLI) committed: a key revoked or changed anywhere
 * is seen on its very next call. Only keys that exist are cached, so unknown hashes cannot fill it. The hold
 * re-reads the key's status inside its write transaction as well.
 *
 * `data_version` is read once per turn of the event loop, not per call: outside a transaction each read is a read
 * transaction of its own (WAL locks, a few system calls). A call sent after another process committed is read
 * in a later turn than the check before that commit, so it sees it (one read in the very microseconds of the
 * commit, within the turn that checked, races it as any concurrent call does); the hold re-reads the status.
 */
function keyPolicyCache(client: Db["$client"]) {
  const byHash = client.prepare<RawKeyPolicy, [string]>(`SELECT ${KEY_POLICY_COLUMNS} FROM vault_keys WHERE key_hash = ?`);
  const dataVersion = client.prepare<{ data_version: number }, []>("PRAGMA data_version");
  const cache = new Map<string, KeyPolicy>();
  let seenVersion = -1;
  let checkedThisTurn = false;
  const nextTurn = () => {
    checkedThisTurn = false;
  };
  return {
    find(hash: string): KeyPolicy | null {
      if (!checkedThisTurn) {
        checkedThisTurn = true;
        setImmediate(nextTurn);
        const version = dataVersion.get()!.data_version;
        if (version !== seenVersion) {
          cache.clear();
          seenVersion = version;
        }
      }
      const cached = cache.get(hash);
      if (cached) return cached;
      const row = byHash.get(hash);
      if (!row) return null;
      if (cache.size >= MAX_CACHED_KEYS) cache.clear();
      const policy = toKeyPolicy(row);
      cache.set(hash, policy);
      return policy;
    },
    clear: () => cache.clear(),
  };
}

export function keyQueries(db: Db, alerts: AlertOutbox) {
  const policies = keyPolicyCache(db.$client);
  const byId = db
    .select()
    .from(vaultKeys)
    .where(eq(vaultKeys.id, sql.placeholder("id")))
    .prepare();

  return {
    async insertKey(key: NewKey): Promise<KeyRecord> {
      return db.transaction((tx) => insertRow(tx, key), { behavior: "immediate" });
    },

    async findKeyByHash(hash: string) {
      return policies.find(hash);
    },

    async findKeyById(id: string) {
      const row = byId.get({ id });
      return row ? toKeyRecord(row) : null;
    },

    async listKeys(f: KeyFilter, now: number): Promise<Page<KeyRecord>> {
      const where = keyFilter(vaultKeys, f, now, labelHasPrefix);
      return newestFirst(db.select().from(vaultKeys), vaultKeys.seq, where, f.limit, toKeyRecord);
    },

    async revokeKey(id: string, now: number, actor?: string) {
      policies.clear();
      // The `key_revoked` alert commits with the revocation (SPEC §12).
      db.transaction(
        (tx) => {
          const revoked = tx
            .update(vaultKeys)
            .set({ status: "revoked", revokedAt: now })
            .where(and(eq(vaultKeys.id, id), eq(vaultKeys.status, "active")))
            .returning({ id: vaultKeys.id })
            .all();
          alerts.keysRevoked(
            revoked.map((r) => r.id),
            now,
            actor ?? null,
          );
        },
        { behavior: "immediate" },
      );
      const row = byId.get({ id });
      return row ? toKeyRecord(row) : null;
    },

    async revokeKeys(by: KeySelection, now: number, actor?: string): Promise<string[]> {
      const target: SQL[] = [];
      if (by.ids !== undefined) target.push(inArray(vaultKeys.id, by.ids));
      if (by.labelPrefix !== undefined) target.push(labelHasPrefix(vaultKeys.label, by.labelPrefix));
      if (by.mintedBy !== undefined) target.push(eq(vaultKeys.mintedBy, by.mintedBy));
      // A selection of nothing must never become "every key".
      if (target.length === 0) throw new Error("revokeKeys needs ids, labelPrefix or mintedBy");
      policies.clear();
      return db.transaction(
        (tx) => {
          const ids = tx
            .update(vaultKeys)
            .set({ status: "revoked", revokedAt: now })
            .where(and(...target, eq(vaultKeys.status, "active")))
            .returning({ id: vaultKeys.id })
            .all()
            .map((r) => r.id);
          alerts.keysRevoked(ids, now, actor ?? null);
          return ids;
        },
        { behavior: "immediate" },
      );
    },

    async updateKey(id: string, patch: KeyPatch) {
      policies.clear();
      const row = db.update(vaultKeys).set(patch).where(eq(vaultKeys.id, id)).returning().get();
      return row ? toKeyRecord(row) : null;
    },

    async insertKeyWithin(key: NewKey, issuance: Issuance): Promise<IssuanceResult<KeyRecord>> {
      return db.transaction(
        (tx) => {
          if (issuance.maxKeysPerHour !== null) {
            const minted = tx
              .select({ n: sql<number>`count(*)` })
              .from(keyIssuance)
              .where(
                and(eq(keyIssuance.tokenId, issuance.tokenId), gt(keyIssuance.at, issuance.now - 3_600_000), eq(keyIssuance.kind, "mint")),
              )
              .get()!.n;
            if (minted + 1 > issuance.maxKeysPerHour) return { kind: "refused", rule: "max_keys_per_hour", used: minted };
          }
          const refused = issuedToday(tx, issuance, issuance.micros);
          if (refused) return refused;
          const record = insertRow(tx, key);
          tx.insert(keyIssuance)
            .values({ tokenId: issuance.tokenId, keyId: key.id, kind: "mint", at: issuance.now, micros: issuance.micros })
            .run();
          return { kind: "ok", value: record };
        },
        { behavior: "immediate" },
      );
    },

    async updateKeyWithin(id: string, patch: KeyPatch, issuance: Issuance): Promise<IssuanceResult<KeyRecord | null>> {
      policies.clear();
      return db.transaction(
        (tx) => {
          const counted = tx
            .select({ micros: sql<number>`coalesce(sum(${keyIssuance.micros}), 0)` })
            .from(keyIssuance)
            .where(eq(keyIssuance.keyId, id))
            .get()!.micros;
          const raise = issuance.micros - counted;
          if (raise > 0) {
            const refused = issuedToday(tx, issuance, raise);
            if (refused) return refused;
            tx.insert(keyIssuance).values({ tokenId: issuance.tokenId, keyId: id, kind: "raise", at: issuance.now, micros: raise }).run();
          }
          const row = tx.update(vaultKeys).set(patch).where(eq(vaultKeys.id, id)).returning().get();
          return { kind: "ok", value: row ? toKeyRecord(row) : null };
        },
        { behavior: "immediate" },
      );
    },

    async dayUsage(keyIds: string[], day: string): Promise<Map<string, DayUsage>> {
      const usage = new Map<string, DayUsage>();
      if (keyIds.length === 0) return usage;
      const rows = db
        .select()
        .from(spendDays)
        .where(and(inArray(spendDays.keyId, keyIds), eq(spendDays.day, day)))
        .all();
      for (const r of rows) usage.set(r.keyId, { settledMicros: r.settledMicros, heldMicros: r.heldMicros });
      return usage;
    },
  };
}

/** Writes a key, in the caller's transaction: the budget it draws from must exist as it is written. */
function insertRow(tx: Pick<Db, "select" | "insert">, key: NewKey): KeyRecord {
  if (key.budgetId) assertBudgetExists(tx, key.budgetId, "budget_id");
  return toKeyRecord(tx.insert(vaultKeys).values(key).returning().get());
}

/** Refusal when issuing `micros` more would take the token past its issued_usd_per_day, else null. */
function issuedToday(tx: Pick<Db, "select">, issuance: Issuance, micros: number): IssuanceResult<never> | null {
  if (issuance.maxUsdPerDayMicros === null) return null;
  const used = tx
    .select({ micros: sql<number>`coalesce(sum(${keyIssuance.micros}), 0)` })
    .from(keyIssuance)
    .where(and(eq(keyIssuance.tokenId, issuance.tokenId), gte(keyIssuance.at, issuance.dayStart)))
    .get()!.micros;
  return used + micros > issuance.maxUsdPerDayMicros ? { kind: "refused", rule: "issued_usd_per_day", used } : null;
}

/** Prefix match without LIKE (case-insensitive in SQLite, and without an escape character), so `%` and `_` are plain. */
export const labelHasPrefix: PrefixMatch = (column, prefix) => sql`substr(${column}, 1, length(${prefix})) = ${prefix}`;

import { and, eq, isNull, sql } from "drizzle-orm";
import { newestFirst, tokenPageFilter, toTokenRecord } from "./admin-reads";
import type { Db } from "./sqlite";
import { apiTokens } from "./schema";
import type { NewToken, Page, TokenRecord } from "./types";

/** API tokens (SPEC §10). Never cached: every admin request reads its token, so a revocation counts at once. */
export function tokenQueries(db: Db) {
  const byHash = db
    .select()
    .from(apiTokens)
    .where(eq(apiTokens.tokenHash, sql.placeholder("hash")))
    .prepare();
  const byId = db
    .select()
    .from(apiTokens)
    .where(eq(apiTokens.id, sql.placeholder("id")))
    .prepare();
  return {
    async insertToken(token: NewToken): Promise<TokenRecord> {
      return toTokenRecord(db.insert(apiTokens).values(token).returning().get());
    },

    async findTokenByHash(hash: string) {
      const row = byHash.get({ hash });
      return row ? { ...toTokenRecord(row), tokenHash: row.tokenHash } : null;
    },

    async findTokenById(id: string) {
      const row = byId.get({ id });
      return row ? toTokenRecord(row) : null;
    },

    async listTokens(limit: number, cursor?: number): Promise<Page<TokenRecord>> {
      return newestFirst(db.select().from(apiTokens), apiTokens.seq, tokenPageFilter(apiTokens, cursor), limit, toTokenRecord);
    },

    async revokeToken(id: string, now: number) {
      db.update(apiTokens)
        .set({ revokedAt: now })
        .where(and(eq(apiTokens.id, id), isNull(apiTokens.revokedAt)))
        .run();
      const row = byId.get({ id });
      return row ? toTokenRecord(row) : null;
    },
  };
}

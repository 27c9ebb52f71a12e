import { and, desc, eq, isNull, lt, sql } from "drizzle-orm";
import type { Db } from "./sqlite";
import { apiTokens } from "./schema";
import type { NewToken, Page, TokenRecord } from "./types";

type Row = typeof apiTokens.$inferSelect;

const toRecord = ({ seq: _seq, tokenHash: _hash, ...rest }: Row): TokenRecord => rest;

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
      return toRecord(db.insert(apiTokens).values(token).returning().get());
    },

    async findTokenByHash(hash: string) {
      const row = byHash.get({ hash });
      return row ? { ...toRecord(row), tokenHash: row.tokenHash } : null;
    },

    async findTokenById(id: string) {
      const row = byId.get({ id });
      return row ? toRecord(row) : null;
    },

    async listTokens(limit: number, cursor?: number): Promise<Page<TokenRecord>> {
      const rows = db
        .select()
        .from(apiTokens)
        .where(cursor === undefined ? undefined : lt(apiTokens.seq, cursor))
        .orderBy(desc(apiTokens.seq))
        .limit(limit + 1)
        .all();
      const more = rows.length > limit;
      const page = rows.slice(0, limit);
      return { data: page.map(toRecord), nextCursor: more ? page[page.length - 1]!.seq : null };
    },

    async revokeToken(id: string, now: number) {
      db.update(apiTokens)
        .set({ revokedAt: now })
        .where(and(eq(apiTokens.id, id), isNull(apiTokens.revokedAt)))
        .run();
      const row = byId.get({ id });
      return row ? toRecord(row) : null;
    },
  };
}

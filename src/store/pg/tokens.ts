import { eq } from "drizzle-orm";
import { newestFirst, tokenPageFilter, toTokenRecord } from "../admin-reads";
import type { NewToken, Page, TokenRecord } from "../types";
import type { Pg } from "./client";
import { jsonText, orm } from "./orm";
import { apiTokens } from "./schema";

/** API tokens (SPEC §10) on PostgreSQL. Never cached: a revocation at any instance counts on the next request everywhere. */
export function pgTokenQueries(sql: Pg) {
  const db = orm(sql);
  const byId = async (id: string): Promise<TokenRecord | null> => {
    const [row] = await db.select().from(apiTokens).where(eq(apiTokens.id, id));
    return row ? toTokenRecord(row) : null;
  };

  return {
    async insertToken(token: NewToken): Promise<TokenRecord> {
      const [row] = await db
        .insert(apiTokens)
        .values({ ...token, policy: jsonText(token.policy) })
        .returning();
      return toTokenRecord(row!);
    },

    async findTokenByHash(hash: string): Promise<(TokenRecord & { tokenHash: string }) | null> {
      const [row] = await db.select().from(apiTokens).where(eq(apiTokens.tokenHash, hash));
      return row ? { ...toTokenRecord(row), tokenHash: row.tokenHash } : null;
    },

    findTokenById: byId,

    async listTokens(limit: number, cursor?: number): Promise<Page<TokenRecord>> {
      return newestFirst(db.select().from(apiTokens), apiTokens.seq, tokenPageFilter(apiTokens, cursor), limit, toTokenRecord);
    },

    async revokeToken(id: string, now: number): Promise<TokenRecord | null> {
      await sql`UPDATE api_tokens SET revoked_at = ${now} WHERE id = ${id} AND revoked_at IS NULL`;
      return byId(id);
    },
  };
}

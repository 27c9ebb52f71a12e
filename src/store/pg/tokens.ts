import type { NewToken, Page, TokenRecord } from "../types";
import { type Pg, num, numOrNull } from "./client";

const TOKEN_COLUMNS = `seq, id, name, role, token_hint AS "tokenHint", policy, created_at AS "createdAt", created_by AS "createdBy",
  expires_at AS "expiresAt", revoked_at AS "revokedAt"`;

type RawToken = Omit<TokenRecord, "policy" | "createdAt" | "expiresAt" | "revokedAt"> & {
  seq: string;
  policy: string | null;
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
};

const toRecord = ({ seq: _seq, ...r }: RawToken): TokenRecord => ({
  ...r,
  policy: r.policy === null ? null : JSON.parse(r.policy),
  createdAt: num(r.createdAt),
  expiresAt: numOrNull(r.expiresAt),
  revokedAt: numOrNull(r.revokedAt),
});

/** API tokens (SPEC §10) on PostgreSQL. Never cached: a revocation at any instance counts on the next request everywhere. */
export function pgTokenQueries(sql: Pg) {
  const byId = async (id: string): Promise<TokenRecord | null> => {
    const [row] = await sql`SELECT ${sql.unsafe(TOKEN_COLUMNS)} FROM api_tokens WHERE id = ${id}`;
    return row ? toRecord(row) : null;
  };

  return {
    async insertToken(token: NewToken): Promise<TokenRecord> {
      const [row] = await sql`
        INSERT INTO api_tokens (id, name, role, token_hash, token_hint, policy, created_at, created_by, expires_at)
        VALUES (${token.id}, ${token.name}, ${token.role}, ${token.tokenHash}, ${token.tokenHint},
                ${token.policy === null ? null : JSON.stringify(token.policy)}, ${token.createdAt}, ${token.createdBy},
                ${token.expiresAt})
        RETURNING ${sql.unsafe(TOKEN_COLUMNS)}`;
      return toRecord(row);
    },

    async findTokenByHash(hash: string): Promise<(TokenRecord & { tokenHash: string }) | null> {
      const [row] = await sql`SELECT ${sql.unsafe(TOKEN_COLUMNS)}, token_hash AS "tokenHash" FROM api_tokens WHERE token_hash = ${hash}`;
      if (!row) return null;
      const { tokenHash, ...token } = row;
      return { ...toRecord(token), tokenHash };
    },

    findTokenById: byId,

    async listTokens(limit: number, cursor?: number): Promise<Page<TokenRecord>> {
      const rows: RawToken[] = await sql`
        SELECT ${sql.unsafe(TOKEN_COLUMNS)} FROM api_tokens
         WHERE ${cursor === undefined ? sql`TRUE` : sql`seq < ${cursor}`}
         ORDER BY seq DESC LIMIT ${limit + 1}`;
      const data = rows.slice(0, limit);
      return { data: data.map(toRecord), nextCursor: rows.length > limit ? num(data[data.length - 1]!.seq) : null };
    },

    async revokeToken(id: string, now: number): Promise<TokenRecord | null> {
      await sql`UPDATE api_tokens SET revoked_at = ${now} WHERE id = ${id} AND revoked_at IS NULL`;
      return byId(id);
    },
  };
}

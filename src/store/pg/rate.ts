import type { Pg } from "./client";
import { num } from "./client";

const WINDOW_MS = 60_000;

/**
 * `max_requests_per_minute` shared by every instance (SPEC §13): the same sliding log as the in-memory limiter
 * (proxy/rate-limit.ts), kept in `rate_limit_hits`. A per-key advisory lock serialises one key's checks across
 * instances without touching the key's row, which holds and settlements lock.
 */
export function pgRateLimiter(sql: Pg) {
  return {
    /** Counts the call; returns seconds to wait when the key is over its limit, else 0. */
    take(keyId: string, limit: number, now: number): Promise<number> {
      return sql.begin(async (tx) => {
        await tx`SELECT pg_advisory_xact_lock(hashtextextended(${`rate:${keyId}`}, 0))`;
        await tx`DELETE FROM rate_limit_hits WHERE key_id = ${keyId} AND at <= ${now - WINDOW_MS}`;
        // The limit-th newest admitted call: while it is inside the window, one more would exceed the limit.
        const [edge] = await tx`SELECT at FROM rate_limit_hits WHERE key_id = ${keyId} ORDER BY at DESC OFFSET ${limit - 1} LIMIT 1`;
        if (edge) return Math.max(1, Math.ceil((num(edge.at) + WINDOW_MS - now) / 1000));
        await tx`INSERT INTO rate_limit_hits (key_id, at) VALUES (${keyId}, ${now})`;
        return 0;
      });
    },
  };
}

import { SQL } from "bun";

/** A PostgreSQL connection pool (Bun's built-in client), or a transaction or savepoint on it: all are tagged templates. */
export type Pg = SQL;

/**
 * PostgreSQL returns int8 (bigint) and numeric values, and count(*), as strings. Money (micro-dollars) and times
 * (Unix ms) stay below 2^53, so they are read back as plain numbers.
 */
export const num = (value: unknown): number => (typeof value === "number" ? value : Number(value));
export const numOrNull = (value: unknown): number | null => (value === null || value === undefined ? null : num(value));

/** Opens a pool on `url` (postgres://…). `max`: connections per instance. */
export function openPgClient(url: string, max = 16): Pg {
  return new SQL({ url, max, idleTimeout: 30, connectionTimeout: 10 });
}

/** A piece of SQL with its parameters, to build a query of (a WHERE condition). */
export type Fragment = SQL.Query<unknown>;

/** Conditions joined by AND (TRUE when there are none). */
export function allOf(sql: Pg, conditions: Fragment[]): Fragment {
  return conditions.reduce((where, condition) => sql`${where} AND ${condition}`, sql`TRUE`);
}

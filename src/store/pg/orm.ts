import { drizzle } from "drizzle-orm/bun-sql";
import type { Pg } from "./client";

/**
 * drizzle over a pool, transaction or savepoint of Bun's client: the admin's reads, written once with the SQLite
 * store's over the dialect-neutral operators (../admin-reads.ts), run here on pg-core's tables (./schema.ts).
 */
export const orm = (sql: Pg) => drizzle({ client: sql });

/** A JSON column's value as written (text holding JSON, see ./schema.ts); absent or null stays so. */
export const jsonText = <T>(value: T) =>
  (value === undefined || value === null ? value : JSON.stringify(value)) as T extends null | undefined ? T : string;

import type { AdminEvent, Page } from "../types";
import { type Pg, num } from "./client";

type RawAdminEvent = Omit<AdminEvent, "seq" | "at" | "details"> & { seq: string; at: string; details: string | null };

const toEvent = (r: RawAdminEvent): AdminEvent => ({
  ...r,
  seq: num(r.seq),
  at: num(r.at),
  details: r.details === null ? null : JSON.parse(r.details),
});

/** The admin events log and the settings, on PostgreSQL. */
export function pgAdminQueries(sql: Pg) {
  return {
    async recordAdminEvent(e: Omit<AdminEvent, "seq">): Promise<void> {
      await sql`
        INSERT INTO admin_events (at, actor, action, target, details, token_id, token_name)
        VALUES (${e.at}, ${e.actor}, ${e.action}, ${e.target}, ${e.details === null ? null : JSON.stringify(e.details)},
                ${e.tokenId}, ${e.tokenName})`;
    },

    async listAdminEvents(limit: number, cursor?: number, tokenId?: string): Promise<Page<AdminEvent>> {
      const rows: RawAdminEvent[] = await sql`
        SELECT seq, at, actor, action, target, details, token_id AS "tokenId", token_name AS "tokenName"
          FROM admin_events
         WHERE ${cursor === undefined ? sql`TRUE` : sql`seq < ${cursor}`}
           AND ${tokenId === undefined ? sql`TRUE` : sql`token_id = ${tokenId}`}
         ORDER BY seq DESC LIMIT ${limit + 1}`;
      const data = rows.slice(0, limit).map(toEvent);
      return { data, nextCursor: rows.length > limit ? data[data.length - 1]!.seq : null };
    },

    async getSetting(name: string): Promise<string | null> {
      const [row] = await sql`SELECT value FROM settings WHERE name = ${name}`;
      return row ? row.value : null;
    },

    async setSetting(name: string, value: string): Promise<void> {
      await sql`INSERT INTO settings (name, value) VALUES (${name}, ${value}) ON CONFLICT (name) DO UPDATE SET value = excluded.value`;
    },
  };
}

import { adminEventFilter, newestFirst, toAdminEvent } from "../admin-reads";
import type { AdminEvent, Page } from "../types";
import type { Pg } from "./client";
import { orm } from "./orm";
import { adminEvents } from "./schema";

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
      const where = adminEventFilter(adminEvents, cursor, tokenId);
      return newestFirst(orm(sql).select().from(adminEvents), adminEvents.seq, where, limit, toAdminEvent);
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

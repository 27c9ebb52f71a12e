import { eq } from "drizzle-orm";
import { adminEventFilter, newestFirst, toAdminEvent } from "./admin-reads";
import type { Db } from "./sqlite";
import { adminEvents, settings } from "./schema";
import type { AdminEvent, Page } from "./types";

export function adminQueries(db: Db) {
  return {
    async recordAdminEvent(event: Omit<AdminEvent, "seq">) {
      db.insert(adminEvents).values(event).run();
    },

    async listAdminEvents(limit: number, cursor?: number, tokenId?: string): Promise<Page<AdminEvent>> {
      const where = adminEventFilter(adminEvents, cursor, tokenId);
      return newestFirst(db.select().from(adminEvents), adminEvents.seq, where, limit, toAdminEvent);
    },

    async getSetting(name: string) {
      return db.select().from(settings).where(eq(settings.name, name)).get()?.value ?? null;
    },

    async setSetting(name: string, value: string) {
      db.insert(settings).values({ name, value }).onConflictDoUpdate({ target: settings.name, set: { value } }).run();
    },
  };
}

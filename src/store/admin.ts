import { and, desc, eq, lt } from "drizzle-orm";
import type { Db } from "./sqlite";
import { adminEvents, settings } from "./schema";
import type { AdminEvent, Page } from "./types";

export function adminQueries(db: Db) {
  return {
    async recordAdminEvent(event: Omit<AdminEvent, "seq">) {
      db.insert(adminEvents).values(event).run();
    },

    async listAdminEvents(limit: number, cursor?: number, tokenId?: string): Promise<Page<AdminEvent>> {
      const rows = db
        .select()
        .from(adminEvents)
        .where(
          and(
            cursor === undefined ? undefined : lt(adminEvents.seq, cursor),
            tokenId === undefined ? undefined : eq(adminEvents.tokenId, tokenId),
          ),
        )
        .orderBy(desc(adminEvents.seq))
        .limit(limit + 1)
        .all();
      const more = rows.length > limit;
      const page = rows.slice(0, limit);
      return { data: page, nextCursor: more ? page[page.length - 1]!.seq : null };
    },

    async getSetting(name: string) {
      return db.select().from(settings).where(eq(settings.name, name)).get()?.value ?? null;
    },

    async setSetting(name: string, value: string) {
      db.insert(settings).values({ name, value }).onConflictDoUpdate({ target: settings.name, set: { value } }).run();
    },
  };
}

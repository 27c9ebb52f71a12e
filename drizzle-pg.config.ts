import { defineConfig } from "drizzle-kit";

/** The PostgreSQL store's migrations (SPEC §13); drizzle.config.ts is SQLite's. */
export default defineConfig({
  dialect: "postgresql",
  schema: "./src/store/pg/schema.ts",
  out: "./drizzle/pg",
});

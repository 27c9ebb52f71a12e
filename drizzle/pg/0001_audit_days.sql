CREATE TABLE "audit_days" (
	"day" text NOT NULL,
	"key_id" text,
	"label" text,
	"vendor" text,
	"row_count" bigint NOT NULL,
	"calls" bigint NOT NULL,
	"allowed" bigint NOT NULL,
	"denied" bigint NOT NULL,
	"spend_micros" bigint NOT NULL
);
--> statement-breakpoint
CREATE INDEX "audit_days_group" ON "audit_days" USING btree ("key_id","day","label","vendor");
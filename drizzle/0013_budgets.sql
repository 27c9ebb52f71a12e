CREATE TABLE `budget_days` (
	`budget_id` text NOT NULL,
	`day` text NOT NULL,
	`settled_micros` integer DEFAULT 0 NOT NULL,
	`held_micros` integer DEFAULT 0 NOT NULL,
	PRIMARY KEY(`budget_id`, `day`)
);
--> statement-breakpoint
CREATE TABLE `budgets` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`id` text NOT NULL,
	`name` text NOT NULL,
	`parent_id` text,
	`daily_cap_micros` integer,
	`total_cap_micros` integer,
	`alert_thresholds` text DEFAULT '[0.5,0.8,1]' NOT NULL,
	`spent_total_micros` integer DEFAULT 0 NOT NULL,
	`held_total_micros` integer DEFAULT 0 NOT NULL,
	`created_at` integer NOT NULL,
	`created_by` text NOT NULL,
	CONSTRAINT "budgets_has_cap" CHECK("budgets"."daily_cap_micros" IS NOT NULL OR "budgets"."total_cap_micros" IS NOT NULL)
);
--> statement-breakpoint
CREATE UNIQUE INDEX `budgets_id` ON `budgets` (`id`);--> statement-breakpoint
CREATE INDEX `budgets_parent` ON `budgets` (`parent_id`);--> statement-breakpoint
CREATE TABLE `counterparty_days` (
	`key_id` text NOT NULL,
	`day` text NOT NULL,
	`counterparty` text NOT NULL,
	`settled_micros` integer DEFAULT 0 NOT NULL,
	`held_micros` integer DEFAULT 0 NOT NULL,
	PRIMARY KEY(`key_id`, `day`, `counterparty`)
);
--> statement-breakpoint
ALTER TABLE `ledger_entries` ADD `counterparty` text;--> statement-breakpoint
ALTER TABLE `vault_keys` ADD `budget_id` text;--> statement-breakpoint
ALTER TABLE `vault_keys` ADD `per_customer_cap_micros` integer;--> statement-breakpoint
ALTER TABLE `vault_keys` ADD `per_destination_cap_micros` integer;--> statement-breakpoint
CREATE INDEX `vault_keys_budget` ON `vault_keys` (`budget_id`) WHERE "vault_keys"."budget_id" IS NOT NULL;
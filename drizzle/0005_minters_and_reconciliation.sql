ALTER TABLE `ledger_entries` ADD `reconcile_path` text;--> statement-breakpoint
ALTER TABLE `ledger_entries` ADD `reconcile_at` integer;--> statement-breakpoint
ALTER TABLE `ledger_entries` ADD `reconcile_attempts` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE INDEX `ledger_entries_reconcile` ON `ledger_entries` (`reconcile_at`) WHERE "ledger_entries"."reconcile_at" IS NOT NULL;--> statement-breakpoint
ALTER TABLE `vault_keys` ADD `minted_by` text DEFAULT 'admin' NOT NULL;
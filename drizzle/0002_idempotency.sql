CREATE TABLE `idempotency_entries` (
	`key_id` text NOT NULL,
	`idempotency_key` text NOT NULL,
	`fingerprint` text NOT NULL,
	`state` text NOT NULL,
	`hold_id` text,
	`day` text NOT NULL,
	`status` integer,
	`headers` text,
	`body` blob,
	`body_too_large` integer DEFAULT false NOT NULL,
	`vendor_request_id` text,
	`created_at` integer NOT NULL,
	`expires_at` integer NOT NULL,
	PRIMARY KEY(`key_id`, `idempotency_key`)
);
--> statement-breakpoint
CREATE INDEX `idempotency_entries_expires` ON `idempotency_entries` (`expires_at`);--> statement-breakpoint
ALTER TABLE `ledger_entries` ADD `request_id` text;--> statement-breakpoint
ALTER TABLE `ledger_entries` ADD `method` text;--> statement-breakpoint
ALTER TABLE `ledger_entries` ADD `path` text;--> statement-breakpoint
CREATE INDEX `ledger_entries_state` ON `ledger_entries` (`state`);
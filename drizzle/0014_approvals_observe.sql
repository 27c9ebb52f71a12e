CREATE TABLE `approvals` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`id` text NOT NULL,
	`key_id` text NOT NULL,
	`idempotency_key` text NOT NULL,
	`fingerprint` text NOT NULL,
	`hold_id` text NOT NULL,
	`method` text NOT NULL,
	`path` text NOT NULL,
	`price_micros` integer NOT NULL,
	`status` text NOT NULL,
	`requested_at` integer NOT NULL,
	`requested_by` text,
	`expires_at` integer NOT NULL,
	`decided_at` integer,
	`decided_by` text,
	`reason` text
);
--> statement-breakpoint
CREATE UNIQUE INDEX `approvals_id` ON `approvals` (`id`);--> statement-breakpoint
CREATE UNIQUE INDEX `approvals_call` ON `approvals` (`key_id`,`idempotency_key`);--> statement-breakpoint
CREATE INDEX `approvals_status` ON `approvals` (`status`,`expires_at`);--> statement-breakpoint
ALTER TABLE `audit_events` ADD `would_deny` text;--> statement-breakpoint
ALTER TABLE `vault_keys` ADD `approval_above_micros` integer;--> statement-breakpoint
ALTER TABLE `vault_keys` ADD `approval_ttl_ms` integer;--> statement-breakpoint
ALTER TABLE `vault_keys` ADD `enforcement` text DEFAULT 'enforce' NOT NULL;
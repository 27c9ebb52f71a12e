CREATE TABLE `admin_events` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`at` integer NOT NULL,
	`actor` text NOT NULL,
	`action` text NOT NULL,
	`target` text,
	`details` text
);
--> statement-breakpoint
CREATE INDEX `admin_events_at` ON `admin_events` (`at`);--> statement-breakpoint
CREATE TABLE `audit_events` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`id` text NOT NULL,
	`at` integer NOT NULL,
	`key_id` text,
	`label` text,
	`vendor` text,
	`mode` text,
	`method` text NOT NULL,
	`path` text NOT NULL,
	`status` integer NOT NULL,
	`decision` text NOT NULL,
	`hold_micros` integer DEFAULT 0 NOT NULL,
	`cost_micros` integer DEFAULT 0 NOT NULL,
	`cost_source` text,
	`currency` text,
	`amount_minor` integer,
	`vendor_request_id` text,
	`idempotency_key` text,
	`upstream_ms` real,
	`overhead_ms` real,
	`client_ip` text
);
--> statement-breakpoint
CREATE UNIQUE INDEX `audit_events_id` ON `audit_events` (`id`);--> statement-breakpoint
CREATE INDEX `audit_events_at` ON `audit_events` (`at`);--> statement-breakpoint
CREATE INDEX `audit_events_key` ON `audit_events` (`key_id`,`seq`);--> statement-breakpoint
CREATE INDEX `audit_events_label` ON `audit_events` (`label`,`seq`);--> statement-breakpoint
CREATE TABLE `ledger_entries` (
	`id` text PRIMARY KEY NOT NULL,
	`key_id` text NOT NULL,
	`day` text NOT NULL,
	`hold_micros` integer NOT NULL,
	`cost_micros` integer,
	`state` text NOT NULL,
	`created_at` integer NOT NULL,
	`settled_at` integer
);
--> statement-breakpoint
CREATE INDEX `ledger_entries_key` ON `ledger_entries` (`key_id`,`state`);--> statement-breakpoint
CREATE TABLE `settings` (
	`name` text PRIMARY KEY NOT NULL,
	`value` text NOT NULL
);
--> statement-breakpoint
CREATE TABLE `spend_days` (
	`key_id` text NOT NULL,
	`day` text NOT NULL,
	`settled_micros` integer DEFAULT 0 NOT NULL,
	`held_micros` integer DEFAULT 0 NOT NULL,
	PRIMARY KEY(`key_id`, `day`)
);
--> statement-breakpoint
CREATE TABLE `vault_keys` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`id` text NOT NULL,
	`key_hash` text NOT NULL,
	`key_hint` text NOT NULL,
	`vendor` text NOT NULL,
	`mode` text NOT NULL,
	`label` text,
	`daily_cap_micros` integer,
	`total_cap_micros` integer,
	`allowed_endpoints` text NOT NULL,
	`max_requests_per_minute` integer,
	`require_idempotency_key` integer DEFAULT false NOT NULL,
	`metadata` text NOT NULL,
	`status` text DEFAULT 'active' NOT NULL,
	`created_at` integer NOT NULL,
	`expires_at` integer NOT NULL,
	`revoked_at` integer,
	`spent_total_micros` integer DEFAULT 0 NOT NULL,
	`held_total_micros` integer DEFAULT 0 NOT NULL,
	`calls` integer DEFAULT 0 NOT NULL,
	`last_used_at` integer,
	CONSTRAINT "vault_keys_has_cap" CHECK("vault_keys"."daily_cap_micros" IS NOT NULL OR "vault_keys"."total_cap_micros" IS NOT NULL)
);
--> statement-breakpoint
CREATE UNIQUE INDEX `vault_keys_id` ON `vault_keys` (`id`);--> statement-breakpoint
CREATE UNIQUE INDEX `vault_keys_key_hash` ON `vault_keys` (`key_hash`);--> statement-breakpoint
CREATE INDEX `vault_keys_label` ON `vault_keys` (`label`);
CREATE TABLE `api_tokens` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`id` text NOT NULL,
	`name` text NOT NULL,
	`role` text NOT NULL,
	`token_hash` text NOT NULL,
	`token_hint` text NOT NULL,
	`policy` text,
	`created_at` integer NOT NULL,
	`created_by` text NOT NULL,
	`expires_at` integer,
	`revoked_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `api_tokens_id` ON `api_tokens` (`id`);--> statement-breakpoint
CREATE UNIQUE INDEX `api_tokens_token_hash` ON `api_tokens` (`token_hash`);--> statement-breakpoint
CREATE TABLE `key_issuance` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`token_id` text NOT NULL,
	`key_id` text NOT NULL,
	`kind` text NOT NULL,
	`at` integer NOT NULL,
	`micros` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `key_issuance_token` ON `key_issuance` (`token_id`,`at`);--> statement-breakpoint
CREATE INDEX `key_issuance_key` ON `key_issuance` (`key_id`);--> statement-breakpoint
ALTER TABLE `admin_events` ADD `token_id` text;--> statement-breakpoint
ALTER TABLE `admin_events` ADD `token_name` text;--> statement-breakpoint
CREATE INDEX `admin_events_token` ON `admin_events` (`token_id`,`seq`);--> statement-breakpoint
CREATE INDEX `vault_keys_minted_by` ON `vault_keys` (`minted_by`,`seq`);
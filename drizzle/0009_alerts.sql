CREATE TABLE `alert_deliveries` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`event_id` text NOT NULL,
	`webhook_id` text NOT NULL,
	`status` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`created_at` integer NOT NULL,
	`next_attempt_at` integer,
	`last_attempt_at` integer,
	`last_status` integer,
	`last_error` text,
	`delivered_at` integer
);
--> statement-breakpoint
CREATE INDEX `alert_deliveries_due` ON `alert_deliveries` (`next_attempt_at`) WHERE "alert_deliveries"."status" = 'pending';--> statement-breakpoint
CREATE INDEX `alert_deliveries_webhook` ON `alert_deliveries` (`webhook_id`,`seq`);--> statement-breakpoint
CREATE INDEX `alert_deliveries_event` ON `alert_deliveries` (`event_id`);--> statement-breakpoint
CREATE TABLE `alert_events` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`id` text NOT NULL,
	`type` text NOT NULL,
	`at` integer NOT NULL,
	`key_id` text,
	`label` text,
	`vendor` text,
	`mode` text,
	`data` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `alert_events_id` ON `alert_events` (`id`);--> statement-breakpoint
CREATE INDEX `alert_events_at` ON `alert_events` (`at`);--> statement-breakpoint
CREATE INDEX `alert_events_key` ON `alert_events` (`key_id`,`seq`);--> statement-breakpoint
CREATE TABLE `alert_marks` (
	`key_id` text NOT NULL,
	`window` text NOT NULL,
	`mark` text NOT NULL,
	`at` integer NOT NULL,
	PRIMARY KEY(`key_id`, `window`, `mark`)
);
--> statement-breakpoint
CREATE TABLE `alert_webhooks` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`id` text NOT NULL,
	`url` text NOT NULL,
	`events` text NOT NULL,
	`label_prefix` text,
	`format` text NOT NULL,
	`secret` text NOT NULL,
	`created_at` integer NOT NULL,
	`created_by` text NOT NULL,
	`deleted_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `alert_webhooks_id` ON `alert_webhooks` (`id`);--> statement-breakpoint
ALTER TABLE `vault_keys` ADD `alert_thresholds` text DEFAULT '[0.5,0.8,1]' NOT NULL;
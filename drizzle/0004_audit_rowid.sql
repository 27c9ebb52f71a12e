PRAGMA foreign_keys=OFF;--> statement-breakpoint
CREATE TABLE `__new_audit_events` (
	`seq` integer PRIMARY KEY NOT NULL,
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
INSERT INTO `__new_audit_events`("seq", "id", "at", "key_id", "label", "vendor", "mode", "method", "path", "status", "decision", "hold_micros", "cost_micros", "cost_source", "currency", "amount_minor", "vendor_request_id", "idempotency_key", "upstream_ms", "overhead_ms", "client_ip") SELECT "seq", "id", "at", "key_id", "label", "vendor", "mode", "method", "path", "status", "decision", "hold_micros", "cost_micros", "cost_source", "currency", "amount_minor", "vendor_request_id", "idempotency_key", "upstream_ms", "overhead_ms", "client_ip" FROM `audit_events`;--> statement-breakpoint
DROP TABLE `audit_events`;--> statement-breakpoint
ALTER TABLE `__new_audit_events` RENAME TO `audit_events`;--> statement-breakpoint
PRAGMA foreign_keys=ON;--> statement-breakpoint
CREATE INDEX `audit_events_at` ON `audit_events` (`at`);--> statement-breakpoint
CREATE INDEX `audit_events_key` ON `audit_events` (`key_id`,`seq`);--> statement-breakpoint
CREATE INDEX `audit_events_label` ON `audit_events` (`label`,`seq`);
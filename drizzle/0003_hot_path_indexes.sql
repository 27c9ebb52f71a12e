DROP INDEX `audit_events_id`;--> statement-breakpoint
DROP INDEX `ledger_entries_key`;--> statement-breakpoint
DROP INDEX `ledger_entries_state`;--> statement-breakpoint
CREATE INDEX `ledger_entries_open` ON `ledger_entries` (`state`) WHERE state IN ('held', 'orphaned', 'ambiguous');
CREATE TABLE `tracked_objects` (
	`object_id` text PRIMARY KEY NOT NULL,
	`key_id` text NOT NULL,
	`currency` text NOT NULL,
	`amount_minor` integer NOT NULL,
	`counted_micros` integer NOT NULL,
	`updated_at` integer NOT NULL
);

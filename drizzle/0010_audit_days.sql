CREATE TABLE `audit_days` (
	`day` text NOT NULL,
	`key_id` text,
	`label` text,
	`vendor` text,
	`row_count` integer NOT NULL,
	`calls` integer NOT NULL,
	`allowed` integer NOT NULL,
	`denied` integer NOT NULL,
	`spend_micros` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `audit_days_group` ON `audit_days` (`key_id`,`day`,`label`,`vendor`);
--> statement-breakpoint
-- Written by hand after drizzle-kit (which knows no triggers): the rollup of the rows already there, then the
-- triggers that keep it exact on every insert, delete (retention) and update of an audit row. The decisions
-- listed are HOLD_EVENT_DECISIONS (src/store/audit.ts): hold events, which are no calls.
INSERT INTO audit_days (day, key_id, label, vendor, row_count, calls, allowed, denied, spend_micros)
SELECT strftime('%Y-%m-%d', at / 1000, 'unixepoch'), key_id, label, vendor, count(*),
  sum(requests * (decision NOT IN ('orphaned_hold', 'hold_settled', 'hold_released', 'price_reconciled'))), sum(decision = 'allowed'),
  sum(requests * (decision NOT IN ('allowed', 'orphaned_hold', 'hold_settled', 'hold_released', 'price_reconciled'))), sum(cost_micros)
FROM audit_events GROUP BY 1, 2, 3, 4;
--> statement-breakpoint
CREATE TRIGGER `audit_days_insert` AFTER INSERT ON `audit_events` BEGIN
  UPDATE audit_days SET row_count = row_count + 1,
      calls = calls + NEW.requests * (NEW.decision NOT IN ('orphaned_hold', 'hold_settled', 'hold_released', 'price_reconciled')),
      allowed = allowed + (NEW.decision = 'allowed'),
      denied = denied + NEW.requests * (NEW.decision NOT IN ('allowed', 'orphaned_hold', 'hold_settled', 'hold_released', 'price_reconciled')),
      spend_micros = spend_micros + NEW.cost_micros
    WHERE key_id IS NEW.key_id AND day = strftime('%Y-%m-%d', NEW.at / 1000, 'unixepoch') AND label IS NEW.label AND vendor IS NEW.vendor;
  INSERT INTO audit_days (day, key_id, label, vendor, row_count, calls, allowed, denied, spend_micros)
    SELECT strftime('%Y-%m-%d', NEW.at / 1000, 'unixepoch'), NEW.key_id, NEW.label, NEW.vendor, 1,
      NEW.requests * (NEW.decision NOT IN ('orphaned_hold', 'hold_settled', 'hold_released', 'price_reconciled')), NEW.decision = 'allowed',
      NEW.requests * (NEW.decision NOT IN ('allowed', 'orphaned_hold', 'hold_settled', 'hold_released', 'price_reconciled')), NEW.cost_micros
    WHERE changes() = 0;
END;
--> statement-breakpoint
CREATE TRIGGER `audit_days_delete` AFTER DELETE ON `audit_events` BEGIN
  UPDATE audit_days SET row_count = row_count - 1,
      calls = calls - OLD.requests * (OLD.decision NOT IN ('orphaned_hold', 'hold_settled', 'hold_released', 'price_reconciled')),
      allowed = allowed - (OLD.decision = 'allowed'),
      denied = denied - OLD.requests * (OLD.decision NOT IN ('allowed', 'orphaned_hold', 'hold_settled', 'hold_released', 'price_reconciled')),
      spend_micros = spend_micros - OLD.cost_micros
    WHERE key_id IS OLD.key_id AND day = strftime('%Y-%m-%d', OLD.at / 1000, 'unixepoch') AND label IS OLD.label AND vendor IS OLD.vendor;
  DELETE FROM audit_days WHERE key_id IS OLD.key_id AND day = strftime('%Y-%m-%d', OLD.at / 1000, 'unixepoch') AND label IS OLD.label AND vendor IS OLD.vendor AND row_count = 0;
END;
--> statement-breakpoint
CREATE TRIGGER `audit_days_update` AFTER UPDATE OF at, key_id, label, vendor, decision, requests, cost_micros ON `audit_events` BEGIN
  UPDATE audit_days SET row_count = row_count - 1,
      calls = calls - OLD.requests * (OLD.decision NOT IN ('orphaned_hold', 'hold_settled', 'hold_released', 'price_reconciled')),
      allowed = allowed - (OLD.decision = 'allowed'),
      denied = denied - OLD.requests * (OLD.decision NOT IN ('allowed', 'orphaned_hold', 'hold_settled', 'hold_released', 'price_reconciled')),
      spend_micros = spend_micros - OLD.cost_micros
    WHERE key_id IS OLD.key_id AND day = strftime('%Y-%m-%d', OLD.at / 1000, 'unixepoch') AND label IS OLD.label AND vendor IS OLD.vendor;
  DELETE FROM audit_days WHERE key_id IS OLD.key_id AND day = strftime('%Y-%m-%d', OLD.at / 1000, 'unixepoch') AND label IS OLD.label AND vendor IS OLD.vendor AND row_count = 0;
  UPDATE audit_days SET row_count = row_count + 1,
      calls = calls + NEW.requests * (NEW.decision NOT IN ('orphaned_hold', 'hold_settled', 'hold_released', 'price_reconciled')),
      allowed = allowed + (NEW.decision = 'allowed'),
      denied = denied + NEW.requests * (NEW.decision NOT IN ('allowed', 'orphaned_hold', 'hold_settled', 'hold_released', 'price_reconciled')),
      spend_micros = spend_micros + NEW.cost_micros
    WHERE key_id IS NEW.key_id AND day = strftime('%Y-%m-%d', NEW.at / 1000, 'unixepoch') AND label IS NEW.label AND vendor IS NEW.vendor;
  INSERT INTO audit_days (day, key_id, label, vendor, row_count, calls, allowed, denied, spend_micros)
    SELECT strftime('%Y-%m-%d', NEW.at / 1000, 'unixepoch'), NEW.key_id, NEW.label, NEW.vendor, 1,
      NEW.requests * (NEW.decision NOT IN ('orphaned_hold', 'hold_settled', 'hold_released', 'price_reconciled')), NEW.decision = 'allowed',
      NEW.requests * (NEW.decision NOT IN ('allowed', 'orphaned_hold', 'hold_settled', 'hold_released', 'price_reconciled')), NEW.cost_micros
    WHERE changes() = 0;
END;

import { CreateWebhookBody, DeliveriesQuery } from "../alerts/model";
import * as service from "../alerts/service";
import type { Config } from "../config";
import type { Store } from "../store/index";
import { ALERT_EVENTS } from "../store/types";
import { parseInput } from "../validation";
import { type FlagNames, parseFlags, UsageError, withFlagNames } from "./args";
import { writeErr, writeOut } from "./io";
import { printRecord, printRecords } from "./output";

const ADD_USAGE = `usage: keybrake alerts add --url URL [--events E1,E2] [--label-prefix P] [--format json|slack] [--json]

Adds a webhook for alert events and prints its signing secret ONCE (the database keeps it to sign with).

  --url URL           where events are POSTed: any http:// or https:// address, private and loopback included
  --events E1,E2      ${ALERT_EVENTS.join(", ")}
                      (default: all of them)
  --label-prefix P    only events of keys whose run label starts with P
  --format json|slack json (default): the signed event; slack: a Slack incoming webhook's { "text": … }
  --json              the record and secret as JSON

Each POST carries Keybrake-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")> and the event id
(in the body and Keybrake-Event-Id); the README's "Alerts" section shows a receiver verifying it.`;

const LIST_USAGE = `usage: keybrake alerts list [--json]

The webhooks: id, format, events, label prefix, URL. Never their secrets.`;

const REMOVE_USAGE = `usage: keybrake alerts remove <wh_id> [--json]

Deletes a webhook: nothing more is sent to it and its pending deliveries are cancelled.`;

const TEST_USAGE = `usage: keybrake alerts test <wh_id> [--json]

Sends a signed test event to the webhook now (from this machine, within 5 s) and prints what it answered.
Exits non-zero when the receiver did not answer 2xx.`;

const DELIVERIES_USAGE = `usage: keybrake alerts deliveries [--status pending|delivered|failed|cancelled] [--webhook-id ID]
                                  [--event-id ID] [--limit N] [--cursor C] [--json]

Recent deliveries, newest first: event, key, webhook, status, attempts, last error, next attempt.`;

const USAGE = `usage: keybrake alerts <command> [flags]

  add         add a webhook (JSON or Slack) and print its secret once   (keybrake alerts add --help)
  list        the webhooks                                              (keybrake alerts list --help)
  remove      delete a webhook                                          (keybrake alerts remove --help)
  test        send a test event to a webhook now                        (keybrake alerts test --help)
  deliveries  recent deliveries: status, attempts, last error           (keybrake alerts deliveries --help)`;

const SUBCOMMANDS: Record<string, string> = {
  add: ADD_USAGE,
  list: LIST_USAGE,
  remove: REMOVE_USAGE,
  test: TEST_USAGE,
  deliveries: DELIVERIES_USAGE,
};

/** `keybrake alerts [sub] --help`. */
export const alertsHelp = (args: string[]) => SUBCOMMANDS[args[0] ?? ""] ?? USAGE;

/** A missing or unknown subcommand, named before anything is opened. */
export function checkAlertsCommand(args: string[]) {
  const [sub] = args;
  if (sub === undefined) throw new UsageError(USAGE);
  if (!(sub in SUBCOMMANDS))
    throw new UsageError(
      `keybrake alerts: unknown command "${sub}"; one of ${Object.keys(SUBCOMMANDS).join(", ")} (keybrake alerts --help)`,
    );
}

const FLAGS: FlagNames = {
  url: "--url",
  events: "--events",
  label_prefix: "--label-prefix",
  format: "--format",
  webhook_id: "--webhook-id",
  event_id: "--event-id",
};

const WEBHOOK_COLUMNS = ["id", "format", "events", "label_prefix", "url", "created_at"];
const DELIVERY_COLUMNS = [
  "seq",
  "created_at",
  "event",
  "status",
  "attempts",
  "last_error",
  "label",
  "key_id",
  "webhook_id",
  "next_attempt_at",
  "last_status",
  "destination",
];

/** `keybrake alerts ...`: the alerts API's operations on the same database, with the same validation. */
export async function alertsCommand(
  store: () => Promise<Store>,
  args: string[],
  actor: string,
  config: Pick<Config, "publicUrl">,
): Promise<void> {
  const [sub, ...rest] = args;
  const ctx = async () => ({ store: await store(), now: Date.now, actor });
  const command = `keybrake alerts ${sub ?? ""}`.trim();
  switch (sub) {
    case "add": {
      const { values } = parseFlags(command, rest, {
        url: { type: "string" },
        events: { type: "string", multiple: true },
        "label-prefix": { type: "string" },
        format: { type: "string" },
        json: { type: "boolean" },
      });
      const body = Object.fromEntries(
        Object.entries({
          url: values.url,
          events: values.events?.flatMap((e) => e.split(",")).map((e) => e.trim()),
          label_prefix: values["label-prefix"],
          format: values.format,
        }).filter(([, v]) => v !== undefined),
      );
      const parsed = withFlagNames(command, FLAGS, () => parseInput(CreateWebhookBody, body, "flags"));
      const created = await service.createWebhook(await ctx(), parsed);
      if (values.json) return writeOut(JSON.stringify(created, null, 2));
      const { secret, ...record } = created;
      printRecord(record, false);
      writeOut(`\nsigning secret (shown once; verify Keybrake-Signature with it): ${secret}`);
      return;
    }
    case "list": {
      const { values } = parseFlags(command, rest, { json: { type: "boolean" } });
      const { data } = await service.listWebhooks(await ctx());
      if (!values.json && data.length === 0) return writeErr("keybrake: no webhooks; add one with keybrake alerts add --url URL");
      return printRecords(data, values.json ?? false, WEBHOOK_COLUMNS);
    }
    case "remove": {
      const { values, positionals } = parseFlags(command, rest, { json: { type: "boolean" } }, true);
      if (positionals.length !== 1) throw new UsageError(`${command}: give one webhook id (${command} --help)`);
      const removed = await service.deleteWebhook(await ctx(), positionals[0]!);
      return values.json ? writeOut(JSON.stringify(removed, null, 2)) : writeOut(`removed ${removed.id} (${removed.url})`);
    }
    case "test": {
      const { values, positionals } = parseFlags(command, rest, { json: { type: "boolean" } }, true);
      if (positionals.length !== 1) throw new UsageError(`${command}: give one webhook id (${command} --help)`);
      const result = await service.testWebhook(await ctx(), positionals[0]!, config);
      if (values.json) writeOut(JSON.stringify(result, null, 2));
      else if (result.delivered)
        writeOut(`delivered ${result.event_id} to ${result.webhook_id}: HTTP ${result.status} in ${result.duration_ms} ms`);
      if (!result.delivered) throw new Error(`${command}: ${result.webhook_id} did not take ${result.event_id}: ${result.error}`);
      return;
    }
    case "deliveries": {
      const { values } = parseFlags(command, rest, {
        status: { type: "string" },
        "webhook-id": { type: "string" },
        "event-id": { type: "string" },
        limit: { type: "string" },
        cursor: { type: "string" },
        json: { type: "boolean" },
      });
      const query = withFlagNames(command, FLAGS, () =>
        parseInput(
          DeliveriesQuery,
          {
            status: values.status,
            webhook_id: values["webhook-id"],
            event_id: values["event-id"],
            limit: values.limit ?? "50",
            cursor: values.cursor,
          },
          "flags",
        ),
      );
      const page = await service.listDeliveries(await ctx(), query);
      if (!values.json && page.data.length === 0) return writeErr("keybrake: no deliveries match");
      printRecords(page.data, values.json ?? false, DELIVERY_COLUMNS);
      if (page.next_cursor !== null) writeErr(`keybrake: more deliveries match: add --cursor ${page.next_cursor} for the next page`);
      return;
    }
    default:
      return checkAlertsCommand(args);
  }
}

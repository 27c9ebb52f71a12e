import type { Config } from "../config";
import { notFound } from "../errors";
import { BulkRevokeBody, CreateKeyBody, ListKeysQuery } from "../keys/model";
import * as service from "../keys/service";
import { issueWarnings } from "../keys/warnings";
import type { Store } from "../store/index";
import { vendorChoices } from "../vendors/index";
import { parseInput } from "../validation";
import { type FlagNames, numberFlag, numberListFlag, parseFlags, UsageError, withFlagNames } from "./args";
import { writeErr, writeOut } from "./io";
import { printRecord, printRecords } from "./output";

const CREATE_USAGE = `usage: keybrake keys create --vendor V (--daily-usd-cap N | --total-usd-cap N) --allow "METHOD /path" [--allow ...] [options]

Issues a vault key and prints it once.

  --vendor V                     ${vendorChoices()}
  --daily-usd-cap N              USD per UTC day (and/or --total-usd-cap N, for the key's lifetime)
  --allow "POST /v1/charges"     an allowed endpoint, repeatable; * within a segment, a trailing /* for more
  --expires-in 6h                90s, 5m, 6h, 2d, 1h30m (default 24h, at most 30d), or --expires-at ISO time
  --label L                      the run label (e.g. airflow-billing/run_2026_11_22)
  --mode live|test               which real secret the key's calls use (default live)
  --max-requests-per-minute N    a rate limit
  --require-idempotency-key      refuse priced calls without an Idempotency-Key
  --metadata k=v                 repeatable
  --alert-thresholds 0.5,0.8,1   fractions of the cap whose crossing fires a cap_threshold alert (default
                                 0.5,0.8,1; "" for none; keybrake alerts --help)
  --budget-id bud_…              the budget the key draws from (keybrake budgets --help); set now, never changed
  --per-customer-usd-cap N       USD per UTC day for one Stripe customer (429 counterparty_cap_exhausted past it)
  --per-destination-usd-cap N    USD per UTC day for one Twilio destination (the To number)
  --enforcement observe          forward calls over the key's caps, budgets and approval threshold anyway,
                                 audited as would_deny (default enforce: refuse them)
  --json                         the record as JSON`;

const LIST_USAGE = `usage: keybrake keys list [--label L] [--label-prefix P] [--vendor V] [--budget-id bud_…]
                         [--status active|revoked|expired] [--limit N] [--cursor C] [--json]

Keys newest first with today's usage and when each was last used. --limit: at most this many (default 100,
at most 1000); when more match, the next page's --cursor is printed on stderr.`;

const SHOW_USAGE = `usage: keybrake keys show <key id> [--json]

One key, every field, with today's usage.`;

const REVOKE_USAGE = `usage: keybrake keys revoke <key id> [--json]
       keybrake keys revoke --label-prefix P [--json]      every active key whose label starts with P
       keybrake keys revoke --ids id1,id2 [--json]

Revoked keys are refused on their very next call. Exits non-zero when nothing matched.`;

const USAGE = `usage: keybrake keys <command> [flags]

  create    issue a vault key                    (keybrake keys create --help)
  list      keys with usage and last use         (keybrake keys list --help)
  show      one key as a vertical record         (keybrake keys show --help)
  revoke    revoke one key, a label prefix or ids (keybrake keys revoke --help)`;

const SUBCOMMANDS: Record<string, string> = { create: CREATE_USAGE, list: LIST_USAGE, show: SHOW_USAGE, revoke: REVOKE_USAGE };

/** `keybrake keys [sub] --help`. */
export const keysHelp = (args: string[]) => SUBCOMMANDS[args[0] ?? ""] ?? USAGE;

/** A missing or unknown subcommand, named before anything is opened. */
export function checkKeysCommand(args: string[]) {
  const [sub] = args;
  if (sub === undefined) throw new UsageError(USAGE);
  if (!(sub in SUBCOMMANDS))
    throw new UsageError(`keybrake keys: unknown command "${sub}"; one of create, list, show, revoke (keybrake keys --help)`);
}

/** The flag that gives each field of the API's schemas. */
const FLAGS: FlagNames = {
  allowed_endpoints: "--allow",
  agent_run_label: "--label",
  label: "--label",
  alert_thresholds: "--alert-thresholds",
  enforcement: "--enforcement",
};

function metadataFlags(pairs: string[] | undefined): Record<string, string> | undefined {
  if (!pairs) return undefined;
  return Object.fromEntries(
    pairs.map((kv) => {
      const eq = kv.indexOf("=");
      if (eq < 1) throw new UsageError(`keybrake keys create: --metadata "${kv}" is not key=value (keybrake keys create --help)`);
      return [kv.slice(0, eq), kv.slice(eq + 1)];
    }),
  );
}

/**
 * `keybrake keys ...`: the admin API's key operations on the same database, with the same validation. The
 * store is opened (`store()`) only once the command line is known to be good.
 */
export async function keysCommand(
  store: () => Promise<Store>,
  args: string[],
  actor: string,
  config?: Pick<Config, "vendors">,
): Promise<void> {
  const [sub, ...rest] = args;
  const ctx = async () => ({ store: await store(), now: Date.now, actor });
  const command = `keybrake keys ${sub ?? ""}`.trim();
  switch (sub) {
    case "create": {
      const { values } = parseFlags(command, rest, {
        vendor: { type: "string" },
        "daily-usd-cap": { type: "string" },
        "total-usd-cap": { type: "string" },
        allow: { type: "string", multiple: true },
        "expires-in": { type: "string" },
        "expires-at": { type: "string" },
        label: { type: "string" },
        mode: { type: "string" },
        "max-requests-per-minute": { type: "string" },
        "require-idempotency-key": { type: "boolean" },
        metadata: { type: "string", multiple: true },
        "alert-thresholds": { type: "string" },
        "budget-id": { type: "string" },
        "per-customer-usd-cap": { type: "string" },
        "per-destination-usd-cap": { type: "string" },
        enforcement: { type: "string" },
        json: { type: "boolean" },
      });
      const body = Object.fromEntries(
        Object.entries({
          vendor: values.vendor,
          daily_usd_cap: numberFlag(values["daily-usd-cap"]),
          total_usd_cap: numberFlag(values["total-usd-cap"]),
          allowed_endpoints: values.allow ?? [],
          expires_in: values["expires-in"],
          expires_at: values["expires-at"],
          agent_run_label: values.label,
          mode: values.mode,
          max_requests_per_minute: numberFlag(values["max-requests-per-minute"]),
          require_idempotency_key: values["require-idempotency-key"],
          metadata: metadataFlags(values.metadata),
          alert_thresholds: numberListFlag(values["alert-thresholds"]),
          budget_id: values["budget-id"],
          per_customer_usd_cap: numberFlag(values["per-customer-usd-cap"]),
          per_destination_usd_cap: numberFlag(values["per-destination-usd-cap"]),
          enforcement: values.enforcement,
        }).filter(([, v]) => v !== undefined),
      );
      const parsed = withFlagNames(command, FLAGS, () => parseInput(CreateKeyBody, body, "flags"));
      const issued = await withFlagNames(command, FLAGS, async () => service.issueKey(await ctx(), parsed));
      const warnings = config ? issueWarnings(config, issued.vendor, issued.mode) : [];
      for (const warning of warnings) writeErr(`keybrake: warning: ${warning}`);
      if (values.json) return writeOut(JSON.stringify(warnings.length ? { ...issued, warnings } : issued, null, 2));
      const { vault_key: _v, token: _t, ...record } = issued;
      printRecord(record, false);
      writeOut(`\nvault key (shown once): ${issued.vault_key}`);
      return;
    }
    case "list": {
      const { values } = parseFlags(command, rest, {
        label: { type: "string" },
        "label-prefix": { type: "string" },
        vendor: { type: "string" },
        "budget-id": { type: "string" },
        status: { type: "string" },
        limit: { type: "string" },
        cursor: { type: "string" },
        json: { type: "boolean" },
      });
      const query = withFlagNames(command, FLAGS, () =>
        parseInput(
          ListKeysQuery,
          {
            label: values.label,
            label_prefix: values["label-prefix"],
            vendor: values.vendor,
            budget_id: values["budget-id"],
            status: values.status,
            limit: values.limit,
            cursor: values.cursor,
          },
          "flags",
        ),
      );
      const page = await service.listKeys(await ctx(), query);
      printRecords(page.data, values.json ?? false);
      if (page.next_cursor !== null) {
        writeErr(`keybrake: showing ${page.data.length} keys; more match: add --cursor ${page.next_cursor} for the next page`);
      }
      return;
    }
    case "show": {
      const { values, positionals } = parseFlags(command, rest, { json: { type: "boolean" } }, true);
      if (positionals.length !== 1) throw new UsageError(`${command}: give one key id (${command} --help)`);
      return printRecord(await service.getKey(await ctx(), positionals[0]!), values.json ?? false);
    }
    case "revoke": {
      const { values, positionals } = parseFlags(
        command,
        rest,
        { "label-prefix": { type: "string" }, ids: { type: "string" }, json: { type: "boolean" } },
        true,
      );
      const json = values.json ?? false;
      const ways = [positionals.length > 0, values["label-prefix"] !== undefined, values.ids !== undefined].filter(Boolean).length;
      if (ways !== 1 || positionals.length > 1) {
        throw new UsageError(`${command}: give one key id, --label-prefix P or --ids id1,id2 (${command} --help)`);
      }
      if (positionals.length === 1) return printRecord(await service.revokeKey(await ctx(), positionals[0]!), json);
      const by = values["label-prefix"] !== undefined ? { label_prefix: values["label-prefix"] } : { ids: values.ids!.split(",") };
      const parsed = withFlagNames(command, { ...FLAGS, label_prefix: "--label-prefix", ids: "--ids" }, () =>
        parseInput(BulkRevokeBody, by, "flags"),
      );
      const result = await service.revokeMany(await ctx(), parsed);
      // A kill switch that silently did nothing is worse than one that fails: the operator must look again.
      if (result.revoked === 0)
        throw notFound(`active key matching ${"ids" in by ? `--ids ${values.ids}` : `--label-prefix ${by.label_prefix}`}; nothing revoked`);
      return writeOut(json ? JSON.stringify(result) : `revoked ${result.revoked} key(s)`);
    }
    default:
      return checkKeysCommand(args);
  }
}

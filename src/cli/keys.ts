import { parseArgs } from "node:util";
import { notFound } from "../errors";
import { BulkRevokeBody, CreateKeyBody, ListKeysQuery } from "../keys/model";
import * as service from "../keys/service";
import type { Store } from "../store/index";
import { parseInput } from "../validation";
import { printRecords } from "./output";

const USAGE = `usage:
  keybrake keys create --vendor stripe --daily-usd-cap 500 --allow "POST /v1/payment_intents" [--allow ...]
                       [--total-usd-cap N] [--expires-in 6h | --expires-at ISO] [--label L] [--mode live|test]
                       [--max-requests-per-minute N] [--require-idempotency-key] [--metadata k=v ...] [--json]
  keybrake keys list [--label L] [--label-prefix P] [--vendor V] [--status active|revoked|expired] [--limit N] [--json]
  keybrake keys show <id> [--json]
  keybrake keys revoke <id> | --label-prefix P | --ids id1,id2 [--json]`;

export class UsageError extends Error {}

const num = (v: string | undefined) => (v === undefined ? undefined : v.trim() !== "" && !Number.isNaN(Number(v)) ? Number(v) : v);

/** `keybrake keys ...`: the admin API's key operations on the same database, with the same validation. */
export async function keysCommand(store: Store, args: string[], actor: string): Promise<void> {
  const [sub, ...rest] = args;
  const ctx = { store, now: Date.now, actor };
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      vendor: { type: "string" },
      "daily-usd-cap": { type: "string" },
      "total-usd-cap": { type: "string" },
      allow: { type: "string", multiple: true },
      "expires-in": { type: "string" },
      "expires-at": { type: "string" },
      label: { type: "string" },
      "label-prefix": { type: "string" },
      mode: { type: "string" },
      "max-requests-per-minute": { type: "string" },
      "require-idempotency-key": { type: "boolean" },
      metadata: { type: "string", multiple: true },
      status: { type: "string" },
      limit: { type: "string" },
      ids: { type: "string" },
      json: { type: "boolean" },
    },
  });
  const json = values.json ?? false;
  switch (sub) {
    case "create": {
      const body = Object.fromEntries(
        Object.entries({
          vendor: values.vendor,
          daily_usd_cap: num(values["daily-usd-cap"]),
          total_usd_cap: num(values["total-usd-cap"]),
          allowed_endpoints: values.allow ?? [],
          expires_in: values["expires-in"],
          expires_at: values["expires-at"],
          agent_run_label: values.label,
          mode: values.mode,
          max_requests_per_minute: num(values["max-requests-per-minute"]),
          require_idempotency_key: values["require-idempotency-key"],
          metadata:
            values.metadata && Object.fromEntries(values.metadata.map((kv) => [kv.split("=")[0], kv.split("=").slice(1).join("=")])),
        }).filter(([, v]) => v !== undefined),
      );
      const issued = await service.issueKey(ctx, parseInput(CreateKeyBody, body, "flags"));
      if (json) return console.log(JSON.stringify(issued, null, 2));
      printRecords([issued], false);
      console.log(`\nvault key (shown once): ${issued.vault_key}`);
      return;
    }
    case "list": {
      const query = parseInput(
        ListKeysQuery,
        {
          label: values.label,
          label_prefix: values["label-prefix"],
          vendor: values.vendor,
          status: values.status,
          limit: values.limit,
        },
        "flags",
      );
      const page = await service.listKeys(ctx, query);
      return printRecords(page.data, json);
    }
    case "show": {
      if (positionals.length !== 1) throw new UsageError(USAGE);
      return printRecords([await service.getKey(ctx, positionals[0]!)], json);
    }
    case "revoke": {
      if (positionals.length === 1) return printRecords([await service.revokeKey(ctx, positionals[0]!)], json);
      const by =
        values["label-prefix"] !== undefined
          ? { label_prefix: values["label-prefix"] }
          : values.ids
            ? { ids: values.ids.split(",") }
            : null;
      if (!by || positionals.length > 0) throw new UsageError(USAGE);
      const result = await service.revokeMany(ctx, parseInput(BulkRevokeBody, by, "flags"));
      // A kill switch that silently did nothing is worse than one that fails: the operator must look again.
      if (result.revoked === 0)
        throw notFound(`active key matching ${"ids" in by ? `--ids ${values.ids}` : `--label-prefix ${by.label_prefix}`}; nothing revoked`);
      return console.log(json ? JSON.stringify(result) : `revoked ${result.revoked} key(s)`);
    }
    default:
      throw new UsageError(USAGE);
  }
}

import { KeybrakeError } from "../errors";
import type { Store } from "../store/index";
import { CreateTokenBody, ListTokensQuery } from "../tokens/model";
import * as service from "../tokens/service";
import { parseInput } from "../validation";
import { type FlagNames, parseFlags, UsageError, withFlagNames } from "./args";
import { writeOut } from "./io";
import { printRecord, printRecords } from "./output";

const CREATE_USAGE = `usage: keybrake tokens create --name NAME --role admin|issuer|viewer
                             [--expires-in 90d | --expires-at ISO] [--policy JSON] [--json]

Creates a token for the admin API and prints it ONCE (only its SHA-256 is kept): kb_adm_… (everything),
kb_iss_… (mints vault keys within its --policy; sees only the keys it minted) or kb_view_… (reads only).
--policy (issuers only) is the JSON of SPEC §10's policy, every field optional, e.g.
  --policy '{"vendors":["stripe"],"label_prefix":"airflow-billing/","max_daily_usd_cap":500,
             "max_expires_in":"6h","allowed_endpoints":["POST /v1/payment_intents"],"issued_usd_per_day":1000}'`;

const LIST_USAGE = `usage: keybrake tokens list [--limit N] [--cursor C] [--json]

Tokens, newest first: id, name, role, status, hint. Never the tokens themselves.`;

const REVOKE_USAGE = `usage: keybrake tokens revoke <tok_id> [--revoke-keys] [--json]

Revokes a token: its next request is refused. --revoke-keys also revokes every vault key it minted, each
stopped on its next proxied call.`;

const USAGE = `usage: keybrake tokens <command> [flags]

  create   a token for a job host, a dashboard user or a script   (keybrake tokens create --help)
  list     the tokens (never the tokens themselves)              (keybrake tokens list --help)
  revoke   revoke a token, and with --revoke-keys its keys       (keybrake tokens revoke --help)`;

const SUBCOMMANDS: Record<string, string> = { create: CREATE_USAGE, list: LIST_USAGE, revoke: REVOKE_USAGE };

/** `keybrake tokens [sub] --help`. */
export const tokensHelp = (args: string[]) => SUBCOMMANDS[args[0] ?? ""] ?? USAGE;

const FLAGS: FlagNames = { name: "--name", role: "--role", expires_in: "--expires-in", expires_at: "--expires-at" };

/** An invalid policy field named as the JSON path it has inside --policy: `--policy max_daily_usd_cap: …`. */
function policyFieldsNamed<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    const fields =
      err instanceof KeybrakeError ? (err.details as { fields?: { path: string; message: string }[] } | undefined)?.fields : undefined;
    if (!fields?.some((f) => f.path === "policy" || f.path.startsWith("policy."))) throw err;
    const lines = fields.map((f) =>
      f.path.startsWith("policy.") ? `--policy ${f.path.slice(7)}: ${f.message}` : `${f.path}: ${f.message}`,
    );
    throw new UsageError(`keybrake tokens create: ${lines.join("; ")} (keybrake tokens create --help)`);
  }
}

const COLUMNS = ["id", "name", "role", "status", "token_hint", "expires_at", "created_at"];

/** `keybrake tokens ...`: the token API's operations on the same database, with the same validation. */
export async function tokensCommand(store: Store, args: string[], actor: string): Promise<void> {
  const [sub, ...rest] = args;
  const ctx = { store, now: Date.now, actor };
  const command = `keybrake tokens ${sub ?? ""}`.trim();
  switch (sub) {
    case "create": {
      const { values } = parseFlags(command, rest, {
        name: { type: "string" },
        role: { type: "string" },
        "expires-in": { type: "string" },
        "expires-at": { type: "string" },
        policy: { type: "string" },
        json: { type: "boolean" },
      });
      let policy: unknown;
      if (values.policy !== undefined) {
        try {
          policy = JSON.parse(values.policy);
        } catch {
          throw new UsageError(`${command}: --policy is not JSON (${command} --help)`);
        }
      }
      const body = Object.fromEntries(
        Object.entries({
          name: values.name,
          role: values.role,
          expires_in: values["expires-in"],
          expires_at: values["expires-at"],
          policy,
        }).filter(([, v]) => v !== undefined),
      );
      const parsed = withFlagNames(command, FLAGS, () => policyFieldsNamed(() => parseInput(CreateTokenBody, body, "flags")));
      const created = await service.createToken(ctx, parsed);
      if (values.json) return writeOut(JSON.stringify(created, null, 2));
      const { token, ...record } = created;
      printRecord(record, false);
      writeOut(`\ntoken (shown once, only its hash is kept): ${token}`);
      return;
    }
    case "list": {
      const { values } = parseFlags(command, rest, { limit: { type: "string" }, cursor: { type: "string" }, json: { type: "boolean" } });
      const query = withFlagNames(command, FLAGS, () =>
        parseInput(ListTokensQuery, { limit: values.limit, cursor: values.cursor }, "flags"),
      );
      const page = await service.listTokens(ctx, query);
      printRecords(page.data, values.json ?? false, COLUMNS);
      if (!values.json && page.next_cursor) writeOut(`\nmore: --cursor ${page.next_cursor}`);
      return;
    }
    case "revoke": {
      const { values, positionals } = parseFlags(command, rest, { "revoke-keys": { type: "boolean" }, json: { type: "boolean" } }, true);
      if (positionals.length !== 1) throw new UsageError(`${command}: give one token id (${command} --help)`);
      const revoked = await service.revokeToken(ctx, positionals[0]!, values["revoke-keys"] ?? false);
      if (values.json) return writeOut(JSON.stringify(revoked, null, 2));
      writeOut(
        `revoked ${revoked.id} (${revoked.name}, ${revoked.role})${values["revoke-keys"] ? ` and ${revoked.revoked_keys} key(s) it minted` : ""}`,
      );
      return;
    }
    default:
      throw new UsageError(sub === undefined ? USAGE : `keybrake tokens: unknown command "${sub}"\n\n${USAGE}`);
  }
}

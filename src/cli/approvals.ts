import { decide, listApprovals, MAX_REASON_CHARS } from "../approvals/service";
import type { ApprovalRecord, Store } from "../store/index";
import { pageLimitFlag, parseFlags, UsageError } from "./args";
import { writeOut } from "./io";
import { printRecord, printRecords } from "./output";

const LIST_USAGE = `usage: keybrake approvals list [--status pending|approved|denied|expired|used] [--limit N] [--json]

Calls above their key's approval_above_usd, pending first, newest first (default: every status).
  pending    waiting for a person; the call's hold is reserved and counts against the caps
  approved   the job's retry with the same Idempotency-Key goes out once, before the approval lapses
  denied     refused by a person (the reason is shown); the hold was released
  expired    nobody decided, or the approved call was not retried, in time; the hold was released
  used       the approved call went out; its later retries replay its answer`;

const APPROVE_USAGE = `usage: keybrake approvals approve <approval id> [--json]

Approves a pending call: the job's next retry with the same Idempotency-Key and body goes out once, on the hold
reserved when it asked, provided it comes before the approval lapses (its expires_at). Recorded as decided by
cli:<your user name>, in the admin events and the approval_decided alert.`;

const DENY_USAGE = `usage: keybrake approvals deny <approval id> [--reason TEXT] [--json]

Denies a pending call: its reserved hold is released at once and the job's retry gets 403 approval_denied.
--reason (at most 500 characters) is kept with the approval and sent in the approval_decided alert.`;

const USAGE = `usage: keybrake approvals <command> [flags]

  list      calls waiting for a person, and those decided   (keybrake approvals list --help)
  approve   let a pending call go out once                  (keybrake approvals approve --help)
  deny      refuse a pending call, releasing its hold       (keybrake approvals deny --help)`;

const SUBCOMMANDS: Record<string, string> = { list: LIST_USAGE, approve: APPROVE_USAGE, deny: DENY_USAGE };

/** `keybrake approvals [sub] --help`. */
export const approvalsHelp = (args: string[]) => SUBCOMMANDS[args[0] ?? ""] ?? USAGE;

/** A missing or unknown subcommand, named before anything is opened. */
export function checkApprovalsCommand(args: string[]) {
  const [sub] = args;
  if (sub === undefined) throw new UsageError(USAGE);
  if (!(sub in SUBCOMMANDS)) {
    throw new UsageError(
      `keybrake approvals: unknown command "${sub}"; one of ${Object.keys(SUBCOMMANDS).join(", ")} (keybrake approvals --help)`,
    );
  }
}

/** The columns of `keybrake approvals list`, most wanted first: a narrow terminal loses the last ones. */
const COLUMNS = ["id", "status", "label", "price_usd", "method", "path", "requested_at", "expires_at", "decided_by", "reason", "key_id"];
const STATUSES: readonly ApprovalRecord["status"][] = ["pending", "approved", "denied", "expired", "used"];

/** The one positional argument, the approval's id. */
function approvalIdOf(command: string, positionals: string[]): string {
  if (positionals.length !== 1) throw new UsageError(`${command}: give one approval id (${command} --help)`);
  return positionals[0]!;
}

/**
 * `keybrake approvals ...`: the approvals API's operations on the same database, decided by `actor` (the CLI's
 * user). The store is opened (`store()`) only once the command line is known to be good.
 */
export async function approvalsCommand(store: () => Promise<Store>, args: string[], actor: string): Promise<void> {
  const [sub, ...rest] = args;
  const command = `keybrake approvals ${sub ?? ""}`.trim();
  const ctx = async () => ({ store: await store(), now: Date.now, actor });
  switch (sub) {
    case "list": {
      const { values } = parseFlags(command, rest, { status: { type: "string" }, limit: { type: "string" }, json: { type: "boolean" } });
      const status = values.status as ApprovalRecord["status"] | undefined;
      if (status !== undefined && !STATUSES.includes(status))
        throw new UsageError(`${command}: --status is one of ${STATUSES.join(", ")}, not "${values.status}"`);
      const limit = pageLimitFlag(command, values.limit);
      const { data } = await listApprovals(await ctx(), { status, limit });
      if (data.length === 0 && !values.json) return writeOut(status ? `no ${status} approvals` : "no approvals yet");
      return printRecords(data, values.json ?? false, COLUMNS);
    }
    case "approve": {
      const { values, positionals } = parseFlags(command, rest, { json: { type: "boolean" } }, true);
      const id = approvalIdOf(command, positionals);
      return printRecord(await decide(await ctx(), id, "approved", null), values.json ?? false);
    }
    case "deny": {
      const { values, positionals } = parseFlags(command, rest, { reason: { type: "string" }, json: { type: "boolean" } }, true);
      const id = approvalIdOf(command, positionals);
      const reason = values.reason?.trim() || null;
      if (reason !== null && reason.length > MAX_REASON_CHARS)
        throw new UsageError(`${command}: --reason is at most ${MAX_REASON_CHARS} characters, not ${reason.length}`);
      return printRecord(await decide(await ctx(), id, "denied", reason), values.json ?? false);
    }
    default:
      return checkApprovalsCommand(args);
  }
}

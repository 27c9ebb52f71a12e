import { type ParseArgsConfig, parseArgs } from "node:util";
import { KeybrakeError } from "../errors";

/** A command line Keybrake cannot act on: printed as it is (naming the flag or word), exit 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** `--help` or `-h` anywhere before `--`: the command prints its usage and does nothing else. */
export function wantsHelp(args: readonly string[]): boolean {
  for (const arg of args) {
    if (arg === "--") return false;
    if (arg === "--help" || arg === "-h") return true;
  }
  return false;
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/**
 * `node:util` parseArgs, strict, with its refusals rewritten as one line naming the command and the bad word:
 * `keybrake keys create: unknown flag --alow (keybrake keys create --help)`.
 */
export function parseFlags<const O extends Options, const P extends boolean = false>(
  command: string,
  args: string[],
  options: O,
  allowPositionals?: P,
) {
  try {
    return parseArgs({ args, options, allowPositionals: allowPositionals ?? false, strict: true });
  } catch (err) {
    throw new UsageError(`${command}: ${describeParseError(err, args)} (${command} --help)`);
  }
}

function describeParseError(err: unknown, args: string[]): string {
  const { code, message } = err as { code?: string; message?: string };
  const quoted = /'([^']*)'/.exec(message ?? "")?.[1] ?? "";
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown flag ${quoted}`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `unexpected argument "${quoted}"`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE": {
      const flag = quoted.replace(/ <value>$/, "");
      if (/does not take an argument/.test(message ?? "")) return `${flag} takes no value`;
      const next = args[args.indexOf(flag) + 1];
      return next === undefined
        ? `${flag} needs a value`
        : `${flag} needs a value (got the flag ${next}; write ${flag}=${next} if that is the value)`;
    }
    default:
      return message ?? String(err);
  }
}

/** The flag each field of an API schema is given by, for errors that name flags rather than JSON fields. */
export type FlagNames = Record<string, string>;

/**
 * An `invalid_request` from the shared API schema (parseInput(..., "flags")) rewritten with the CLI's flag
 * names: `--daily-usd-cap: must be a number of US dollars`, `--allow #2: …`. Anything else passes unchanged.
 */
export function withFlagNames<T>(command: string, names: FlagNames, parse: () => T): T {
  const renamed = (err: unknown): never => {
    if (!(err instanceof KeybrakeError) || err.code !== "invalid_request") throw err;
    const fields = (err.details as { fields?: { path: string; message: string }[] } | undefined)?.fields ?? [];
    if (fields.length === 0) throw err;
    const lines = fields.map(({ path, message }) => {
      const [field = "", index] = path.split(".");
      const flag = names[field] ?? (field === "flags" ? "" : `--${field.replace(/_/g, "-")}`);
      const which = index !== undefined && /^\d+$/.test(index) ? ` #${Number(index) + 1}` : "";
      return flag ? `${flag}${which}: ${message}` : message;
    });
    throw new UsageError(`${command}: ${lines.join("; ")} (${command} --help)`);
  };
  try {
    const result = parse();
    // An operation's refusal decided against the database (a budget that does not exist) arrives later.
    return result instanceof Promise ? (result.catch(renamed) as T) : result;
  } catch (err) {
    return renamed(err);
  }
}

/** A number flag as a schema should see it: the number, or the text as given (the schema then names what is wrong). */
export const numberFlag = (v: string | undefined) =>
  v === undefined ? undefined : v.trim() !== "" && !Number.isNaN(Number(v)) ? Number(v) : v;

/** A comma-separated list of numbers (`--alert-thresholds 0.5,0.8,1`; "" for none), for a schema to check. */
export const numberListFlag = (v: string | undefined) =>
  v === undefined
    ? undefined
    : v
        .split(",")
        .filter((t) => t.trim() !== "")
        .map(numberFlag);

/** `--limit N` of a command that prints one page: 1 to 1000, default 1000. */
export function pageLimitFlag(command: string, value: string | undefined): number {
  const limit = value === undefined ? 1000 : Number(value);
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new UsageError(`${command}: --limit is a whole number from 1 to 1000`);
  return limit;
}

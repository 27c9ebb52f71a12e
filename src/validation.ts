import type { ValidationError } from "elysia";
import { z } from "zod";
import { patternProblem } from "./endpoints";
import { type KeybrakeError, invalidRequest } from "./errors";

/**
 * A validation issue as a Standard Schema reports it; zod's issues also carry `code`, and an unrecognized-keys
 * issue the `keys` it did not know.
 */
export interface Issue {
  readonly message: string;
  readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined;
  readonly code?: string;
  readonly keys?: readonly string[];
}

export interface Field {
  path: string;
  message: string;
}

/**
 * The one mapping from schema issues to SPEC §8's `error.details.fields`: dotted paths (`allowed_endpoints.0`),
 * each unknown key named on its own, and an issue about the whole input named after where it came from.
 */
export function issueFields(issues: readonly Issue[], where: string): Field[] {
  return issues.flatMap((issue) => {
    const base = (issue.path ?? []).map((p) => String(typeof p === "object" ? p.key : p)).join(".");
    if (issue.code === "unrecognized_keys" && issue.keys) {
      return issue.keys.map((k) => ({ path: base ? `${base}.${k}` : k, message: "is not a known field" }));
    }
    return [{ path: base || where, message: issue.message }];
  });
}

/** 400 invalid_request naming every offending field of the body, query, path or CLI flags (`where`). */
export function invalidInput(where: string, issues: readonly Issue[]): KeybrakeError {
  const fields = issueFields(issues, where);
  return invalidRequest(`Invalid ${where}: ${fields.map((f) => `${f.path}: ${f.message}`).join("; ")}`, fields);
}

type StandardLike = { "~standard": { validate(value: unknown): { issues?: readonly Issue[] } | Promise<unknown> } };

/**
 * Every issue behind an Elysia validation error of a route's schema (Elysia's error keeps only the first):
 * the route's zod schema runs again on the value it refused. Schemas here are synchronous.
 */
export function validationIssues(error: Pick<ValidationError, "validator" | "value" | "all">): readonly Issue[] {
  const validator = error.validator as unknown as Partial<StandardLike> & { schema?: Partial<StandardLike> };
  const schema = validator["~standard"] ? validator : validator.schema;
  const result = schema?.["~standard"]?.validate(error.value);
  if (result && !(result instanceof Promise) && result.issues?.length) return result.issues;
  return (error.all as { path?: string; message?: string }[]).map((e) => ({
    message: e.message ?? "is invalid",
    path: e.path && e.path !== "root" ? e.path.replace(/^\//, "").split(/[./]/) : [],
  }));
}

/** For the CLI, which has no Elysia: the same schema, the same fields, the same error. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, where: string): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  throw invalidInput(where, result.error.issues);
}

const PAGE_LIMIT = "must be a whole number from 1 to 1000";
const CURSOR = "must be the next_cursor of a previous page";

/** A list's `limit` query parameter: 1 to 1000, 100 by default; `what` says what a page holds and in which order. */
export const pageLimit = (what: string) =>
  z.coerce
    .number({ error: PAGE_LIMIT })
    .int(PAGE_LIMIT)
    .min(1, PAGE_LIMIT)
    .max(1000, PAGE_LIMIT)
    .default(100)
    .meta({ description: `${what} (1 to 1000)`, examples: [50] });

/** A list's `cursor` query parameter: the `next_cursor` of the page before. */
export const pageCursor = () =>
  z.coerce
    .number({ error: CURSOR })
    .int(CURSOR)
    .positive(CURSOR)
    .optional()
    .meta({ description: "The next_cursor of the previous page", examples: [1234] });

export const MAX_USD_CAP = 10_000_000;
export const MAX_LIFETIME_MS = 30 * 24 * 3600 * 1000;

/** A field's OpenAPI description and examples (zod `.meta`, which /docs/json carries). */
export type Doc = { description: string; examples: unknown[] };

/**
 * `.meta` goes on the string a transform reads: the OpenAPI document shows a field as the input it accepts, and
 * zod keeps only the description of a transformed schema's own metadata.
 */
export const durationOf = (doc?: Doc) => {
  const text = z
    .string()
    .regex(/^(?=\d)(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/, 'must be a duration like "90s", "5m", "6h", "2d" or "1h30m"');
  return (doc ? text.meta(doc) : text)
    .transform((s) => {
      const [, d = 0, h = 0, m = 0, sec = 0] = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(s)!.map((part) => Number(part ?? 0));
      return (((d * 24 + h) * 60 + m) * 60 + sec) * 1000;
    })
    .refine((ms) => ms > 0, "must be longer than 0")
    .refine((ms) => ms <= MAX_LIFETIME_MS, "must be at most 30 days");
};
/** `90s`, `5m`, `6h`, `2d`, `1h30m` -> milliseconds (> 0, <= 30 days). */
export const duration = durationOf();

/** An endpoint pattern (SPEC §5), refused with what is wrong with it. */
export const endpointPattern = z.string().superRefine((p, ctx) => {
  const problem = patternProblem(p);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

/** A cap in US dollars (of a key, a budget, a counterparty): more than 0, whole micro-dollars, at most MAX_USD_CAP. */
export const usdCap = z
  .number({ error: "must be a number of US dollars" })
  .refine(Number.isFinite, "must be a finite number")
  .refine((v) => v > 0 && Math.round(v * 1e6) >= 1, "must be greater than 0 (at least 0.000001)")
  .refine((v) => v <= MAX_USD_CAP, `must be at most ${MAX_USD_CAP}`);

/** SPEC §12: fractions of a cap (daily and lifetime) whose crossing by settled spend fires an alert. */
export const DEFAULT_ALERT_THRESHOLDS = [0.5, 0.8, 1];

/**
 * A list of alert thresholds (of a key's caps, or a budget's). `.meta` before the transform, as for durations:
 * the OpenAPI document shows the list as it is given.
 */
export const alertThresholds = (doc: Doc) =>
  z
    .array(
      z
        .number({ error: "must be a list of fractions of the cap, e.g. [0.5, 0.8, 1.0]" })
        .refine(Number.isFinite, "must be a finite number")
        .refine((t) => t > 0 && t <= 1, "must be a fraction of the cap greater than 0 and at most 1"),
      { error: "must be a list of fractions of the cap, e.g. [0.5, 0.8, 1.0]" },
    )
    .max(20, "must list at most 20 thresholds")
    .meta(doc)
    // Kept sorted and once each: every threshold fires once per cap window.
    .transform((list) => [...new Set(list)].sort((a, b) => a - b));

import type { ValidationError } from "elysia";
import type { z } from "zod";
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

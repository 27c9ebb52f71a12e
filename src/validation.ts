import type { z } from "zod";
import { invalidRequest } from "./errors";

/** Parses input with a zod schema, or throws 400 invalid_request naming every offending field. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, where = "body"): z.infer<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const fields = result.error.issues.flatMap((issue) => {
    const base = issue.path.map(String).join(".");
    if (issue.code === "unrecognized_keys") {
      return issue.keys.map((k) => ({ path: base ? `${base}.${k}` : k, message: "is not a known field" }));
    }
    return [{ path: base || where, message: issue.message }];
  });
  const summary = fields.map((f) => `${f.path}: ${f.message}`).join("; ");
  throw invalidRequest(`Invalid ${where}: ${summary}`, fields);
}

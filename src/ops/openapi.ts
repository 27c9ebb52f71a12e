import { z } from "zod";
import { registeredVendors, vendorName } from "../vendors/index";

/** The contract's error body, documented once for every route. */
export const ErrorSchema = z.object({
  code: z.string(),
  message: z.string(),
  error: z.object({ type: z.literal("keybrake_error"), code: z.string(), message: z.string(), details: z.unknown().optional() }),
});

const ERROR_TEXT: Record<number, string> = {
  400: "invalid_request: error.details.fields names each offending field (path and message)",
  401: "unauthorized: missing or wrong admin token",
  404: "not_found",
  409: "conflict",
};

interface RouteDoc<Status extends number, Ok extends z.ZodType, Err extends number> {
  summary: string;
  tags: string[];
  ok: [Status, Ok, string];
  errors?: Err[];
  admin?: boolean;
}

/**
 * A route's `detail` and `response` hooks: its answer's schema and the contract's error body for each error
 * status. Spread into the route next to its `body`, `query` and `params` schemas: Elysia checks the input and
 * the answer against them and the OpenAPI plugin documents them, so each schema is written once.
 */
export function routeDoc<const Status extends number, Ok extends z.ZodType, const Err extends number = never>(
  doc: RouteDoc<Status, Ok, Err>,
) {
  const [status, schema, description] = doc.ok;
  const errors: number[] = doc.admin === false ? [...(doc.errors ?? [])] : [401, ...(doc.errors ?? [])];
  const response: Record<number, z.ZodType> = { [status]: schema.describe(description) };
  for (const code of errors) response[code] = ErrorSchema.describe(ERROR_TEXT[code] ?? "error");
  const detail = { summary: doc.summary, tags: doc.tags, ...(doc.admin === false ? {} : { security: [{ adminToken: [] }] }) };
  return { detail, response: response as { [S in Status]: Ok } & { [E in Err]: typeof ErrorSchema } };
}

/**
 * zod -> JSON Schema for the OpenAPI plugin (`mapJsonSchema.zod`). A schema is documented as the input it
 * accepts: transforms (durations, ISO times) and coercions (query numbers) stand as the strings they read. A
 * vendor's name lists the vendors registered when the document is built.
 */
export function documentSchema(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _, ...json } = z.toJSONSchema(schema, {
    io: "input",
    unrepresentable: "any",
    override: (ctx) => {
      if (ctx.zodSchema === vendorName) ctx.jsonSchema.enum = registeredVendors().map((v) => v.name);
    },
  });
  return json;
}

import { z } from "zod";

/** The contract's error body, documented once for every route. */
export const ErrorSchema = z.object({
  code: z.string(),
  message: z.string(),
  error: z.object({ type: z.literal("keybrake_error"), code: z.string(), message: z.string(), details: z.unknown().optional() }),
});

const json = (schema: z.ZodType) => ({ "application/json": { schema: z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) } });

const ERROR_TEXT: Record<number, string> = {
  400: "invalid_request: the body or query names the offending fields",
  401: "unauthorized: missing or wrong admin token",
  404: "not_found",
  409: "conflict",
};

interface RouteDoc {
  summary: string;
  tags: string[];
  body?: z.ZodType;
  query?: z.ZodObject;
  ok: [number, z.ZodType, string];
  errors?: number[];
  admin?: boolean;
}

/** OpenAPI operation fields for a route whose input is validated by hand with zod (see validation.ts). */
export function routeDoc(doc: RouteDoc) {
  const [status, schema, description] = doc.ok;
  const errors = doc.admin === false ? doc.errors ?? [] : [401, ...(doc.errors ?? [])];
  const responses: Record<string, unknown> = { [status]: { description, content: json(schema) } };
  for (const code of errors) responses[code] = { description: ERROR_TEXT[code] ?? "error", content: json(ErrorSchema) };
  const detail: Record<string, unknown> = { summary: doc.summary, tags: doc.tags, responses };
  if (doc.admin !== false) detail.security = [{ adminToken: [] }];
  if (doc.body) detail.requestBody = { required: true, content: json(doc.body) };
  if (doc.query) {
    const props = (z.toJSONSchema(doc.query, { io: "input" }) as { properties?: Record<string, unknown> }).properties ?? {};
    detail.parameters = Object.entries(props).map(([name, schema]) => ({ name, in: "query", required: false, schema }));
  }
  return { detail: detail as never };
}


import { z } from "zod";
import { ERRORS, type ErrorCode } from "../errors";
import type { Role } from "../store/index";
import { registeredVendors, vendorName } from "../vendors/index";
import { type Access, PUBLIC_ROUTE } from "../auth/admin-auth";

/** Every code Keybrake answers with (the closed table in errors.ts), as the documents list them. */
const ErrorCodeSchema = z.enum(Object.keys(ERRORS) as [ErrorCode, ...ErrorCode[]]);

/** The contract's error body, documented once for every route. */
export const ErrorSchema = z.object({
  code: ErrorCodeSchema,
  message: z.string(),
  error: z.object({ type: z.literal("keybrake_error"), code: ErrorCodeSchema, message: z.string(), details: z.unknown().optional() }),
});

const ERROR_TEXT: Record<number, string> = {
  400: "invalid_request: error.details.fields names each offending field (path and message)",
  401: "unauthorized: missing, unknown, revoked or expired token",
  403: "forbidden: the token's role is not one of the roles this route needs",
  404: "not_found",
  409: "conflict",
};

interface RouteDoc<Status extends number, Ok extends z.ZodType, Err extends number, A extends Access> {
  summary: string;
  tags: string[];
  ok: [Status, Ok, string];
  errors?: Err[];
  /** The roles the route needs (the guard enforces exactly this), or "public". */
  access: A;
  /** What an issuer token may do here, when it may (only its own keys, within its policy, …). */
  issuer?: string;
  /** The route can answer 403 issuer_policy_violation. */
  policy?: boolean;
  description?: string;
}

const ROLE_TEXT: Record<Role, string> = { admin: "`admin`", issuer: "`issuer`", viewer: "`viewer`", approver: "`approver`" };

/** The roles line of a route's description, e.g. "Roles: `admin`, `issuer` (only the keys it minted)". */
export function rolesText(access: Access, issuer?: string): string {
  if (access === "public") return "Roles: none (no token needed).";
  const roles = access.map((r) => (r === "issuer" && issuer ? `${ROLE_TEXT[r]} (${issuer})` : ROLE_TEXT[r]));
  return `Roles: ${roles.join(", ")}.`;
}

/**
 * A route's `detail` and `response` hooks: its answer's schema and the contract's error body for each error
 * status. Spread into the route next to its `body`, `query` and `params` schemas: Elysia checks the input and
 * the answer against them and the OpenAPI plugin documents them, so each schema is written once.
 */
type Responses<Status extends number, Ok extends z.ZodType, Err extends number> = { [S in Status]: Ok } & {
  [E in Err | 401 | 403]: typeof ErrorSchema;
};
type Detail = { summary: string; tags: string[]; description: string };

export function routeDoc<const Status extends number, Ok extends z.ZodType, const Err extends number = never>(
  doc: RouteDoc<Status, Ok, Err, "public">,
): { detail: Detail; response: Responses<Status, Ok, Err> };
export function routeDoc<
  const Status extends number,
  Ok extends z.ZodType,
  const A extends readonly Role[],
  const Err extends number = never,
>(doc: RouteDoc<Status, Ok, Err, A>): { detail: Detail; response: Responses<Status, Ok, Err>; access: A };
export function routeDoc(doc: RouteDoc<number, z.ZodType, number, Access>): {
  detail: Detail;
  response: unknown;
  access?: Access;
} {
  const [status, schema, description] = doc.ok;
  const isPublic = doc.access === "public";
  const errors: number[] = isPublic ? [...(doc.errors ?? [])] : [401, 403, ...(doc.errors ?? [])];
  const response: Record<number, z.ZodType> = { [status]: schema.describe(description) };
  for (const code of errors) response[code] = ErrorSchema.describe(ERROR_TEXT[code] ?? "error");
  if (doc.policy) {
    response[403] = ErrorSchema.describe(
      `${ERROR_TEXT[403]}; issuer_policy_violation: outside the issuer token's policy (error.details.rule names the rule, e.g. policy.max_daily_usd_cap), nothing created or changed`,
    );
  }
  const roles = rolesText(doc.access, doc.issuer);
  const detail = {
    summary: doc.summary,
    tags: doc.tags,
    description: doc.description ? `${doc.description}\n\n${roles}` : roles,
    ...(isPublic ? PUBLIC_ROUTE : { security: [{ adminToken: [] }] }),
  };
  // The declaration itself goes to the guard's `access` macro, which enforces it (and writes it into `detail`).
  return isPublic ? { detail, response } : { detail, response, access: doc.access };
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
      // `.meta()` clones a schema but keeps its definition: a described vendor field is still the vendor's name.
      if (ctx.zodSchema._zod.def === vendorName._zod.def) ctx.jsonSchema.enum = registeredVendors().map((v) => v.name);
    },
  });
  return json;
}

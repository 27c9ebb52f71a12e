import { z } from "zod";
import { vendorName } from "../vendors/index";

const time = z.union([
  z.iso.datetime({ offset: true }).transform((s) => Date.parse(s)),
  z.iso.date().transform((s) => Date.parse(`${s}T00:00:00Z`)),
]);

/** The filters every audit view takes (SPEC §8). */
const filters = {
  key_id: z.string().optional(),
  label: z.string().optional(),
  label_prefix: z.string().min(1).optional(),
  vendor: vendorName.optional(),
  decision: z.string().optional(),
  since: time.optional(),
  until: time.optional(),
};

export const AuditQuery = z.strictObject({
  ...filters,
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.coerce.number().int().positive().optional(),
});
export const SpendQuery = z.strictObject({ ...filters, group_by: z.enum(["label", "key", "vendor", "day"]).default("label") });
export const ExportQuery = z.strictObject({ ...filters, format: z.enum(["ndjson", "csv"]).default("ndjson") });
export type AuditFilters = Omit<z.infer<typeof AuditQuery>, "limit" | "cursor">;

export const SpendPage = z.object({
  data: z.array(
    z.object({ group: z.string().nullable(), calls: z.number(), allowed: z.number(), denied: z.number(), spend_usd: z.number() }),
  ),
});

export const AuditRowSchema = z.object({
  id: z.string(),
  at: z.string(),
  key_id: z.string().nullable(),
  label: z.string().nullable(),
  vendor: z.string().nullable(),
  mode: z.string().nullable(),
  method: z.string(),
  path: z.string(),
  status: z.number(),
  decision: z.string(),
  hold_usd: z.number(),
  cost_usd: z.number(),
  cost_source: z.enum(["request", "response", "object", "hold", "estimate", "reconciled", "replay"]).nullable(),
  currency: z.string().nullable(),
  amount_minor: z.number().nullable(),
  vendor_request_id: z.string().nullable(),
  idempotency_key: z.string().nullable(),
  upstream_ms: z.number().nullable(),
  overhead_ms: z.number().nullable(),
  client_ip: z.string().nullable(),
  requests: z.number().int().describe("How many requests the row stands for: 1, or a client's unauthenticated denials in one minute"),
});

export const AuditPage = z.object({ data: z.array(AuditRowSchema), next_cursor: z.string().nullable() });

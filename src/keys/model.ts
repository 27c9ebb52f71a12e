import { z } from "zod";
import { vendorName } from "../vendors/index";
import { patternProblem } from "../proxy/endpoints";

export const MAX_USD_CAP = 10_000_000;
export const MAX_LIFETIME_MS = 30 * 24 * 3600 * 1000;

const usdCap = z
  .number({ error: "must be a number of US dollars" })
  .refine(Number.isFinite, "must be a finite number")
  .refine((v) => v > 0 && Math.round(v * 1e6) >= 1, "must be greater than 0 (at least 0.000001)")
  .refine((v) => v <= MAX_USD_CAP, `must be at most ${MAX_USD_CAP}`);

/** `90s`, `5m`, `6h`, `2d`, `1h30m` -> milliseconds (> 0, <= 30 days). */
export const duration = z
  .string()
  .regex(/^(?=\d)(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/, 'must be a duration like "90s", "5m", "6h", "2d" or "1h30m"')
  .transform((s) => {
    const [, d = 0, h = 0, m = 0, sec = 0] = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(s)!.map((part) => Number(part ?? 0));
    return (((d * 24 + h) * 60 + m) * 60 + sec) * 1000;
  })
  .refine((ms) => ms > 0, "must be longer than 0")
  .refine((ms) => ms <= MAX_LIFETIME_MS, "must be at most 30 days");

export const isoTime = z.iso
  .datetime({ offset: true, error: "must be an ISO 8601 time, e.g. 2026-11-27T18:00:00Z" })
  .transform((s) => Date.parse(s));

export const endpointPattern = z.string().superRefine((p, ctx) => {
  const problem = patternProblem(p);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

const label = z.string().max(200, "must be at most 200 characters");
const rate = z.number().int("must be an integer").min(1, "must be at least 1").max(1_000_000, "must be at most 1000000");

const metadata = z
  .record(z.string().max(100, "keys must be at most 100 characters"), z.string({ error: "values must be strings" }))
  .refine((m) => new TextEncoder().encode(JSON.stringify(m)).length <= 4096, "must be at most 4 KiB as JSON");

export const CreateKeyBody = z
  .strictObject({
    vendor: vendorName,
    daily_usd_cap: usdCap.optional(),
    total_usd_cap: usdCap.optional(),
    allowed_endpoints: z
      .array(endpointPattern, { error: "must be a list of endpoint patterns" })
      .min(1, "must list at least one endpoint")
      .max(100, "must list at most 100 endpoints"),
    expires_in: duration.optional(),
    expires_at: isoTime.optional(),
    agent_run_label: label.optional(),
    label: label.optional(),
    mode: z.enum(["live", "test"], { error: "must be live or test" }).default("live"),
    max_requests_per_minute: rate.optional(),
    require_idempotency_key: z.boolean({ error: "must be true or false" }).default(false),
    metadata: metadata.default({}),
  })
  .superRefine((b, ctx) => {
    if (b.daily_usd_cap === undefined && b.total_usd_cap === undefined) {
      ctx.addIssue({ code: "custom", path: ["daily_usd_cap"], message: "daily_usd_cap or total_usd_cap is required" });
    }
    if (b.expires_in !== undefined && b.expires_at !== undefined) {
      ctx.addIssue({ code: "custom", path: ["expires_at"], message: "give expires_in or expires_at, not both" });
    }
    if (b.label !== undefined && b.agent_run_label !== undefined && b.label !== b.agent_run_label) {
      ctx.addIssue({ code: "custom", path: ["label"], message: "label is an alias of agent_run_label; give one" });
    }
  });
export type CreateKeyBody = z.infer<typeof CreateKeyBody>;

export const PatchKeyBody = z
  .strictObject({
    daily_usd_cap: usdCap.nullable().optional(),
    total_usd_cap: usdCap.nullable().optional(),
    expires_in: duration.optional(),
    expires_at: isoTime.optional(),
    max_requests_per_minute: rate.nullable().optional(),
  })
  .superRefine((b, ctx) => {
    if (Object.keys(b).length === 0) ctx.addIssue({ code: "custom", path: [], message: "nothing to change" });
    if (b.expires_in !== undefined && b.expires_at !== undefined) {
      ctx.addIssue({ code: "custom", path: ["expires_at"], message: "give expires_in or expires_at, not both" });
    }
  });
export type PatchKeyBody = z.infer<typeof PatchKeyBody>;

export const BulkRevokeBody = z.union(
  [
    z.strictObject({ label_prefix: z.string().min(1, "must not be empty (that would revoke every key)").max(200) }),
    z.strictObject({ ids: z.array(z.string().min(1)).min(1, "must list at least one id").max(1000) }),
  ],
  { error: "give label_prefix or ids" },
);

export const ListKeysQuery = z.strictObject({
  label: z.string().optional(),
  label_prefix: z.string().min(1).optional(),
  vendor: vendorName.optional(),
  status: z.enum(["active", "revoked", "expired"]).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.coerce.number().int().positive().optional(),
});
export type ListKeysQuery = z.infer<typeof ListKeysQuery>;

export const KeyRecordSchema = z.object({
  id: z.string(),
  vendor: vendorName,
  mode: z.enum(["live", "test"]),
  label: z.string().nullable(),
  agent_run_label: z.string().nullable(),
  key_hint: z.string(),
  daily_usd_cap: z.number().nullable(),
  total_usd_cap: z.number().nullable(),
  allowed_endpoints: z.array(z.string()),
  max_requests_per_minute: z.number().nullable(),
  require_idempotency_key: z.boolean(),
  metadata: z.record(z.string(), z.string()),
  status: z.enum(["active", "revoked", "expired"]),
  created_at: z.string(),
  expires_at: z.string(),
  revoked_at: z.string().nullable(),
  spent_today_usd: z.number(),
  spent_total_usd: z.number(),
  held_usd: z.number(),
  remaining_today_usd: z.number().nullable(),
  calls: z.number(),
  last_used_at: z.string().nullable(),
});

export const IssuedKeySchema = KeyRecordSchema.extend({ vault_key: z.string(), token: z.string() });

import { z } from "zod";

/**
 * What the key routes answer. Like every responses.ts, it imports nothing but zod: the dashboard (src/ui/app)
 * infers its types from these schemas, and its browser type check must not reach the server's modules
 * (test/ui-types.test.ts). The routes' inputs, which need the server's validation, are in model.ts.
 */

export const KeyRecordSchema = z.object({
  id: z.string(),
  vendor: z.string().describe("The vendor the key calls"),
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
  alert_thresholds: z.array(z.number()),
  budget_id: z.string().nullable().describe("The budget the key draws from (bud_…), or null"),
  per_customer_usd_cap: z.number().nullable(),
  per_destination_usd_cap: z.number().nullable(),
  enforcement: z.enum(["enforce", "observe"]).describe("observe: the key's limits are reported (`would_deny`), not enforced"),
  approval_above_usd: z.number().nullable().describe("Calls priced above this wait for a person's approval (SPEC §15)"),
  approval_ttl_s: z.number().nullable().describe("How long its approval requests wait, in seconds (null: 1 hour)"),
});

export const IssuedKeySchema = KeyRecordSchema.extend({
  vault_key: z.string(),
  token: z.string(),
  warnings: z
    .array(z.string())
    .optional()
    .describe("What the issuer should know: e.g. no real secret is configured for this vendor and mode yet"),
});

export const KeyPage = z.object({ data: z.array(KeyRecordSchema), next_cursor: z.string().nullable() });

export const RevokedCount = z.object({ revoked: z.number() });

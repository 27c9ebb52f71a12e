import { z } from "zod";

/** What the approval routes answer; nothing but zod, like every responses.ts (see src/keys/responses.ts). */

export const APPROVAL_STATUSES = ["pending", "approved", "denied", "expired", "used"] as const;

export const ApprovalSchema = z.object({
  id: z.string().meta({ description: "apr_…", examples: ["apr_7Gf2kQ9xLm3Pz8Rt1Vb6Nc"] }),
  key_id: z.string(),
  label: z.string().nullable(),
  vendor: z.string().nullable(),
  method: z.string(),
  path: z.string(),
  price_usd: z.number().describe("What the call would move: its hold, reserved while the approval is pending"),
  idempotency_key: z.string().describe("The job's Idempotency-Key: its retry with the same key and body goes out once approved"),
  status: z.enum(APPROVAL_STATUSES).describe("used: the approved call went out; its later retries replay its answer"),
  requested_at: z.string(),
  requested_by: z.string().nullable().describe("Who minted the key that asked (its token id, or admin)"),
  expires_at: z.string().describe("Unused by then, the approval lapses and its hold is released"),
  decided_at: z.string().nullable(),
  decided_by: z.string().nullable(),
  reason: z.string().nullable(),
});

export const ApprovalPage = z.object({ data: z.array(ApprovalSchema), next_cursor: z.string().nullable() });

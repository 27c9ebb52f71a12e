import { z } from "zod";

/** What the audit routes answer; nothing but zod, like every responses.ts (see src/keys/responses.ts). */

export const SpendPage = z.object({
  data: z.array(
    z.object({
      group: z.string().nullable().describe("The run label, key id, vendor or UTC day (null: calls with no key, or keys with no label)"),
      calls: z.number().describe("Every call: allowed and refused (a row of aggregated unauthenticated denials counts each request)"),
      allowed: z.number().describe("Calls let through, replays included"),
      denied: z.number().describe("Calls refused (decision other than allowed)"),
      spend_usd: z.number().describe("What the calls cost: the sum of their audit rows' cost_usd, equal to the ledger"),
      ambiguous_usd: z
        .number()
        .describe("The part of spend_usd still ambiguous (vendor 5xx or timeout, counted at the hold until resolved)"),
    }),
  ),
  next_cursor: z
    .string()
    .nullable()
    .optional()
    .describe("With `limit`: the cursor of the groups after these (null: none); absent without `limit`"),
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
  cost_source: z
    .enum(["request", "response", "object", "hold", "estimate", "reconciled", "replay"])
    .nullable()
    .describe("Where cost_usd came from; `hold` with a 5xx, 502 or 504 status: the vendor failed and the hold counts until resolved"),
  currency: z.string().nullable(),
  amount_minor: z.number().nullable(),
  vendor_request_id: z.string().nullable(),
  idempotency_key: z.string().nullable(),
  upstream_ms: z.number().nullable(),
  overhead_ms: z.number().nullable(),
  client_ip: z.string().nullable(),
  requests: z.number().int().describe("How many requests the row stands for: 1, or a client's unauthenticated denials in one minute"),
  secrets_scrubbed: z
    .number()
    .int()
    .describe("How many configured secrets (or Twilio account SIDs) Keybrake replaced in the vendor's answer before the job saw it"),
  would_deny: z
    .string()
    .nullable()
    .describe(
      "The code enforcing would have refused the call with: an observe-mode key's call forwarded past a limit (decision allowed), or a dry run's verdict (decision dry_run); null otherwise",
    ),
});

const CallApprovalSchema = z
  .object({
    id: z.string().describe("apr_…"),
    status: z.enum(["pending", "approved", "denied", "expired", "used"]).describe("`used`: approved, and the call went out"),
    decided_by: z.string().nullable().describe("Who decided: the token (id and name), or cli:<user>; null until decided"),
    decided_at: z.string().nullable().describe("When it was decided"),
  })
  .nullable()
  .describe("The approval of this call (SPEC §15), for a call above its key's approval threshold; null for every other row");

export const AuditPage = z.object({
  data: z.array(AuditRowSchema.extend({ approval: CallApprovalSchema })),
  next_cursor: z.string().nullable(),
});

const ChainHeadSchema = z.object({
  chain: z
    .string()
    .meta({ description: "The chain: `main` on SQLite; the instance id (KEYBRAKE_INSTANCE_ID) that writes it on PostgreSQL" }),
  seq: z
    .number()
    .int()
    .meta({ description: "The seq of the chain's newest audit row", examples: [48213] }),
  hash: z
    .string()
    .meta({ description: "That row's hash: SHA-256 of the previous hash and the row's canonical form", examples: ["5d0f3c…c21a"] }),
});

/** GET /audit/head (SPEC §19): where each chain stands, for someone other than Keybrake to keep. */
export const AuditHead = z.object({
  chain: z.string().nullable().meta({ description: "With one chain (SQLite, or one instance): its name; else null" }),
  seq: z.number().int().nullable().meta({ description: "With one chain: its head's seq; else null (see heads)" }),
  hash: z.string().nullable().meta({ description: "With one chain: its head's hash; else null (see heads)" }),
  heads: z.array(ChainHeadSchema).meta({ description: "Every chain's head (PostgreSQL: one per instance that wrote audit rows)" }),
});

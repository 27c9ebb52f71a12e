import { pageLimit, pageCursor } from "../validation";
import { z } from "zod";
import { parseDurationMs } from "../util";
import { vendorName } from "../vendors/index";

/** What `since` and `until` accept, as their refusal says it. */
export const TIME_FORMS = "an ISO time (2026-11-27T18:00:00Z), a UTC date (2026-11-27) or a duration ago (10m, 2h, 1d)";

/** An ISO time, a UTC date or a duration back from now (`10m`, `2h`, `1d`, `1h30m`) -> ms since the epoch. */
export function parseTime(text: string, now: number): number | null {
  if (z.iso.datetime({ offset: true }).safeParse(text).success) return Date.parse(text);
  if (z.iso.date().safeParse(text).success) return Date.parse(`${text}T00:00:00Z`);
  const ago = parseDurationMs(text);
  return ago === null ? null : now - ago;
}

// The description sits on the string the transform reads: /docs shows the input, with its example.
const time = (description: string, example: string) =>
  z
    .string()
    .meta({ description: `${description}: ${TIME_FORMS}`, examples: [example] })
    .transform((text, ctx) => {
      const ms = parseTime(text, Date.now());
      if (ms === null) {
        ctx.addIssue({ code: "custom", message: `must be ${TIME_FORMS}` });
        return z.NEVER;
      }
      return ms;
    });

/** The filters every audit view takes (SPEC §8). */
const filters = {
  request_id: z
    .string()
    .min(1)
    .optional()
    .meta({
      description: "One call: the X-Keybrake-Request-Id its answer carried (the audit row's id)",
      examples: ["kbr_4QfZ0c1hW2mXa7Lr9sTb3k"],
    }),
  key_id: z
    .string()
    .optional()
    .meta({ description: "Calls of one vault key", examples: ["vk_8mJq2LwXc4Rt6YpN0aZb1Hs3"] }),
  label: z
    .string()
    .optional()
    .meta({ description: "Calls of keys with exactly this run label", examples: ["airflow-billing/run_2026_11_22"] }),
  label_prefix: z
    .string()
    .min(1)
    .optional()
    .meta({ description: "Calls of keys whose run label starts with this (a DAG, a task family)", examples: ["airflow-billing/"] }),
  vendor: vendorName.optional().meta({ description: "Calls to one vendor", examples: ["stripe"] }),
  decision: z
    .string()
    .optional()
    .meta({ description: "`allowed`, or the error code a call was refused with", examples: ["cap_exhausted"] }),
  since: time("Calls at or after this time", "2h").optional(),
  until: time("Calls before this time", "2026-11-27T18:00:00Z").optional(),
};

export const AuditQuery = z.strictObject({
  ...filters,
  limit: pageLimit("Rows per page, newest first"),
  cursor: pageCursor(),
});
export const SpendQuery = z.strictObject({
  ...filters,
  group_by: z
    .enum(["label", "key", "vendor", "day"])
    .default("label")
    .meta({ description: "One row per run label, key, vendor or UTC day", examples: ["label"] }),
});
export const ExportQuery = z.strictObject({
  ...filters,
  format: z
    .enum(["ndjson", "csv"])
    .default("ndjson")
    .meta({ description: "NDJSON (one JSON row per line) or CSV with a header line", examples: ["csv"] }),
});
export type AuditFilters = Omit<z.infer<typeof AuditQuery>, "limit" | "cursor">;

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

import { pageLimit, pageCursor } from "../validation";
import { z } from "zod";
import { parseDurationMs } from "../util";
import { vendorName } from "../vendors/index";

const SPEND_LIMIT = "must be an integer from 1 to 1000";

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
  limit: z.coerce
    .number({ error: SPEND_LIMIT })
    .int(SPEND_LIMIT)
    .min(1, SPEND_LIMIT)
    .max(1000, SPEND_LIMIT)
    .optional()
    .meta({
      description:
        "The biggest spenders only: this many groups (1 to 1000), in the view's order, with a next_cursor for the rest. Absent: every group",
      examples: [20],
    }),
  cursor: pageCursor(),
});
export const ExportQuery = z.strictObject({
  ...filters,
  format: z
    .enum(["ndjson", "csv"])
    .default("ndjson")
    .meta({ description: "NDJSON (one JSON row per line) or CSV with a header line", examples: ["csv"] }),
});
export type AuditFilters = Omit<z.infer<typeof AuditQuery>, "limit" | "cursor">;

import { pageLimit } from "../validation";
import { z } from "zod";
import { duration, endpointPattern, MAX_USD_CAP } from "../validation";
import { vendorName } from "../vendors/index";
import { ROLES } from "./responses";

const DURATION = /^(?=\d)(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/;
/** A token's life: `90d`, `12h`, … (tokens outlive keys: up to 10 years). */
const MAX_TOKEN_LIFETIME_MS = 3650 * 24 * 3600 * 1000;
const tokenDuration = z
  .string()
  .regex(DURATION, 'must be a duration like "90d", "12h" or "30m"')
  // On the string the transform reads: /docs/json shows the field as the input it accepts.
  .meta({ description: "How long it works; without this or expires_at it never expires", examples: ["90d"] })
  .transform((s) => {
    const [, d = 0, h = 0, m = 0, sec = 0] = DURATION.exec(s)!.map((part) => Number(part ?? 0));
    return (((d * 24 + h) * 60 + m) * 60 + sec) * 1000;
  })
  .refine((ms) => ms > 0, "must be longer than 0")
  .refine((ms) => ms <= MAX_TOKEN_LIFETIME_MS, "must be at most 3650 days");

const tokenExpiry = z.iso
  .datetime({ offset: true, error: "must be an ISO 8601 time, e.g. 2027-02-20T00:00:00Z" })
  .meta({ description: "When it stops working, an ISO 8601 time with offset; or give expires_in", examples: ["2027-02-20T00:00:00Z"] })
  .transform((t) => Date.parse(t));

const usd = (max: number) =>
  z
    .number({ error: "must be a number of US dollars" })
    .refine(Number.isFinite, "must be a finite number")
    .refine((v) => v > 0 && Math.round(v * 1e6) >= 1, "must be greater than 0 (at least 0.000001)")
    .refine((v) => v <= max, `must be at most ${max}`);

const positiveInt = (max: number) => z.number().int("must be an integer").min(1, "must be at least 1").max(max, `must be at most ${max}`);

/**
 * An issuer token's policy (SPEC §10): every field optional, each one a bound on the keys the token mints and on
 * its PATCHes. A key as it would be created must satisfy every field given; nothing is filled in for it.
 */
export const IssuerPolicySchema = z.strictObject({
  vendors: z
    .array(vendorName)
    .min(1, "must list at least one vendor")
    .optional()
    .meta({ description: "The vendors its keys may be for", examples: [["stripe"]] }),
  modes: z
    .array(z.enum(["live", "test"], { error: "must be live or test" }))
    .min(1, "must list at least one mode")
    .optional()
    .meta({ description: "The modes (which real secret) its keys may use", examples: [["live"]] }),
  label_prefix: z
    .string()
    .min(1, "must not be empty")
    .max(200)
    .optional()
    .meta({ description: "Every key's label must start with it (a key without a label is refused)", examples: ["airflow-billing/"] }),
  max_daily_usd_cap: usd(MAX_USD_CAP)
    .optional()
    .meta({ description: "Every key must carry a daily_usd_cap no larger (a key without one is refused)", examples: [500] }),
  max_total_usd_cap: usd(MAX_USD_CAP)
    .optional()
    .meta({ description: "Every key must carry a total_usd_cap no larger (a key without one is refused)", examples: [2000] }),
  max_expires_in: z
    .string()
    .superRefine((text, ctx) => {
      const parsed = duration.safeParse(text);
      if (!parsed.success) for (const issue of parsed.error.issues) ctx.addIssue({ code: "custom", message: issue.message });
    })
    .optional()
    .meta({ description: "The longest a key may live, counted from its creation (PATCHes included)", examples: ["6h"] }),
  allowed_endpoints: z
    .array(endpointPattern)
    .min(1, "must list at least one endpoint")
    .max(100)
    .optional()
    .meta({
      description: "Each of a key's patterns must be covered by one of these: every request it matches, one of these matches too",
      examples: [["POST /v1/payment_intents", "POST /v1/payment_intents/*"]],
    }),
  max_requests_per_minute: positiveInt(1_000_000)
    .optional()
    .meta({ description: "Every key must carry a max_requests_per_minute no larger (a key without one is refused)", examples: [600] }),
  require_idempotency_key: z
    .boolean({ error: "must be true or false" })
    .optional()
    .meta({ description: "true: every key must be minted with require_idempotency_key: true", examples: [true] }),
  max_keys_per_hour: positiveInt(1_000_000)
    .optional()
    .meta({ description: "The most keys it may mint in any 60 minutes", examples: [5] }),
  issued_usd_per_day: usd(1_000_000_000)
    .optional()
    .meta({
      description:
        "The most its keys minted (or raised) in one UTC day can spend together: each key counts its total cap, or its daily cap times the UTC days its life touches, whichever is less",
      examples: [1000],
    }),
  budget_id: z
    .string()
    .min(1, "must not be empty")
    .max(100, "must be at most 100 characters")
    .optional()
    .meta({
      description:
        "The budget every key it mints draws from, put on keys that name none (a key naming another is refused); without it, its keys draw from no budget",
      examples: ["bud_4fTq9ZrWb2NcLm5Yd0Hx"],
    }),
  max_approval_above_usd: usd(MAX_USD_CAP)
    .optional()
    .meta({
      description: "Every key must carry an approval_above_usd no larger (a key without one is refused): calls above it wait for a person",
      examples: [500],
    }),
  allow_observe: z
    .boolean({ error: "must be true or false" })
    .optional()
    .meta({
      description:
        'true: it may mint keys with "enforcement": "observe" (calls over their limits forwarded and audited as would_deny); without it, such a key is refused',
      examples: [true],
    }),
});
/** A policy is kept as it was given (no field is transformed), so it reads back exactly as written. */
export type IssuerPolicy = z.output<typeof IssuerPolicySchema>;

/** A policy's `max_expires_in` in milliseconds (validated when the token was created). */
export const durationMs = (text: string): number => duration.parse(text);

export const CreateTokenBody = z
  .strictObject({
    name: z
      .string()
      .min(1, "must not be empty")
      .max(100, "must be at most 100 characters")
      .meta({ description: "Who holds it", examples: ["airflow-prod"] }),
    role: z
      .enum(ROLES, { error: "must be admin, issuer, viewer or approver" })
      .meta({ description: "admin: everything; issuer: mints keys within its policy; viewer: reads only", examples: ["issuer"] }),
    expires_in: tokenDuration.optional(),
    expires_at: tokenExpiry.optional(),
    policy: IssuerPolicySchema.optional().meta({
      description: "An issuer's policy (role issuer only): every field optional, each a bound on the keys it mints",
      examples: [{ vendors: ["stripe"], label_prefix: "airflow-billing/", max_daily_usd_cap: 500, issued_usd_per_day: 1000 }],
    }),
  })
  .superRefine((b, ctx) => {
    if (b.expires_in !== undefined && b.expires_at !== undefined) {
      ctx.addIssue({ code: "custom", path: ["expires_at"], message: "give expires_in or expires_at, not both" });
    }
    if (b.policy !== undefined && b.role !== "issuer") {
      ctx.addIssue({ code: "custom", path: ["policy"], message: "only an issuer token has a policy" });
    }
  });
export type CreateTokenBody = z.infer<typeof CreateTokenBody>;

export const ListTokensQuery = z.strictObject({
  limit: pageLimit("Tokens per page, newest first"),
  cursor: z.coerce
    .number()
    .int()
    .positive()
    .optional()
    .meta({ description: "The next_cursor of the previous page", examples: [12] }),
});

export const RevokeTokenQuery = z.strictObject({
  revoke_keys: z
    .enum(["true", "false"], { error: "must be true or false" })
    .meta({ description: "true: also revoke every key the token minted", examples: ["true"] })
    .default("false")
    .transform((v) => v === "true"),
});

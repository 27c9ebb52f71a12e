import { z } from "zod";
import {
  alertThresholds,
  DEFAULT_ALERT_THRESHOLDS,
  type Doc,
  durationOf,
  endpointPattern,
  pageCursor,
  pageLimit,
  usdCap,
} from "../validation";
import { vendorName } from "../vendors/index";

const isoTimeOf = (doc?: Doc) => {
  const text = z.iso.datetime({ offset: true, error: "must be an ISO 8601 time, e.g. 2026-11-27T18:00:00Z" });
  return (doc ? text.meta(doc) : text).transform((s) => Date.parse(s));
};
export const isoTime = isoTimeOf();

const EXPIRES_IN: Doc = {
  description: 'How long the key lives: "90s", "5m", "6h", "2d" or "1h30m" (default 24h, at most 30 days); or give expires_at',
  examples: ["6h"],
};
const EXPIRES_AT: Doc = {
  description: "When the key expires, an ISO 8601 time with offset (at most 30 days away); or give expires_in",
  examples: ["2026-11-27T18:00:00Z"],
};

const label = z.string().max(200, "must be at most 200 characters");
const budgetId = z.string().min(1, "must not be empty").max(100, "must be at most 100 characters");
const rate = z.number().int("must be an integer").min(1, "must be at least 1").max(1_000_000, "must be at most 1000000");

const metadata = z
  .record(z.string().max(100, "keys must be at most 100 characters"), z.string({ error: "values must be strings" }))
  .refine((m) => new TextEncoder().encode(JSON.stringify(m)).length <= 4096, "must be at most 4 KiB as JSON");

/** SPEC §16: whether the key's caps, budgets, counterparty caps and approvals refuse calls, or only say they would. */
const enforcement = z.enum(["enforce", "observe"], { error: "must be enforce or observe" }).meta({
  description:
    "enforce (default): calls over the key's caps, budgets, counterparty caps or approval threshold are refused. observe: they are forwarded anyway and their audit row says `would_deny: <code>` (alerts still fire), to watch real runs before braking them; authentication, the allowlist and the catalogue still refuse. An issuer token needs `allow_observe: true` in its policy",
  examples: ["observe"],
});

const ALERT_THRESHOLDS_DOC: Doc = {
  description:
    'Fractions of the daily and of the lifetime cap, in (0, 1]: settled spend crossing one fires a cap_threshold alert, once per key and cap window (README "Alerts"); [] for none',
  examples: [[0.5, 0.8, 1.0]],
};
export const CreateKeyBody = z
  .strictObject({
    vendor: vendorName.meta({ description: "The vendor the key calls: its secret, routes and prices", examples: ["stripe"] }),
    daily_usd_cap: usdCap.optional().meta({
      description: "USD the key may spend per UTC day (settled + held); this and/or total_usd_cap is required",
      examples: [500],
    }),
    total_usd_cap: usdCap.optional().meta({ description: "USD the key may spend over its whole life", examples: [1000] }),
    allowed_endpoints: z
      .array(endpointPattern, { error: "must be a list of endpoint patterns" })
      .min(1, "must list at least one endpoint")
      .max(100, "must list at most 100 endpoints")
      .meta({
        description:
          'What the key may call: "[METHOD ]/path", `*` within one segment, a trailing `/*` for one or more segments; a pattern without a method allows every method',
        examples: [["POST /v1/payment_intents"], ["/v1/payment_intents", "/v1/payment_intents/*"]],
      }),
    expires_in: durationOf(EXPIRES_IN).optional(),
    expires_at: isoTimeOf(EXPIRES_AT).optional(),
    agent_run_label: label.optional().meta({
      description: "The run this key is for (a DAG run, a task id): audit rows, spend and the kill switch group by it",
      examples: ["airflow-billing/run_2026_11_22"],
    }),
    label: label.optional().meta({ description: "Alias of agent_run_label (the Flask/Celery seed's name)", examples: ["flask-u1-r1"] }),
    mode: z
      .enum(["live", "test"], { error: "must be live or test" })
      .default("live")
      .meta({ description: "Which real secret the key's calls use: live or test", examples: ["live"] }),
    max_requests_per_minute: rate
      .optional()
      .meta({ description: "A rate limit: more calls in a minute get 429 rate_limited", examples: [60] }),
    require_idempotency_key: z
      .boolean({ error: "must be true or false" })
      .default(false)
      .meta({ description: "Refuse priced calls without an Idempotency-Key header (400 idempotency_key_required)", examples: [true] }),
    metadata: metadata.default({}).meta({
      description: "Your own flat string fields (at most 4 KiB as JSON), returned with the key",
      examples: [{ dag_id: "billing", run_id: "scheduled__2026-11-22T06:00:00+00:00" }],
    }),
    alert_thresholds: alertThresholds(ALERT_THRESHOLDS_DOC).default(DEFAULT_ALERT_THRESHOLDS),
    budget_id: budgetId.optional().meta({
      description:
        "The budget the key draws from (README \"Budgets\"): a call is admitted only if it fits the key's caps and every budget up the budget's chain. Set at mint, never changed; an issuer token whose policy names a budget puts it on every key it mints",
      examples: ["bud_4fTq9ZrWb2NcLm5Yd0Hx"],
    }),
    per_customer_usd_cap: usdCap.optional().meta({
      description:
        'USD the key may move per UTC day for one Stripe customer (of the intent, charge or refund; calls with no customer count together as "no customer"): more gets 429 counterparty_cap_exhausted',
      examples: [100],
    }),
    per_destination_usd_cap: usdCap.optional().meta({
      description: "USD the key may spend per UTC day on one Twilio destination (the To number): more gets 429 counterparty_cap_exhausted",
      examples: [5],
    }),
    enforcement: enforcement.default("enforce"),
    approval_above_usd: usdCap.optional().meta({
      description:
        "A priced call above this waits for a person's approval (403 approval_required, its hold reserved); the same call retried with the same Idempotency-Key goes out once approved (SPEC §15)",
      examples: [500],
    }),
    approval_ttl: durationOf({
      description: 'How long an approval request waits, and an approval stays usable: "90s", "5m", "1h" (default 1h, at most 30 days)',
      examples: ["1h"],
    }).optional(),
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

/** The seeds' two ways of issuing a key, as POST /vault/keys and /v1/keys examples in /docs. */
export const CREATE_KEY_EXAMPLES = {
  airflow: {
    summary: "Airflow / Dagster / Kestra / Argo: one key per run, the run id in the label",
    value: {
      vendor: "stripe",
      daily_usd_cap: 500.0,
      allowed_endpoints: ["POST /v1/payment_intents"],
      expires_in: "6h",
      agent_run_label: "airflow-billing/run_2026_11_22",
    },
  },
  flask: {
    summary: "Flask / Celery: label, patterns without a method, a short life",
    value: {
      label: "flask-u1-r1",
      vendor: "stripe",
      daily_usd_cap: 1000,
      expires_in: "5m",
      allowed_endpoints: ["/v1/payment_intents", "/v1/payment_intents/*"],
    },
  },
};

export const PatchKeyBody = z
  .strictObject({
    daily_usd_cap: usdCap
      .nullable()
      .optional()
      .meta({ description: "A new daily cap in USD; null removes it (a total_usd_cap must remain)", examples: [750] }),
    total_usd_cap: usdCap
      .nullable()
      .optional()
      .meta({ description: "A new lifetime cap in USD; null removes it (a daily_usd_cap must remain)", examples: [2000] }),
    expires_in: durationOf({ ...EXPIRES_IN, description: 'A new expiry, counted from now: "90s", "5m", "6h", "2d" or "1h30m"' }).optional(),
    expires_at: isoTimeOf(EXPIRES_AT).optional(),
    max_requests_per_minute: rate
      .nullable()
      .optional()
      .meta({ description: "A new rate limit; null removes it", examples: [60] }),
    alert_thresholds: alertThresholds({
      ...ALERT_THRESHOLDS_DOC,
      description: `New alert thresholds. ${ALERT_THRESHOLDS_DOC.description}`,
    }).optional(),
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
    z.strictObject({
      label_prefix: z
        .string()
        .min(1, "must not be empty (that would revoke every key)")
        .max(200)
        .meta({
          description: "Revoke every active key whose run label starts with this (a DAG, a run family)",
          examples: ["airflow-billing/"],
        }),
    }),
    z.strictObject({
      ids: z
        .array(z.string().min(1))
        .min(1, "must list at least one id")
        .max(1000)
        .meta({
          description: "Revoke these keys (at most 1000 ids)",
          examples: [["vk_8mJq2LwXc4Rt6YpN0aZb1Hs3", "vk_3Hs1bZa0NpY6tR4cXwL2qJm8"]],
        }),
    }),
  ],
  { error: "give label_prefix or ids" },
);

/** The kill switch's two forms, as POST /vault/keys/revoke examples in /docs. */
export const BULK_REVOKE_EXAMPLES = {
  label_prefix: { summary: "Every key of a DAG's runs (the kill switch)", value: { label_prefix: "airflow-billing/" } },
  ids: { summary: "A list of keys", value: { ids: ["vk_8mJq2LwXc4Rt6YpN0aZb1Hs3", "vk_3Hs1bZa0NpY6tR4cXwL2qJm8"] } },
};

export const ListKeysQuery = z.strictObject({
  label: z
    .string()
    .optional()
    .meta({ description: "Keys with exactly this run label", examples: ["airflow-billing/run_2026_11_22"] }),
  label_prefix: z
    .string()
    .min(1)
    .optional()
    .meta({ description: "Keys whose run label starts with this", examples: ["airflow-billing/"] }),
  vendor: vendorName.optional().meta({ description: "Keys of one vendor", examples: ["stripe"] }),
  budget_id: budgetId.optional().meta({ description: "Keys that draw from this budget", examples: ["bud_4fTq9ZrWb2NcLm5Yd0Hx"] }),
  status: z
    .enum(["active", "revoked", "expired"])
    .optional()
    .meta({ description: "active, revoked or expired", examples: ["active"] }),
  limit: pageLimit("Keys per page, newest first"),
  cursor: pageCursor(),
});
export type ListKeysQuery = z.infer<typeof ListKeysQuery>;

import { z } from "zod";
import { ALERT_EVENTS } from "../store/types";
import { pageCursor, pageLimit } from "../validation";

const EVENT_TEXT =
  "cap_threshold (settled spend crossed one of a key's alert_thresholds), cap_exhausted (the first refusal at a cap), key_revoked, holds_need_attention (orphaned by a crash, or ambiguous), price_differential (a settlement above its hold)";

const eventName = z.enum(ALERT_EVENTS, { error: `must be one of ${ALERT_EVENTS.join(", ")}` });

const webhookUrl = z
  .string({ error: "must be an http:// or https:// URL" })
  .max(2048, "must be at most 2048 characters")
  .refine((v) => URL.canParse(v) && /^https?:$/.test(new URL(v).protocol), "must be an http:// or https:// URL");

export const CreateWebhookBody = z.strictObject({
  url: webhookUrl.meta({
    description:
      "Where events are POSTed: any http:// or https:// address, private and loopback ones included (a Slack incoming webhook with format slack)",
    examples: ["https://alerts.example.com/keybrake"],
  }),
  events: z
    .array(eventName, { error: "must be a list of event names" })
    .min(1, "must list at least one event")
    // Before the transform, so the OpenAPI document keeps the example.
    .meta({
      description: `The events to send (default: all): ${EVENT_TEXT}`,
      examples: [["cap_threshold", "cap_exhausted", "key_revoked"]],
    })
    .transform((list) => [...new Set(list)])
    .default([...ALERT_EVENTS]),
  label_prefix: z
    .string()
    .min(1, "must not be empty (leave it out for every key)")
    .max(200, "must be at most 200 characters")
    .optional()
    .meta({ description: "Only events of keys whose run label starts with this", examples: ["airflow-billing/"] }),
  format: z
    .enum(["json", "slack"], { error: "must be json or slack" })
    .default("json")
    .meta({ description: 'json: the event as JSON; slack: a Slack incoming webhook\'s { "text": … }', examples: ["json"] }),
});
export type CreateWebhookBody = z.infer<typeof CreateWebhookBody>;

export const WEBHOOK_EXAMPLES = {
  json: {
    summary: "Every event of one DAG's runs, as signed JSON",
    value: {
      url: "https://alerts.example.com/keybrake",
      events: ["cap_threshold", "cap_exhausted", "key_revoked", "holds_need_attention", "price_differential"],
      label_prefix: "airflow-billing/",
      format: "json",
    },
  },
  slack: {
    summary: "Cap warnings to a Slack channel (an incoming webhook)",
    value: { url: "https://hooks.slack.com/services/T000/B000/XXXXXXXX", events: ["cap_threshold", "cap_exhausted"], format: "slack" },
  },
};

export const WebhookId = z.object({
  id: z.string().meta({ description: "The webhook's id (wh_…)", examples: ["wh_4Gq8ZtV2mLx9Rc1Nb7Pk"] }),
});

export const DeliveriesQuery = z.strictObject({
  status: z
    .enum(["pending", "delivered", "failed", "cancelled"])
    .optional()
    .meta({
      description: "pending (waiting for its next attempt), delivered, failed (gave up after 24 h) or cancelled (webhook deleted)",
      examples: ["failed"],
    }),
  webhook_id: z
    .string()
    .min(1)
    .optional()
    .meta({ description: "Deliveries to one webhook", examples: ["wh_4Gq8ZtV2mLx9Rc1Nb7Pk"] }),
  event_id: z
    .string()
    .min(1)
    .optional()
    .meta({ description: "Deliveries of one event", examples: ["evt_9sK2mQ7xLc4Vb1Rt8Np3Zw6Y"] }),
  limit: pageLimit("Deliveries per page, newest first"),
  cursor: pageCursor(),
});
export type DeliveriesQuery = z.infer<typeof DeliveriesQuery>;

export const EventsQuery = z.strictObject({
  type: eventName.optional().meta({ description: "One kind of event", examples: ["cap_threshold"] }),
  key_id: z
    .string()
    .min(1)
    .optional()
    .meta({ description: "Events of one key", examples: ["vk_8mJq2LwXc4Rt6YpN0aZb1Hs3"] }),
  label_prefix: z
    .string()
    .min(1)
    .optional()
    .meta({ description: "Events of keys whose run label starts with this", examples: ["airflow-billing/"] }),
  limit: pageLimit("Events per page, newest first"),
  cursor: pageCursor(),
});
export type EventsQuery = z.infer<typeof EventsQuery>;

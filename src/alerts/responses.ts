import { z } from "zod";

/** What the alert routes answer; nothing but zod, like every responses.ts (see src/keys/responses.ts). */

export const WebhookSchema = z.object({
  id: z.string(),
  url: z.string(),
  events: z.array(z.string()),
  label_prefix: z.string().nullable(),
  format: z.enum(["json", "slack"]),
  created_at: z.string(),
  created_by: z.string(),
  deleted_at: z.string().nullable(),
});

export const CreatedWebhookSchema = WebhookSchema.extend({
  secret: z.string().describe('The signing secret, shown this once: verify Keybrake-Signature with it (HMAC-SHA256 over "<t>.<body>")'),
});

export const WebhookList = z.object({ data: z.array(WebhookSchema) });

export const DeliverySchema = z.object({
  seq: z.number(),
  event_id: z.string(),
  event: z.string().nullable(),
  key_id: z.string().nullable(),
  label: z.string().nullable(),
  webhook_id: z.string(),
  destination: z.string().nullable().describe("The webhook's origin (scheme, host, port); its path may be a credential"),
  status: z.enum(["pending", "delivered", "failed", "cancelled"]),
  attempts: z.number(),
  last_status: z.number().nullable().describe("The receiver's HTTP status at the last attempt, when it answered"),
  last_error: z.string().nullable(),
  created_at: z.string(),
  last_attempt_at: z.string().nullable(),
  next_attempt_at: z.string().nullable(),
  delivered_at: z.string().nullable(),
});

export const DeliveryPage = z.object({ data: z.array(DeliverySchema), next_cursor: z.string().nullable() });

export const AlertEventSchema = z.object({
  id: z.string(),
  type: z.string(),
  created_at: z.string(),
  key: z.object({ id: z.string(), label: z.string().nullable(), vendor: z.string().nullable(), mode: z.string().nullable() }).nullable(),
  data: z.record(z.string(), z.unknown()),
  dashboard_url: z.string().nullable(),
});

export const AlertEventPage = z.object({ data: z.array(AlertEventSchema), next_cursor: z.string().nullable() });

export const TestResultSchema = z.object({
  webhook_id: z.string(),
  event_id: z.string(),
  delivered: z.boolean(),
  status: z.number().nullable(),
  error: z.string().nullable(),
  duration_ms: z.number(),
});

import type { Config } from "../config";
import { notFound } from "../errors";
import { type Caller, eventBy } from "../auth/admin-auth";
import { presentHeads } from "../store/audit-chain";
import type { DeliveryRecord, Store, WebhookRecord } from "../store/index";
import { urlOrigin } from "../store/alerts";
import { iso, randomBase62 } from "../util";
import type { CreateWebhookBody, DeliveriesQuery, EventsQuery } from "./model";
import { jsonPayload } from "./payload";
import { sendEvent } from "./send";

export interface AlertContext {
  store: Store;
  now: () => number;
  /** Who acts, as admin events record it: the token's fingerprint, or `cli:<user>`. */
  actor: string;
  caller?: Caller;
}

/** A webhook's signing secret: `whsec_` + 40 base62 characters (~238 bits); the HMAC key is the whole string. */
export const newWebhookSecret = () => `whsec_${randomBase62(40)}`;

export const presentWebhook = (w: WebhookRecord) => ({
  id: w.id,
  url: w.url,
  events: w.events,
  label_prefix: w.labelPrefix,
  format: w.format,
  created_at: iso(w.createdAt)!,
  created_by: w.createdBy,
  deleted_at: iso(w.deletedAt),
});

export const presentDelivery = (d: DeliveryRecord) => ({
  seq: d.seq,
  event_id: d.eventId,
  event: d.eventType,
  key_id: d.keyId,
  label: d.label,
  webhook_id: d.webhookId,
  destination: d.url,
  status: d.status,
  attempts: d.attempts,
  last_status: d.lastStatus,
  last_error: d.lastError,
  created_at: iso(d.createdAt)!,
  last_attempt_at: iso(d.lastAttemptAt),
  next_attempt_at: iso(d.nextAttemptAt),
  delivered_at: iso(d.deliveredAt),
});

/** A webhook, with its signing secret in the answer this once; every later read leaves the secret out. */
export async function createWebhook(ctx: AlertContext, body: CreateWebhookBody) {
  const now = ctx.now();
  const secret = newWebhookSecret();
  const webhook = await ctx.store.insertWebhook({
    id: `wh_${randomBase62(20)}`,
    url: body.url,
    events: body.events,
    labelPrefix: body.label_prefix ?? null,
    format: body.format,
    secret,
    createdAt: now,
    createdBy: ctx.actor,
  });
  await ctx.store.recordAdminEvent({
    at: now,
    ...eventBy(ctx),
    action: "alert_webhook.create",
    target: webhook.id,
    // The origin only: a Slack incoming webhook's path is its credential.
    details: { destination: urlOrigin(webhook.url), events: webhook.events, label_prefix: webhook.labelPrefix, format: webhook.format },
  });
  return { ...presentWebhook(webhook), secret };
}

export async function listWebhooks(ctx: Pick<AlertContext, "store">) {
  return { data: (await ctx.store.listWebhooks()).map(presentWebhook) };
}

/** Deletes a webhook: nothing more is sent to it, and its pending deliveries are cancelled. */
export async function deleteWebhook(ctx: AlertContext, id: string) {
  const now = ctx.now();
  const deleted = await ctx.store.deleteWebhook(id, now);
  if (!deleted) throw notFound("webhook");
  await ctx.store.recordAdminEvent({
    at: now,
    ...eventBy(ctx),
    action: "alert_webhook.delete",
    target: id,
    details: { destination: urlOrigin(deleted.url) },
  });
  return presentWebhook(deleted);
}

export async function listDeliveries(ctx: Pick<AlertContext, "store">, q: DeliveriesQuery) {
  const page = await ctx.store.listDeliveries({
    status: q.status,
    webhookId: q.webhook_id,
    eventId: q.event_id,
    limit: q.limit,
    cursor: q.cursor,
  });
  return { data: page.data.map(presentDelivery), next_cursor: page.nextCursor === null ? null : String(page.nextCursor) };
}

/** Recent alert events, each as a JSON webhook receives it (the dashboard's "recent alerts"). */
export async function listEvents(ctx: Pick<AlertContext, "store">, q: EventsQuery, publicUrl: string | null) {
  const page = await ctx.store.listAlertEvents({
    type: q.type,
    keyId: q.key_id,
    labelPrefix: q.label_prefix,
    limit: q.limit,
    cursor: q.cursor,
  });
  return {
    data: page.data.map((e) => jsonPayload(e, publicUrl)),
    next_cursor: page.nextCursor === null ? null : String(page.nextCursor),
  };
}

/**
 * Sends a `test` event to a webhook now, signed like every event, and says what the receiver answered. Not
 * written to the outbox: it is retried by running it again.
 */
export async function testWebhook(ctx: Pick<AlertContext, "store" | "now">, id: string, config: Pick<Config, "publicUrl">) {
  const webhook = await ctx.store.findWebhook(id);
  if (!webhook) throw notFound("webhook");
  const event = {
    id: `evt_test_${randomBase62(20)}`,
    type: "test",
    at: ctx.now(),
    keyId: null,
    label: null,
    vendor: null,
    mode: null,
    data: { message: `a test of webhook ${webhook.id}; it receives ${webhook.events.join(", ")}`, webhook_id: webhook.id },
  };
  const auditHead = presentHeads(await ctx.store.auditHeads());
  const result = await sendEvent(webhook, event, { publicUrl: config.publicUrl, auditHead, nowMs: ctx.now() });
  return {
    webhook_id: webhook.id,
    event_id: event.id,
    delivered: result.ok,
    status: result.status,
    error: result.error,
    duration_ms: Math.round(result.ms),
  };
}

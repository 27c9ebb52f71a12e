import { createHmac, timingSafeEqual } from "node:crypto";
import type { PresentedHeads } from "../store/audit-chain";
import type { AlertEventRecord } from "../store/index";
import { formatUsd, iso, usdToMicros } from "../util";

/**
 * What a webhook receives (SPEC §12). The body of one event is the same on every attempt (its `id` is the
 * de-duplication key) but for `audit_head`, the audit chain's head when sent; the signature's timestamp changes.
 *
 * JSON: `{ "id", "type", "created_at", "key": { "id", "label", "vendor", "mode" }, "data": { … }, "dashboard_url",
 * "audit_head" }`.
 * Slack: `{ "text": … }`, one line with the run's label, spend, cap and percentage, and a link to the dashboard.
 */

/** An event as the body is built from it; the `test` event (`keybrake alerts test`) has no key. */
export type OutgoingEvent = Pick<AlertEventRecord, "id" | "at" | "keyId" | "label" | "vendor" | "mode" | "data"> & { type: string };

/** The dashboard page of the event's key (its holds for holds_need_attention), when KEYBRAKE_PUBLIC_URL is set. */
export function dashboardUrl(publicUrl: string | null, event: Pick<OutgoingEvent, "type" | "keyId">): string | null {
  if (publicUrl === null) return null;
  if (event.type === "holds_need_attention") return `${publicUrl}/ui#/holds`;
  // The approval's page: a link never decides by itself, the decision is a POST behind sign-in and CSRF (SPEC §15).
  if (event.type === "approval_requested" || event.type === "approval_decided") return `${publicUrl}/ui#/approvals`;
  return event.keyId ? `${publicUrl}/ui#/keys/${encodeURIComponent(event.keyId)}` : `${publicUrl}/ui`;
}

/**
 * The JSON body. A delivery also carries `audit_head`, where the audit's hash chain stood when it was sent (as GET
 * /audit/head gives it, SPEC §19), so every receiver keeps a head outside Keybrake; it is the one part of a body
 * that differs between attempts. Listings of past events (GET /alerts/events) leave it out.
 */
export function jsonPayload(event: OutgoingEvent, publicUrl: string | null, auditHead?: PresentedHeads) {
  return {
    id: event.id,
    type: event.type,
    created_at: iso(event.at)!,
    key: event.keyId === null ? null : { id: event.keyId, label: event.label, vendor: event.vendor, mode: event.mode },
    data: event.data,
    dashboard_url: dashboardUrl(publicUrl, event),
    ...(auditHead && { audit_head: auditHead }),
  };
}

/** Slack's mrkdwn needs &, < and > escaped; anything else in a label is shown as it is. */
const slackEscape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const money = (usd: unknown) => `${formatUsd(usdToMicros(Number(usd ?? 0)))} USD`;

/** One Slack line for an event: what happened to which run, with the numbers. */
export function slackText(event: OutgoingEvent, publicUrl: string | null): string {
  const d = event.data;
  const run = event.label ? `*${slackEscape(event.label)}* (${event.keyId})` : `key ${event.keyId}`;
  const capName = d.cap === "daily" ? `daily cap${d.window ? ` (${d.window} UTC)` : ""}` : "lifetime cap";
  let text: string;
  switch (event.type) {
    case "cap_threshold":
      text = `:warning: Keybrake: ${run} has spent ${d.percent}% of its ${capName}: ${money(d.spent_usd)} of ${money(d.cap_usd)} (alert at ${Math.round(Number(d.threshold) * 1000) / 10}%).`;
      break;
    case "cap_exhausted":
      text =
        `:no_entry: Keybrake: ${run} hit its ${capName}: a ${money(d.price_usd)} call was refused with ${money(d.spent_usd)} spent ` +
        `and ${money(d.held_usd)} held of ${money(d.cap_usd)} (${d.percent}%). ` +
        (d.cap === "daily" ? "Further calls are refused until UTC midnight." : "Further calls are refused until the cap is raised.");
      break;
    case "key_revoked":
      text = `:octagonal_sign: Keybrake: ${run} was revoked${d.by ? ` by ${slackEscape(String(d.by))}` : ""}; it had spent ${money(d.spent_total_usd)}.`;
      break;
    case "holds_need_attention":
      text =
        `:mag: Keybrake: ${d.count} ${d.reason} hold(s) of ${run} need an operator: ${money(d.amount_usd)} stays counted until ` +
        `resolved (${slackEscape(String(d.resolve ?? ""))}).`;
      break;
    case "price_differential":
      text = `:heavy_exclamation_mark: Keybrake: a call of ${run} settled at ${money(d.cost_usd)}, ${money(d.over_usd)} above its ${money(d.hold_usd)} hold (request ${d.request_id ?? d.hold_id}).`;
      break;
    case "approval_requested":
      text = `:raising_hand: Keybrake: ${run} asks to ${slackEscape(`${d.method} ${d.path}`)} for ${money(d.price_usd)}: approval ${d.approval_id} waits for a decision (until ${d.expires_at}).`;
      break;
    case "approval_decided":
      text = `:ballot_box_with_check: Keybrake: approval ${d.approval_id} of ${run} was ${d.status}${d.by ? ` by ${slackEscape(String(d.by))}` : ""}${d.reason ? `: ${slackEscape(String(d.reason))}` : ""}.`;
      break;
    default:
      text = `:white_check_mark: Keybrake: ${slackEscape(String(d.message ?? `a ${event.type} event`))}`;
  }
  const link = dashboardUrl(publicUrl, event);
  return link ? `${text} <${link}|Open in Keybrake>` : text;
}

/** The exact bytes POSTed for an event in a webhook's format (Slack's text is for people: it leaves the head out). */
export function eventBody(event: OutgoingEvent, format: "json" | "slack", publicUrl: string | null, auditHead?: PresentedHeads): string {
  return JSON.stringify(format === "slack" ? { text: slackText(event, publicUrl) } : jsonPayload(event, publicUrl, auditHead));
}

/** `Keybrake-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, as Stripe signs its webhooks. */
export function signature(secret: string, body: string, unixSeconds: number): string {
  const v1 = createHmac("sha256", secret).update(`${unixSeconds}.${body}`).digest("hex");
  return `t=${unixSeconds},v1=${v1}`;
}

/**
 * A receiver's check (the README shows the same in Python): the signature is the secret's, over this body and
 * this timestamp, and the timestamp is within `toleranceS` of now. Used by the tests as a receiver would.
 */
export function verifySignature(secret: string, body: string, header: string, nowS: number, toleranceS = 300): boolean {
  const parts = Object.fromEntries(header.split(",").map((p) => p.split("=", 2) as [string, string]));
  const t = Number(parts.t);
  if (!Number.isInteger(t) || !parts.v1 || Math.abs(nowS - t) > toleranceS) return false;
  const want = Buffer.from(createHmac("sha256", secret).update(`${t}.${body}`).digest("hex"));
  const given = Buffer.from(parts.v1);
  return given.length === want.length && timingSafeEqual(given, want);
}

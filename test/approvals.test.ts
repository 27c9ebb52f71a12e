import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { startKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, type MockStripe } from "./helpers/mock-stripe";

/**
 * Approvals (SPEC §15, issue 26) over HTTP: a call above a key's approval threshold reserves its hold and waits;
 * a person approves or denies; the job's retry with the same Idempotency-Key goes out once, or is refused, and
 * the ledger counts it exactly once either way. The job is told to come back, never parked inside Keybrake.
 */

type Json = Record<string, any>;
let kb: Harness;
let stripe: MockStripe;
let clock = Date.UTC(2031, 4, 14, 12);

beforeAll(async () => {
  stripe = await mockStripe().start();
  kb = await startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url }, { now: () => clock });
});
afterAll(async () => {
  await kb.stop();
  await stripe.stop();
});
beforeEach(() => stripe.reset());

const refundKey = (body: Json = {}) =>
  kb.issueKey({
    vendor: "stripe",
    daily_usd_cap: 5_000,
    allowed_endpoints: ["POST /v1/refunds"],
    approval_above_usd: 500,
    agent_run_label: "refunds/run_1",
    ...body,
  });

const refund = (vaultKey: string, idem: string, form: Record<string, string>) =>
  fetch(`${kb.url}/stripe/v1/refunds`, {
    method: "POST",
    headers: { authorization: `Bearer ${vaultKey}`, "content-type": "application/x-www-form-urlencoded", "idempotency-key": idem },
    body: new URLSearchParams(form).toString(),
  });

const keyRecord = async (id: string) => (await (await kb.admin(`/vault/keys/${id}`)).json()) as Json;

const asToken = async (role: string): Promise<string> => {
  const res = await kb.admin("/admin/tokens", { body: { name: `${role}-${Math.random()}`, role } });
  expect(res.status).toBe(201);
  return ((await res.json()) as Json).token;
};

const withToken = (token: string, path: string, method = "GET", body?: Json) =>
  fetch(`${kb.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });

describe("a $4,000 refund on a key that asks a person above $500", () => {
  test("403 approval_required with the hold reserved; approved, its retry goes out once; a further retry replays", async () => {
    const key = await refundKey();
    const charge = stripe.seedCharge(400_000);
    const first = await refund(key.vault_key, "refund-1", { charge: charge.id });
    expect(first.status).toBe(403);
    expect(first.headers.get("x-keybrake-error")).toBe("approval_required");
    expect(Number(first.headers.get("retry-after"))).toBeGreaterThan(0);
    const body = (await first.json()) as Json;
    const approvalId = body.error.details.approval_id as string;
    expect(approvalId).toStartWith("apr_");
    expect(body.error.details).toMatchObject({ price_usd: 4_000 });
    // Nothing reached the vendor but the pre-flight read of the charge; the cap counts the reserved hold.
    expect(stripe.count("POST", "/v1/refunds")).toBe(0);
    expect(await keyRecord(key.id)).toMatchObject({ spent_today_usd: 0, held_usd: 4_000 });

    // Still pending: the same answer, nothing forwarded.
    expect((await refund(key.vault_key, "refund-1", { charge: charge.id })).headers.get("x-keybrake-error")).toBe("approval_required");
    // The hold counts while pending: another large call no longer fits.
    const other = stripe.seedCharge(200_000);
    const tooMuch = await refund(key.vault_key, "refund-other", { charge: other.id });
    expect(tooMuch.status).toBe(429);
    expect(tooMuch.headers.get("x-keybrake-error")).toBe("cap_exhausted");

    const listed = ((await (await kb.admin("/approvals?status=pending")).json()) as Json).data as Json[];
    expect(listed.find((a) => a.id === approvalId)).toMatchObject({
      key_id: key.id,
      label: "refunds/run_1",
      path: "/v1/refunds",
      price_usd: 4_000,
    });
    const approved = await kb.admin(`/approvals/${approvalId}/approve`, { method: "POST" });
    expect(approved.status).toBe(200);
    expect(await approved.json()).toMatchObject({ status: "approved", decided_by: expect.any(String) });

    const retry = await refund(key.vault_key, "refund-1", { charge: charge.id });
    expect(retry.status).toBe(200);
    expect(stripe.count("POST", "/v1/refunds")).toBe(1);
    expect(await keyRecord(key.id)).toMatchObject({ spent_today_usd: 4_000, held_usd: 0 });
    const again = await refund(key.vault_key, "refund-1", { charge: charge.id });
    expect(again.status).toBe(200);
    expect(again.headers.get("x-keybrake-replayed")).toBe("true");
    expect(stripe.count("POST", "/v1/refunds")).toBe(1);
    expect((await (await kb.admin(`/approvals/${approvalId}`)).json()) as Json).toMatchObject({ status: "used" });
    // Who decided, and when, is on the call's audit rows; rows of other calls carry no approval.
    const rows = ((await (await kb.admin(`/audit?key_id=${key.id}`)).json()) as Json).data as Json[];
    const sent = rows.find((r) => r.idempotency_key === "refund-1" && r.status === 200 && r.decision === "allowed");
    expect(sent!.approval).toEqual({
      id: approvalId,
      status: "used",
      decided_by: "admin (bootstrap admin token)",
      decided_at: new Date(clock).toISOString(),
    });
    expect(rows.find((r) => r.idempotency_key === "refund-other")!.approval).toBeNull();
    // While it waited, the call's row said what its reserved hold was.
    const waited = rows.find((r) => r.idempotency_key === "refund-1" && r.decision === "approval_required");
    expect(waited).toMatchObject({ status: 403, hold_usd: 4_000, cost_usd: 0 });
    // A second decision is refused: it was decided.
    expect((await kb.admin(`/approvals/${approvalId}/deny`, { method: "POST", body: {} })).status).toBe(409);
  });

  test("denied: the hold is released, the retry is 403 approval_denied; another body under the key is 409, nothing forwarded", async () => {
    const key = await refundKey();
    const charge = stripe.seedCharge(100_000);
    const asked = (await (await refund(key.vault_key, "refund-2", { charge: charge.id })).json()) as Json;
    const approvalId = asked.error.details.approval_id;
    expect(await keyRecord(key.id)).toMatchObject({ held_usd: 1_000, remaining_today_usd: 4_000 });
    const conflict = await refund(key.vault_key, "refund-2", { charge: charge.id, amount: "50000" });
    expect(conflict.status).toBe(409);
    expect(conflict.headers.get("x-keybrake-error")).toBe("idempotency_conflict");
    const denied = await kb.admin(`/approvals/${approvalId}/deny`, { method: "POST", body: { reason: "not this customer" } });
    expect(await denied.json()).toMatchObject({ status: "denied", reason: "not this customer" });
    expect(await keyRecord(key.id)).toMatchObject({ held_usd: 0, spent_today_usd: 0, remaining_today_usd: 5_000 });
    const retry = await refund(key.vault_key, "refund-2", { charge: charge.id });
    expect(retry.status).toBe(403);
    expect(retry.headers.get("x-keybrake-error")).toBe("approval_denied");
    expect(stripe.count("POST", "/v1/refunds")).toBe(0);
  });

  test("unanswered past its ttl: the sweep releases the hold although the job never came back; a late retry is approval_expired", async () => {
    const key = await refundKey({ approval_ttl: "10m" });
    const charge = stripe.seedCharge(90_000);
    await refund(key.vault_key, "refund-3", { charge: charge.id });
    expect(await keyRecord(key.id)).toMatchObject({ held_usd: 900 });
    clock += 11 * 60_000;
    expect(await kb.store.expireApprovals(clock, 100)).toBe(1);
    expect(await keyRecord(key.id)).toMatchObject({ held_usd: 0, spent_today_usd: 0 });
    const late = await refund(key.vault_key, "refund-3", { charge: charge.id });
    expect(late.headers.get("x-keybrake-error")).toBe("approval_expired");
    expect(stripe.count("POST", "/v1/refunds")).toBe(0);
  });

  test("a call above the threshold without an Idempotency-Key is 400: an approval covers exactly one call", async () => {
    const key = await refundKey();
    const charge = stripe.seedCharge(80_000);
    const res = await fetch(`${kb.url}/stripe/v1/refunds`, {
      method: "POST",
      headers: { authorization: `Bearer ${key.vault_key}`, "content-type": "application/x-www-form-urlencoded" },
      body: `charge=${charge.id}`,
    });
    expect(res.status).toBe(400);
    expect(res.headers.get("x-keybrake-error")).toBe("idempotency_key_required");
  });

  test("a retry of a used approval after the 24 h idempotency memory is gone: 403 approval_expired, never sent twice", async () => {
    const key = await refundKey({ expires_in: "3d" });
    const charge = stripe.seedCharge(70_000);
    const asked = (await (await refund(key.vault_key, "refund-late", { charge: charge.id })).json()) as Json;
    await kb.admin(`/approvals/${asked.error.details.approval_id}/approve`, { method: "POST" });
    expect((await refund(key.vault_key, "refund-late", { charge: charge.id })).status).toBe(200);
    clock += 25 * 3_600_000;
    expect(await kb.store.pruneIdempotency(clock, 1_000)).toBeGreaterThan(0);
    const late = await refund(key.vault_key, "refund-late", { charge: charge.id });
    expect(late.status).toBe(403);
    expect(late.headers.get("x-keybrake-error")).toBe("approval_expired");
    expect(((await late.json()) as Json).error.message).toContain("went out already");
    expect(stripe.count("POST", "/v1/refunds")).toBe(1);
  });

  test("GET /approvals pages newest first: following the cursor one at a time lists every approval once", async () => {
    const key = await refundKey();
    for (const n of [1, 2, 3]) await refund(key.vault_key, `refund-page-${n}`, { charge: stripe.seedCharge(60_000 + n).id });
    const all = ((await (await kb.admin("/approvals?limit=1000")).json()) as Json).data as Json[];
    // One decided between pending ones: a pending-first order would skip it when paged by sequence.
    const middle = all.find(
      (a) => a.key_id === key.id && a.status === "pending" && all.indexOf(a) === all.findIndex((b) => b.key_id === key.id) + 1,
    );
    await kb.admin(`/approvals/${middle!.id}/approve`, { method: "POST" });
    const paged: string[] = [];
    for (let cursor: string | null = ""; cursor !== null; ) {
      const page = (await (await kb.admin(`/approvals?limit=1${cursor ? `&cursor=${cursor}` : ""}`)).json()) as Json;
      paged.push(...(page.data as Json[]).map((a) => a.id as string));
      cursor = page.next_cursor === null ? null : String(page.next_cursor);
    }
    expect(paged).toEqual(all.map((a) => a.id));
  });

  test("a call at or below the threshold goes out at once", async () => {
    const key = await refundKey();
    const charge = stripe.seedCharge(50_000);
    expect((await refund(key.vault_key, "small-1", { charge: charge.id })).status).toBe(200);
    expect(stripe.count("POST", "/v1/refunds")).toBe(1);
  });
});

describe("who decides", () => {
  test("an approver decides but cannot mint, revoke or read tokens; a viewer reads but cannot decide", async () => {
    const approver = await asToken("approver");
    const viewer = await asToken("viewer");
    const key = await refundKey();
    const charge = stripe.seedCharge(70_000);
    const approvalId = ((await (await refund(key.vault_key, "who-1", { charge: charge.id })).json()) as Json).error.details.approval_id;
    expect((await withToken(viewer, "/approvals")).status).toBe(200);
    expect((await withToken(viewer, `/approvals/${approvalId}/approve`, "POST")).status).toBe(403);
    expect(
      (await withToken(approver, "/vault/keys", "POST", { vendor: "stripe", daily_usd_cap: 1, allowed_endpoints: ["POST /v1/refunds"] }))
        .status,
    ).toBe(403);
    expect((await withToken(approver, `/vault/keys/${key.id}`, "DELETE")).status).toBe(403);
    expect((await withToken(approver, "/admin/tokens")).status).toBe(403);
    expect((await withToken(approver, `/vault/keys/${key.id}`)).status).toBe(200);
    const decided = await withToken(approver, `/approvals/${approvalId}/approve`, "POST");
    expect(decided.status).toBe(200);
    expect(((await decided.json()) as Json).decided_by).toMatch(/^tok_/);
    // Who decided is in the admin events.
    const events = ((await (await kb.admin("/admin/events?limit=50")).json()) as Json).data as Json[];
    expect(events.find((e) => e.target === approvalId)).toMatchObject({
      action: "approval.approve",
      token_id: expect.stringMatching(/^tok_/),
    });
  });

  test("approval_requested and approval_decided are alert events, with the approval's numbers", async () => {
    const key = await refundKey({ agent_run_label: "refunds/alerts" });
    const charge = stripe.seedCharge(60_000);
    const approvalId = ((await (await refund(key.vault_key, "alert-1", { charge: charge.id })).json()) as Json).error.details.approval_id;
    await kb.admin(`/approvals/${approvalId}/deny`, { method: "POST", body: { reason: "no" } });
    const events = ((await (await kb.admin(`/alerts/events?key_id=${key.id}`)).json()) as Json).data as Json[];
    expect(events.map((e) => [e.type, e.data.approval_id]).sort()).toEqual([
      ["approval_decided", approvalId],
      ["approval_requested", approvalId],
    ]);
    expect(events.find((e) => e.type === "approval_requested")!.data).toMatchObject({
      price_usd: 600,
      method: "POST",
      path: "/v1/refunds",
    });
    expect(events.find((e) => e.type === "approval_decided")!.data).toMatchObject({ status: "denied", reason: "no" });
  });
});

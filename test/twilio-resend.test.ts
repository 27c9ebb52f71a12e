import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { Resend } from "resend";
import twilio from "twilio";
import { startKeybrake, type Harness } from "./helpers/harness";
import { mockResend, RESEND_KEY } from "./helpers/mock-resend";
import { mockTwilio, TWILIO_SID, TWILIO_TOKEN, type MockTwilio } from "./helpers/mock-twilio";
import type { MockVendor } from "./helpers/mock-vendor";

type Json = Record<string, any>;
let kb: Harness;
let tw: MockTwilio;
let rs: MockVendor;

beforeAll(async () => {
  tw = await mockTwilio().start();
  rs = await mockResend().start();
  kb = await startKeybrake({ KEYBRAKE_TWILIO_BASE_URL: tw.url, KEYBRAKE_RESEND_BASE_URL: rs.url, KEYBRAKE_FX: "EUR=1.10" });
});
afterAll(async () => {
  await kb.stop();
  await tw.stop();
  await rs.stop();
});
beforeEach(() => {
  tw.reset();
  rs.reset();
  tw.state.price = null;
  tw.state.priceUnit = "USD";
});

const FAKE_SID = "AC00000000000000000000000000000000"; // what a job puts in: it needs no real identifier
const record = async (id: string) => (await (await kb.admin(`/vault/keys/${id}`)).json()) as Json;
const auditFor = async (id: string) => ((await (await kb.admin(`/audit?key_id=${id}&limit=1000`)).json()) as Json).data as Json[];
const ledgerMicros = (keyId: string) =>
  kb.readDb(
    (db) =>
      db.query<{ cost: number }, [string]>("SELECT coalesce(sum(cost_micros), 0) AS cost FROM ledger_entries WHERE key_id = ?").get(keyId)!
        .cost,
  );

function twilioClient(vaultKey: string, prefix = "/twilio") {
  const client = twilio(FAKE_SID, vaultKey);
  client.api.baseUrl = kb.url + prefix;
  return client;
}

describe("Twilio through Keybrake", () => {
  test("the official twilio SDK sends an SMS: real SID in the path and in Basic auth, the vault key never", async () => {
    const key = await kb.issueKey({
      vendor: "twilio",
      daily_usd_cap: 1,
      allowed_endpoints: ["POST /2010-04-01/Accounts/*/Messages.json"],
      agent_run_label: "celery/sms-1",
    });
    const message = await twilioClient(key.vault_key).messages.create({
      to: "+15551230000",
      from: "+15559870000",
      body: "Your order shipped",
    });
    expect(message.sid).toStartWith("SM");
    expect(tw.received).toHaveLength(1);
    const seen = tw.received[0]!;
    expect(seen.path).toBe(`/2010-04-01/Accounts/${TWILIO_SID}/Messages.json`);
    expect(seen.headers.authorization).toBe(`Basic ${btoa(`${TWILIO_SID}:${TWILIO_TOKEN}`)}`);
    expect(JSON.stringify(seen)).not.toContain(key.vault_key);
    expect(JSON.stringify(seen)).not.toContain(FAKE_SID);

    expect(await record(key.id)).toMatchObject({ spent_today_usd: 0.0083, calls: 1 });
    expect(await ledgerMicros(key.id)).toBe(8_300);
    const [row] = await auditFor(key.id);
    expect(row).toMatchObject({
      vendor: "twilio",
      status: 201,
      cost_usd: 0.0083,
      cost_source: "estimate",
      label: "celery/sms-1",
      path: "/2010-04-01/Accounts/{AccountSid}/Messages.json",
    });
    expect(row!.vendor_request_id).toStartWith("RQ");
  });

  test("bare /2010-04-01 paths route by the key; segments, MMS and calls (held for their TimeLimit) are priced", async () => {
    const key = await kb.issueKey({
      vendor: "twilio",
      daily_usd_cap: 1,
      allowed_endpoints: ["POST /2010-04-01/Accounts/*/Messages.json", "POST /2010-04-01/Accounts/*/Calls.json"],
    });
    const client = twilioClient(key.vault_key, "");
    await client.messages.create({ to: "+15551230000", from: "+15559870000", body: "a".repeat(161) }); // 2 segments
    await client.messages.create({ to: "+15551230000", from: "+15559870000", body: "Привет" }); // UCS-2, 1 segment
    await client.messages.create({ to: "+15551230000", from: "+15559870000", body: "pic", mediaUrl: ["https://example.com/a.png"] });
    await client.calls.create({ to: "+15551230000", from: "+15559870000", twiml: "<Response><Say>hi</Say></Response>", timeLimit: 60 }); // 1 minute
    const costs = (await auditFor(key.id)).map((r) => r.cost_usd).reverse();
    expect(costs).toEqual([0.0166, 0.0083, 0.022, 0.014]);
    expect(await ledgerMicros(key.id)).toBe(16_600 + 8_300 + 22_000 + 14_000);
  });

  test('a response price "-0.00750" settles at 0.0075; a EUR price goes through FX; a null price settles at the estimate', async () => {
    const key = await kb.issueKey({ vendor: "twilio", daily_usd_cap: 1, allowed_endpoints: ["POST /2010-04-01/Accounts/*/Messages.json"] });
    const client = twilioClient(key.vault_key);
    tw.state.price = "-0.00750";
    await client.messages.create({ to: "+15551230000", from: "+15559870000", body: "hi" });
    tw.state.price = "-0.0100";
    tw.state.priceUnit = "eur";
    await client.messages.create({ to: "+15551230000", from: "+15559870000", body: "hi" });
    tw.state.price = null;
    await client.messages.create({ to: "+15551230000", from: "+15559870000", body: "hi" });
    const rows = (await auditFor(key.id)).reverse();
    expect(rows.map((r) => [r.cost_usd, r.cost_source])).toEqual([
      [0.0075, "response"],
      [0.011, "response"],
      [0.0083, "estimate"],
    ]);
    expect(await ledgerMicros(key.id)).toBe(7_500 + 11_000 + 8_300);
  });

  test("a $0.05 cap admits exactly 6 SMS of 100 concurrent sends (6 x $0.0083 = $0.0498)", async () => {
    const key = await kb.issueKey({
      vendor: "twilio",
      daily_usd_cap: 0.05,
      allowed_endpoints: ["POST /2010-04-01/Accounts/*/Messages.json"],
    });
    const client = twilioClient(key.vault_key);
    const results = await Promise.allSettled(
      Array.from({ length: 100 }, (_, i) => client.messages.create({ to: "+15551230000", from: "+15559870000", body: `msg ${i}` })),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(6);
    const rejected = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(rejected).toHaveLength(94);
    expect(rejected.every((r) => r.reason.status === 429)).toBe(true);
    expect(tw.received).toHaveLength(6);
    expect(await ledgerMicros(key.id)).toBe(49_800);
  });

  test("Twilio errors pass through and release the hold; a Stripe key on /twilio is vendor_mismatch", async () => {
    const key = await kb.issueKey({ vendor: "twilio", daily_usd_cap: 1, allowed_endpoints: ["POST /2010-04-01/Accounts/*/Messages.json"] });
    const err = (await twilioClient(key.vault_key)
      .messages.create({ to: "", from: "+15559870000", body: "x" } as never)
      .catch((e: unknown) => e)) as Json;
    expect(err.status).toBe(400);
    expect(err.code).toBe(21604);
    expect((await record(key.id)).spent_today_usd).toBe(0);
    const stripeKey = await kb.issueKey({ vendor: "stripe", daily_usd_cap: 1, allowed_endpoints: ["/2010-04-01/*"] });
    const res = await fetch(`${kb.url}/twilio/2010-04-01/Accounts/${FAKE_SID}/Messages.json`, {
      method: "POST",
      headers: { authorization: `Bearer ${stripeKey.vault_key}` },
    });
    expect(res.headers.get("x-keybrake-error")).toBe("vendor_mismatch");
  });
});

describe("Resend through Keybrake", () => {
  test("the official resend SDK sends an email and a batch; recipients are priced; no request id is made up", async () => {
    const key = await kb.issueKey({
      vendor: "resend",
      daily_usd_cap: 1,
      allowed_endpoints: ["POST /emails", "POST /emails/batch"],
      agent_run_label: "dagster/newsletter",
    });
    const client = new Resend(key.vault_key, { baseUrl: `${kb.url}/resend` });
    const sent = await client.emails.send(
      { from: "ops@example.com", to: ["a@example.com", "b@example.com"], cc: "c@example.com", subject: "hi", text: "hello" },
      { idempotencyKey: "run-7/email-1" },
    );
    expect(sent.error).toBeNull();
    expect(sent.data?.id).toBeString();
    const batch = await client.batch.send([
      { from: "ops@example.com", to: "d@example.com", subject: "1", text: "1" },
      { from: "ops@example.com", to: ["e@example.com", "f@example.com"], bcc: ["g@example.com"], subject: "2", text: "2" },
    ]);
    expect(batch.error).toBeNull();
    expect(batch.data?.data).toHaveLength(2);

    expect(rs.received.map((r) => r.path)).toEqual(["/emails", "/emails/batch"]);
    expect(rs.received.every((r) => r.headers.authorization === `Bearer ${RESEND_KEY}`)).toBe(true);
    // Resend gets the derivation of the job's key (SPEC §7), never the key itself.
    expect(rs.received[0]!.headers["idempotency-key"]).toMatch(/^kb_[A-Za-z0-9_-]{43}$/);
    expect(JSON.stringify(rs.received)).not.toContain(key.vault_key);
    const rows = (await auditFor(key.id)).reverse();
    expect(rows.map((r) => r.cost_usd)).toEqual([0.0027, 0.0036]);
    expect(rows.every((r) => r.vendor_request_id === null)).toBe(true);
    expect(rows[0]!.idempotency_key).toBe("run-7/email-1");
    expect(await ledgerMicros(key.id)).toBe(2_700 + 3_600);
  });

  test("bare /emails routes by the key; an email without `to` or with a non-JSON body is 422 unpriceable", async () => {
    const key = await kb.issueKey({ vendor: "resend", daily_usd_cap: 1, allowed_endpoints: ["POST /emails"] });
    const post = (body: string, type = "application/json") =>
      fetch(`${kb.url}/emails`, { method: "POST", headers: { authorization: `Bearer ${key.vault_key}`, "content-type": type }, body });
    expect((await post(JSON.stringify({ from: "a@x.com", to: "b@x.com", subject: "s", text: "t" }))).status).toBe(200);
    for (const [body, type] of [
      [JSON.stringify({ from: "a@x.com", subject: "s" }), "application/json"],
      ["to=b@x.com", "application/x-www-form-urlencoded"],
      ['{"to":"a@x.com","to":["b@x.com","c@x.com"]}', "application/json"],
    ] as const) {
      const res = await post(body, type);
      expect(res.status).toBe(422);
      expect(res.headers.get("x-keybrake-error")).toBe("unpriceable_request");
    }
    expect(rs.received).toHaveLength(1);
  });
});

import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import twilio from "twilio";
import { ConfigError, loadConfig } from "../src/config";
import { MAX_SMS_SEGMENTS, smsSegments } from "../src/vendors/sms";
import { startKeybrake, type Harness } from "./helpers/harness";
import { mockTwilio, TWILIO_SID, TWILIO_TOKEN, type MockTwilio } from "./helpers/mock-twilio";

type Json = Record<string, any>;
let kb: Harness;
let tw: MockTwilio;
/** Keybrake's clock: the reconciler's waits are crossed by moving it, not by sleeping. Noon UTC, far from midnight. */
let clock = Date.UTC(2031, 4, 14, 12);

// Prices in this file: US and CA $0.0083 and GB $0.0524 (defaults), DE $0.09 and any other destination $0.20
// (configured), MMS $0.022, calls $0.014 a minute.
beforeAll(async () => {
  tw = await mockTwilio().start();
  kb = await startKeybrake(
    { KEYBRAKE_TWILIO_BASE_URL: tw.url, KEYBRAKE_TWILIO_SMS_PRICES: "DE=0.09,*=0.2", KEYBRAKE_FX: "EUR=1.10" },
    { now: () => clock, reconciler: { everyMs: 3_600_000 } }, // ticks are run by the tests
  );
});
afterAll(async () => {
  await kb.stop();
  await tw.stop();
});
beforeEach(() => tw.reset());

const FAKE_SID = "AC00000000000000000000000000000000"; // what a job writes: it needs no real identifier
const ACCOUNT = `/2010-04-01/Accounts/${FAKE_SID}`;
const US = "+15551230000";
const GB = "+447700900123";
/** Inline TwiML that dials nothing: the call is its own only leg. */
const SAY = "<Response><Say>Your order has shipped.</Say></Response>";

const twilioKey = (dailyUsdCap = 100, allowed = ["/2010-04-01/Accounts/{AccountSid}/*"]) =>
  kb.issueKey({ vendor: "twilio", daily_usd_cap: dailyUsdCap, allowed_endpoints: allowed });

function sdk(vaultKey: string) {
  const client = twilio(FAKE_SID, vaultKey);
  client.api.baseUrl = `${kb.url}/twilio`;
  return client;
}

/** A raw form POST, as curl or another SDK would send it. */
const post = (vaultKey: string, path: string, form: Record<string, string> | string) =>
  fetch(`${kb.url}/twilio${path}`, {
    method: "POST",
    headers: { authorization: `Basic ${btoa(`${FAKE_SID}:${vaultKey}`)}`, "content-type": "application/x-www-form-urlencoded" },
    body: typeof form === "string" ? form : new URLSearchParams(form).toString(),
  });

interface Entry {
  id: string;
  hold: number;
  cost: number | null;
  state: string;
  path: string;
  reconcilePath: string | null;
  reconcileAt: number | null;
  attempts: number;
}
const ledger = (keyId: string) =>
  kb.readDb((db) =>
    db
      .query<Entry, [string]>(
        `SELECT id, hold_micros AS hold, cost_micros AS cost, state, path, reconcile_path AS reconcilePath, reconcile_at AS reconcileAt,
                reconcile_attempts AS attempts
           FROM ledger_entries WHERE key_id = ? ORDER BY rowid`,
      )
      .all(keyId),
  );
const holds = async (keyId: string) => (await ledger(keyId)).map((e) => e.hold);

/** What the key has spent, as the ledger, the day buckets, the key's total and the audit rows each count it. */
const spendCounts = (keyId: string) =>
  kb.readDb((db) => {
    const one = (sql: string) => db.query<{ n: number }, [string]>(sql).get(keyId)!.n;
    return {
      ledger: one("SELECT coalesce(sum(cost_micros), 0) AS n FROM ledger_entries WHERE key_id = ?"),
      days: one("SELECT coalesce(sum(settled_micros), 0) AS n FROM spend_days WHERE key_id = ?"),
      key: one("SELECT spent_total_micros AS n FROM vault_keys WHERE id = ?"),
      audit: one("SELECT coalesce(sum(cost_micros), 0) AS n FROM audit_events WHERE key_id = ?"),
    };
  });
/** GETs of one message or call: the reconciler's reads. */
const reads = (sid: string) => tw.count("GET", new RegExp(`/${sid}\\.json$`));
const auditFor = async (keyId: string) => ((await (await kb.admin(`/audit?key_id=${keyId}&limit=1000`)).json()) as Json).data as Json[];

describe("SMS segments", () => {
  test("GSM-7 160 in one and 153 per part; UCS-2 70 and 67", () => {
    expect([160, 161, 306, 307].map((n) => smsSegments("a".repeat(n)))).toEqual([1, 2, 2, 3]);
    expect([70, 71, 134, 135].map((n) => smsSegments("ж".repeat(n)))).toEqual([1, 2, 2, 3]);
    expect(smsSegments("")).toBe(1);
  });

  test("a character is never split between parts: an escape and its character, a surrogate pair", () => {
    // 306 septets (two parts of 153 by arithmetic), but the € (2 septets) cannot start at the 153rd.
    expect(smsSegments(`${"a".repeat(152)}€${"a".repeat(152)}`)).toBe(3);
    // 134 UTF-16 units (two parts of 67 by arithmetic), but the emoji's pair cannot straddle the 67th.
    expect(smsSegments(`${"ж".repeat(66)}😀${"ж".repeat(66)}`)).toBe(3);
  });

  test("the stated maximum is Twilio's 1,600-character limit in UCS-2: 24 segments", () => {
    expect(MAX_SMS_SEGMENTS).toBe(24);
    expect(smsSegments("ж".repeat(1600))).toBe(MAX_SMS_SEGMENTS);
  });
});

describe("KEYBRAKE_TWILIO_SMS_PRICES", () => {
  test("defaults: US and Canada at KEYBRAKE_TWILIO_SMS_USD, GB $0.0524, any other destination $0.50; entries add and override", () => {
    const smsPrices = (env: Record<string, string>) => (loadConfig(env).vendors.twilio!.prices as { smsUsdTo: unknown }).smsUsdTo;
    expect(smsPrices({})).toEqual({ US: 0.0083, CA: 0.0083, GB: 0.0524, "*": 0.5 });
    expect(smsPrices({ KEYBRAKE_TWILIO_SMS_USD: "0.01", KEYBRAKE_TWILIO_SMS_PRICES: "gb=0.06, DE=0.09" })).toEqual({
      US: 0.01,
      CA: 0.01,
      GB: 0.06,
      DE: 0.09,
      "*": 0.5,
    });
  });

  for (const [value, message] of [
    ["GB=abc", /^KEYBRAKE_TWILIO_SMS_PRICES: "GB=abc" is not COUNTRY=USD/],
    ["GB=101", /^KEYBRAKE_TWILIO_SMS_PRICES: "GB=101": a price must be a USD amount <= 100$/],
    ["ZZ=0.1", /^KEYBRAKE_TWILIO_SMS_PRICES: ZZ: Keybrake cannot tell its phone numbers apart/],
  ] as const) {
    test(`${value} stops start-up with one line naming the variable`, () => {
      expect(() => loadConfig({ KEYBRAKE_TWILIO_SMS_PRICES: value })).toThrow(ConfigError);
      expect(() => loadConfig({ KEYBRAKE_TWILIO_SMS_PRICES: value })).toThrow(message);
    });
  }
});

describe("Twilio messages are priced on every path Twilio creates them on", () => {
  test("Messages, Messages.xml and messages.JSON hold and settle like Messages.json", async () => {
    const key = await twilioKey();
    const variants = ["Messages.json", "Messages.xml", "Messages", "messages.JSON"];
    for (const variant of variants) expect((await post(key.vault_key, `${ACCOUNT}/${variant}`, { To: US, Body: "hi" })).status).toBe(201);
    expect(tw.received.map((r) => r.path)).toEqual(variants.map((v) => `/2010-04-01/Accounts/${TWILIO_SID}/${v}`));
    expect(await ledger(key.id)).toMatchObject(variants.map(() => ({ hold: 8_300, cost: 8_300, state: "settled" })));
    expect((await auditFor(key.id)).map((r) => r.cost_usd)).toEqual(variants.map(() => 0.0083));
  });

  test("SendAsMms and MediaUrl hold the MMS price; abroad, the dearer of MMS and the text plus a link as SMS", async () => {
    const key = await twilioKey();
    await post(key.vault_key, `${ACCOUNT}/Messages.json`, { To: US, Body: "hi", SendAsMms: "true" });
    await post(key.vault_key, `${ACCOUNT}/Messages.json`, { To: US, Body: "hi", SendAsMms: "false" });
    await sdk(key.vault_key).messages.create({ to: GB, from: "+15559870000", body: "hi", mediaUrl: ["https://example.com/a.png"] });
    // 2 segments x $0.0524 > $0.022
    expect(await holds(key.id)).toEqual([22_000, 8_300, 104_800]);
    expect((await spendCounts(key.id)).ledger).toBe(22_000 + 8_300 + 104_800);
  });

  test("a template (ContentSid) or a body that is not UTF-8 is held at the stated maximum of 24 segments", async () => {
    const key = await twilioKey();
    await post(key.vault_key, `${ACCOUNT}/Messages.json`, { To: US, ContentSid: "HX0123", ContentVariables: '{"1":"x"}' });
    await post(key.vault_key, `${ACCOUNT}/Messages.json`, `To=${encodeURIComponent(GB)}&ContentSid=HX0123`);
    await post(key.vault_key, `${ACCOUNT}/Messages.json`, `To=${encodeURIComponent(US)}&Body=%FF%FEhi`);
    // A template may carry media: 24 segments plus the link, as SMS, above the MMS price. The raw bytes: 24 x SMS.
    expect(await holds(key.id)).toEqual([25 * 8_300, 25 * 52_400, 24 * 8_300]);
    expect(tw.received).toHaveLength(3);
  });

  test("the destination's price: defaults, configured countries, `*` for other countries, other channels and other NANP countries", async () => {
    const key = await twilioKey();
    const client = sdk(key.vault_key);
    const to = [GB, "+4915123456789", "+8613800138000", `whatsapp:${GB}`, "+18685551234", "+14165551234", "5551230000"];
    for (const number of to) await client.messages.create({ to: number, from: "+15559870000", body: "hi" });
    await client.messages.create({ to: GB, from: "+15559870000", body: "Привет ".repeat(12) }); // UCS-2, 84 units: 2 segments
    expect(await holds(key.id)).toEqual([52_400, 90_000, 200_000, 200_000, 200_000, 8_300, 200_000, 104_800]);
  });

  test("a $0.50 cap admits exactly 9 of 30 concurrent SMS to the UK (9 x $0.0524 = $0.4716)", async () => {
    const key = await twilioKey(0.5);
    const client = sdk(key.vault_key);
    const results = await Promise.allSettled(
      Array.from({ length: 30 }, (_, i) => client.messages.create({ to: GB, from: "+15559870000", body: `msg ${i}` })),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(9);
    expect(results.every((r) => r.status === "fulfilled" || r.reason.status === 429)).toBe(true);
    expect(tw.count("POST", /\/Messages\.json$/)).toBe(9);
    expect(await spendCounts(key.id)).toEqual({ ledger: 471_600, days: 471_600, key: 471_600, audit: 471_600 });
  });
});

describe("Twilio calls are held for their TimeLimit", () => {
  test("TimeLimit in started minutes x the per-minute price; 4 hours when absent; Calls.xml alike", async () => {
    const key = await twilioKey();
    await sdk(key.vault_key).calls.create({ to: US, from: "+15559870000", twiml: SAY, timeLimit: 90 });
    await sdk(key.vault_key).calls.create({ to: US, from: "+15559870000", twiml: SAY });
    await post(key.vault_key, `${ACCOUNT}/Calls.xml`, { To: US, From: "+15559870000", Twiml: SAY, TimeLimit: "60" });
    expect(await holds(key.id)).toEqual([2 * 14_000, 240 * 14_000, 14_000]);
    expect(tw.received.map((r) => new URLSearchParams(r.body).get("TimeLimit"))).toEqual(["90", null, "60"]);
  });

  test("a TimeLimit that is not a positive whole number of seconds is 422 unpriceable_request, never forwarded", async () => {
    const key = await twilioKey();
    for (const limit of ["0", "-5", "1.5", "60s", "1e3"]) {
      const res = await post(key.vault_key, `${ACCOUNT}/Calls.json`, { To: US, Twiml: SAY, TimeLimit: limit });
      expect(res.status).toBe(422);
      expect(res.headers.get("x-keybrake-error")).toBe("unpriceable_request");
    }
    expect(tw.received).toHaveLength(0);
    expect(await ledger(key.id)).toEqual([]);
  });
});

describe("the account segment stands for the configured account", () => {
  test("patterns with the real SID, `*` or {AccountSid} allow the placeholder path; the vendor alone sees the real SID", async () => {
    const patterns = [
      `POST /2010-04-01/Accounts/${TWILIO_SID}/Messages.json`,
      "POST /2010-04-01/Accounts/*/Messages.json",
      "POST /2010-04-01/Accounts/{AccountSid}/Messages.json",
    ];
    for (const pattern of patterns) {
      const key = await twilioKey(1, [pattern]);
      // The key record keeps the pattern as matched, never the real SID (SPEC §2).
      expect(JSON.stringify(key)).not.toContain(TWILIO_SID);
      for (const account of ["{AccountSid}", FAKE_SID, TWILIO_SID]) {
        const res = await post(key.vault_key, `/2010-04-01/Accounts/${account}/Messages.json`, { To: US, Body: "hi" });
        expect(res.status).toBe(201);
        // Twilio's answer names the account (account_sid, uri): the job sees the placeholder instead.
        const answer = await res.text();
        expect(answer).not.toContain(TWILIO_SID);
        expect(JSON.parse(answer)).toMatchObject({ account_sid: "{AccountSid}" });
      }
      expect((await post(key.vault_key, `${ACCOUNT}/Calls.json`, { To: US, Twiml: SAY })).status).toBe(403);
      const rows = (await auditFor(key.id)).reverse();
      expect(rows.map((r) => r.path)).toEqual([
        ...Array(3).fill("/2010-04-01/Accounts/{AccountSid}/Messages.json"),
        "/2010-04-01/Accounts/{AccountSid}/Calls.json",
      ]);
      expect(JSON.stringify(rows)).not.toContain(TWILIO_SID);
      expect(JSON.stringify(await ledger(key.id))).not.toContain(TWILIO_SID);
    }
    expect(tw.received).toHaveLength(9);
    expect(tw.received.every((r) => r.path === `/2010-04-01/Accounts/${TWILIO_SID}/Messages.json`)).toBe(true);
    expect(tw.received.every((r) => r.headers.authorization === `Basic ${btoa(`${TWILIO_SID}:${TWILIO_TOKEN}`)}`)).toBe(true);
  });

  test("POSTs that spend money Keybrake does not price (number purchases, call recordings) are refused", async () => {
    const key = await twilioKey();
    for (const path of [`${ACCOUNT}/IncomingPhoneNumbers/Local.json`, `${ACCOUNT}/Calls/CA123/Recordings.json`]) {
      const res = await post(key.vault_key, path, { To: US, From: "+15559870000", PhoneNumber: US });
      expect(res.headers.get("x-keybrake-error")).toBe("unpriceable_request");
    }
    expect(tw.received).toHaveLength(0);
  });
});

describe("the reconciler", () => {
  const advance = (seconds: number) => (clock += seconds * 1000);

  test("re-settles messages at their final price, up or down: ledger, days, key total and audit agree to the micro-dollar", async () => {
    const key = await twilioKey(1, ["POST /2010-04-01/Accounts/*/Messages.json"]);
    const client = sdk(key.vault_key);
    const dearer = await client.messages.create({ to: US, from: "+15559870000", body: "hi" });
    const cheaper = await client.messages.create({ to: US, from: "+15559870000", body: "hi" });
    expect(await ledger(key.id)).toMatchObject([
      {
        cost: 8_300,
        reconcilePath: `/2010-04-01/Accounts/{AccountSid}/Messages/${dearer.sid}.json`,
        reconcileAt: clock + 300_000,
        attempts: 0,
      },
      {
        cost: 8_300,
        reconcilePath: `/2010-04-01/Accounts/{AccountSid}/Messages/${cheaper.sid}.json`,
        reconcileAt: clock + 300_000,
        attempts: 0,
      },
    ]);

    await kb.reconciler!.tick(); // not due yet: nothing is read
    expect(reads(dearer.sid) + reads(cheaper.sid)).toBe(0);

    advance(300);
    await kb.reconciler!.tick(); // due, but Twilio has no price yet: read again in 2 x 300 s
    expect([reads(dearer.sid), reads(cheaper.sid)]).toEqual([1, 1]);
    expect(await ledger(key.id)).toMatchObject([
      { cost: 8_300, reconcileAt: clock + 600_000, attempts: 1 },
      { cost: 8_300, reconcileAt: clock + 600_000, attempts: 1 },
    ]);

    tw.finalPrices.set(dearer.sid, "-0.01660");
    tw.finalPrices.set(cheaper.sid, "-0.0050");
    advance(600);
    await kb.reconciler!.tick();
    expect(tw.received.filter((r) => r.method === "GET").map((r) => r.path)).toContain(
      `/2010-04-01/Accounts/${TWILIO_SID}/Messages/${dearer.sid}.json`,
    );
    expect(await ledger(key.id)).toMatchObject([
      { cost: 16_600, reconcileAt: null },
      { cost: 5_000, reconcileAt: null },
    ]);
    expect(await spendCounts(key.id)).toEqual({ ledger: 21_600, days: 21_600, key: 21_600, audit: 21_600 });

    const reconciled = (await auditFor(key.id)).filter((r) => r.cost_source === "reconciled").reverse();
    expect(reconciled.map((r) => [r.cost_usd, r.decision, r.path])).toEqual([
      [0.0083, "price_reconciled", "/2010-04-01/Accounts/{AccountSid}/Messages.json"],
      [-0.0033, "price_reconciled", "/2010-04-01/Accounts/{AccountSid}/Messages.json"],
    ]);
    expect(reconciled.every((r) => r.vendor_request_id.startsWith("RQ"))).toBe(true);
    expect(await (await kb.admin(`/vault/keys/${key.id}`)).json()).toMatchObject({ spent_today_usd: 0.0216, calls: 2 });
    const [spend] = ((await (await kb.admin(`/audit/spend?group_by=key&key_id=${key.id}`)).json()) as Json).data;
    expect(spend).toMatchObject({ calls: 2, spend_usd: 0.0216 });

    await kb.reconciler!.tick(); // settled for good: never read again
    expect([reads(dearer.sid), reads(cheaper.sid)]).toEqual([2, 2]);
  });

  test("a call's final price in another currency goes through KEYBRAKE_FX", async () => {
    const key = await twilioKey();
    tw.state.priceUnit = "EUR";
    const call = await sdk(key.vault_key).calls.create({ to: US, from: "+15559870000", twiml: SAY, timeLimit: 600 });
    tw.finalPrices.set(call.sid, "-0.130");
    advance(300);
    await kb.reconciler!.tick();
    expect(await ledger(key.id)).toMatchObject([{ hold: 140_000, cost: 143_000, reconcileAt: null }]);
    expect((await auditFor(key.id))[0]).toMatchObject({ cost_source: "reconciled", cost_usd: 0.003, currency: "eur" });
  });

  test("a price never stated is read with doubling waits, at most hourly, and given up a day after the call, logged", async () => {
    const key = await twilioKey();
    const message = await sdk(key.vault_key).messages.create({ to: US, from: "+15559870000", body: "hi" });
    const settledAt = clock;
    const waits: number[] = [];
    while ((await ledger(key.id))[0]!.reconcileAt !== null) {
      clock = (await ledger(key.id))[0]!.reconcileAt!;
      await kb.reconciler!.tick();
      const next = (await ledger(key.id))[0]!.reconcileAt;
      if (next !== null) waits.push((next - clock) / 1000);
    }
    expect(waits.slice(0, 5)).toEqual([600, 1200, 2400, 3600, 3600]);
    expect(clock - settledAt).toBeGreaterThanOrEqual(24 * 3600_000);
    expect(reads(message.sid)).toBe(waits.length + 1);
    const [entry] = await ledger(key.id);
    expect(entry).toMatchObject({ cost: 8_300, reconcileAt: null });
    expect(kb.logs.filter((l) => l.includes(entry!.id))).toEqual([
      `keybrake: reconciler: ${entry!.id} (key ${key.id}) stays at 0.0083 USD: no final price after ${waits.length + 1} reads`,
    ]);
  });

  test("a final price in a currency without an FX rate leaves the entry at its hold at once, logged", async () => {
    const key = await twilioKey();
    tw.state.priceUnit = "JPY";
    const message = await sdk(key.vault_key).messages.create({ to: US, from: "+15559870000", body: "hi" });
    tw.finalPrices.set(message.sid, "-2");
    advance(300);
    await kb.reconciler!.tick();
    const [entry] = await ledger(key.id);
    expect(entry).toMatchObject({ cost: 8_300, reconcileAt: null });
    expect(reads(message.sid)).toBe(1);
    expect(kb.logs).toContain(
      `keybrake: reconciler: ${entry!.id} (key ${key.id}) stays at 0.0083 USD: no KEYBRAKE_FX rate for Twilio's price_unit JPY`,
    );
  });
});

import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import twilio from "twilio";
import { startKeybrake, type Harness } from "./helpers/harness";
import { mockTwilio, TWILIO_SID, type MockTwilio } from "./helpers/mock-twilio";

type Json = Record<string, any>;
let kb: Harness;
let kbAllowingUrls: Harness;
let tw: MockTwilio;
let clock = Date.UTC(2031, 4, 14, 12);

// Per-minute prices in this file: US and CA $0.014 (KEYBRAKE_TWILIO_CALL_USD), GB $0.04 (default), DE $0.30 and any
// other destination $4.00 (configured).
const PRICES = { KEYBRAKE_TWILIO_CALL_PRICES: "DE=0.30,*=4" };
beforeAll(async () => {
  tw = await mockTwilio().start();
  kb = await startKeybrake({ KEYBRAKE_TWILIO_BASE_URL: tw.url, ...PRICES }, { now: () => clock, reconciler: { everyMs: 3_600_000 } });
  kbAllowingUrls = await startKeybrake({ KEYBRAKE_TWILIO_BASE_URL: tw.url, KEYBRAKE_TWILIO_CALL_URL: "allow", ...PRICES });
});
afterAll(async () => {
  await kb.stop();
  await kbAllowingUrls.stop();
  await tw.stop();
});
beforeEach(() => tw.reset());

const FAKE_SID = "AC00000000000000000000000000000000";
const ACCOUNT = `/2010-04-01/Accounts/${FAKE_SID}`;
const US = "+15551230000";
const GB = "+447700900123";
const DE = "+4915123456789";
const SATELLITE = "+8816312345678";
const SAY = "<Response><Say>Your order has shipped.</Say></Response>";
/** Micro-dollars of `minutes` at `usd` a minute. */
const minutes = (n: number, usd: number) => Math.round(n * usd * 1e6);

const twilioKey = (k: Harness, dailyUsdCap = 1000) =>
  k.issueKey({ vendor: "twilio", daily_usd_cap: dailyUsdCap, allowed_endpoints: ["/2010-04-01/Accounts/{AccountSid}/*"] });

const post = (k: Harness, vaultKey: string, path: string, form: Record<string, string>) =>
  fetch(`${k.url}/twilio${path}`, {
    method: "POST",
    headers: { authorization: `Basic ${btoa(`${FAKE_SID}:${vaultKey}`)}`, "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(form).toString(),
  });

/** The key's audit rows, oldest first: what each call held and cost. */
const audit = async (k: Harness, keyId: string): Promise<Json[]> =>
  (((await (await k.admin(`/audit?key_id=${keyId}`)).json()) as Json).data as Json[]).reverse();

const ledger = (k: Harness, keyId: string) =>
  k.readDb((db) =>
    db
      .query<{ hold: number; cost: number | null; state: string }, [string]>(
        "SELECT hold_micros AS hold, cost_micros AS cost, state FROM ledger_entries WHERE key_id = ? ORDER BY rowid",
      )
      .all(keyId),
  );

describe("a call is held at its destination's price", () => {
  test("an international call: TimeLimit minutes × the destination's price, not the US one", async () => {
    const key = await twilioKey(kb);
    const client = twilio(FAKE_SID, key.vault_key);
    client.api.baseUrl = `${kb.url}/twilio`;
    await client.calls.create({ to: GB, from: "+15559870000", twiml: SAY, timeLimit: 600 });
    await client.calls.create({ to: DE, from: "+15559870000", twiml: SAY, timeLimit: 61 });
    await client.calls.create({ to: US, from: "+15559870000", twiml: SAY, timeLimit: 60 });
    expect((await ledger(kb, key.id)).map((e) => e.hold)).toEqual([minutes(10, 0.04), minutes(2, 0.3), minutes(1, 0.014)]);
    expect(tw.count("POST", /\/Calls\.json$/)).toBe(3);
    expect(tw.received.every((r) => r.path === `/2010-04-01/Accounts/${TWILIO_SID}/Calls.json`)).toBe(true);
  });

  test("the issue's case: a destination without a price, 4 hours by default, on a $5 cap is refused, never forwarded", async () => {
    const key = await twilioKey(kb, 5);
    const res = await post(kb, key.vault_key, `${ACCOUNT}/Calls.json`, { To: SATELLITE, From: "+15559870000", Twiml: SAY });
    expect(res.status).toBe(429);
    expect(res.headers.get("x-keybrake-error")).toBe("cap_exhausted");
    expect(tw.received).toHaveLength(0);
    expect((await audit(kb, key.id))[0]).toMatchObject({ decision: "cap_exhausted", hold_usd: 0 });
    // 240 minutes at $4: the message states the price it would have held.
    expect(((await res.json()) as Json).message).toContain("960");
  });

  test("inline Twiml dialing two numbers is held for three calls, each at its own price", async () => {
    const key = await twilioKey(kb);
    const twiml = `<Response><Dial timeLimit="300"><Number>${GB}</Number><Number>${DE}</Number></Dial></Response>`;
    const res = await post(kb, key.vault_key, `${ACCOUNT}/Calls.json`, { To: US, From: "+15559870000", Twiml: twiml, TimeLimit: "600" });
    expect(res.status).toBe(201);
    // The call itself for 10 minutes; each leg for the Dial's 5.
    const hold = minutes(10, 0.014) + minutes(5, 0.04) + minutes(5, 0.3);
    expect(await ledger(kb, key.id)).toEqual([{ hold, cost: hold, state: "settled" }]);
    expect(new URLSearchParams(tw.received[0]!.body).get("Twiml")).toBe(twiml);
  });

  test("a Url call, and TwiML that fetches more TwiML, are refused by default; nothing is forwarded", async () => {
    const key = await twilioKey(kb);
    const forms: Record<string, string>[] = [
      { To: US, Url: "https://example.com/twiml" },
      { To: US, ApplicationSid: "AP123" },
      { To: US, Twiml: "<Response><Redirect>https://example.com/more</Redirect></Response>" },
      { To: US, Twiml: '<Response><Gather action="https://example.com/next"><Say>Press 1</Say></Gather></Response>' },
      { To: US, Twiml: "<Response><Dial><Number>+1</Number></Dial>" }, // not well-formed
    ];
    for (const form of forms) {
      const res = await post(kb, key.vault_key, `${ACCOUNT}/Calls.json`, form);
      expect(res.status).toBe(422);
      expect(res.headers.get("x-keybrake-error")).toBe("unpriceable_request");
    }
    expect(tw.received).toHaveLength(0);
    expect(await ledger(kb, key.id)).toEqual([]);
  });

  test("with KEYBRAKE_TWILIO_CALL_URL=allow a Url call is forwarded, held for the call it places", async () => {
    const key = await twilioKey(kbAllowingUrls);
    const res = await post(kbAllowingUrls, key.vault_key, `${ACCOUNT}/Calls.json`, {
      To: GB,
      Url: "https://example.com/twiml",
      TimeLimit: "120",
    });
    expect(res.status).toBe(201);
    expect((await ledger(kbAllowingUrls, key.id)).map((e) => e.hold)).toEqual([minutes(2, 0.04)]);
  });
});

describe("live calls and conferences", () => {
  test("hanging up a live call is free; new Twiml that dials is priced as its legs", async () => {
    const key = await twilioKey(kb);
    const hangUp = await post(kb, key.vault_key, `${ACCOUNT}/Calls/CA0123.json`, { Status: "completed" });
    expect(hangUp.headers.get("x-keybrake-error")).toBeNull();
    const redial = await post(kb, key.vault_key, `${ACCOUNT}/Calls/CA0123.json`, {
      Twiml: `<Response><Dial><Number>${GB}</Number></Dial></Response>`,
    });
    expect(redial.headers.get("x-keybrake-error")).toBeNull();
    expect(tw.received.map((r) => r.path)).toEqual(Array(2).fill(`/2010-04-01/Accounts/${TWILIO_SID}/Calls/CA0123.json`));
    // The mock does not know the call (404): nothing is spent, but the audit row says what was held.
    expect((await audit(kb, key.id)).map((r) => r.hold_usd)).toEqual([0, 240 * 0.04]);
    const url = await post(kb, key.vault_key, `${ACCOUNT}/Calls/CA0123.json`, { Url: "https://example.com/twiml" });
    expect(url.headers.get("x-keybrake-error")).toBe("unpriceable_request");
    expect(tw.received).toHaveLength(2);
  });

  test("a conference participant is an outbound call, held like one", async () => {
    const key = await twilioKey(kb);
    const res = await post(kb, key.vault_key, `${ACCOUNT}/Conferences/CF0123/Participants.json`, {
      From: "+15559870000",
      To: DE,
      TimeLimit: "300",
    });
    expect(res.headers.get("x-keybrake-error")).toBeNull();
    expect(tw.count("POST", /\/Participants\.json$/)).toBe(1);
    expect((await audit(kb, key.id))[0]).toMatchObject({ hold_usd: 5 * 0.3 });
    const withUrl = await post(kb, key.vault_key, `${ACCOUNT}/Conferences/CF0123/Participants.json`, {
      To: DE,
      WaitUrl: "https://example.com/wait",
    });
    expect(withUrl.headers.get("x-keybrake-error")).toBe("unpriceable_request");
    expect(tw.count("POST", /\/Participants\.json$/)).toBe(1);
  });
});

test("a call to a priced destination is reconciled below its hold: Twilio bills what was used, never more", async () => {
  const key = await twilioKey(kb);
  const client = twilio(FAKE_SID, key.vault_key);
  client.api.baseUrl = `${kb.url}/twilio`;
  const call = await client.calls.create({ to: GB, from: "+15559870000", twiml: SAY, timeLimit: 600 });
  // Twilio's UK mobile list price, 7 minutes used: under the 10 held at the table's $0.04.
  tw.finalPrices.set(call.sid, "-0.2135");
  clock += 301_000;
  await kb.reconciler!.tick();
  const [entry] = await ledger(kb, key.id);
  expect(entry).toEqual({ hold: minutes(10, 0.04), cost: 213_500, state: "settled" });
  expect(entry!.cost!).toBeLessThanOrEqual(entry!.hold);
});

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { KeybrakeError } from "../src/errors";
import { readPricedBody, type PricedBody } from "../src/vendors/body";
import { unitPriceMicros } from "../src/vendors/currency";
import {
  DEFAULT_CALL_PRICES,
  VOICE_PRICED_FIELDS,
  callCreateHold,
  callPriceTable,
  callPrices,
  callUpdateHold,
  inlineTwimlLegs,
  participantHold,
  participantUpdateHold,
  type CallPrices,
} from "../src/vendors/twilio-voice";

// Prices in this file unless a test says otherwise: the defaults with US and CA at $0.014 a minute, so GB $0.04,
// FR $0.17 and any other destination (`*`) $5 a minute. Holds are micro-dollars: $1 = 1,000,000.
const PRICES = callPrices(0.014, {});
const DENY = { allowUrl: false };
const ALLOW = { allowUrl: true };

const US = "+15551230000";
const GB = "+447700900123";
const FR = "+33612345678";
const JM = "+18765550100";

/** A form body as the proxy reads it. */
const form = (fields: Record<string, string>, query = ""): PricedBody =>
  readPricedBody(
    "application/x-www-form-urlencoded",
    new TextEncoder().encode(new URLSearchParams(fields).toString()),
    new URLSearchParams(query),
    VOICE_PRICED_FIELDS,
  );

const SAY = "<Response><Say>Hello</Say></Response>";
const dial = (...numbers: string[]) => `<Response><Dial>${numbers.map((n) => `<Number>${n}</Number>`).join("")}</Dial></Response>`;

/** Runs `fn` and returns the unpriceable_request it throws; fails on any other outcome. */
function refusal(fn: () => unknown): KeybrakeError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(KeybrakeError);
    expect((e as KeybrakeError).code).toBe("unpriceable_request");
    return e as KeybrakeError;
  }
  throw new Error("expected unpriceable_request, but it was priced");
}

describe("KEYBRAKE_TWILIO_CALL_PRICES", () => {
  test("same form as the SMS table: countries Keybrake can tell apart or *, USD <= 100 a minute", () => {
    expect(callPriceTable.parse("gb=0.06, JM=0.25,*=3")).toEqual({ GB: "0.06", JM: "0.25", "*": "3" });
    expect(callPriceTable.parse(undefined)).toEqual({});
    for (const bad of ["XX=0.1", "GB=100.01", "GB", "GB=-1", "GB=abc", "USA=0.1"])
      expect(callPriceTable.safeParse(bad).success).toBe(false);
  });

  test("defaults: US and Canada at KEYBRAKE_TWILIO_CALL_USD; entries add and override; * is the dearest default", () => {
    expect(callPrices(0.02, {})).toEqual({ US: 0.02, CA: 0.02, ...DEFAULT_CALL_PRICES });
    const table = callPrices(0.014, callPriceTable.parse("GB=0.06,DE=0.3,*=2"));
    expect([table.GB, table.DE, table.US, table["*"]]).toEqual([0.06, 0.3, 0.014, 2]);
    expect(Math.max(...Object.values(PRICES))).toBe(PRICES["*"]);
  });
});

describe("POST …/Calls", () => {
  test("an international call is held at its destination's price x TimeLimit, per started minute", () => {
    expect(callCreateHold(form({ To: GB, TimeLimit: "600", Twiml: SAY }), PRICES, DENY)).toBe(400_000); // 10 x $0.04
    expect(callCreateHold(form({ To: GB, TimeLimit: "61", Twiml: SAY }), PRICES, DENY)).toBe(80_000); // 2 started minutes
    expect(callCreateHold(form({ To: GB, Twiml: SAY }), PRICES, DENY)).toBe(9_600_000); // 240 minutes (4 h default)
    expect(callCreateHold(form({ To: FR, TimeLimit: "600", Twiml: SAY }), PRICES, DENY)).toBe(1_700_000);
    expect(callCreateHold(form({ To: US, TimeLimit: "600", Twiml: SAY }), PRICES, DENY)).toBe(140_000);
  });

  test("+1 876 is Jamaica, not the US: held at * unless JM is configured", () => {
    expect(callCreateHold(form({ To: JM, TimeLimit: "120", Twiml: SAY }), PRICES, DENY)).toBe(10_000_000); // 2 x $5
    const withJm = callPrices(0.014, callPriceTable.parse("JM=0.25"));
    expect(callCreateHold(form({ To: JM, TimeLimit: "120", Twiml: SAY }), withJm, DENY)).toBe(500_000);
  });

  test("client:, sip: and anything that is not an E.164 number are held at *", () => {
    for (const to of ["client:alice", "sip:alice@example.com", "+44 7700 900123", "7700900123", "12345", ""])
      expect(callCreateHold(form({ To: to, TimeLimit: "60", Twiml: SAY }), PRICES, DENY)).toBe(5_000_000);
  });

  test("inline Twiml dialing two numbers is held for three calls, each at its destination's price", () => {
    const twiml = dial(GB, FR);
    expect(inlineTwimlLegs(twiml, DENY).legs).toEqual([
      { to: GB, timeLimitS: null },
      { to: FR, timeLimitS: null },
    ]);
    // The call to the US, then 10 minutes to GB ($0.40) and to FR ($1.70).
    expect(callCreateHold(form({ To: US, TimeLimit: "600", Twiml: twiml }), PRICES, DENY)).toBe(140_000 + 400_000 + 1_700_000);
    // A bare number as the Dial's text is a leg too, and so is every Dial in the document.
    const two = `<Response><Dial>${GB}</Dial><Say>again</Say><Dial>${FR}</Dial></Response>`;
    expect(callCreateHold(form({ To: US, TimeLimit: "600", Twiml: two }), PRICES, DENY)).toBe(2_240_000);
  });

  test("a Dial's timeLimit shortens its legs; the call's TimeLimit bounds them all", () => {
    const short = `<Response><Dial timeLimit="90"><Number>${GB}</Number><Number>${FR}</Number></Dial></Response>`;
    // 10 minutes to the US; 2 started minutes to GB ($0.08) and FR ($0.34).
    expect(callCreateHold(form({ To: US, TimeLimit: "600", Twiml: short }), PRICES, DENY)).toBe(140_000 + 80_000 + 340_000);
    const long = `<Response><Dial timeLimit="3600">${GB}</Dial></Response>`;
    expect(callCreateHold(form({ To: US, TimeLimit: "120", Twiml: long }), PRICES, DENY)).toBe(28_000 + 80_000);
    for (const bad of ["0", "-5", "1.5", "abc", "", " 90", "1e3"])
      refusal(() => inlineTwimlLegs(`<Response><Dial timeLimit="${bad}">${GB}</Dial></Response>`, DENY));
  });

  test("every dialed noun is a leg: Sip, Client, Sim and WhatsApp at *; Conference and Queue place no call", () => {
    const twiml = `<Response><Dial>
      <Sip>sip:alice@example.com</Sip><Client>bob</Client><Client><Identity>carol</Identity><Parameter name="a" value="b"/></Client>
      <Sim>DE0123</Sim><WhatsApp>${GB}</WhatsApp>
    </Dial><Dial><Conference>room</Conference></Dial><Dial><Queue>support</Queue></Dial></Response>`;
    expect(inlineTwimlLegs(twiml, DENY).legs.map((l) => l.to)).toEqual([
      "sip:alice@example.com",
      "client:bob",
      "client:carol",
      "sim:DE0123",
      `whatsapp:${GB}`,
    ]);
    expect(callCreateHold(form({ To: US, TimeLimit: "60", Twiml: twiml }), PRICES, DENY)).toBe(14_000 + 5 * 5_000_000);
  });

  test("entity and character references are read as Twilio reads them", () => {
    const twiml = `<?xml version="1.0" encoding="UTF-8"?><Response><Say>Tom &amp; Jerry&apos;s</Say><Dial><Number>&#43;44&#x37;700900123</Number></Dial></Response>`;
    expect(inlineTwimlLegs(twiml, DENY).legs).toEqual([{ to: GB, timeLimitS: null }]);
  });

  test("a Url (or ApplicationSid) runs TwiML Keybrake never sees: refused by default, held for what is visible when allowed", () => {
    expect(refusal(() => callCreateHold(form({ To: GB, TimeLimit: "600", Url: "https://x.test/t" }), PRICES, DENY)).message).toContain(
      "KEYBRAKE_TWILIO_CALL_URL=allow",
    );
    refusal(() => callCreateHold(form({ To: GB, ApplicationSid: "AP123" }), PRICES, DENY));
    refusal(() => callCreateHold(form({ To: GB, Twiml: SAY, FallbackUrl: "https://x.test/f" }), PRICES, DENY));
    expect(callCreateHold(form({ To: GB, TimeLimit: "600", Url: "https://x.test/t" }), PRICES, ALLOW)).toBe(400_000);
    expect(callCreateHold(form({ To: GB, TimeLimit: "600", ApplicationSid: "AP123" }), PRICES, ALLOW)).toBe(400_000);
    // Both given: the visible legs are held as well.
    expect(callCreateHold(form({ To: US, TimeLimit: "600", Url: "https://x.test/t", Twiml: dial(GB) }), PRICES, ALLOW)).toBe(540_000);
  });

  test("a call with neither Twiml nor Url, a bad TimeLimit, or priced fields in the query string is refused", () => {
    refusal(() => callCreateHold(form({ To: GB, TimeLimit: "60" }), PRICES, ALLOW));
    for (const limit of ["0", "-1", "1.5", "60s", "1e3"])
      refusal(() => callCreateHold(form({ To: GB, TimeLimit: limit, Twiml: SAY }), PRICES, DENY));
    refusal(() => callCreateHold(form({ To: GB, TimeLimit: "60", Twiml: SAY }, "TimeLimit=1"), PRICES, DENY));
    refusal(() => callCreateHold(form({ To: GB, TimeLimit: "60", Twiml: SAY }, "Twiml=x"), PRICES, DENY));
    refusal(() => form({ To: GB }, "Url=https://x.test"));
  });
});

describe("TwiML Keybrake cannot see through is refused", () => {
  const cases: Record<string, string> = {
    Redirect: "<Response><Redirect>https://x.test/next</Redirect></Response>",
    "Gather action": `<Response><Gather action="https://x.test/g"><Say>Press 1</Say></Gather></Response>`,
    "Gather without action (re-requests the current document)": "<Response><Gather><Say>Press 1</Say></Gather></Response>",
    "Record without action": "<Response><Record/></Response>",
    "Dial action": `<Response><Dial action='https://x.test/after'>${GB}</Dial></Response>`,
    "Number whisper url": `<Response><Dial><Number url="https://x.test/w">${GB}</Number></Dial></Response>`,
    "Conference waitUrl": `<Response><Dial><Conference waitUrl="https://x.test/hold">r</Conference></Dial></Response>`,
    "Enqueue waitUrl": `<Response><Enqueue waitUrl="https://x.test/wait">q</Enqueue></Response>`,
    "Enqueue workflowSid": `<Response><Enqueue workflowSid="WW1">q</Enqueue></Response>`,
    "Application (its Voice URL)": "<Response><Dial><Application><ApplicationSid>AP1</ApplicationSid></Application></Dial></Response>",
    "attribute name in another case": `<Response><Dial ACTION="https://x.test">${GB}</Dial></Response>`,
  };
  for (const [what, twiml] of Object.entries(cases)) {
    test(`${what}: refused, accepted with KEYBRAKE_TWILIO_CALL_URL=allow`, () => {
      refusal(() => inlineTwimlLegs(twiml, DENY));
      refusal(() => callCreateHold(form({ To: US, Twiml: twiml }), PRICES, DENY));
      expect(inlineTwimlLegs(twiml, ALLOW).unseen.length).toBeGreaterThan(0);
    });
  }

  test("status callbacks return no TwiML and are fine", () => {
    const twiml = `<Response><Dial recordingStatusCallback="https://x.test/r"><Number statusCallback="https://x.test/s" statusCallbackEvent="answered">${GB}</Number></Dial></Response>`;
    expect(inlineTwimlLegs(twiml, DENY)).toEqual({ legs: [{ to: GB, timeLimitS: null }], unseen: [] });
  });

  const malformed: Record<string, string> = {
    "unknown verb": "<Response><Connect><Stream url='wss://x.test'/></Connect></Response>",
    "verb in the wrong place": `<Response><Number>${GB}</Number></Response>`,
    "unknown noun": "<Response><Dial><Foo>1</Foo></Dial></Response>",
    "root other than Response": `<Dial>${GB}</Dial>`,
    DOCTYPE: `<!DOCTYPE Response><Response><Dial>${GB}</Dial></Response>`,
    ENTITY: `<!DOCTYPE r [<!ENTITY d "<Dial>${GB}</Dial>">]><Response>&d;</Response>`,
    "undeclared entity": "<Response><Say>&nbsp;</Say></Response>",
    CDATA: "<Response><Say><![CDATA[hi]]></Say></Response>",
    "processing instruction": "<Response><?php echo 1 ?></Response>",
    "declaration not first": ` <?xml version="1.0"?><Response/>`,
    "declaration in another encoding": `<?xml version="1.0" encoding="UTF-7"?><Response/>`,
    unbalanced: `<Response><Dial>${GB}</Response>`,
    unclosed: `<Response><Dial>${GB}</Dial>`,
    "two roots": "<Response/><Response/>",
    "duplicate attribute": `<Response><Dial timeLimit="60" timeLimit="14400">${GB}</Dial></Response>`,
    "same attribute in two cases": `<Response><Dial timeLimit="60" TIMELIMIT="14400">${GB}</Dial></Response>`,
    "unquoted attribute": `<Response><Dial timeLimit=60>${GB}</Dial></Response>`,
    "bare ampersand": "<Response><Say>a & b</Say></Response>",
    "text split by a comment": `<Response><Dial><Number>+1<!-- -->8765550100</Number></Dial></Response>`,
    "number and nouns": `<Response><Dial>${GB}<Number>${FR}</Number></Dial></Response>`,
    "-- in a comment": "<Response><!-- a -- b --></Response>",
    "control character": "<Response><Say>\u0001</Say></Response>",
    "not UTF-8": "<Response><Say>\uFFFD</Say></Response>",
    "text outside the root": "x<Response/>",
    "nested too deep": `<Response><Say>${"<s>".repeat(100_000)}`,
    empty: "",
  };
  for (const [what, twiml] of Object.entries(malformed)) {
    test(`${what}: refused, even with KEYBRAKE_TWILIO_CALL_URL=allow`, () => {
      refusal(() => inlineTwimlLegs(twiml, ALLOW));
    });
  }
});

describe("POST …/Calls/{sid} (a live call)", () => {
  test("hanging up is free; an update that changes no TwiML costs nothing", () => {
    expect(callUpdateHold(form({ Status: "completed" }), PRICES, DENY)).toBe(0);
    expect(callUpdateHold(form({ Status: "canceled" }), PRICES, DENY)).toBe(0);
    expect(callUpdateHold(form({ StatusCallback: "https://x.test/s" }), PRICES, DENY)).toBe(0);
  });

  test("new Twiml that dials is held for its legs, each bounded by its Dial's timeLimit (4 h by default)", () => {
    const ten = `<Response><Dial timeLimit="600"><Number>${GB}</Number></Dial></Response>`;
    expect(callUpdateHold(form({ Twiml: ten }), PRICES, DENY)).toBe(400_000);
    expect(callUpdateHold(form({ Twiml: dial(GB, FR) }), PRICES, DENY)).toBe(9_600_000 + 40_800_000); // 240 min each
    expect(callUpdateHold(form({ Twiml: SAY }), PRICES, DENY)).toBe(0);
    refusal(() => callUpdateHold(form({ Twiml: "<Response><Redirect>https://x.test</Redirect></Response>" }), PRICES, DENY));
  });

  test("a new TimeLimit may lengthen a call to a destination the update does not name: held at the dearest price", () => {
    expect(callUpdateHold(form({ TimeLimit: "600" }), PRICES, DENY)).toBe(50_000_000); // 10 x $5
    // It bounds the new legs too.
    expect(callUpdateHold(form({ TimeLimit: "60", Twiml: dial(GB) }), PRICES, DENY)).toBe(5_000_000 + 40_000);
    refusal(() => callUpdateHold(form({ TimeLimit: "0" }), PRICES, DENY));
  });

  test("a new Url is refused by default; allowed, its TwiML is accepted unseen", () => {
    refusal(() => callUpdateHold(form({ Url: "https://x.test/t" }), PRICES, DENY));
    refusal(() => callUpdateHold(form({ Twiml: SAY, FallbackUrl: "https://x.test/f" }), PRICES, DENY));
    expect(callUpdateHold(form({ Url: "https://x.test/t" }), PRICES, ALLOW)).toBe(0);
  });
});

describe("conference participants", () => {
  test("each participant is an outbound call, held like one", () => {
    expect(participantHold(form({ To: GB, From: US, TimeLimit: "600" }), PRICES, DENY)).toBe(400_000);
    expect(participantHold(form({ To: GB, From: US }), PRICES, DENY)).toBe(9_600_000);
    expect(participantHold(form({ To: "client:alice", From: US, TimeLimit: "60" }), PRICES, DENY)).toBe(5_000_000);
    expect(participantHold(form({ To: GB, StatusCallback: "https://x.test/s", TimeLimit: "60" }), PRICES, DENY)).toBe(40_000);
    refusal(() => participantHold(form({ To: GB, TimeLimit: "1.5" }), PRICES, DENY));
  });

  test("TwiML-returning URLs (wait, announce, hold) are refused unless allowed", () => {
    refusal(() => participantHold(form({ To: GB, WaitUrl: "https://x.test/w" }), PRICES, DENY));
    expect(participantHold(form({ To: GB, TimeLimit: "60", WaitUrl: "https://x.test/w" }), PRICES, ALLOW)).toBe(40_000);
    expect(participantUpdateHold(form({ Muted: "true", Hold: "true" }), DENY)).toBe(0);
    for (const field of ["AnnounceUrl", "HoldUrl", "WaitUrl"]) {
      refusal(() => participantUpdateHold(form({ [field]: "https://x.test/a" }), DENY));
      expect(participantUpdateHold(form({ [field]: "https://x.test/a" }), ALLOW)).toBe(0);
    }
  });
});

describe("properties", () => {
  const DESTINATIONS = [US, GB, FR, JM, "+4930123456", "+819012345678", "client:bob", "sip:a@example.com"];
  const limitArb = fc.option(fc.integer({ min: 1, max: 20_000 }), { nil: null });
  const nounArb = fc.oneof(
    fc
      .constantFrom(...DESTINATIONS)
      .map((n) => ({ xml: n.startsWith("client:") ? `<Client>${n.slice(7)}</Client>` : `<Number>${n}</Number>`, legs: 1 })),
    fc.constant({ xml: "<Sip>sip:a@example.com</Sip>", legs: 1 }),
    fc.constant({ xml: "<Conference>room</Conference>", legs: 0 }),
    fc.constant({ xml: "<Queue>q</Queue>", legs: 0 }),
  );
  type Verb = { xml: string; legs: number; limit: number | null };
  const space = fc.constantFrom("", " ", "\n  ", "<!-- note -->");
  const verbArb: fc.Arbitrary<Verb> = fc.oneof(
    fc.string({ maxLength: 20 }).map((s) => ({
      xml: `<Say voice="alice">${s.replace(/&/g, "&amp;").replace(/</g, "&lt;")}</Say>`,
      legs: 0,
      limit: null,
    })),
    fc.constant({ xml: "<Play loop='2'>https://x.test/a.mp3</Play>", legs: 0, limit: null }),
    fc.constant({ xml: '<Pause length="2"/>', legs: 0, limit: null }),
    fc.constant({ xml: "<Hangup/>", legs: 0, limit: null }),
    fc.record({ to: fc.constantFrom(...DESTINATIONS.filter((d) => d.startsWith("+"))), limit: limitArb }).map(({ to, limit }) => ({
      xml: `<Dial${limit === null ? "" : ` timeLimit="${limit}"`}>${to}</Dial>`,
      legs: 1,
      limit,
    })),
    fc.record({ nouns: fc.array(nounArb, { maxLength: 4 }), limit: limitArb, sep: space }).map(({ nouns, limit, sep }) => ({
      xml: `<Dial${limit === null ? "" : ` timeLimit='${limit}'`}>${nouns.map((n) => n.xml).join(sep)}</Dial>`,
      legs: nouns.reduce((a, n) => a + n.legs, 0),
      limit,
    })),
  );
  const twimlArb = fc
    .record({ verbs: fc.array(verbArb, { maxLength: 8 }), sep: space, decl: fc.boolean() })
    .map(({ verbs, sep, decl }) => ({
      xml: `${decl ? '<?xml version="1.0" encoding="UTF-8"?>' : ""}<Response>${sep}${verbs.map((v) => v.xml).join(sep)}</Response>`,
      legs: verbs.reduce((a, v) => a + v.legs, 0),
      // The shortest any leg (the call's own included) can be held for, before the call's TimeLimit.
      limits: verbs.filter((v) => v.legs > 0).map((v) => v.limit ?? 14_400),
    }));
  const usd = fc.integer({ min: 1, max: 100_000 }).map((n) => (n / 10_000).toString()); // $0.0001 .. $10
  const tableArb = fc.record({ GB: usd, FR: usd, JM: usd, DE: usd, "*": usd }, { requiredKeys: ["*"] }).map((t) =>
    callPrices(
      0.014,
      callPriceTable.parse(
        Object.entries(t)
          .map(([c, p]) => `${c}=${p}`)
          .join(","),
      ),
    ),
  );

  test("a call is never held for less than each of its legs (its own included) at the cheapest price in the table", () => {
    fc.assert(
      fc.property(twimlArb, fc.integer({ min: 1, max: 14_400 }), tableArb, fc.constantFrom(...DESTINATIONS), (twiml, limit, prices, to) => {
        expect(inlineTwimlLegs(twiml.xml, DENY).legs.length).toBe(twiml.legs);
        const hold = callCreateHold(form({ To: to, TimeLimit: String(limit), Twiml: twiml.xml }), prices, DENY);
        const shortest = Math.min(limit, ...twiml.limits);
        const cheapest = Math.min(...Object.values(prices as CallPrices));
        expect(hold).toBeGreaterThanOrEqual((twiml.legs + 1) * unitPriceMicros(cheapest, Math.ceil(shortest / 60)));
        expect(Number.isSafeInteger(hold)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  const TOKENS = [
    "<",
    ">",
    "</",
    "/>",
    "<Response>",
    "</Response>",
    "<Dial>",
    "</Dial>",
    '<Dial timeLimit="60">',
    "<Number>",
    "</Number>",
    GB,
    JM,
    "&amp;",
    "&",
    "&#x2B;",
    "&#0;",
    ";",
    "<!--",
    "-->",
    '<?xml version="1.0"?>',
    "<?",
    "?>",
    "<!DOCTYPE",
    "<!ENTITY",
    "<![CDATA[",
    "]]>",
    " ",
    "\n",
    '"',
    "'",
    "=",
    "timeLimit",
    "<Redirect>",
    "<Gather action='x'>",
    "<Say>",
    "</Say>",
    "<Client>",
    "</Client>",
    "\uD800",
    "\uDC00",
    "\uFFFD",
    "\u0000",
    "é",
  ];
  const tokenSoup = fc.array(fc.constantFrom(...TOKENS), { maxLength: 40 }).map((t) => t.join(""));
  const mutated = fc
    .record({ doc: twimlArb, at: fc.nat(), cut: fc.integer({ min: 0, max: 5 }), insert: fc.string({ maxLength: 5, unit: "binary" }) })
    .map(({ doc, at, cut, insert }) => {
      const i = at % (doc.xml.length + 1);
      return doc.xml.slice(0, i) + insert + doc.xml.slice(i + cut);
    });
  const garbage = fc.oneof(fc.string({ maxLength: 200, unit: "binary" }), tokenSoup, mutated);

  test("garbage never throws anything but unpriceable_request", () => {
    const onlyUnpriceable = (fn: () => unknown) => {
      try {
        return fn();
      } catch (e) {
        if (!(e instanceof KeybrakeError) || e.code !== "unpriceable_request") throw e;
        return undefined;
      }
    };
    fc.assert(
      fc.property(garbage, fc.boolean(), (twiml, allowUrl) => {
        const parsed = onlyUnpriceable(() => inlineTwimlLegs(twiml, { allowUrl }));
        if (parsed) for (const leg of (parsed as ReturnType<typeof inlineTwimlLegs>).legs) expect(leg.timeLimitS ?? 1).toBeGreaterThan(0);
        const body = { To: GB, Twiml: twiml, TimeLimit: "600" };
        const hold = onlyUnpriceable(() => callCreateHold(form(body), PRICES, { allowUrl }));
        if (hold !== undefined) expect(Number.isSafeInteger(hold) && (hold as number) >= 400_000).toBe(true);
        onlyUnpriceable(() => callUpdateHold(form(body), PRICES, { allowUrl }));
      }),
      { numRuns: 2_000 },
    );
  });
});

import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { Elysia } from "elysia";
import { listen } from "../src/ops/listen";
import { ADMIN_TOKEN, type Harness, type Leak, leakGuard, leaks, startKeybrake, WATCHED_SECRETS } from "./helpers/harness";
import { mockResend, RESEND_KEY, RESEND_TEST_KEY } from "./helpers/mock-resend";
import { mockStripe, STRIPE_LIVE_SECRET, STRIPE_TEST_SECRET, type MockStripe } from "./helpers/mock-stripe";
import { mockTwilio, TWILIO_SID, TWILIO_TEST_SID, TWILIO_TEST_TOKEN, TWILIO_TOKEN, type MockTwilio } from "./helpers/mock-twilio";
import type { MockVendor } from "./helpers/mock-vendor";
import { CONFIGURED_SECRETS, secretsIn } from "./helpers/secrets";

/**
 * SPEC §4 and §6: no configured secret reaches a job. Endpoints that carry credentials are refused before anything
 * is forwarded; whatever secret a vendor's answer still carries (an echo, an error quoting the request) is
 * replaced before the job sees it, and the audit row counts the replacements. Last, the harness's leak guard
 * (which searches every answer of the whole suite) is shown to fail when a secret does leave.
 */

type Json = Record<string, any>;

const REDACTED = "[redacted by Keybrake]";
const BASIC_LIVE = btoa(`${TWILIO_SID}:${TWILIO_TOKEN}`);
const BASIC_TEST = btoa(`${TWILIO_TEST_SID}:${TWILIO_TEST_TOKEN}`);
/** Everything no answer may carry: the configured secrets, the Twilio SIDs and the Basic credentials Keybrake sends. */
const NEVER_SEEN = [...CONFIGURED_SECRETS, TWILIO_SID, TWILIO_TEST_SID, BASIC_LIVE, BASIC_TEST];
/** What a job writes as the Twilio account: it needs no real identifier. */
const FAKE_SID = "AC00000000000000000000000000000000";

let kb: Harness;
let stripe: MockStripe;
let twilio: MockTwilio;
let resend: MockVendor;
let leaksBefore = 0;

beforeAll(async () => {
  leaksBefore = leaks.length;
  stripe = await mockStripe().start();
  twilio = await mockTwilio().start();
  resend = await mockResend().start();
  kb = await startKeybrake({
    KEYBRAKE_STRIPE_BASE_URL: stripe.url,
    KEYBRAKE_TWILIO_BASE_URL: twilio.url,
    KEYBRAKE_RESEND_BASE_URL: resend.url,
  });
});
afterAll(async () => {
  await kb.stop();
  await stripe.stop();
  await twilio.stop();
  await resend.stop();
});
beforeEach(() => {
  stripe.reset();
  twilio.reset();
  resend.reset();
});

const audit = async (id: string) => ((await (await kb.admin(`/audit?key_id=${id}&limit=1000`)).json()) as Json).data as Json[];
/** Every header of an answer, as one text to search. */
const headerText = (res: Response) => [...res.headers].map(([name, value]) => `${name}: ${value}`).join("\n");

/** Keys that allow every path: only the catalogue stands between the job and a credential endpoint. */
const keys = async () => ({
  stripe: await kb.issueKey({ vendor: "stripe", daily_usd_cap: 10, allowed_endpoints: ["/*"] }),
  twilio: await kb.issueKey({ vendor: "twilio", daily_usd_cap: 10, allowed_endpoints: ["/*"] }),
  resend: await kb.issueKey({ vendor: "resend", daily_usd_cap: 10, allowed_endpoints: ["/*"] }),
});
const auth = (vendor: "stripe" | "twilio" | "resend", vaultKey: string) =>
  vendor === "twilio" ? `Basic ${btoa(`${FAKE_SID}:${vaultKey}`)}` : `Bearer ${vaultKey}`;

async function call(vendor: "stripe" | "twilio" | "resend", vaultKey: string, method: string, path: string, body?: string) {
  return fetch(`${kb.url}/${vendor}${path}`, {
    method,
    headers: {
      authorization: auth(vendor, vaultKey),
      ...(body === undefined ? {} : { "content-type": vendor === "resend" ? "application/json" : "application/x-www-form-urlencoded" }),
    },
    body,
  });
}

describe("credential endpoints are refused before anything is forwarded (even with a key allowing /*)", () => {
  const CASES: ["stripe" | "twilio" | "resend", string, string, string?][] = [
    // Twilio: the account resource (it carries the auth token) and the subaccount list, whatever SID the job writes.
    ["twilio", "GET", `/2010-04-01/Accounts/${FAKE_SID}.json`],
    ["twilio", "GET", `/2010-04-01/Accounts/${TWILIO_SID}.json`],
    ["twilio", "GET", `/2010-04-01/Accounts/${FAKE_SID}`],
    ["twilio", "GET", "/2010-04-01/Accounts.json"],
    ["twilio", "GET", "/2010-04-01/Accounts"],
    // Twilio creates that answer with a credential: a subaccount (its own token), API keys and signing keys (a secret).
    ["twilio", "POST", "/2010-04-01/Accounts.json", "FriendlyName=sub"],
    ["twilio", "POST", `/2010-04-01/Accounts/${FAKE_SID}/Keys.json`, "FriendlyName=k"],
    ["twilio", "GET", `/2010-04-01/Accounts/${FAKE_SID}/Keys/SK00000000000000000000000000000000.json`],
    ["twilio", "POST", `/2010-04-01/Accounts/${FAKE_SID}/SigningKeys.json`, "FriendlyName=k"],
    // Resend: API keys are full-access credentials.
    ["resend", "POST", "/api-keys", JSON.stringify({ name: "agent" })],
    ["resend", "GET", "/api-keys"],
    // Stripe: ephemeral keys are usable keys; webhook endpoints carry their signing secret.
    ["stripe", "POST", "/v1/ephemeral_keys", "customer=cus_1"],
    ["stripe", "POST", "/v1/webhook_endpoints", "url=https%3A%2F%2Fexample.com%2Fhook&enabled_events[]=*"],
    ["stripe", "GET", "/v1/webhook_endpoints/we_1"],
  ];

  for (const [vendor, method, path, body] of CASES) {
    test(`${vendor} ${method} ${path}: 403 credential_endpoint_refused, the mock received nothing`, async () => {
      const k = await keys();
      const res = await call(vendor, k[vendor].vault_key, method, path, body);
      expect(res.status).toBe(403);
      expect(res.headers.get("x-keybrake-error")).toBe("credential_endpoint_refused");
      expect(((await res.json()) as Json).code).toBe("credential_endpoint_refused");
      expect(stripe.received).toEqual([]);
      expect(twilio.received).toEqual([]);
      expect(resend.received).toEqual([]);
      const [row] = await audit(k[vendor].id);
      expect(row).toMatchObject({ decision: "credential_endpoint_refused", status: 403, cost_usd: 0 });
    });
  }
});

describe("secrets in an answer are replaced before the job sees it", () => {
  /** A stand-in for a resource that echoes credentials: the same document with the secrets or their replacements. */
  const echo = (s: {
    stripe: string;
    twilio: string;
    admin: string;
    resend: string;
    basic: string;
    basicInUrl: string;
    testSid: string;
  }) => ({
    id: "cus_1",
    object: "customer",
    name: "Zoë Ünïcode ✓ — kept as is",
    metadata: {
      stripe_key: s.stripe,
      quoted: `Authorization: Bearer ${s.stripe} (from the request)`,
      twilio_token: s.twilio,
      admin: s.admin,
      resend: s.resend,
      twilio_header: `Basic ${s.basic}`,
      callback: `https://example.com/cb?auth=${s.basicInUrl}&x=1`,
      account: s.testSid,
    },
    livemode: true,
  });
  const REAL = {
    stripe: STRIPE_LIVE_SECRET,
    twilio: TWILIO_TOKEN,
    admin: ADMIN_TOKEN,
    resend: RESEND_KEY,
    basic: BASIC_LIVE,
    basicInUrl: encodeURIComponent(BASIC_LIVE),
    testSid: TWILIO_TEST_SID,
  };
  const SCRUBBED = {
    stripe: REDACTED,
    twilio: REDACTED,
    admin: REDACTED,
    resend: REDACTED,
    basic: REDACTED,
    basicInUrl: REDACTED,
    testSid: "{AccountSid}",
  };
  /** In the body: the Stripe secret twice, five other secrets once each, the SID once; one more in X-Echo. */
  const OCCURRENCES = 9;

  test("a free Stripe GET that echoes four secrets, a Basic credential (plain and URL-encoded) and a SID: all replaced, all else byte for byte", async () => {
    expect(encodeURIComponent(BASIC_LIVE)).not.toBe(BASIC_LIVE); // the URL-encoded spelling is a spelling of its own
    const k = await keys();
    stripe.failNext({ kind: "status", status: 200, body: echo(REAL), headers: { "X-Echo": STRIPE_LIVE_SECRET } });
    const res = await call("stripe", k.stripe.vault_key, "GET", "/v1/customers/cus_1");
    expect(res.status).toBe(200);
    expect(stripe.received).toHaveLength(1);
    expect(stripe.received[0]!.path).toBe("/v1/customers/cus_1");

    const bytes = Buffer.from(await res.arrayBuffer());
    expect(secretsIn(bytes.toString("latin1"), NEVER_SEEN)).toEqual([]);
    expect(secretsIn(headerText(res), NEVER_SEEN)).toEqual([]);
    // The body is what the vendor sent with each secret replaced in place: every other byte unchanged.
    expect(bytes.equals(Buffer.from(JSON.stringify(echo(SCRUBBED)), "utf8"))).toBe(true);
    expect(res.headers.get("x-echo")).toBe(REDACTED);
    expect(res.headers.get("request-id")).toStartWith("req_");

    const [row] = await audit(k.stripe.id);
    expect(row).toMatchObject({ decision: "allowed", status: 200, cost_usd: 0, secrets_scrubbed: OCCURRENCES });
  });

  test("an error answer that quotes the test-mode secret and a Resend test key: replaced, counted", async () => {
    const k = await keys();
    const body = {
      error: { type: "invalid_request_error", message: `Invalid API Key provided: ${STRIPE_TEST_SECRET}; also ${RESEND_TEST_KEY}` },
    };
    stripe.failNext({ kind: "status", status: 401, body });
    const res = await call("stripe", k.stripe.vault_key, "GET", "/v1/customers/cus_1");
    expect(res.status).toBe(401);
    const text = await res.text();
    expect(secretsIn(text, NEVER_SEEN)).toEqual([]);
    expect(JSON.parse(text)).toEqual({
      error: { type: "invalid_request_error", message: `Invalid API Key provided: ${REDACTED}; also ${REDACTED}` },
    });
    const [row] = await audit(k.stripe.id);
    expect(row).toMatchObject({ status: 401, secrets_scrubbed: 2 });
  });

  test("an answer kept for Idempotency-Key replays is kept scrubbed: the replay carries no secret either", async () => {
    const k = await keys();
    const post = () =>
      fetch(`${kb.url}/stripe/v1/customers`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${k.stripe.vault_key}`,
          "content-type": "application/x-www-form-urlencoded",
          "idempotency-key": "scrub-replay-1",
        },
        body: "email=a%40example.com",
      });
    stripe.failNext({
      kind: "status",
      status: 200,
      body: { id: "cus_9", object: "customer", description: `made with ${STRIPE_LIVE_SECRET}` },
      headers: { Location: `https://api.stripe.com/v1/customers/cus_9?key=${STRIPE_TEST_SECRET}` },
    });
    const first = await post();
    expect(first.status).toBe(200);
    const firstBody = await first.text();
    expect(JSON.parse(firstBody)).toEqual({ id: "cus_9", object: "customer", description: `made with ${REDACTED}` });
    expect(first.headers.get("location")).toBe(`https://api.stripe.com/v1/customers/cus_9?key=${REDACTED}`);

    const again = await post();
    expect(again.status).toBe(200);
    expect(again.headers.get("x-keybrake-replayed")).toBe("true");
    expect(await again.text()).toBe(firstBody);
    expect(secretsIn(headerText(again), NEVER_SEEN)).toEqual([]);
    expect(again.headers.get("location")).toBe(`https://api.stripe.com/v1/customers/cus_9?key=${REDACTED}`);
    expect(stripe.received).toHaveLength(1);
    const rows = await audit(k.stripe.id);
    expect(rows.map((r) => [r.cost_source, r.secrets_scrubbed])).toEqual([
      ["replay", 0],
      [expect.any(String), 2],
    ]);
  });

  // The audit row, /audit, the export and a stored replay read the request id from the scrubbed headers too.
  test("a secret in the vendor's request-id header is scrubbed from the audit row too", async () => {
    const before = leaks.length;
    try {
      const k = await keys();
      stripe.failNext({ kind: "status", status: 200, body: { id: "cus_1" }, headers: { "Request-Id": `req_${STRIPE_LIVE_SECRET}` } });
      const res = await call("stripe", k.stripe.vault_key, "GET", "/v1/customers/cus_1");
      expect(res.status).toBe(200);
      expect(res.headers.get("request-id")).toBe(`req_${REDACTED}`);
      const rows = await kb.admin(`/audit?key_id=${k.stripe.id}`);
      expect(rows.status).toBe(200); // the leak guard answers 599 while the row carries the secret
      expect(((await rows.json()) as Json).data[0]).toMatchObject({ vendor_request_id: `req_${REDACTED}`, secrets_scrubbed: 1 });
    } finally {
      leaks.splice(before); // this known leak is not counted against the file (see the last test)
    }
  });

  test("an answer without secrets passes untouched and its row counts 0", async () => {
    const k = await keys();
    const res = await call("stripe", k.stripe.vault_key, "GET", "/v1/customers");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ object: "list", data: [], has_more: false });
    const [row] = await audit(k.stripe.id);
    expect(row).toMatchObject({ status: 200, secrets_scrubbed: 0 });
  });

  test("Twilio's answers name the real account: the job sees {AccountSid} in account_sid and uri", async () => {
    const k = await keys();
    const res = await call(
      "twilio",
      k.twilio.vault_key,
      "POST",
      `/2010-04-01/Accounts/${FAKE_SID}/Messages.json`,
      "To=%2B15551230000&Body=hi",
    );
    expect(res.status).toBe(201);
    const text = await res.text();
    expect(secretsIn(text, NEVER_SEEN)).toEqual([]);
    const message = JSON.parse(text) as Json;
    expect(message.account_sid).toBe("{AccountSid}");
    expect(message.uri).toBe(`/2010-04-01/Accounts/{AccountSid}/Messages/${message.sid}.json`);
    // The vendor itself saw the real account.
    expect(twilio.received[0]!.path).toBe(`/2010-04-01/Accounts/${TWILIO_SID}/Messages.json`);
    const [row] = await audit(k.twilio.id);
    expect(row).toMatchObject({ status: 201, secrets_scrubbed: 2 });
  });
});

describe("the harness's leak guard (every answer of the suite is searched for every secret)", () => {
  test("it watches every configured secret, both Twilio SIDs and both Basic credentials", () => {
    const watched = Object.values(WATCHED_SECRETS);
    for (const secret of NEVER_SEEN) expect(watched).toContain(secret);
  });

  /** A stand-in app, as `listen` sees one: `fetch` and `server`. */
  const fakeApp = (answer: (req: Request) => Response | Promise<Response>) => ({ fetch: answer, server: null as any });
  /** The fake app behind the guard, its leaks pushed to `sink` (not the suite's list). */
  const guarded = (answer: (req: Request) => Response | Promise<Response>, sink: Leak[]) =>
    leakGuard(fakeApp(answer), WATCHED_SECRETS, sink);
  const ask = (app: ReturnType<typeof fakeApp>, path = "/stripe/v1/customers/cus_1") =>
    Promise.resolve(app.fetch(new Request(`http://localhost${path}`)));

  test("a body carrying a secret becomes a 599 naming the variable and the path, never the value", async () => {
    const sink: Leak[] = [];
    const res = await ask(guarded(() => Response.json({ leaked: STRIPE_LIVE_SECRET }), sink));
    expect(res.status).toBe(599);
    expect(res.headers.get("x-keybrake-error")).toBe("secret_leaked");
    const text = await res.text();
    expect(text).toContain("KEYBRAKE_STRIPE_SECRET_KEY");
    expect(text).toContain("/stripe/v1/customers/cus_1");
    expect(secretsIn(text, NEVER_SEEN)).toEqual([]);
    expect(sink).toEqual([{ secret: "KEYBRAKE_STRIPE_SECRET_KEY", where: "body", method: "GET", path: "/stripe/v1/customers/cus_1" }]);
  });

  test("a header, a JSON-escaped or URL-encoded spelling, a SID and a Basic credential are caught too", async () => {
    const cases: [Response, string, string][] = [
      [new Response("ok", { headers: { "x-echo": ADMIN_TOKEN } }), "KEYBRAKE_ADMIN_TOKEN", "header x-echo"],
      [
        new Response(`{"auth":"${encodeURIComponent(BASIC_TEST)}"}`),
        "base64(KEYBRAKE_TWILIO_TEST_ACCOUNT_SID:KEYBRAKE_TWILIO_TEST_AUTH_TOKEN)",
        "body",
      ],
      [new Response(`{"sid":"${TWILIO_SID}"}`), "KEYBRAKE_TWILIO_ACCOUNT_SID", "body"],
      [new Response(`Basic ${BASIC_LIVE}`), "base64(KEYBRAKE_TWILIO_ACCOUNT_SID:KEYBRAKE_TWILIO_AUTH_TOKEN)", "body"],
      [new Response(new TextEncoder().encode(`\u00e9${RESEND_TEST_KEY}`)), "KEYBRAKE_RESEND_TEST_API_KEY", "body"],
    ];
    for (const [answer, secret, where] of cases) {
      const sink: Leak[] = [];
      const res = await ask(guarded(() => answer, sink));
      expect(res.status).toBe(599);
      expect(sink).toEqual([{ secret, where, method: "GET", path: "/stripe/v1/customers/cus_1" }]);
    }
  });

  test("a secret in the request path is named in the 599, not repeated", async () => {
    const sink: Leak[] = [];
    const res = await ask(
      guarded(() => new Response(TWILIO_SID), sink),
      `/twilio/2010-04-01/Accounts/${TWILIO_SID}.json`,
    );
    expect(res.status).toBe(599);
    expect(await res.text()).not.toContain(TWILIO_SID);
    expect(sink[0]!.path).toBe("/twilio/2010-04-01/Accounts/<KEYBRAKE_TWILIO_ACCOUNT_SID>.json");
  });

  test("a clean answer is passed on as it is: same object, status, headers and bytes", async () => {
    const sink: Leak[] = [];
    const answer = new Response('{"id":"cus_1"}', { status: 201, headers: { "x-keybrake-key-id": "vk_1" } });
    const res = await ask(guarded(async () => answer, sink));
    expect(res).toBe(answer);
    expect(res.status).toBe(201);
    expect(await res.text()).toBe('{"id":"cus_1"}');
    expect(sink).toEqual([]);
  });

  const streamOf = (chunks: string[], gate?: Promise<unknown>) =>
    new ReadableStream<Uint8Array>({
      async start(controller) {
        for (const [i, chunk] of chunks.entries()) {
          if (i === chunks.length - 1 && gate) await gate;
          controller.enqueue(new TextEncoder().encode(chunk));
        }
        controller.close();
      },
    });

  test("a streamed export is scanned as it passes: its first bytes leave before its last are made", async () => {
    const sink: Leak[] = [];
    let finish!: () => void;
    const gate = new Promise<void>((resolve) => (finish = resolve));
    const rows = [`${JSON.stringify({ id: "kbr_1", label: "x".repeat(200) })}\n`, `${JSON.stringify({ id: "kbr_2" })}\n`];
    const res = await ask(
      guarded(() => new Response(streamOf(rows, gate), { headers: { "content-type": "application/x-ndjson" } }), sink),
      "/audit/export",
    );
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const first = await reader.read(); // the last row is not made yet
    expect(first.done).toBe(false);
    expect(new TextDecoder().decode(first.value)).toStartWith('{"id":"kbr_1"');
    finish();
    let text = new TextDecoder().decode(first.value);
    for (let next = await reader.read(); !next.done; next = await reader.read()) text += new TextDecoder().decode(next.value);
    expect(text).toBe(rows.join(""));
    expect(sink).toEqual([]);
  });

  test("a streamed answer carrying a secret (split across chunks) is cut off before the secret leaves", async () => {
    const sink: Leak[] = [];
    const half = STRIPE_TEST_SECRET.length / 2;
    const chunks = ["a,b\r\n", `1,${STRIPE_TEST_SECRET.slice(0, half)}`, `${STRIPE_TEST_SECRET.slice(half)}\r\n`];
    const res = await ask(
      guarded(() => new Response(streamOf(chunks), { headers: { "content-type": "text/csv; charset=utf-8" } }), sink),
      "/audit/export",
    );
    let received = "";
    const reader = res.body!.getReader();
    await expect(
      (async () => {
        for (let next = await reader.read(); !next.done; next = await reader.read()) received += new TextDecoder().decode(next.value);
      })(),
    ).rejects.toThrow("secret_leaked: KEYBRAKE_STRIPE_TEST_SECRET_KEY");
    expect(received).not.toContain(STRIPE_TEST_SECRET.slice(0, half));
    expect(sink).toEqual([{ secret: "KEYBRAKE_STRIPE_TEST_SECRET_KEY", where: "streamed body", method: "GET", path: "/audit/export" }]);
  });

  test("served for real by src/ops/listen: an Elysia route that answers a secret reaches the client as a 599", async () => {
    const sink: Leak[] = [];
    const app = new Elysia().get("/leaky", () => ({ token: TWILIO_TOKEN })).get("/clean", () => ({ ok: true }));
    const server = listen(leakGuard(app, WATCHED_SECRETS, sink), { hostname: "127.0.0.1", port: 0, maxRequestBodySize: 1024 });
    try {
      expect(app.server).toBe(server); // `listen` set the app's own server through the guard
      const leaky = await fetch(`http://127.0.0.1:${server.port}/leaky`);
      expect(leaky.status).toBe(599);
      expect(await leaky.text()).toContain("KEYBRAKE_TWILIO_AUTH_TOKEN in the body of the answer (200) to GET /leaky");
      const clean = await fetch(`http://127.0.0.1:${server.port}/clean`);
      expect(clean.status).toBe(200);
      expect(await clean.json()).toEqual({ ok: true });
      expect(sink).toEqual([{ secret: "KEYBRAKE_TWILIO_AUTH_TOKEN", where: "body", method: "GET", path: "/leaky" }]);
    } finally {
      await app.stop(true);
    }
  });

  test("no answer of this file's Keybrake leaked (the guard saw none)", () => {
    expect(leaks.slice(leaksBefore)).toEqual([]);
  });
});

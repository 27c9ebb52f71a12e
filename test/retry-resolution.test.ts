import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import Stripe from "stripe";
import { type Harness, startKeybrake } from "./helpers/harness";
import { mockResend } from "./helpers/mock-resend";
import { mockStripe, STRIPE_500, type MockStripe } from "./helpers/mock-stripe";
import type { Fault, MockVendor } from "./helpers/mock-vendor";

/**
 * SPEC §7: a call whose first attempt was ambiguous keeps its one ledger entry `ambiguous`, counted at its hold,
 * until a retry's answer speaks for that first attempt: a 2xx, or a failure the vendor gives only when nothing ran
 * under the key (Stripe 402 or a 400 validation error; Resend 400/422 validation errors). Everything else leaves
 * the entry counted, because the first attempt may still move the money. Over real HTTP against the mocks.
 */

type Json = Record<string, any>;

/** Long enough for a mock's normal answer under load; what a timed-out attempt costs each test. */
const UPSTREAM_TIMEOUT_MS = 500;

/** A Keybrake and the Stripe and Resend mocks it forwards to: one test's, for as long as that test runs. */
interface World {
  kb: Harness;
  stripe: MockStripe;
  resend: MockVendor;
  /** Vendor calls held unanswered (the attempt times out at Keybrake); let go when the test is over. */
  gates: (() => void)[];
}

async function startWorld(): Promise<World> {
  const [stripe, resend] = await Promise.all([mockStripe().start(), mockResend().start()]);
  const kb = await startKeybrake({
    KEYBRAKE_STRIPE_BASE_URL: stripe.url,
    KEYBRAKE_RESEND_BASE_URL: resend.url,
    KEYBRAKE_UPSTREAM_TIMEOUT_MS: String(UPSTREAM_TIMEOUT_MS),
  });
  return { kb, stripe, resend, gates: [] };
}

async function stopWorld(world: World) {
  for (const open of world.gates.splice(0)) open();
  await world.kb.stop();
  await Promise.all([world.stripe.stop(), world.resend.stop()]);
}

/**
 * Most of these tests' time is spent waiting out an upstream timeout, so they run side by side (`test.concurrent`),
 * each on a world no other test uses meanwhile: its mocks' queued faults and received calls are its own. A few
 * worlds are shared in turn, as starting one per test would cost more than the waits it saves.
 */
const WORLDS = 8;
const idle: World[] = [];
const waitingForAWorld: ((world: World) => void)[] = [];
beforeAll(async () => {
  idle.push(...(await Promise.all(Array.from({ length: WORLDS }, startWorld))));
});
afterAll(async () => {
  await Promise.all(idle.splice(0).map(stopWorld));
});

/** Runs `body` on a free world (waiting for one), its mocks reset as a fresh test expects; frees it after. */
async function inWorld(body: (world: World) => Promise<void>) {
  const world = idle.pop() ?? (await new Promise<World>((resolve) => waitingForAWorld.push(resolve)));
  world.stripe.reset();
  world.resend.reset();
  try {
    await body(world);
  } finally {
    for (const open of world.gates.splice(0)) open();
    const next = waitingForAWorld.shift();
    if (next) next(world);
    else idle.push(world);
  }
}
const worldTest = (name: string, body: (world: World) => Promise<void>) => test.concurrent(name, () => inWorld(body));

/** The vendor never answers (until the test is over): Keybrake answers 504 after UPSTREAM_TIMEOUT_MS. */
const TIMEOUT = (world: World): Fault => ({ kind: "wait", until: new Promise<void>((resolve) => world.gates.push(resolve)) });

let seq = 0;
/** A fresh Idempotency-Key per call site, as an SDK makes one per logical call. */
const idemKey = (what: string) => `retry-resolution/${what}/${++seq}`;

const ledger = (on: Harness, keyId: string) =>
  on.readDb((db) =>
    db
      .query<{ state: string; hold_micros: number; cost_micros: number | null }, [string]>(
        "SELECT state, hold_micros, cost_micros FROM ledger_entries WHERE key_id = ? ORDER BY created_at, id",
      )
      .all(keyId),
  );
const record = async (on: Harness, id: string) => (await (await on.admin(`/vault/keys/${id}`)).json()) as Json;
const audit = async (on: Harness, id: string) => ((await (await on.admin(`/audit?key_id=${id}&limit=1000`)).json()) as Json).data as Json[];

// ---------------------------------------------------------------------------------------------------------------
// Stripe
// ---------------------------------------------------------------------------------------------------------------

const PI_2900 = "amount=2900&currency=usd";
const HOLD_2900 = 29_000_000;

const stripeKey = (on: Harness, daily_usd_cap = 500) =>
  on.issueKey({ vendor: "stripe", daily_usd_cap, allowed_endpoints: ["POST /v1/payment_intents"] });
const createIntent = (on: Harness, vaultKey: string, idem: string, body = PI_2900) =>
  fetch(`${on.url}/v1/payment_intents`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${vaultKey}`,
      "content-type": "application/x-www-form-urlencoded",
      "idempotency-key": idem,
    },
    body,
  });

const stripeError = (status: number, error: Json, headers?: Record<string, string>): Fault => ({
  kind: "status",
  status,
  body: { error },
  headers,
});

/** Stripe's answer while a request under the same Idempotency-Key is still running. */
const KEY_IN_USE = stripeError(409, {
  type: "idempotency_error",
  code: "idempotency_key_in_use",
  message:
    "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): retry-resolution. Please try again later.",
});

/** How a first attempt ends ambiguous: Keybrake's 504 after the upstream timeout, or Stripe's 500. */
const STRIPE_FIRSTS: Record<string, { fault: (world: World) => Fault; status: number; error?: string }> = {
  "timed out (504)": { fault: TIMEOUT, status: 504, error: "upstream_timeout" },
  "answered 500": { fault: () => STRIPE_500, status: 500 },
};

interface Retry {
  fault: (world: World) => Fault;
  /** What the job is answered: the vendor's status, or Keybrake's for a timeout. */
  status: number;
  /** Keybrake's own error code when the answer is Keybrake's (X-Keybrake-Error), else the vendor's body passes. */
  error?: string;
}

/** Retries whose answers say nothing of the first attempt: the entry stays ambiguous at its hold. */
const STRIPE_SILENT: Record<string, Retry> = {
  "409 idempotency_key_in_use": { fault: () => KEY_IN_USE, status: 409 },
  "429 rate_limit": {
    fault: () =>
      stripeError(429, { type: "invalid_request_error", code: "rate_limit", message: "Too many requests hit the API too quickly." }),
    status: 429,
  },
  "429 lock_timeout": {
    fault: () =>
      stripeError(429, {
        type: "invalid_request_error",
        code: "lock_timeout",
        message: "This object cannot be accessed right now because another API request or Stripe process is currently accessing it.",
      }),
    status: 429,
  },
  "401 (a rolled secret)": {
    fault: () => stripeError(401, { type: "invalid_request_error", message: "Invalid API Key provided: sk_live_****0000" }),
    status: 401,
  },
  "403 (a restricted key)": {
    fault: () =>
      stripeError(403, {
        type: "invalid_request_error",
        code: "secret_key_required",
        message: "The provided key does not have the required permissions for this endpoint.",
      }),
    status: 403,
  },
  "404": {
    fault: () =>
      stripeError(404, {
        type: "invalid_request_error",
        code: "resource_missing",
        message: "Unrecognized request URL (POST: /v1/payment_intents).",
      }),
    status: 404,
  },
  "500": { fault: () => STRIPE_500, status: 500 },
  "502 from a load balancer": { fault: () => ({ kind: "status", status: 502, body: { error: { type: "api_error" } } }), status: 502 },
  "400 idempotency_error (another request ran under the key)": {
    fault: () =>
      stripeError(400, {
        type: "idempotency_error",
        message: "Keys for idempotent requests can only be used with the same parameters they were first used with.",
      }),
    status: 400,
  },
  "a timeout": { fault: TIMEOUT, status: 504, error: "upstream_timeout" },
};

/** Retries whose answers speak for the first attempt: nothing ran under the key, the hold is released. */
const STRIPE_RELEASING: Record<string, Retry> = {
  "402 card_declined, replayed (Idempotent-Replayed: true)": {
    fault: () =>
      stripeError(
        402,
        { type: "card_error", code: "card_declined", decline_code: "generic_decline", message: "Your card was declined." },
        { "Idempotent-Replayed": "true" },
      ),
    status: 402,
  },
  "402 card_declined, fresh": {
    fault: () => stripeError(402, { type: "card_error", code: "card_declined", message: "Your card was declined." }),
    status: 402,
  },
  "400 invalid_request_error (validation)": {
    fault: () =>
      stripeError(400, {
        type: "invalid_request_error",
        code: "parameter_invalid_integer",
        param: "amount",
        message: "Invalid integer: 2900.5",
      }),
    status: 400,
  },
};

/** The answer the job got is the vendor's, byte for byte in its JSON, or Keybrake's error when it is Keybrake's. */
async function expectAnswer(res: Response, expected: { fault: Fault; status: number; error?: string }) {
  expect(res.status).toBe(expected.status);
  expect(res.headers.get("x-keybrake-error")).toBe(expected.error ?? null);
  expect(res.headers.get("x-keybrake-replayed")).toBeNull();
  if (expected.fault.kind === "status") {
    expect((await res.json()) as unknown).toEqual(expected.fault.body);
    for (const [name, value] of Object.entries(expected.fault.headers ?? {})) expect(res.headers.get(name)).toBe(value);
  } else await res.arrayBuffer();
}

/** Both attempts reached Stripe as one call: same derived Idempotency-Key, same body. */
function expectSameCall(received: MockVendor["received"], count: number) {
  expect(received).toHaveLength(count);
  for (const r of received) {
    expect(r.method).toBe("POST");
    expect(r.path).toBe("/v1/payment_intents");
    expect(r.body).toBe(received[0]!.body);
    expect(r.headers["idempotency-key"]).toBe(received[0]!.headers["idempotency-key"]);
  }
}

for (const [firstName, first] of Object.entries(STRIPE_FIRSTS)) {
  describe(`Stripe: a first attempt that ${firstName}`, () => {
    /** The first attempt, ambiguous: one entry at its hold, the key's spend shows it. */
    async function ambiguousFirst(world: World) {
      const { kb, stripe } = world;
      const key = await stripeKey(kb);
      const idem = idemKey("stripe");
      const fault = first.fault(world);
      stripe.failNext(fault);
      await expectAnswer(await createIntent(kb, key.vault_key, idem), { fault, status: first.status, error: first.error });
      expect(await ledger(kb, key.id)).toEqual([{ state: "ambiguous", hold_micros: HOLD_2900, cost_micros: HOLD_2900 }]);
      expect(await record(kb, key.id)).toMatchObject({ spent_today_usd: 29, held_usd: 0 });
      return { key, idem };
    }

    for (const [retryName, retry] of Object.entries(STRIPE_SILENT)) {
      worldTest(`retried into ${retryName}: stays ambiguous at $29.00; the answer passes; a later 200 settles it once`, async (world) => {
        const { kb, stripe } = world;
        const { key, idem } = await ambiguousFirst(world);
        const fault = retry.fault(world);
        stripe.failNext(fault);
        await expectAnswer(await createIntent(kb, key.vault_key, idem), { ...retry, fault });
        expectSameCall(stripe.received, 2);
        expect(await ledger(kb, key.id)).toEqual([{ state: "ambiguous", hold_micros: HOLD_2900, cost_micros: HOLD_2900 }]);
        expect(await record(kb, key.id)).toMatchObject({ spent_today_usd: 29, held_usd: 0 });
        const rows = await audit(kb, key.id);
        expect(rows).toHaveLength(2);
        expect(rows[0]).toMatchObject({ status: retry.status, cost_source: "hold", hold_usd: 29, idempotency_key: idem });

        // The entry is still open to a retry that does speak for the first attempt.
        const done = await createIntent(kb, key.vault_key, idem);
        expect(done.status).toBe(200);
        expect(((await done.json()) as Json).amount).toBe(2900);
        expectSameCall(stripe.received, 3);
        expect(await ledger(kb, key.id)).toEqual([{ state: "settled", hold_micros: HOLD_2900, cost_micros: HOLD_2900 }]);
        expect(await record(kb, key.id)).toMatchObject({ spent_today_usd: 29, held_usd: 0 });
      });
    }

    // A world of the test's own, not one of the shared ones: it stops its Stripe.
    test.concurrent("retried into connection refused (the vendor went down): stays ambiguous at $29.00, 502 upstream_unreachable", async () => {
      const down = await startWorld();
      try {
        const { kb, stripe } = down;
        const { key, idem } = await ambiguousFirst(down);
        await stripe.stop();
        for (const open of down.gates.splice(0)) open();
        const res = await createIntent(kb, key.vault_key, idem);
        expect(res.status).toBe(502);
        expect(res.headers.get("x-keybrake-error")).toBe("upstream_unreachable");
        expectSameCall(stripe.received, 1);
        expect(await ledger(kb, key.id)).toEqual([{ state: "ambiguous", hold_micros: HOLD_2900, cost_micros: HOLD_2900 }]);
        expect(await record(kb, key.id)).toMatchObject({ spent_today_usd: 29, held_usd: 0 });
      } finally {
        await stopWorld(down);
      }
    });

    for (const [retryName, retry] of Object.entries(STRIPE_RELEASING)) {
      worldTest(`retried into ${retryName}: released, nothing counted`, async (world) => {
        const { kb, stripe } = world;
        const { key, idem } = await ambiguousFirst(world);
        const fault = retry.fault(world);
        stripe.failNext(fault);
        await expectAnswer(await createIntent(kb, key.vault_key, idem), { ...retry, fault });
        expectSameCall(stripe.received, 2);
        expect(await ledger(kb, key.id)).toEqual([{ state: "released", hold_micros: HOLD_2900, cost_micros: 0 }]);
        expect(await record(kb, key.id)).toMatchObject({ spent_today_usd: 0, held_usd: 0 });
      });
    }

    worldTest("retried into a 200: settled at the amount, once", async (world) => {
      const { kb, stripe } = world;
      const { key, idem } = await ambiguousFirst(world);
      const res = await createIntent(kb, key.vault_key, idem);
      expect(res.status).toBe(200);
      expect((await res.json()) as Json).toMatchObject({ object: "payment_intent", amount: 2900, currency: "usd" });
      expectSameCall(stripe.received, 2);
      expect(await ledger(kb, key.id)).toEqual([{ state: "settled", hold_micros: HOLD_2900, cost_micros: HOLD_2900 }]);
      expect(await record(kb, key.id)).toMatchObject({ spent_today_usd: 29, held_usd: 0 });
      // Settled: the same call again is Keybrake's replay, nothing forwarded.
      const again = await createIntent(kb, key.vault_key, idem);
      expect(again.headers.get("x-keybrake-replayed")).toBe("true");
      expect(stripe.received).toHaveLength(2);
    });
  });
}

describe("Stripe's own SDK", () => {
  worldTest(
    "stripe-node (maxNetworkRetries 2): a timed-out create retried twice into 409 key in use: three attempts, one entry, still $29.00",
    async (world) => {
      const { kb, stripe } = world;
      const key = await stripeKey(kb);
      stripe.failNext(TIMEOUT(world));
      stripe.failNext(KEY_IN_USE, 2);
      const client = new Stripe(key.vault_key, {
        host: "127.0.0.1",
        port: Number(new URL(kb.url).port),
        protocol: "http",
        maxNetworkRetries: 2,
      });
      const failure = (await client.paymentIntents.create({ amount: 2900, currency: "usd" }).catch((err: unknown) => err)) as Json;
      expect({ rawType: failure.rawType, statusCode: failure.statusCode, code: failure.code }).toEqual({
        rawType: "idempotency_error",
        statusCode: 409,
        code: "idempotency_key_in_use",
      });
      expectSameCall(stripe.received, 3);
      expect(await ledger(kb, key.id)).toEqual([{ state: "ambiguous", hold_micros: HOLD_2900, cost_micros: HOLD_2900 }]);
      expect(await record(kb, key.id)).toMatchObject({ spent_today_usd: 29, held_usd: 0 });
      expect((await audit(kb, key.id)).map((r) => r.status)).toEqual([409, 409, 504]);
    },
  );
});

describe("the attack from the issue: ambiguous $90 calls against a $100 daily cap", () => {
  const PI_9000 = "amount=9000&currency=usd";
  const HOLD_9000 = 90_000_000;

  worldTest(
    "three different $90 intents, each timing out: the first is counted, the second and third are refused 429 cap_exhausted",
    async (world) => {
      const { kb, stripe } = world;
      const key = await stripeKey(kb, 100);
      stripe.failNext(TIMEOUT(world));
      const first = await createIntent(kb, key.vault_key, idemKey("attack-a"), PI_9000);
      expect(first.status).toBe(504);
      expect(first.headers.get("x-keybrake-error")).toBe("upstream_timeout");
      // The other two would time out as well, had they been forwarded.
      stripe.failNext(TIMEOUT(world), 2);
      for (const what of ["attack-b", "attack-c"]) {
        const res = await createIntent(kb, key.vault_key, idemKey(what), PI_9000);
        expect(res.status).toBe(429);
        expect(res.headers.get("x-keybrake-error")).toBe("cap_exhausted");
        expect(res.headers.get("x-keybrake-cap-hit")).toBe("true");
        await res.arrayBuffer();
      }
      expect(stripe.received).toHaveLength(1);
      expect(await ledger(kb, key.id)).toEqual([{ state: "ambiguous", hold_micros: HOLD_9000, cost_micros: HOLD_9000 }]);
      expect(await record(kb, key.id)).toMatchObject({ spent_today_usd: 90, held_usd: 0 });
    },
  );

  worldTest(
    "one $90 intent times out and is retried into 409 three times: still exactly $90, $10 left, a $20 call is refused",
    async (world) => {
      const { kb, stripe } = world;
      const key = await stripeKey(kb, 100);
      const idem = idemKey("attack-retried");
      stripe.failNext(TIMEOUT(world));
      expect((await createIntent(kb, key.vault_key, idem, PI_9000)).status).toBe(504);
      for (let i = 1; i <= 3; i++) {
        stripe.failNext(KEY_IN_USE);
        const res = await createIntent(kb, key.vault_key, idem, PI_9000);
        expect(res.status).toBe(409);
        expect(((await res.json()) as Json).error.code).toBe("idempotency_key_in_use");
        expect(res.headers.get("x-keybrake-spent-usd")).toBe("90");
        expect(res.headers.get("x-keybrake-remaining-usd")).toBe("10");
        expect(await ledger(kb, key.id)).toEqual([{ state: "ambiguous", hold_micros: HOLD_9000, cost_micros: HOLD_9000 }]);
      }
      expectSameCall(stripe.received, 4);
      expect(await record(kb, key.id)).toMatchObject({ spent_today_usd: 90, held_usd: 0 });

      const more = await createIntent(kb, key.vault_key, idemKey("attack-more"), "amount=2000&currency=usd");
      expect(more.status).toBe(429);
      expect(more.headers.get("x-keybrake-error")).toBe("cap_exhausted");
      await more.arrayBuffer();
      expect(stripe.received).toHaveLength(4);
      expect(await ledger(kb, key.id)).toEqual([{ state: "ambiguous", hold_micros: HOLD_9000, cost_micros: HOLD_9000 }]);
    },
  );
});

// ---------------------------------------------------------------------------------------------------------------
// Resend
// ---------------------------------------------------------------------------------------------------------------

/** Three recipients (two To, one CC) at the default $0.0009 each. */
const EMAIL = JSON.stringify({
  from: "billing@example.com",
  to: ["a@example.com", "b@example.com"],
  cc: ["c@example.com"],
  subject: "Your invoice",
  html: "<p>Thanks</p>",
});
const HOLD_EMAIL = 2_700;

const resendKey = (on: Harness) => on.issueKey({ vendor: "resend", daily_usd_cap: 1, allowed_endpoints: ["POST /emails"] });
const sendEmail = (on: Harness, vaultKey: string, idem: string) =>
  fetch(`${on.url}/resend/emails`, {
    method: "POST",
    headers: { authorization: `Bearer ${vaultKey}`, "content-type": "application/json", "idempotency-key": idem },
    body: EMAIL,
  });
const resendError = (statusCode: number, name: string, message: string): Fault => ({
  kind: "status",
  status: statusCode,
  body: { statusCode, name, message },
});

const RESEND_FIRSTS: Record<string, { fault: (world: World) => Fault; status: number; error?: string }> = {
  "timed out (504)": { fault: TIMEOUT, status: 504, error: "upstream_timeout" },
  "answered 500": {
    fault: () => resendError(500, "application_error", "An unexpected error occurred, please try again later."),
    status: 500,
  },
};

const RESEND_SILENT: Record<string, Retry> = {
  "409 concurrent_idempotent_requests": {
    fault: () =>
      resendError(409, "concurrent_idempotent_requests", "Same idempotency key used while original request is still in progress."),
    status: 409,
  },
  "409 invalid_idempotent_request": {
    fault: () => resendError(409, "invalid_idempotent_request", "Same idempotency key used with a different request payload."),
    status: 409,
  },
  "400 invalid_idempotency_key": {
    fault: () => resendError(400, "invalid_idempotency_key", "The key must be between 1-256 chars."),
    status: 400,
  },
  "429 rate_limit_exceeded": {
    fault: () => resendError(429, "rate_limit_exceeded", "Too many requests. You can only make 2 requests per second."),
    status: 429,
  },
  "401 missing_api_key": { fault: () => resendError(401, "missing_api_key", "Missing API key in the authorization header."), status: 401 },
  "403 invalid_api_key (a rolled key)": { fault: () => resendError(403, "invalid_api_key", "API key is invalid."), status: 403 },
  "500": { fault: () => resendError(500, "application_error", "An unexpected error occurred."), status: 500 },
  "a timeout": { fault: TIMEOUT, status: 504, error: "upstream_timeout" },
};

const RESEND_RELEASING: Record<string, Retry> = {
  "422 validation_error": {
    fault: () =>
      resendError(422, "validation_error", "Invalid `to` field. The email address needs to follow the `email@example.com` format."),
    status: 422,
  },
  "400 validation_error": { fault: () => resendError(400, "validation_error", "Invalid `from` field."), status: 400 },
};

function expectSameEmail(received: MockVendor["received"], count: number) {
  expect(received).toHaveLength(count);
  for (const r of received) {
    expect(r.path).toBe("/emails");
    expect(r.body).toBe(EMAIL);
    expect(r.headers["idempotency-key"]).toBe(received[0]!.headers["idempotency-key"]);
  }
}

for (const [firstName, first] of Object.entries(RESEND_FIRSTS)) {
  describe(`Resend: a first attempt that ${firstName}`, () => {
    async function ambiguousFirst(world: World) {
      const { kb, resend } = world;
      const key = await resendKey(kb);
      const idem = idemKey("resend");
      const fault = first.fault(world);
      resend.failNext(fault);
      await expectAnswer(await sendEmail(kb, key.vault_key, idem), { fault, status: first.status, error: first.error });
      expect(await ledger(kb, key.id)).toEqual([{ state: "ambiguous", hold_micros: HOLD_EMAIL, cost_micros: HOLD_EMAIL }]);
      expect(await record(kb, key.id)).toMatchObject({ spent_today_usd: 0.0027, held_usd: 0 });
      return { key, idem };
    }

    for (const [retryName, retry] of Object.entries(RESEND_SILENT)) {
      worldTest(`retried into ${retryName}: stays ambiguous at the recipients' $0.0027; the answer passes`, async (world) => {
        const { kb, resend } = world;
        const { key, idem } = await ambiguousFirst(world);
        const fault = retry.fault(world);
        resend.failNext(fault);
        await expectAnswer(await sendEmail(kb, key.vault_key, idem), { ...retry, fault });
        expectSameEmail(resend.received, 2);
        expect(await ledger(kb, key.id)).toEqual([{ state: "ambiguous", hold_micros: HOLD_EMAIL, cost_micros: HOLD_EMAIL }]);
        expect(await record(kb, key.id)).toMatchObject({ spent_today_usd: 0.0027, held_usd: 0 });
      });
    }

    for (const [retryName, retry] of Object.entries(RESEND_RELEASING)) {
      worldTest(`retried into ${retryName}: released, nothing counted`, async (world) => {
        const { kb, resend } = world;
        const { key, idem } = await ambiguousFirst(world);
        const fault = retry.fault(world);
        resend.failNext(fault);
        await expectAnswer(await sendEmail(kb, key.vault_key, idem), { ...retry, fault });
        expectSameEmail(resend.received, 2);
        expect(await ledger(kb, key.id)).toEqual([{ state: "released", hold_micros: HOLD_EMAIL, cost_micros: 0 }]);
        expect(await record(kb, key.id)).toMatchObject({ spent_today_usd: 0, held_usd: 0 });
      });
    }

    worldTest("retried into a 200: settled at the recipients' price, once", async (world) => {
      const { kb, resend } = world;
      const { key, idem } = await ambiguousFirst(world);
      const res = await sendEmail(kb, key.vault_key, idem);
      expect(res.status).toBe(200);
      expect(((await res.json()) as Json).id).toBeString();
      expectSameEmail(resend.received, 2);
      expect(await ledger(kb, key.id)).toEqual([{ state: "settled", hold_micros: HOLD_EMAIL, cost_micros: HOLD_EMAIL }]);
      expect(await record(kb, key.id)).toMatchObject({ spent_today_usd: 0.0027, held_usd: 0 });
    });
  });
}

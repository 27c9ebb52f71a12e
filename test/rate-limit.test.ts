import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fc from "fast-check";
import { RateLimiter } from "../src/proxy/rate-limit";
import { startKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, type MockStripe } from "./helpers/mock-stripe";

const MINUTE = Date.UTC(2026, 10, 26, 12, 0, 0); // 12:00:00.000, the start of a wall-clock minute
const at = (seconds: number) => MINUTE + Math.round(seconds * 1000);

/** Calls `take` `count` times at one instant; returns the waits, 0 for each admitted call. */
const burst = (limiter: RateLimiter, key: string, limit: number, time: number, count: number) =>
  Array.from({ length: count }, () => limiter.take(key, limit, time));
const admitted = (waits: number[]) => waits.filter((w) => w === 0).length;

describe("sliding minute", () => {
  test("60 calls at 59.9 s and 60 at 60.1 s admit only 60 across the minute boundary", () => {
    const limiter = new RateLimiter();
    // A call at 0.0 s starts a fixed window there, so 60.1 s would open a fresh one and admit 60 more.
    expect(limiter.take("k", 60, at(0))).toBe(0);
    const before = burst(limiter, "k", 60, at(59.9), 60);
    const after = burst(limiter, "k", 60, at(60.1), 60);
    expect(admitted(before)).toBe(59);
    expect(admitted(after)).toBe(1); // only the slot of the 0.0 s call, which has left the window
    expect(admitted(before) + admitted(after)).toBe(60);
    expect(before.at(-1)).toBe(1); // 0.0 s leaves at 60.0 s, 0.1 s away: rounded up
    expect(after.at(-1)).toBe(60); // 59.9 s leaves at 119.9 s, 59.8 s away
  });

  test("the 61st call within 60 s is refused, waiting until the oldest counted call leaves", () => {
    const limiter = new RateLimiter();
    expect(admitted(burst(limiter, "k", 60, at(10), 60))).toBe(60);
    expect(limiter.take("k", 60, at(30.2))).toBe(40); // leaves at 70 s, 39.8 s away
    expect(limiter.take("k", 60, at(69))).toBe(1);
    expect(limiter.take("k", 60, at(69.999))).toBe(1); // never 0 while refusing
  });

  test("a call is admitted exactly when the oldest counted call leaves the window", () => {
    const limiter = new RateLimiter();
    for (const s of [0, 10, 20]) expect(limiter.take("k", 3, at(s))).toBe(0);
    expect(limiter.take("k", 3, at(59.999))).toBe(1);
    expect(limiter.take("k", 3, at(60))).toBe(0);
    expect(limiter.take("k", 3, at(60))).toBe(10); // now 10 s is the oldest
    expect(limiter.take("k", 3, at(69.999))).toBe(1);
    expect(limiter.take("k", 3, at(70))).toBe(0);
  });

  test("keys are limited independently", () => {
    const limiter = new RateLimiter();
    expect(admitted(burst(limiter, "a", 2, at(0), 3))).toBe(2);
    expect(admitted(burst(limiter, "b", 2, at(0), 3))).toBe(2);
  });

  test("a limit change applies on the next call, and a lowered-then-raised limit still counts every call", () => {
    const limiter = new RateLimiter();
    for (let s = 0; s < 10; s++) expect(limiter.take("k", 10, at(s))).toBe(0);
    expect(limiter.take("k", 5, at(10))).toBe(55); // under 5 only once 0..5 s have left: at 65 s
    expect(admitted(burst(limiter, "k", 12, at(10), 5))).toBe(2);
    expect(limiter.take("k", 12, at(10))).toBe(50);
    expect(limiter.take("k", 1, at(69))).toBe(1); // the two 10 s calls leave at 70 s
    expect(limiter.take("k", 1, at(70))).toBe(0);
  });

  test("a wall clock stepping back makes the key wait at most one window, not the length of the step", () => {
    const limiter = new RateLimiter();
    expect(admitted(burst(limiter, "k", 2, at(600), 2))).toBe(2);
    expect(limiter.take("k", 2, at(0))).toBe(60);
    expect(limiter.take("k", 2, at(60))).toBe(0);
  });

  test("against a brute-force log: admitted iff under the limit, Retry-After exact and sufficient, any limit changes", () => {
    const step = fc.record({
      gap: fc.oneof(fc.constant("retry-after" as const), fc.constant(0), fc.integer({ min: 0, max: 90_000 })),
      limit: fc.integer({ min: 1, max: 6 }),
    });
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 200 }), (steps) => {
        const limiter = new RateLimiter();
        const admittedAt: { time: number; limit: number }[] = [];
        const countedAt = (time: number) => admittedAt.filter((c) => time - c.time < 60_000 && c.time <= time).length;
        let now = at(0);
        let lastWait = 0;
        for (const { gap, limit } of steps) {
          now += gap === "retry-after" ? lastWait * 1000 : gap;
          const wait = limiter.take("k", limit, now);
          expect(wait === 0).toBe(countedAt(now) < limit);
          if (wait === 0) admittedAt.push({ time: now, limit });
          else {
            expect(countedAt(now + wait * 1000)).toBeLessThan(limit); // waiting Retry-After is enough...
            if (wait > 1) expect(countedAt(now + (wait - 1) * 1000)).toBeGreaterThanOrEqual(limit); // ...and a second less is not
          }
          lastWait = wait;
        }
        // The promise itself: each admitted call, with those admitted before it in its 60 s, is within its limit.
        for (const [i, c] of admittedAt.entries()) {
          expect(admittedAt.slice(0, i + 1).filter((d) => c.time - d.time < 60_000).length).toBeLessThanOrEqual(c.limit);
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe("memory", () => {
  test("idle keys are dropped within two windows, and a key holds no more slots than its window needs", () => {
    const limiter = new RateLimiter();
    for (let i = 0; i < 50_000; i++) expect(limiter.take(`idle-${i}`, 1_000_000, at(i / 1000))).toBe(0);
    expect(limiter.stats()).toEqual({ keys: 50_000, slots: 50_000 * 8 }); // a high limit does not allocate up front
    limiter.take("later", 5, at(120));
    expect(limiter.stats()).toEqual({ keys: 1, slots: 5 });

    for (let s = 0; s < 1000; s++) limiter.take("steady", 5, at(200 + s));
    expect(limiter.stats()).toEqual({ keys: 1, slots: 5 });

    expect(admitted(burst(limiter, "burst", 10_001, at(2000), 10_000))).toBe(10_000);
    expect(limiter.take("burst", 10_001, at(2030))).toBe(0);
    expect(limiter.stats()).toEqual({ keys: 1, slots: 10_001 }); // "steady" was swept
    expect(limiter.take("burst", 10_001, at(2060))).toBe(0);
    expect(limiter.stats().slots).toBe(8); // the burst left the window and gave its memory back
    expect(limiter.take("burst", 1, at(2091))).toBe(29);
    expect(limiter.stats().slots).toBe(1); // a lowered limit shrinks the key to it once the window allows
  });
});

describe("through the server", () => {
  let stripe: MockStripe;
  let kb: Harness;
  let now = at(0);

  beforeAll(async () => {
    stripe = await mockStripe().start();
    kb = await startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url }, { now: () => now });
  });
  afterAll(async () => {
    await kb.stop();
    await stripe.stop();
  });

  test("a minute boundary does not reset the count; Retry-After says when the next call fits; PATCH applies at once", async () => {
    now = at(0);
    const key = await kb.issueKey({
      vendor: "stripe",
      total_usd_cap: 10_000,
      allowed_endpoints: ["POST /v1/payment_intents"],
      max_requests_per_minute: 3,
    });
    const charge = () =>
      fetch(`${kb.url}/v1/payment_intents`, {
        method: "POST",
        headers: { authorization: `Bearer ${key.vault_key}`, "content-type": "application/x-www-form-urlencoded" },
        body: "amount=100&currency=usd",
      });
    const statuses = async (count: number) => {
      const out: (number | string)[] = [];
      for (let i = 0; i < count; i++) {
        const res = await charge();
        if (res.status === 200) out.push(200);
        else out.push(`${res.status} ${res.headers.get("x-keybrake-error")} retry-after=${res.headers.get("retry-after")}`);
      }
      return out;
    };
    stripe.reset();

    expect(await statuses(1)).toEqual([200]);
    now = at(59.9);
    expect(await statuses(3)).toEqual([200, 200, "429 rate_limited retry-after=1"]);
    now = at(60.1);
    expect(await statuses(3)).toEqual([200, "429 rate_limited retry-after=60", "429 rate_limited retry-after=60"]);
    expect(stripe.received).toHaveLength(4);

    expect((await kb.admin(`/vault/keys/${key.id}`, { method: "PATCH", body: { max_requests_per_minute: 4 } })).status).toBe(200);
    expect(await statuses(2)).toEqual([200, "429 rate_limited retry-after=60"]);
    now = at(119.9);
    expect(await statuses(3)).toEqual([200, 200, "429 rate_limited retry-after=1"]);
    expect(stripe.received).toHaveLength(7);
  });
});

import { afterAll, beforeAll, expect, test } from "bun:test";
import { runRace } from "../bench/race";
import { ADMIN_TOKEN, startKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, type MockStripe } from "./helpers/mock-stripe";

let kb: Harness;
let stripe: MockStripe;
beforeAll(async () => {
  stripe = await mockStripe().start();
  // The mock shares this process's event loop with 4,000 calls: a generous timeout keeps admitted calls from
  // turning ambiguous on a loaded machine (this test is about admission, not latency).
  kb = await startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url, KEYBRAKE_UPSTREAM_TIMEOUT_MS: "30000" });
});
afterAll(async () => {
  await kb.stop();
  await stripe.stop();
});

// The race bench's correctness half (bench/race.ts): the timing half is printed by `bun run bench`, never asserted.
test("4,000 concurrent priced calls against a cap that admits exactly 137: 137 admitted, zero overspend", async () => {
  const result = await runRace(kb.url, ADMIN_TOKEN, { calls: 4_000, admit: 137 });
  expect(result.otherStatuses).toEqual({});
  expect(result.admitted).toBe(137);
  expect(result.capped).toBe(4_000 - 137);
  expect(result.overspendMicros).toBe(0);
  expect(result.spentMicros).toBe(137 * 29_000_000);
  expect(stripe.count("POST", "/v1/payment_intents")).toBe(137);
}, 120_000);

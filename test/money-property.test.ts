import { afterAll, beforeAll, expect, test } from "bun:test";
import fc from "fast-check";
import { startKeybrake, type Harness } from "./helpers/harness";
import type { Fault } from "./helpers/mock-vendor";
import { mockStripe, type MockStripe } from "./helpers/mock-stripe";

// SPEC §6's one promise as a property: whatever creates, refunds, captures, pays, retries and ambiguous outcomes
// a job throws at one key, concurrently, settled + held never exceeds the cap, and once every ambiguous call is
// retried, the ledger, the audit log and the money the vendor moved agree to the micro-dollar.

let kb: Harness;
let stripe: MockStripe;

beforeAll(async () => {
  stripe = await mockStripe().start();
  kb = await startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url, KEYBRAKE_UPSTREAM_TIMEOUT_MS: "3000" });
});
afterAll(async () => {
  await kb.stop();
  await stripe.stop();
});

type Op =
  | { kind: "charge"; amount: number; capture: boolean }
  | { kind: "refund"; target: number; amount: number | null }
  | { kind: "capture"; target: number }
  | { kind: "foreignCapture"; amount: number }
  | { kind: "invoicePay"; amount: number };

const cents = fc.integer({ min: 100, max: 60_000 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant("charge" as const), amount: cents, capture: fc.boolean() }),
  fc.record({ kind: fc.constant("refund" as const), target: fc.nat(), amount: fc.option(cents, { nil: null }) }),
  fc.record({ kind: fc.constant("capture" as const), target: fc.nat() }),
  fc.record({ kind: fc.constant("foreignCapture" as const), amount: cents }),
  fc.record({ kind: fc.constant("invoicePay" as const), amount: cents }),
);
const faultArb = fc.constantFrom<(Fault & { name: string }) | null>(
  null,
  null,
  { name: "acted, answer lost", kind: "drop_after" },
  { name: "500 before acting", kind: "status", status: 500, body: { error: { type: "api_error", message: "An unknown error occurred." } } },
  {
    name: "declined",
    kind: "status",
    status: 402,
    body: { error: { type: "card_error", code: "card_declined", message: "Your card was declined." } },
  },
);
const scenarioArb = fc.record({
  capUsd: fc.integer({ min: 50, max: 2_000 }),
  batches: fc.array(fc.array(fc.record({ op: opArb, fault: faultArb }), { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 5 }),
});

const AMBIGUOUS = new Set([500, 502, 504]);
let run = 0;

test("random interleavings at one key: settled + held <= cap; ledger = audit = what the vendor moved", async () => {
  await fc.assert(
    fc.asyncProperty(scenarioArb, async ({ capUsd, batches }) => {
      stripe.reset();
      stripe.moved.length = 0;
      run++;
      const key = await kb.issueKey({
        vendor: "stripe",
        daily_usd_cap: capUsd,
        allowed_endpoints: ["POST /v1/*"],
        agent_run_label: `prop/${run}`,
      });
      const charges: string[] = [];
      let n = 0;

      /** One call with its own Idempotency-Key, retried with the same key while its outcome is ambiguous. */
      const call = async (path: string, body: string) => {
        const headers = {
          authorization: `Bearer ${key.vault_key}`,
          "content-type": "application/x-www-form-urlencoded",
          "idempotency-key": `prop-${run}-${++n}`,
        };
        // A batch queues at most 6 faults and one call may meet them all, one attempt after another.
        for (let attempt = 0; attempt < 8; attempt++) {
          const res = await fetch(`${kb.url}${path}`, { method: "POST", headers, body });
          const text = await res.text();
          if (!AMBIGUOUS.has(res.status) && !(res.status === 409 && res.headers.get("x-keybrake-error") === "idempotency_in_flight")) {
            return res.status === 200 ? (JSON.parse(text) as { id: string }) : null;
          }
        }
        throw new Error(`${path} stayed ambiguous`);
      };
      const perform = async (op: Op) => {
        switch (op.kind) {
          case "charge": {
            const charge = await call("/v1/charges", `amount=${op.amount}&currency=usd&capture=${op.capture}`);
            if (charge) charges.push(charge.id);
            return;
          }
          case "refund":
            if (charges.length === 0) return;
            await call("/v1/refunds", `charge=${charges[op.target % charges.length]}${op.amount === null ? "" : `&amount=${op.amount}`}`);
            return;
          case "capture":
            if (charges.length > 0) await call(`/v1/charges/${charges[op.target % charges.length]}/capture`, "");
            return;
          case "foreignCapture":
            await call(`/v1/charges/${stripe.seedCharge(op.amount, "usd", false).id}/capture`, "");
            return;
          case "invoicePay":
            await call(`/v1/invoices/${stripe.seedInvoice(op.amount).id}/pay`, "");
        }
      };

      for (const batch of batches) {
        for (const { fault } of batch) if (fault) stripe.failNext(fault, 1, "POST");
        await Promise.all(batch.map(({ op }) => perform(op)));
        stripe.reset(); // faults meant for ops that sent nothing do not carry over to the next batch
      }

      const capMicros = capUsd * 1_000_000;
      const entries = await kb.readDb((db) =>
        db
          .query<{ state: string; hold_micros: number; cost_micros: number | null }, [string]>(
            "SELECT state, hold_micros, cost_micros FROM ledger_entries WHERE key_id = ?",
          )
          .all(key.id),
      );
      const ledgerMicros = entries.reduce((sum, e) => sum + (e.cost_micros ?? 0), 0);
      const audit = ((await (await kb.admin(`/audit?key_id=${key.id}&limit=1000`)).json()) as { data: { cost_usd: number }[] }).data;
      const auditMicros = audit.reduce((sum, r) => sum + Math.round(r.cost_usd * 1e6), 0);
      const movedMicros = stripe.moved.reduce((sum, m) => sum + m.amount * 10_000, 0);

      expect(entries.filter((e) => e.state === "held" || e.state === "ambiguous" || e.state === "orphaned")).toEqual([]);
      expect(ledgerMicros).toBeLessThanOrEqual(capMicros);
      expect(ledgerMicros).toBe(auditMicros);
      expect(ledgerMicros).toBe(movedMicros);
    }),
    { numRuns: 25 },
  );
}, 120_000);

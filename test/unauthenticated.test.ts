import { describe, expect, test } from "bun:test";
import { UnauthenticatedDenials } from "../src/proxy/unauthenticated";
import { type AuditRow, auditRow } from "../src/store/index";

const MINUTE = 60_000;
const T0 = Date.UTC(2026, 10, 27, 12, 0, 0);

function denial(clientIp: string | null, at: number, path = "/v1/payment_intents"): AuditRow {
  return auditRow({
    id: `kbr_${Math.random()}`,
    at,
    vendor: "stripe",
    method: "POST",
    path,
    status: 401,
    decision: "invalid_key",
    idempotencyKey: "k",
    overheadMs: 0.1,
    clientIp,
  });
}

function setup(maxClients?: number) {
  const written: AuditRow[] = [];
  let now = T0;
  const denials = new UnauthenticatedDenials(
    { recordAudit: async (row) => void written.push(row) },
    () => now,
    () => {},
    maxClients,
  );
  const summary = () => written.map((r) => [r.clientIp, r.requests ?? 1, r.path, r.idempotencyKey]);
  return { denials, written, summary, setNow: (t: number) => (now = t) };
}

describe("UnauthenticatedDenials", () => {
  test("per client and minute: the first is a row, the rest one row with their count, written when the minute is over", async () => {
    const { denials, summary, setNow } = setup();
    for (let i = 0; i < 5; i++) await denials.record(denial("10.0.0.1", T0 + i));
    await denials.record(denial("10.0.0.2", T0 + 10, "/emails"));
    await denials.record(denial("10.0.0.1", T0 + 20, "/v1/refunds"));
    expect(summary()).toEqual([
      ["10.0.0.1", 1, "/v1/payment_intents", "k"],
      ["10.0.0.2", 1, "/emails", "k"],
    ]);

    setNow(T0 + MINUTE);
    await denials.record(denial("10.0.0.1", T0 + MINUTE));
    // Where the counted requests differed, the aggregate says "*"; no client-chosen header is carried.
    expect(summary().slice(2)).toEqual([
      ["10.0.0.1", 5, "*", null],
      ["10.0.0.1", 1, "/v1/payment_intents", "k"],
    ]);
    denials.flush();
    expect(summary()).toHaveLength(4); // 10.0.0.2 had nothing beyond its first; 10.0.0.1's new minute neither
  });

  test("a timer writes the tallies once the minute is over, with no further request", async () => {
    const { denials, summary, setNow } = setup();
    setNow(T0 + MINUTE - 50);
    for (let i = 0; i < 3; i++) await denials.record(denial("10.0.0.1", T0 + MINUTE - 50));
    setNow(T0 + MINUTE + 10);
    await Bun.sleep(250); // the timer fires 100 ms after the minute's end, as the clock saw it
    expect(summary()).toEqual([
      ["10.0.0.1", 1, "/v1/payment_intents", "k"],
      ["10.0.0.1", 2, "/v1/payment_intents", null],
    ]);
    denials.flush();
  });

  test("past the client limit, new clients share one '*' tally: memory stays bounded", async () => {
    const { denials, summary } = setup(2);
    for (let round = 0; round < 3; round++) for (let c = 1; c <= 50; c++) await denials.record(denial(`10.0.0.${c}`, T0 + round));
    denials.flush();
    const rows = summary();
    expect(rows.filter((r) => r[1] === 1).map((r) => r[0])).toEqual(["10.0.0.1", "10.0.0.2", "10.0.0.3"]); // 10.0.0.3 opened '*'
    expect(rows.filter((r) => r[1] !== 1)).toEqual([
      ["10.0.0.1", 2, "/v1/payment_intents", null],
      ["10.0.0.2", 2, "/v1/payment_intents", null],
      ["*", 143, "/v1/payment_intents", null],
    ]);
    expect(rows.reduce((sum, r) => sum + (r[1] as number), 0)).toBe(150);
  });
});

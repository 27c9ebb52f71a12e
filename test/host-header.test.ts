import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { startKeybrake, type Harness } from "./helpers/harness";
import { mockStripe, type MockStripe } from "./helpers/mock-stripe";

// SPEC §4: the upstream is fixed, so any Host header, or none, gives the outcome a normal one gives.
let kb: Harness;
let stripe: MockStripe;
let vaultKey: string;

beforeAll(async () => {
  stripe = await mockStripe().start();
  kb = await startKeybrake({ KEYBRAKE_STRIPE_BASE_URL: stripe.url });
  const key = await kb.issueKey({
    vendor: "stripe",
    total_usd_cap: 10_000,
    allowed_endpoints: ["POST /v1/payment_intents", "GET /v1/customers"],
  });
  vaultKey = key.vault_key;
});
afterAll(async () => {
  await kb.stop();
  await stripe.stop();
});
beforeEach(() => stripe.reset());

/** One request written byte for byte (`hostLine` null: no Host header at all); the status of the answer. */
function send(requestLine: string, hostLine: string | null, body = ""): Promise<number> {
  const { port } = new URL(kb.url);
  const head = [
    requestLine,
    ...(hostLine === null ? [] : [hostLine]),
    `Authorization: Bearer ${vaultKey}`,
    "Content-Type: application/x-www-form-urlencoded",
    `Content-Length: ${body.length}`,
    "Connection: close",
  ].join("\r\n");
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), "127.0.0.1", () => socket.write(Buffer.from(`${head}\r\n\r\n${body}`, "latin1")));
    let data = "";
    socket.on("data", (chunk) => (data += chunk.toString("latin1")));
    socket.on("error", reject);
    socket.on("close", () => resolve(Number(/^HTTP\/1\.[01] (\d{3})/.exec(data)?.[1] ?? 0)));
  });
}

const HOSTS: [string, () => string][] = [
  ["a normal Host", () => `Host: ${new URL(kb.url).host}`],
  ["Host in capitals", () => "Host: LOCALHOST"],
  ["Host with an explicit :80", () => "Host: localhost:80"],
  ["a Host shorter than four characters", () => "Host: ab"],
  ["an empty Host", () => "Host: "],
  ["a Host with a space", () => "Host: a b"],
  ["a non-ASCII Host", () => "Host: h\u00f4te.example"],
  ["a Host with an out-of-range port", () => "Host: localhost:99999"],
  ["a Host with a slash", () => "Host: x/y"],
];

describe("any Host header gives the same outcome", () => {
  for (const [what, host] of HOSTS) {
    test(`${what}: /stripe/v1/payment_intents is forwarded (200) and a bare /v1/customers too`, async () => {
      expect(await send("POST /stripe/v1/payment_intents HTTP/1.1", host(), "amount=2900&currency=usd")).toBe(200);
      expect(await send("GET /v1/customers?limit=3 HTTP/1.1", host())).toBe(200);
      expect(stripe.received.map((r) => `${r.method} ${r.path}${r.search}`)).toEqual([
        "POST /v1/payment_intents",
        "GET /v1/customers?limit=3",
      ]);
    });
  }

  test("HTTP/1.0 without a Host header is served like any other call", async () => {
    expect(await send("POST /stripe/v1/payment_intents HTTP/1.0", null, "amount=2900&currency=usd")).toBe(200);
    expect(await send("GET /v1/customers HTTP/1.0", null)).toBe(200);
    expect(stripe.received.map((r) => `${r.method} ${r.path}`)).toEqual(["POST /v1/payment_intents", "GET /v1/customers"]);
  });

  test("no Host header logs an unexpected error", () => {
    expect(kb.logs.filter((l) => l.includes("unexpected error"))).toEqual([]);
  });
});

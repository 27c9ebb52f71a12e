import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { tracingRequested } from "../src/ops/tracing";
import { ensureBinary } from "./helpers/binary";
import { ADMIN_TOKEN } from "./helpers/harness";
import { type MockStripe, mockStripe, STRIPE_LIVE_SECRET } from "./helpers/mock-stripe";
import { type Started, startProcess } from "./helpers/process";
import { waitFor } from "./helpers/receiver";

/**
 * OpenTelemetry (SPEC §19) in the built binary: with OTEL_EXPORTER_OTLP_ENDPOINT set, a local OTLP/HTTP receiver
 * gets one trace per proxied call (`keybrake.proxy` and its stages) with the call's vendor, key, label, decision,
 * price and cost, continuing the job's `traceparent`; the vendor receives a traceparent in the job's trace.
 */

type Json = Record<string, any>;
type OtlpSpan = { traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number; attributes: Json[] };

let dir: string;
let stripe: MockStripe;
let receiver: ReturnType<typeof Bun.serve>;
const spans: OtlpSpan[] = [];
const exports: { path: string; contentType: string | null }[] = [];
let kb: Started;

const JOB_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const JOB_SPAN = "00f067aa0ba902b7";

/** An OTLP attribute's value, whatever its type. */
const attr = (span: OtlpSpan, key: string) => {
  const v = span.attributes.find((a) => a.key === key)?.value;
  return v && (v.stringValue ?? v.doubleValue ?? (v.intValue === undefined ? undefined : Number(v.intValue)));
};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "keybrake-tracing-"));
  stripe = await mockStripe().start();
  receiver = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      exports.push({ path: new URL(req.url).pathname, contentType: req.headers.get("content-type") });
      const body = (await req.json()) as Json;
      for (const rs of body.resourceSpans ?? []) for (const ss of rs.scopeSpans ?? []) spans.push(...ss.spans);
      return Response.json({});
    },
  });
  kb = await startProcess([await ensureBinary()], {
    cwd: dir,
    env: {
      KEYBRAKE_DB: join(dir, "keybrake.db"),
      KEYBRAKE_PORT: "0",
      KEYBRAKE_HOST: "127.0.0.1",
      KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
      KEYBRAKE_STRIPE_SECRET_KEY: STRIPE_LIVE_SECRET,
      KEYBRAKE_STRIPE_BASE_URL: stripe.url,
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiver.port}`,
      OTEL_BSP_SCHEDULE_DELAY: "50",
      OTEL_SERVICE_NAME: "keybrake-test",
    },
  });
}, 120_000);
afterAll(async () => {
  kb?.proc.kill("SIGKILL");
  await stripe?.stop();
  await receiver?.stop(true);
  rmSync(dir, { recursive: true, force: true });
});

describe("traces of proxied calls, exported as OTLP/HTTP JSON by the built binary", () => {
  test("one trace per call: keybrake.proxy and its hold, upstream and settle, in the job's trace, with the call's money", async () => {
    const issued = await fetch(`${kb.url}/vault/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({
        vendor: "stripe",
        daily_usd_cap: 100,
        allowed_endpoints: ["POST /v1/payment_intents"],
        label: "celery/task-7",
        expires_in: "1h",
      }),
    });
    const key = (await issued.json()) as Json;
    stripe.reset();
    const call = await fetch(`${kb.url}/stripe/v1/payment_intents`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${key.vault_key}`,
        "content-type": "application/x-www-form-urlencoded",
        traceparent: `00-${JOB_TRACE}-${JOB_SPAN}-01`,
      },
      body: "amount=2900&currency=usd",
    });
    expect(call.status).toBe(200);
    await waitFor(() => spans.some((s) => s.name === "keybrake.proxy"), 10_000, "the call's spans");
    expect(kb.stderr()).toContain("tracing: one span per proxied call, exported as OTLP/HTTP JSON");
    expect(exports[0]).toEqual({ path: "/v1/traces", contentType: "application/json" });

    const proxy = spans.find((s) => s.name === "keybrake.proxy")!;
    // The job's trace continued: same trace id, the job's span as parent; a server span.
    expect(proxy).toMatchObject({ traceId: JOB_TRACE, parentSpanId: JOB_SPAN, kind: 2 });
    expect(attr(proxy, "keybrake.vendor")).toBe("stripe");
    expect(attr(proxy, "keybrake.key_id")).toBe(key.id);
    expect(attr(proxy, "keybrake.label")).toBe("celery/task-7");
    expect(attr(proxy, "keybrake.decision")).toBe("allowed");
    expect(attr(proxy, "keybrake.price.usd")).toBe(29);
    expect(attr(proxy, "keybrake.cost.usd")).toBe(29);
    expect(attr(proxy, "keybrake.request_id")).toBe(call.headers.get("x-keybrake-request-id"));
    const children = spans.filter((s) => s.parentSpanId === proxy.spanId);
    expect(children.map((s) => s.name).sort()).toEqual(["keybrake.hold", "keybrake.settle", "keybrake.upstream"]);
    expect(children.every((s) => s.traceId === JOB_TRACE)).toBe(true);

    // The vendor got a traceparent of the job's trace, naming Keybrake's upstream span.
    const upstream = children.find((s) => s.name === "keybrake.upstream")!;
    const sent = stripe.received.find((r) => r.path === "/v1/payment_intents")!;
    expect(sent.headers.traceparent).toBe(`00-${JOB_TRACE}-${upstream.spanId}-01`);
  }, 30_000);

  test("a refused call is traced too, its decision the refusal's code; a call without a traceparent starts its own trace", async () => {
    const before = spans.length;
    const refused = await fetch(`${kb.url}/stripe/v1/payment_intents`, {
      method: "POST",
      headers: { authorization: "Bearer kb_live_nope" },
    });
    expect(refused.status).toBe(401);
    await waitFor(() => spans.slice(before).some((s) => s.name === "keybrake.proxy"), 10_000, "the refusal's span");
    const proxy = spans.slice(before).find((s) => s.name === "keybrake.proxy")!;
    expect(attr(proxy, "keybrake.decision")).toBe("invalid_key");
    expect(proxy.parentSpanId ?? "").toBe("");
    expect(proxy.traceId).not.toBe(JOB_TRACE);
  }, 30_000);
});

test("tracing is on only when the OTEL_* variables ask for an OTLP export", () => {
  expect(tracingRequested({})).toBe(false);
  expect(tracingRequested({ OTEL_SERVICE_NAME: "x" })).toBe(false);
  expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" })).toBe(true);
  expect(tracingRequested({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://c:4318/v1/traces" })).toBe(true);
  expect(tracingRequested({ OTEL_TRACES_EXPORTER: "otlp" })).toBe(true);
  expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_TRACES_EXPORTER: "none" })).toBe(false);
  expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_SDK_DISABLED: "true" })).toBe(false);
});

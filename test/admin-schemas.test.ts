import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { z } from "zod";
import { KeybrakeError } from "../src/errors";
import { CreateKeyBody } from "../src/keys/model";
import { createApp } from "../src/server";
import { parseInput } from "../src/validation";
import { registeredVendors } from "../src/vendors/index";
import { ADMIN_TOKEN, startKeybrake, type Harness } from "./helpers/harness";

// Each admin route declares its zod schemas once, on the route: Elysia validates with them (the central onError
// turns a refusal into 400 invalid_request with the field paths) and /docs/json is built from them.

type Json = Record<string, any>;
let kb: Harness;
let spec: Json;
beforeAll(async () => {
  kb = await startKeybrake();
  spec = (await (await fetch(`${kb.url}/docs/json`)).json()) as Json;
});
afterAll(() => kb.stop());

const valid = {
  vendor: "stripe",
  daily_usd_cap: 500,
  allowed_endpoints: ["POST /v1/payment_intents"],
  expires_in: "6h",
  agent_run_label: "schemas/run_1",
};

/** Every admin route, with whether it reads a body or a query. */
const ADMIN_ROUTES: [method: string, path: string, input: "body" | "query" | null][] = [
  ["post", "/vault/keys", "body"],
  ["get", "/vault/keys", "query"],
  ["post", "/vault/keys/revoke", "body"],
  ["get", "/vault/keys/{id}", null],
  ["patch", "/vault/keys/{id}", "body"],
  ["delete", "/vault/keys/{id}", null],
  ["post", "/v1/keys", "body"],
  ["delete", "/v1/keys/{id}", null],
  ["post", "/budgets", "body"],
  ["get", "/budgets", null],
  ["get", "/budgets/{id}", null],
  ["patch", "/budgets/{id}", "body"],
  ["delete", "/budgets/{id}", null],
  ["get", "/vault/holds", "query"],
  ["post", "/vault/holds/{id}/settle", "body"],
  ["post", "/vault/holds/{id}/release", null],
  ["get", "/audit", "query"],
  ["get", "/audit/spend", "query"],
  ["get", "/audit/export", "query"],
  ["get", "/admin/events", "query"],
  ["post", "/admin/tokens", "body"],
  ["get", "/admin/tokens", "query"],
  ["get", "/admin/tokens/{id}", null],
  ["delete", "/admin/tokens/{id}", "query"],
];

const errorBodySchema = (response: Json) => response.content["application/json"].schema;

describe("/docs/json, from the routes' schemas", () => {
  test("POST /vault/keys documents its JSON body: each field's type, the required ones, no others", () => {
    const op = spec.paths["/vault/keys"].post;
    expect(op.requestBody.required).toBe(true);
    expect(Object.keys(op.requestBody.content)).toEqual(["application/json"]);
    const body = op.requestBody.content["application/json"].schema;
    expect(body.type).toBe("object");
    expect(body.additionalProperties).toBe(false);
    expect([...body.required].sort()).toEqual(["allowed_endpoints", "vendor"]);
    expect(Object.keys(body.properties).sort()).toEqual(Object.keys(CreateKeyBody.shape).sort());
    const p = body.properties;
    expect(p.vendor.type).toBe("string");
    expect([...p.vendor.enum].sort()).toEqual(
      registeredVendors()
        .map((v) => v.name)
        .sort(),
    );
    expect(p.vendor.enum).toEqual(expect.arrayContaining(["stripe", "twilio", "resend"]));
    expect(p.daily_usd_cap).toMatchObject({ type: "number" });
    expect(p.total_usd_cap).toMatchObject({ type: "number" });
    expect(p.allowed_endpoints).toMatchObject({ type: "array", items: { type: "string" }, minItems: 1, maxItems: 100 });
    expect(p.expires_in).toMatchObject({ type: "string" }); // a duration as written, not the milliseconds it becomes
    expect(p.expires_at).toMatchObject({ type: "string", format: "date-time" });
    expect(p.agent_run_label).toMatchObject({ type: "string", maxLength: 200 });
    expect(p.mode).toMatchObject({ type: "string", enum: ["live", "test"], default: "live" });
    expect(p.max_requests_per_minute).toMatchObject({ type: "integer", minimum: 1 });
    expect(p.require_idempotency_key).toMatchObject({ type: "boolean" });
    expect(p.metadata).toMatchObject({ type: "object", additionalProperties: { type: "string" } });
  });

  test("POST /vault/keys documents its 201 answer (the record and the secret) and the contract's error body", () => {
    const { responses } = spec.paths["/vault/keys"].post;
    expect(Object.keys(responses).sort()).toEqual(["201", "400", "401", "403"]);
    const issued = responses["201"].content["application/json"].schema;
    expect(responses["201"].description).toContain("shown this once");
    expect(issued.type).toBe("object");
    for (const field of [
      "id",
      "vault_key",
      "token",
      "vendor",
      "label",
      "daily_usd_cap",
      "total_usd_cap",
      "allowed_endpoints",
      "mode",
      "status",
      "created_at",
      "expires_at",
    ]) {
      expect(issued.required).toContain(field);
      expect(issued.properties).toHaveProperty(field);
    }
    expect(issued.properties.vault_key).toEqual({ type: "string" });
    expect(issued.properties.daily_usd_cap.type).toEqual(["number", "null"]);
    expect(issued.properties.allowed_endpoints).toMatchObject({ type: "array", items: { type: "string" } });
    expect(issued.properties.status).toMatchObject({ type: "string", enum: ["active", "revoked", "expired"] });
    const error = errorBodySchema(responses["400"]);
    expect(error.required).toEqual(["code", "message", "error"]);
    expect(error.properties.error.properties.type).toMatchObject({ const: "keybrake_error" });
    expect(responses["400"].description).toContain("invalid_request");
  });

  test("every admin route: its input's schema, its answers, the contract's error body, the bearer scheme", () => {
    expect(spec.components.securitySchemes.adminToken).toMatchObject({ type: "http", scheme: "bearer" });
    for (const [method, path, input] of ADMIN_ROUTES) {
      const op = spec.paths[path]?.[method];
      expect({ route: `${method} ${path}`, documented: op !== undefined }).toEqual({ route: `${method} ${path}`, documented: true });
      expect(op.security).toEqual([{ adminToken: [] }]);
      const ok = Object.keys(op.responses).find((s) => s.startsWith("2"))!;
      expect(op.responses[ok].content).toBeObject();
      for (const status of ["401", ...(input ? ["400"] : [])]) {
        expect(errorBodySchema(op.responses[status]).properties.error.properties.type.const).toBe("keybrake_error");
      }
      if (input === "body") {
        const schema = op.requestBody.content["application/json"].schema;
        for (const shape of schema.anyOf ?? [schema]) expect(Object.keys(shape.properties).length).toBeGreaterThan(0);
      }
      if (input === "query") {
        const query = op.parameters.filter((p: Json) => p.in === "query");
        expect(query.length).toBeGreaterThan(0);
        for (const q of query) expect(q.schema).toBeObject();
      }
      if (path.includes("{id}")) expect(op.parameters).toContainEqual(expect.objectContaining({ name: "id", in: "path", required: true }));
    }
    // Query numbers are documented as what they are, even though they arrive as strings.
    const limit = spec.paths["/audit"].get.parameters.find((p: Json) => p.name === "limit");
    expect(limit.schema).toMatchObject({ type: "integer", minimum: 1, maximum: 1000, default: 100 });
  });
});

describe("invalid input on every admin route with one: 400 invalid_request naming the field", () => {
  const cases: [method: string, path: string, input: unknown, field: string][] = [
    ["POST", "/vault/keys", { ...valid, daily_usd_cap: 0 }, "daily_usd_cap"],
    ["POST", "/vault/keys", { ...valid, allowed_endpoints: ["POST v1/x"] }, "allowed_endpoints.0"],
    ["POST", "/vault/keys", { ...valid, colour: "red" }, "colour"],
    ["POST", "/v1/keys", { ...valid, vendor: "paypal" }, "vendor"],
    ["POST", "/vault/keys/revoke", { label_prefix: "" }, "label_prefix"],
    ["POST", "/vault/keys/revoke", { ids: [] }, "ids"],
    ["PATCH", "/vault/keys/vk_nope", { daily_usd_cap: -1 }, "daily_usd_cap"],
    ["PATCH", "/vault/keys/vk_nope", { vendor: "twilio" }, "vendor"],
    ["PATCH", "/vault/keys/vk_nope", {}, "body"],
    ["POST", "/vault/keys", { ...valid, per_customer_usd_cap: -1 }, "per_customer_usd_cap"],
    ["POST", "/budgets", { name: "no-cap" }, "total_usd_cap"],
    ["PATCH", "/budgets/bud_nope", { parent_id: "bud_other" }, "parent_id"],
    ["POST", "/vault/holds/hold_nope/settle", { cost_usd: -1 }, "cost_usd"],
    ["POST", "/vault/holds/hold_nope/settle", { cost: 1 }, "cost"],
    ["GET", "/vault/keys?limit=0", undefined, "limit"],
    ["GET", "/vault/keys?status=dead", undefined, "status"],
    ["GET", "/vault/holds?state=gone", undefined, "state"],
    ["GET", "/audit?since=yesterday", undefined, "since"],
    ["GET", "/audit?colour=red", undefined, "colour"],
    ["GET", "/audit/spend?group_by=colour", undefined, "group_by"],
    ["GET", "/audit/export?format=xml", undefined, "format"],
    ["GET", "/admin/events?cursor=-1", undefined, "cursor"],
  ];
  for (const [method, path, input, field] of cases) {
    test(`${method} ${path} ${input === undefined ? "" : JSON.stringify(input)} -> ${field}`, async () => {
      const res = await kb.admin(path, { method, body: input });
      expect(res.status).toBe(400);
      expect(res.headers.get("x-keybrake-error")).toBe("invalid_request");
      const body = (await res.json()) as Json;
      expect(body).toMatchObject({ code: "invalid_request", error: { type: "keybrake_error", code: "invalid_request" } });
      expect(body.message).toStartWith(`Invalid ${input === undefined ? "query" : "body"}: `);
      const fields = body.error.details.fields as { path: string; message: string }[];
      expect(fields.map((f) => f.path)).toContain(field);
      for (const f of fields) expect(f.message).toBeString();
    });
  }

  test("the same fields as the CLI gets from the same schema (one mapping of zod issues)", async () => {
    for (const body of [
      { ...valid, daily_usd_cap: 0, colour: "red" },
      { ...valid, allowed_endpoints: [42, "/v1//x"] },
      { vendor: "paypal" },
    ]) {
      const res = await kb.admin("/vault/keys", { body });
      const fields = ((await res.json()) as Json).error.details.fields;
      let cli: KeybrakeError | undefined;
      try {
        parseInput(CreateKeyBody, body, "body");
      } catch (err) {
        cli = err as KeybrakeError;
      }
      expect(cli).toBeInstanceOf(KeybrakeError);
      expect(cli!.details).toEqual({ fields });
    }
  });

  test("a refused body changed nothing; the token is checked before the body", async () => {
    const key = await kb.issueKey(valid);
    await kb.admin(`/vault/keys/${key.id}`, { method: "PATCH", body: { daily_usd_cap: 1, colour: "red" } });
    expect(((await (await kb.admin(`/vault/keys/${key.id}`)).json()) as Json).daily_usd_cap).toBe(500);
    const res = await fetch(`${kb.url}/vault/keys`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ colour: "red" }),
    });
    expect(res.status).toBe(401);
  });

  test("valid input passes through, coerced and defaulted as the schema says", async () => {
    const res = await kb.admin(`/vault/keys?limit=2&label_prefix=schemas/`);
    expect(res.status).toBe(200);
    expect(((await res.json()) as Json).data.length).toBeLessThanOrEqual(2);
    expect((await kb.admin("/vault/holds/hold_nope/settle", { body: {} })).status).toBe(404);
    // Settling at the hold needs no body at all.
    expect(
      (await fetch(`${kb.url}/vault/holds/hold_nope/settle`, { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }))
        .status,
    ).toBe(404);
    expect((await kb.admin("/vault/keys/vk_nope", { method: "PATCH", body: { daily_usd_cap: 1 } })).status).toBe(404);
  });
});

test("an answer that does not match its route's schema is Keybrake's bug: 500 internal_error, logged with the path", async () => {
  const logs: string[] = [];
  const app = createApp(kb.config, kb.store, { log: (m) => logs.push(m) }).get("/test/drifted", () => ({ calls: "3" }) as never, {
    response: { 200: z.object({ calls: z.number() }) },
  });
  const res = await app.handle(new Request("http://localhost/test/drifted"));
  expect(res.status).toBe(500);
  expect(res.headers.get("x-keybrake-error")).toBe("internal_error");
  expect(logs.join("\n")).toContain("calls: ");
});

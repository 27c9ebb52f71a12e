import type { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { Elysia } from "elysia";
import { z } from "zod";
import { accessGuard, type Authenticator, type Caller } from "../auth/admin-auth";
import { errorBody, KeybrakeError } from "../errors";
import { CreateKeyBody, ListKeysQuery } from "../keys/model";
import * as keys from "../keys/service";
import { routeDoc } from "../ops/openapi";
import type { Store } from "../store/index";
import { VERSION } from "../version";

/**
 * MCP (SPEC §17): `POST /mcp`, the Streamable HTTP transport without sessions (each POST is answered on its own, as
 * JSON), for agents that ask for the vault key they need. Authenticated like the admin API, by an admin or issuer
 * token: an issuer's policy bounds what `mint_vault_key` mints exactly as on POST /vault/keys (the same schema and
 * service), and its keys are the only ones it revokes or reads.
 */

const INSTRUCTIONS = `Keybrake holds the real Stripe, Twilio, Resend, OpenAI and Anthropic secrets. Call mint_vault_key for a short-lived vault key capped in USD, then call the vendor through Keybrake with that key (e.g. stripe.api_base = "<keybrake>/stripe"); price_call tells what a call would cost and whether the key allows it, without making it; spend_status reads what a key spent and has left; revoke_vault_key when done. A refusal names the rule of your token's policy it broke: ask for less, not again.`;

/** A tool's answer: the JSON as text (what every client shows a model) and as structured content. */
const answer = (value: Record<string, unknown>, isError = false): CallToolResult => ({
  content: [{ type: "text", text: JSON.stringify(value) }],
  structuredContent: value,
  ...(isError && { isError }),
});

/** Keybrake's refusals as tool errors with the contract's error body (`error.details.rule` for a policy's); anything else is thrown. */
async function tool(run: () => Promise<Record<string, unknown>>): Promise<CallToolResult> {
  try {
    return answer(await run());
  } catch (err) {
    if (!(err instanceof KeybrakeError)) throw err;
    return answer({ ...errorBody(err.code, err.message, err.details) }, true);
  }
}

const RevokeInput = z.strictObject({
  id: z
    .string()
    .min(1)
    .meta({ description: "The key's id (vk_…), as mint_vault_key answered it", examples: ["vk_8mJq2LwXc4Rt6YpN0aZb1Hs3"] }),
});

const SpendInput = z.strictObject({
  id: z.string().min(1).optional().meta({ description: "One key (vk_…); without it, the active keys this token minted" }),
  label_prefix: z
    .string()
    .min(1)
    .optional()
    .meta({ description: "Only keys whose run label starts with this", examples: ["agent/"] }),
});

const PriceInput = z.strictObject({
  vault_key: z.string().min(1).meta({ description: "The vault key the call would use (kb_live_… or kb_test_…)" }),
  method: z
    .string()
    .default("POST")
    .meta({ description: "The HTTP method", examples: ["POST"] }),
  path: z
    .string()
    .regex(/^\//, "must start with /")
    .meta({ description: "The vendor path with its prefix, as the job calls it through Keybrake", examples: ["/stripe/v1/refunds"] }),
  body: z
    .union([z.string(), z.record(z.string(), z.unknown())])
    .optional()
    .meta({
      description: "The request body: an object is sent as JSON, a string as given (form-encoded unless content_type says otherwise)",
      examples: ["charge=ch_3PqQ1c2eZvKYlo2C0bGk"],
    }),
  content_type: z
    .string()
    .optional()
    .meta({ description: "The body's Content-Type, when not the default", examples: ["application/json"] }),
  idempotency_key: z.string().optional().meta({ description: "The Idempotency-Key the real call would carry" }),
});

interface McpDeps {
  store: Store;
  now: () => number;
  /** Answers a proxied request as the proxy's own routes do: price_call's dry run goes the way a job's call goes. */
  proxy: (request: Request) => Promise<Response>;
}

/**
 * The MCP SDK, loaded by the first POST /mcp rather than at start: evaluating it takes about as long as the rest
 * of Keybrake's start-up, for a route most deployments never call.
 */
const loadSdk = () =>
  Promise.all([
    import("@modelcontextprotocol/sdk/server/mcp.js"),
    import("@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js"),
  ]).then(([mcp, http]) => ({ McpServer: mcp.McpServer, Transport: http.WebStandardStreamableHTTPServerTransport }));
let sdk: ReturnType<typeof loadSdk> | undefined;

/** The tools, for one request's caller. */
function mcpServer(deps: McpDeps, caller: Caller, Server: typeof McpServer): McpServer {
  const ctx = { store: deps.store, now: deps.now, actor: caller.fingerprint, caller };
  const server = new Server({ name: "keybrake", version: VERSION }, { instructions: INSTRUCTIONS });
  server.registerTool(
    "mint_vault_key",
    {
      title: "Mint a vault key",
      description:
        "A vault key for one vendor, capped in USD (daily_usd_cap and/or total_usd_cap), for the endpoints in allowed_endpoints, expiring after expires_in. Exactly POST /vault/keys: the token's issuer policy applies (a refusal is issuer_policy_violation naming the rule). Answers the key record with `vault_key`, shown this once.",
      inputSchema: CreateKeyBody,
    },
    (body) => tool(() => keys.issueKey(ctx, body)),
  );
  server.registerTool(
    "revoke_vault_key",
    {
      title: "Revoke a vault key",
      description: "Revokes a key this token minted (an admin token: any key); its very next call is refused. Idempotent.",
      inputSchema: RevokeInput,
      annotations: { destructiveHint: true, idempotentHint: true },
    },
    ({ id }) => tool(() => keys.revokeKey(ctx, id)),
  );
  server.registerTool(
    "spend_status",
    {
      title: "Spend of vault keys",
      description:
        "What a key spent today and overall, what it holds for calls in flight, what remains under its daily cap (remaining_today_usd), its calls and status; without an id, the active keys this token minted.",
      inputSchema: SpendInput,
      annotations: { readOnlyHint: true },
    },
    ({ id, label_prefix }) =>
      tool(async () =>
        id !== undefined
          ? keys.getKey(ctx, id)
          : { data: (await keys.listKeys(ctx, ListKeysQuery.parse({ label_prefix, status: "active" }))).data },
      ),
  );
  server.registerTool(
    "price_call",
    {
      title: "Price a call (dry run)",
      description:
        "What a vendor call would cost and whether the vault key allows it, without making it: every check and the pricing run (a pre-flight read of the object included), nothing is held or forwarded. Answers { dry_run, decision: allowed or the refusal's code, price_usd, price_class, remaining_today_usd, budget_id, approval_required }.",
      inputSchema: PriceInput,
      annotations: { readOnlyHint: true },
    },
    async (call) => {
      const headers = new Headers({ authorization: `Bearer ${call.vault_key}`, "x-keybrake-dry-run": "1" });
      const body = typeof call.body === "object" ? JSON.stringify(call.body) : call.body;
      if (body !== undefined) {
        headers.set(
          "content-type",
          call.content_type ?? (typeof call.body === "object" ? "application/json" : "application/x-www-form-urlencoded"),
        );
      }
      if (call.idempotency_key !== undefined) headers.set("idempotency-key", call.idempotency_key);
      // The proxy reads only the path of a request's URL: its host is a placeholder.
      const res = await deps.proxy(new Request(`http://keybrake${call.path}`, { method: call.method.toUpperCase(), headers, body }));
      const verdict = (await res.json().catch(() => ({ code: "not_found", message: `${call.path} is not a vendor path` }))) as Record<
        string,
        unknown
      >;
      return answer(verdict, res.headers.get("x-keybrake-dry-run") !== "true");
    },
  );
  return server;
}

export function mcpRoutes(deps: McpDeps, auth: Authenticator) {
  const hooks = {
    // The transport reads the JSON-RPC body itself.
    parse: "none" as const,
    ...routeDoc({
      summary: "MCP (Streamable HTTP): mint_vault_key, revoke_vault_key, spend_status, price_call",
      tags: ["MCP"],
      ok: [200, z.unknown(), "A JSON-RPC answer (Model Context Protocol, Streamable HTTP without sessions)"],
      access: ["admin", "issuer"],
      issuer: "within its policy, its own keys",
      policy: true,
      description:
        'For AI agents: point an MCP client at this URL with `Authorization: Bearer <token>` (README "MCP"). `mint_vault_key` takes the POST /vault/keys body and applies the token\'s policy exactly as that route does; `revoke_vault_key` and `spend_status` reach the keys the token minted; `price_call` is a dry run of a vendor call. Each POST is answered on its own (no sessions), as JSON.',
    }),
  };
  // Without sessions there is no stream for the server to push on: GET and DELETE are not offered (MCP allows 405).
  const notOfferedDoc = (method: string) =>
    routeDoc({
      summary: `MCP: ${method} is not offered (405)`,
      tags: ["MCP"],
      ok: [405, z.string(), "POST /mcp only: no sessions, no stream pushed by the server"],
      access: ["admin", "issuer"],
    });
  const notOffered = () =>
    new Response("POST /mcp only: this MCP server keeps no sessions and pushes no stream.\n", {
      status: 405,
      headers: { allow: "POST", "content-type": "text/plain; charset=utf-8" },
    });
  return new Elysia({ name: "mcp", seed: deps })
    .use(accessGuard(auth))
    .post(
      "/mcp",
      async ({ request, caller }) => {
        sdk ??= loadSdk();
        const { McpServer, Transport } = await sdk;
        const server = mcpServer(deps, caller, McpServer);
        const transport = new Transport({ enableJsonResponse: true });
        await server.connect(transport);
        try {
          return await transport.handleRequest(request);
        } finally {
          await server.close();
        }
      },
      hooks,
    )
    .get("/mcp", notOffered, notOfferedDoc("GET"))
    .delete("/mcp", notOffered, notOfferedDoc("DELETE"));
}

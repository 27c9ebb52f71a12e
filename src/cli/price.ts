import { readFileSync } from "node:fs";
import type { Config } from "../config";
import { parseFlags, UsageError } from "./args";
import { writeErr, writeOut } from "./io";
import { printRecord } from "./output";

export const PRICE_USAGE = `usage: keybrake price --key <vault key> [--base-url URL] METHOD PATH [-d BODY] [-H "Name: value"]... [--json]

Asks a running Keybrake what a call would cost and whether the key allows it, without making it: the call is
sent with X-Keybrake-Dry-Run: 1 (README "Dry runs"), so it is checked and priced as for real (a pre-flight read
of a refunded charge included) against the key's caps and budgets, and nothing is held or forwarded.

  --key K             the vault key to test (kb_live_… or kb_test_…)
  --base-url URL      Keybrake's address (default http://127.0.0.1:KEYBRAKE_PORT)
  METHOD PATH         e.g. POST /v1/refunds, or with the vendor's prefix: POST /stripe/v1/refunds
  -d, --data BODY     the body: JSON when it starts with { or [, else form-encoded (as curl -d); @FILE reads a file
  -H, --header H      a header, repeatable: "Idempotency-Key: run_1-cus_1", "Content-Type: …"
  --json              the verdict as JSON

Exits 0 when the call would be allowed, 1 when it would be refused (the decision says why), 2 on a bad command line.

example:
  keybrake price --key "$VAULT_KEY" POST /v1/refunds -d charge=ch_3PqQ1c2eZvKYlo2C0bGk`;

/** Where the local server listens, as `keybrake healthcheck` reaches it. */
export function localUrl(config: Pick<Config, "host" | "port">): string {
  const host = ["0.0.0.0", "::", ""].includes(config.host) ? "127.0.0.1" : config.host;
  return `http://${host.includes(":") ? `[${host}]` : host}:${config.port}`;
}

/** `-H "Name: value"` as a header pair; a word without a colon is named. */
function headerOf(text: string): [string, string] {
  const colon = text.indexOf(":");
  if (colon < 1) throw new UsageError(`keybrake price: -H "${text}" is not "Name: value" (keybrake price --help)`);
  return [text.slice(0, colon).trim(), text.slice(colon + 1).trim()];
}

/** `keybrake price …`: the dry run's verdict, and the exit code that says whether the call would go through. */
export async function priceCommand(config: Pick<Config, "host" | "port">, args: string[]): Promise<number> {
  const command = "keybrake price";
  const { values, positionals } = parseFlags(
    command,
    args,
    {
      key: { type: "string" },
      "base-url": { type: "string" },
      data: { type: "string", short: "d" },
      header: { type: "string", short: "H", multiple: true },
      json: { type: "boolean" },
    },
    true,
  );
  if (!values.key) throw new UsageError(`${command}: --key is required: the vault key to test (${command} --help)`);
  if (positionals.length !== 2) throw new UsageError(`${command}: give METHOD and PATH, e.g. POST /v1/refunds (${command} --help)`);
  const [method, path] = [positionals[0]!.toUpperCase(), positionals[1]!];
  if (!path.startsWith("/")) throw new UsageError(`${command}: PATH must start with /, not "${path}"`);
  const body = values.data?.startsWith("@") ? readFileSync(values.data.slice(1), "utf8") : values.data;
  const headers = new Headers((values.header ?? []).map(headerOf));
  if (body !== undefined && !headers.has("content-type")) {
    headers.set("content-type", /^\s*[[{]/.test(body) ? "application/json" : "application/x-www-form-urlencoded");
  }
  headers.set("authorization", `Bearer ${values.key}`);
  headers.set("x-keybrake-dry-run", "1");
  const base = (values["base-url"] ?? localUrl(config)).replace(/\/+$/, "");
  const res = await fetch(base + path, { method, headers, body, signal: AbortSignal.timeout(120_000) });
  const answer = (await res.json().catch(() => null)) as Record<string, unknown> | null;
  if (res.headers.get("x-keybrake-dry-run") !== "true" || answer === null) {
    // Not a verdict: an unknown vault key, a ledger that cannot be reached, or not a Keybrake at that address.
    const reason = answer && typeof answer.message === "string" ? `${answer.code}: ${answer.message}` : `HTTP ${res.status}`;
    writeErr(`${command}: ${base}${path}: ${reason}`);
    return 1;
  }
  if (values.json) writeOut(JSON.stringify(answer, null, 2));
  else printRecord(answer, false);
  return answer.decision === "allowed" ? 0 : 1;
}

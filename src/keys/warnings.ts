import { Elysia } from "elysia";
import type { Config } from "../config";
import { vendorNamed } from "../vendors/index";

/**
 * What a key's issuer should know but that does not stop the issue: a key for a vendor and mode with no real
 * secret configured works only once one is (its calls get 503 vendor_not_configured until then).
 */
export function issueWarnings(config: Pick<Config, "vendors">, vendor: string, mode: "live" | "test"): string[] {
  const settings = config.vendors[vendor];
  if (settings?.credentials[mode]) return [];
  const variables = (vendorNamed(vendor)?.secretVariables ?? []).filter((name) => name.includes("_TEST_") === (mode === "test"));
  const set = variables.length ? ` (${variables.join(", ")})` : "";
  return [
    `No ${mode} secret is configured for ${vendor}${set}: this key's calls get 503 vendor_not_configured until one is set and Keybrake restarted.`,
  ];
}

const ISSUE_PATHS = new Set(["/vault/keys", "/v1/keys"]);

/**
 * Adds `warnings` to the 201 of POST /vault/keys and /v1/keys when the key's vendor and mode have no real
 * secret configured: the key is issued (the secret may come with the next restart), but its issuer is told.
 */
export const issueWarningsPlugin = (config: Pick<Config, "vendors">) =>
  new Elysia({ name: "issue-warnings" }).onAfterHandle({ as: "global" }, ({ request, response, set }) => {
    if (request.method !== "POST" || set.status !== 201 || !ISSUE_PATHS.has(new URL(request.url).pathname)) return;
    const issued = response as { vendor?: unknown; mode?: unknown } | null;
    if (typeof issued?.vendor !== "string" || (issued.mode !== "live" && issued.mode !== "test")) return;
    const warnings = issueWarnings(config, issued.vendor, issued.mode);
    return warnings.length ? { ...issued, warnings } : undefined;
  });

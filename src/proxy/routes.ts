import { Elysia } from "elysia";
import { registeredVendors } from "../vendors/index";
import type { AnyVendor } from "../vendors/types";
import { PUBLIC_ROUTE } from "../auth/admin-auth";
import { FIXED_ORIGIN } from "../ops/listen";
import type { ProxyDeps } from "./call";
import { handleProxy } from "./pipeline";
import { answerScrubber } from "./scrub";

/**
 * The request's path and query on a fixed origin: the host part of `request.url` is whatever the client's Host
 * header said (an out-of-range port, say), and the upstream is fixed, so it is never parsed. Concatenated, not
 * resolved against a base, so a path starting with "//" stays a path.
 */
const pathAndQuery = (url: string) => new URL(FIXED_ORIGIN + url.slice(url.indexOf("/", url.indexOf("//") + 2)));

/**
 * `ANY /{vendor}/{path}` for every registered vendor, and the vendors' bare paths (`/v1/...`, `/2010-04-01/...`,
 * `/emails...`: stripe-node can only change host and port), which belong to the presented key's vendor: two
 * vendors may claim the same bare path. Bodies are not parsed by Elysia: the exact bytes are priced and forwarded.
 */
export function proxyRoutes(options: Omit<ProxyDeps, "scrub">) {
  const deps: ProxyDeps = { ...options, scrub: answerScrubber(options.config.scrub) };
  // The server drops a connection idle for 30 s (listen.ts), an answer still pending included: a proxied call
  // waits for its vendor up to the upstream timeout (a model can think for minutes), and a stream as long between
  // two chunks.
  const waitSeconds = Math.ceil(options.config.upstreamTimeoutMs / 1000) + 5;
  const app = new Elysia({ name: "proxy", seed: options });
  // Public to the admin API's guard: a vault key, not a token, authenticates these (pipeline.ts).
  const hidden = { parse: "none" as const, detail: { hide: true, ...PUBLIC_ROUTE } };
  const route =
    (vendor: AnyVendor | null, prefix: string) =>
    ({
      request,
      server,
    }: {
      request: Request;
      server: { requestIP(r: Request): { address: string } | null; timeout(r: Request, seconds: number): void } | null;
    }) => {
      server?.timeout(request, waitSeconds);
      const url = pathAndQuery(request.url);
      return handleProxy(deps, {
        request,
        vendor,
        url,
        rawPath: url.pathname.slice(prefix.length),
        clientIp: server?.requestIP(request)?.address ?? null,
      });
    };
  const vendors = registeredVendors();
  for (const vendor of vendors) app.all(`/${vendor.name}/*`, route(vendor, `/${vendor.name}`), hidden);
  for (const bare of new Set(vendors.flatMap((v) => v.bareRoutes))) app.all(bare, route(null, ""), hidden);
  return app;
}

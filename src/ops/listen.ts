import type { Server } from "bun";
import type { AnyElysia } from "elysia";

/** The origin a request is given when the one Bun built from its Host header cannot be routed on. */
export const FIXED_ORIGIN = "http://keybrake.invalid";

export interface ListenOptions {
  hostname: string;
  port: number;
  maxRequestBodySize: number;
  /** Requests that arrive before this settles wait for it: the port is taken first, the store made ready after. */
  ready?: Promise<unknown>;
}

/**
 * Serves the app with Bun.serve directly rather than through Elysia's `listen`, for two reasons:
 * - Elysia turns `reusePort` on, so a second server on the same address starts and the kernel splits the
 *   traffic between two processes, each applying the caps alone. Here the second start fails.
 * - Elysia's `listen` hands Bun its own `fetch`, leaving no place to repair the request URL (see routableUrl).
 * Every route is still served by the app's own handler, as `app.handle` serves it in tests.
 */
export function listen(app: AnyElysia, options: ListenOptions): Server<undefined> {
  let ready = options.ready === undefined;
  const waitForReady = options.ready?.then(() => (ready = true));
  let server: Server<undefined>;
  try {
    server = Bun.serve({
      hostname: options.hostname,
      port: options.port,
      maxRequestBodySize: options.maxRequestBodySize,
      reusePort: false,
      development: false,
      // Elysia's listen default: long enough for a slow vendor, short enough to shed idle sockets.
      idleTimeout: 30,
      fetch(request) {
        const fixed = routableUrl(request.url);
        // An own property shadows the getter: the request itself is kept, so its body and client address stay.
        if (fixed !== null) Object.defineProperty(request, "url", { value: fixed });
        return ready ? app.fetch(request) : waitForReady!.then(() => app.fetch(request));
      },
    });
  } catch (err) {
    throw new Error(
      `cannot listen on ${options.hostname}:${options.port} (KEYBRAKE_HOST, KEYBRAKE_PORT): ${whyNotListening(err, options.port)}`,
    );
  }
  // Elysia's context reads `server` (the client address) from here, and `app.stop()` stops it.
  app.server = server;
  return server;
}

/** Why Bun could not take the address, in an operator's words. */
function whyNotListening(err: unknown, port: number): string {
  const { code, message } = err as { code?: string; message?: string };
  switch (code) {
    case "EADDRINUSE":
      return "the address is already in use (another keybrake serve?)";
    case "EACCES":
    case "EPERM":
      return port < 1024 ? `ports below 1024 need root or CAP_NET_BIND_SERVICE; use a port from 1024` : "permission denied";
    case "EADDRNOTAVAIL":
      return "no network interface of this machine has that address";
    case "ENOTFOUND":
    case "EAI_NONAME":
      return "the host name does not resolve";
    default:
      return message ?? String(err);
  }
}

/**
 * Null when Elysia can route `url` as it is; else the same path and query on FIXED_ORIGIN. Bun builds
 * `request.url` from the Host header as "http://<host>/<path>", or leaves the bare "/<path>" when it cannot
 * (empty or missing Host, spaces, non-ASCII). Elysia finds the path by searching for "/" from index 11, so a
 * bare path, or a host under four characters, would be routed on the wrong part of the URL. The upstream host
 * is fixed, so the Host header means nothing here (SPEC §4). Two comparisons for a normal Host.
 */
export function routableUrl(url: string): string | null {
  if (url.charCodeAt(0) === 47 /* "/" */) return FIXED_ORIGIN + url;
  const pathStart = url.indexOf("/", 7);
  if (pathStart >= 11) return null;
  return pathStart === -1 ? `${FIXED_ORIGIN}/` : FIXED_ORIGIN + url.slice(pathStart);
}

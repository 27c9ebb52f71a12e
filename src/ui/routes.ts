import { Elysia } from "elysia";
import { z } from "zod";
import { invalidRequest, unauthorized } from "../errors";
import type { Authenticator, Caller } from "../auth/admin-auth";
import { PUBLIC_ROUTE } from "../auth/admin-auth";
import { routeDoc } from "../ops/openapi";
import { sha256Hex } from "../util";
import { registeredVendors } from "../vendors/index";
import { VERSION } from "../version";
// Inlined when this file is bundled (src/ui/bundle.ts): the binary carries the dashboard, nothing is fetched.
import { dashboardScript } from "./bundle" with { type: "macro" };
import css from "./app/style.css" with { type: "text" };
import { SessionSchema } from "./responses";
import { crossSite, csrfMatches, crossSiteRefused, csrfFailed, type Sessions, sessionCookie, overTls } from "./sessions";

const script: string = dashboardScript();

const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Keybrake</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/app.css?v=${VERSION}">
<script type="module" src="/ui/app.js?v=${VERSION}"></script>
</head>
<body>
<div id="app"><p class="boot">Loading the Keybrake dashboard…</p></div>
<noscript><p class="boot">The Keybrake dashboard needs JavaScript. The API and its docs are at <a href="/docs">/docs</a>.</p></noscript>
</body>
</html>
`;

/**
 * Every request the page makes goes to this server: scripts, styles, fetches, images (data: URLs only), forms.
 * No frame may embed it (clickjacking a revoke button).
 */
const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  "x-frame-options": "DENY",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
};

const asset = (body: string, type: string) => () =>
  new Response(body, { headers: { "content-type": type, "cache-control": "no-cache", ...SECURITY_HEADERS } });

const SignInBody = z.strictObject({
  token: z
    .string()
    .min(1, "must not be empty")
    .max(500)
    .meta({ description: "Any Keybrake token: admin, issuer or viewer", examples: ["kb_iss_…"] }),
});
const tags = ["Dashboard"];

const sessionAnswer = (caller: Caller, csrf: string, expiresAt: number, freeEndpoints: Record<string, string[]>) => ({
  role: caller.role,
  token_id: caller.tokenId,
  token_name: caller.tokenName,
  csrf_token: csrf,
  expires_at: new Date(expiresAt).toISOString(),
  vendors: registeredVendors().map((v) => v.name),
  free_endpoints: freeEndpoints,
});

/**
 * SPEC §11: the dashboard at /ui (its page, script and styles from inside the binary) and its sessions. The page
 * talks to the admin API itself, which the session cookie authenticates like the token it was opened with
 * (src/ops/admin-auth.ts `authenticateRequest`).
 */
export function uiRoutes(auth: Authenticator, sessions: Sessions, now: () => number, freeEndpoints: Record<string, string[]> = {}) {
  const hidden = { detail: { hide: true, ...PUBLIC_ROUTE } };
  return new Elysia({ name: "ui" })
    .get("/ui", asset(page, "text/html; charset=utf-8"), hidden)
    .get("/ui/app.js", asset(script, "text/javascript; charset=utf-8"), hidden)
    .get("/ui/app.css", asset(css, "text/css; charset=utf-8"), hidden)
    .post(
      "/ui/session",
      async ({ body, request, set }) => {
        // A form on another site can post text/plain that happens to be JSON; only a script of this origin
        // can send application/json (another origin would need CORS, which Keybrake never grants).
        if (!(request.headers.get("content-type") ?? "").toLowerCase().startsWith("application/json")) {
          throw invalidRequest('Sign in with a JSON body: {"token": "…"}.', [{ path: "body", message: "must be application/json" }]);
        }
        if (crossSite(request, sessions.publicUrl)) throw crossSiteRefused();
        const caller = await auth.authenticate(`Bearer ${body.token}`);
        // A new id at every sign-in (never one the browser brought); the session it replaces ends.
        sessions.close(request);
        const { id, session } = sessions.open(sha256Hex(body.token));
        set.headers["set-cookie"] = sessionCookie(id, overTls(request, sessions.publicUrl), session.expiresAt - now());
        set.headers["cache-control"] = "no-store";
        return sessionAnswer(caller, session.csrf, session.expiresAt, freeEndpoints);
      },
      {
        body: SignInBody,
        parse: "json",
        ...routeDoc({
          summary: "Sign in to the dashboard: a session cookie (HttpOnly, SameSite=Strict) for 8 hours",
          description:
            "The cookie holds an opaque session id; the server keeps the token's SHA-256 and checks the token again on every request, so revoking it ends its sessions. With the cookie, the admin API answers as it would to the token; writes also need the answer's csrf_token in the X-CSRF-Token header.",
          tags,
          ok: [200, SessionSchema, "The session: the token's role and the CSRF token"],
          errors: [400, 401, 403],
          access: "public",
        }),
      },
    )
    .get(
      "/ui/session",
      async ({ request, set }) => {
        const bySession = sessions.authenticate(request, auth.authenticateHash);
        if (!bySession) throw unauthorized("No dashboard session: sign in with a token.");
        const caller = await bySession;
        const session = sessions.find(request)!;
        set.headers["cache-control"] = "no-store";
        return sessionAnswer(caller, session.csrf, session.expiresAt, freeEndpoints);
      },
      {
        ...routeDoc({
          summary: "The current dashboard session (its role and CSRF token)",
          tags,
          ok: [200, SessionSchema, "The session"],
          errors: [401, 403],
          access: "public",
        }),
      },
    )
    .delete(
      "/ui/session",
      ({ request, set }) => {
        const session = sessions.find(request);
        if (session) {
          if (crossSite(request, sessions.publicUrl)) throw crossSiteRefused();
          if (!csrfMatches(request, session)) throw csrfFailed();
          sessions.close(request);
        }
        set.headers["set-cookie"] = sessionCookie(null, overTls(request, sessions.publicUrl));
        return { signed_out: true as const };
      },
      {
        ...routeDoc({
          summary: "Sign out: ends the session and deletes its cookie",
          tags,
          ok: [200, z.object({ signed_out: z.literal(true) }), "Signed out"],
          errors: [403],
          access: "public",
        }),
      },
    );
}

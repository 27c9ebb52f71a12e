import { timingSafeEqual } from "node:crypto";
import { Elysia } from "elysia";
import type { Config } from "../config";
import { forbidden, unauthorized } from "../errors";
import type { Role, Store } from "../store/index";
import { randomBase62, sha256Hex } from "../util";

const TOKEN_SETTING = "admin_token_sha256";

/** "sha256:<first 12 hex>": who did an admin action, without the token itself. */
export const tokenFingerprint = (tokenHash: string) => `sha256:${tokenHash.slice(0, 12)}`;

/**
 * Makes sure an admin token exists: KEYBRAKE_ADMIN_TOKEN when set; else, on first start, a generated one whose
 * hash alone is stored and which is shown once through `announce`.
 */
export async function ensureAdminToken(config: Config, store: Store, announce: (token: string) => void): Promise<void> {
  if (config.adminToken || (await store.getSetting(TOKEN_SETTING))) return;
  const token = `kb_admin_${randomBase62(40)}`;
  await store.setSetting(TOKEN_SETTING, sha256Hex(token));
  announce(token);
}

/** Who made an admin request: the bootstrap admin token, or an API token of SPEC §10. */
export interface Caller {
  role: Role;
  /** `tok_…`, or "admin" for the bootstrap token. */
  tokenId: string;
  tokenName: string;
  /** "sha256:<12 hex>" of the token: who did an admin action, without the token itself. */
  fingerprint: string;
  /**
   * The minter recorded on the keys it issues, from which the vendor's Idempotency-Keys are derived (SPEC §7):
   * its token id; "admin" for the bootstrap token and the CLI, so keys they issued keep their derivation.
   */
  minter: string;
  /**
   * An issuer's policy as its token stores it (validated when the token was created; tokens/policy.ts reads it),
   * null for other roles.
   */
  policy: Readonly<Record<string, unknown>> | null;
}

/**
 * The minter of keys issued by the bootstrap admin token and by the CLI: they share one, so a job's retries
 * de-duplicate at the vendor whichever of them issued its key. API tokens (SPEC §10) mint under their own ids.
 */
export const ADMIN_MINTER = "admin";

/** Who an admin event is by: the actor and, for API requests, the token's id and name (SPEC §10). */
export const eventBy = (ctx: { actor: string; caller?: Caller }) => ({
  actor: ctx.actor,
  tokenId: ctx.caller?.tokenId ?? null,
  tokenName: ctx.caller?.tokenName ?? null,
});

/** Who acted, as an alert names them: the token's id and name, or the CLI's `cli:<user>`. */
export const actorName = (ctx: { actor: string; caller?: Caller }) =>
  ctx.caller ? `${ctx.caller.tokenId} (${ctx.caller.tokenName})` : ctx.actor;

/** The bootstrap token (KEYBRAKE_ADMIN_TOKEN or the generated one) as a token: an admin. */
export const BOOTSTRAP_TOKEN = { id: "admin", name: "bootstrap admin token" } as const;

export interface Authenticator {
  /**
   * The caller behind an `Authorization` header, or 401 `unauthorized` (missing, unknown, revoked or expired
   * token). Reads the token from the database on every call: a revocation counts on the very next request.
   * One function for every way in (the API's guard, and the dashboard's sign-in).
   */
  authenticate(authorization: string | null): Promise<Caller>;
  /** The caller behind a token's SHA-256 (a dashboard session holds the hash of the token it was opened with). */
  authenticateHash(tokenHash: string): Promise<Caller>;
  /**
   * The caller behind a request: its `Authorization: Bearer` token; else, when it carries the dashboard's session
   * cookie, the token that session was opened with, checked again now (plus the session's own rules: expiry,
   * same site, the CSRF token on writes; src/ui/sessions.ts). What the API's guard calls.
   */
  authenticateRequest(request: Request): Promise<Caller>;
}

/** The dashboard's sessions as the guard sees them (src/ui/sessions.ts): null when the request carries no session cookie. */
export interface SessionAuthenticator {
  authenticate(request: Request, byTokenHash: (tokenHash: string) => Promise<Caller>): Promise<Caller> | null;
}

/**
 * Bearer tokens: the bootstrap admin token (compared in constant time with its SHA-256), then the API tokens;
 * and, with `sessions`, the dashboard's session cookies, each standing for the token it was opened with.
 */
export function authenticator(config: Config, store: Store, now: () => number = Date.now, sessions?: SessionAuthenticator): Authenticator {
  let bootstrap: Promise<Buffer | null> | undefined;
  const load = async () => {
    const hex = config.adminToken ? sha256Hex(config.adminToken) : await store.getSetting(TOKEN_SETTING);
    return hex ? Buffer.from(hex, "hex") : null;
  };
  const byHash = async (givenHex: string): Promise<Caller> => {
    bootstrap ??= load();
    if (!/^[0-9a-f]{64}$/.test(givenHex)) throw unauthorized();
    const given = Buffer.from(givenHex, "hex");
    const want = await bootstrap;
    if (want && timingSafeEqual(given, want)) {
      const fingerprint = tokenFingerprint(givenHex);
      return {
        role: "admin",
        tokenId: BOOTSTRAP_TOKEN.id,
        tokenName: BOOTSTRAP_TOKEN.name,
        fingerprint,
        minter: ADMIN_MINTER,
        policy: null,
      };
    }
    // Looked up by the token's SHA-256 (a 256-bit token: the digest says nothing about other tokens), and
    // the stored digest compared in constant time all the same.
    const token = await store.findTokenByHash(givenHex);
    if (!token || !timingSafeEqual(given, Buffer.from(token.tokenHash, "hex"))) throw unauthorized();
    if (token.revokedAt !== null) throw unauthorized(`This token (${token.id}) has been revoked.`);
    if (token.expiresAt !== null && token.expiresAt <= now()) throw unauthorized(`This token (${token.id}) has expired.`);
    return {
      role: token.role,
      tokenId: token.id,
      tokenName: token.name,
      fingerprint: tokenFingerprint(givenHex),
      minter: token.id,
      policy: token.role === "issuer" ? (token.policy ?? {}) : null,
    };
  };
  const authenticate = async (authorization: string | null) => {
    const m = /^Bearer (\S+)$/i.exec(authorization ?? "");
    if (!m) throw unauthorized();
    return byHash(sha256Hex(m[1]!));
  };
  return {
    authenticate,
    authenticateHash: byHash,
    authenticateRequest(request) {
      const authorization = request.headers.get("authorization");
      if (authorization === null && sessions) {
        const bySession = sessions.authenticate(request, byHash);
        if (bySession) return bySession;
      }
      return authenticate(authorization);
    },
  };
}

export function announceAdminToken(token: string) {
  const line = "=".repeat(72);
  process.stderr.write(
    `\n${line}\n  Keybrake generated an admin token. It is shown ONCE and only its hash is stored:\n\n    ${token}\n\n` +
      `  Use it as "Authorization: Bearer <token>". To choose your own, set KEYBRAKE_ADMIN_TOKEN.\n${line}\n\n`,
  );
}

/** Which tokens may call a route: the roles it allows (issuers then see only their own keys), or "public". */
export type Access = readonly Role[] | "public";

/**
 * Whether a route's roles admit a caller's. An approver reads what a viewer reads, and decides approvals
 * (SPEC §10, §15): every route open to viewers is open to approvers.
 */
export const allows = (roles: readonly Role[], role: Role) => roles.includes(role) || (role === "approver" && roles.includes("viewer"));

/** Where a route's declared access is written in its `detail` (and so in /docs/json). */
export const ACCESS_KEY = "x-keybrake-access";

/** A public route's declaration (no token): spread into its `detail`. */
export const PUBLIC_ROUTE = { [ACCESS_KEY]: "public" } as const;

/** The OpenAPI plugin's own pages, which cannot carry a declaration: public. */
const DOCS_PLUGIN_ROUTES = new Set(["GET /docs", "GET /docs/json"]);

const callers = new WeakMap<Request, Caller>();

/**
 * The one guard of the admin API. A route declares the roles it needs with `access: [...]` (routeDoc writes it
 * from the route's documentation); the guard authenticates the bearer token (401) and checks its role (403)
 * before the body is validated, and hands the handler its `caller`. A route that declares nothing is refused
 * when the app is built (`assertAccessDeclared`): nothing is allowed by default.
 */
export const accessGuard = (auth: Authenticator) =>
  new Elysia({ name: "access-guard", seed: auth }).macro({
    access: (roles: readonly Role[]) => ({
      // OpenAPI allows `x-` extensions; Elysia's type for `detail` does not list them.
      detail: { [ACCESS_KEY]: roles } as object,
      async transform({ request }: { request: Request }) {
        const caller = await auth.authenticateRequest(request);
        if (!allows(roles, caller.role)) {
          throw forbidden(
            `This route needs the ${roles.join(" or ")} role; this token (${caller.tokenId}) is ${caller.role === "admin" ? "an" : "a"} ${caller.role}.`,
          );
        }
        callers.set(request, caller);
      },
      resolve: ({ request }: { request: Request }) => ({ caller: callers.get(request)! }),
    }),
  });

interface RouteLike {
  method: string;
  path: string;
  hooks?: { detail?: unknown } | unknown;
}

/** Routes that declare no access, as "METHOD /path". */
export function undeclaredRoutes(routes: readonly RouteLike[]): string[] {
  return routes
    .filter((r) => {
      const detail = (r.hooks as { detail?: Record<string, unknown> } | undefined)?.detail;
      return detail?.[ACCESS_KEY] === undefined && !DOCS_PLUGIN_ROUTES.has(`${r.method} ${r.path}`);
    })
    .map((r) => `${r.method} ${r.path}`);
}

/** The app, once every route is known to declare the roles it needs or that it is public; else it is not built. */
export function withAccessDeclared<App extends { routes: readonly RouteLike[] }>(app: App): App {
  const undeclared = undeclaredRoutes(app.routes);
  if (undeclared.length) throw new Error(`routes without an access declaration (access: [...] or PUBLIC_ROUTE): ${undeclared.join(", ")}`);
  return app;
}

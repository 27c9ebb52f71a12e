import { timingSafeEqual } from "node:crypto";
import { KeybrakeError, unauthorized } from "../errors";
import type { Caller } from "../auth/admin-auth";
import { randomBase62, sha256Hex } from "../util";

/** The dashboard's cookie: an opaque session id (never the token), HttpOnly, SameSite=Strict, Path=/. */
export const SESSION_COOKIE = "keybrake_session";
/** The header a cookie-authenticated write must carry, with the session's CSRF token (synchronizer pattern). */
export const CSRF_HEADER = "x-csrf-token";
/** A session lives 8 hours from sign-in, whatever its use (fixed, not sliding): then the token is asked again. */
export const SESSION_TTL_MS = 8 * 3600 * 1000;
/** At most this many sessions are kept; signing in past it ends the oldest. */
const MAX_SESSIONS = 10_000;

export interface Session {
  /** SHA-256 of the token it was opened with: the token is checked again, by this hash, on every request. */
  tokenHash: string;
  /** Sent to the page in JSON (readable by same-origin scripts only) and asked back in X-CSRF-Token on writes. */
  csrf: string;
  createdAt: number;
  expiresAt: number;
}

/** Methods that change nothing: the only ones a cookie may authenticate without the CSRF token. */
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/** The value of one cookie in a Cookie header. */
export function cookieValue(header: string | null, name: string): string | null {
  if (!header) return null;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

const sameText = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

/** Whether the request carries the session's CSRF token in X-CSRF-Token (compared in constant time). */
export function csrfMatches(request: Request, session: Session): boolean {
  const given = request.headers.get(CSRF_HEADER);
  return given !== null && sameText(given, session.csrf);
}

/**
 * Whether the browser says the request came from another site. `Sec-Fetch-Site` is set by the browser and
 * cannot be written by a page: only `same-origin` and `none` (typed URL, bookmark) pass. Without it (an old
 * browser), a write's `Origin`, when sent, must name the host the request was sent to, or KEYBRAKE_PUBLIC_URL's
 * (a proxy in front may rewrite `Host`).
 */
export function crossSite(request: Request, publicUrl: string | null = null): boolean {
  const site = request.headers.get("sec-fetch-site");
  if (site !== null) return site !== "same-origin" && site !== "none";
  const origin = request.headers.get("origin");
  if (origin === null || SAFE_METHODS.has(request.method)) return false;
  try {
    const host = new URL(origin).host;
    return host !== request.headers.get("host") && (publicUrl === null || host !== new URL(publicUrl).host);
  } catch {
    return true;
  }
}

/**
 * Whether the cookie gets `Secure`: KEYBRAKE_PUBLIC_URL is https (the way to say a TLS proxy is in front), the
 * request itself came over TLS, or the proxy says so with `X-Forwarded-Proto: https`. A client can forge that
 * header, but it can only add the flag (its own browser then refuses the cookie over plain HTTP), never remove
 * it; so it is trusted for this and nothing else.
 */
export function overTls(request: Request, publicUrl: string | null = null): boolean {
  if (publicUrl?.startsWith("https:") || request.url.startsWith("https:")) return true;
  return request.headers.get("x-forwarded-proto")?.split(",")[0]?.trim().toLowerCase() === "https";
}

export const csrfFailed = () =>
  new KeybrakeError(
    "csrf_failed",
    `A write made with the dashboard's session cookie needs the session's CSRF token in the ${CSRF_HEADER} header (GET /ui/session gives it).`,
  );
export const crossSiteRefused = () =>
  new KeybrakeError("cross_site_request", "The dashboard's session cookie cannot be used by a request from another site.");

/**
 * The dashboard's sessions, in this process's memory (one process serves one SQLite ledger; a restart signs
 * everyone out). Keyed by the SHA-256 of the cookie's session id, so the map alone cannot be replayed as cookies.
 * A session holds the hash of the token it was opened with, never the token: each request authenticates that
 * hash again, so a revoked or expired token ends its sessions on their next request.
 */
export class Sessions {
  private readonly byId = new Map<string, Session>();

  constructor(
    private readonly now: () => number = Date.now,
    /** KEYBRAKE_PUBLIC_URL: where people reach this Keybrake (its https says the cookie is Secure). */
    readonly publicUrl: string | null = null,
    readonly ttlMs: number = SESSION_TTL_MS,
  ) {}

  /** A new session for the token with this hash: its cookie value (the session id) and the session. */
  open(tokenHash: string): { id: string; session: Session } {
    const now = this.now();
    this.prune(now);
    while (this.byId.size >= MAX_SESSIONS) this.byId.delete(this.byId.keys().next().value!);
    const id = randomBase62(43);
    const session = { tokenHash, csrf: randomBase62(43), createdAt: now, expiresAt: now + this.ttlMs };
    this.byId.set(sha256Hex(id), session);
    return { id, session };
  }

  /** The live session behind a request's cookie; null without a cookie, or for an unknown or expired one. */
  find(request: Request): Session | null {
    const id = cookieValue(request.headers.get("cookie"), SESSION_COOKIE);
    if (!id) return null;
    const key = sha256Hex(id);
    const session = this.byId.get(key);
    if (!session) return null;
    if (session.expiresAt <= this.now()) {
      this.byId.delete(key);
      return null;
    }
    return session;
  }

  /** Ends the session behind the request's cookie, if any. */
  close(request: Request): void {
    const id = cookieValue(request.headers.get("cookie"), SESSION_COOKIE);
    if (id) this.byId.delete(sha256Hex(id));
  }

  /** Ends every session opened with the token of this hash (it was found revoked or expired). */
  closeAllOf(tokenHash: string): void {
    for (const [key, s] of this.byId) if (s.tokenHash === tokenHash) this.byId.delete(key);
  }

  get size(): number {
    return this.byId.size;
  }

  /**
   * The caller behind a request that carries the session cookie (and no Authorization header: a bearer token
   * wins and is unaffected by all this), or null when it carries none. Refuses (401) an unknown or expired
   * session, or one whose token no longer authenticates; (403) a request the browser says came from another
   * site; (403) a write without the session's CSRF token.
   */
  authenticate(request: Request, byTokenHash: (hash: string) => Promise<Caller>): Promise<Caller> | null {
    if (cookieValue(request.headers.get("cookie"), SESSION_COOKIE) === null) return null;
    return this.check(request, byTokenHash);
  }

  private async check(request: Request, byTokenHash: (hash: string) => Promise<Caller>): Promise<Caller> {
    const session = this.find(request);
    if (!session) throw unauthorized("The dashboard session has expired or ended; sign in again.");
    if (crossSite(request, this.publicUrl)) throw crossSiteRefused();
    if (!SAFE_METHODS.has(request.method) && !csrfMatches(request, session)) throw csrfFailed();
    try {
      return await byTokenHash(session.tokenHash);
    } catch (err) {
      // The token was revoked or expired: its sessions end with it.
      this.closeAllOf(session.tokenHash);
      throw err;
    }
  }

  private prune(now: number) {
    for (const [key, s] of this.byId) if (s.expiresAt <= now) this.byId.delete(key);
  }
}

/** The Set-Cookie header that opens a session (or, with `id` null, deletes the cookie). */
export function sessionCookie(id: string | null, secure: boolean, maxAgeMs = SESSION_TTL_MS): string {
  const attrs = ["Path=/", "HttpOnly", "SameSite=Strict", ...(secure ? ["Secure"] : [])];
  if (id === null) return [`${SESSION_COOKIE}=`, ...attrs, "Max-Age=0", "Expires=Thu, 01 Jan 1970 00:00:00 GMT"].join("; ");
  return [`${SESSION_COOKIE}=${id}`, ...attrs, `Max-Age=${Math.round(maxAgeMs / 1000)}`].join("; ");
}

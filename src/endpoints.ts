import { getOrCreate } from "./util";
/**
 * Endpoint patterns (SPEC §5): "[METHOD ]PATH". No method: any method. `*` matches within one path segment; a
 * trailing `/*` matches one or more further segments. Case-sensitive, matched on the normalized path.
 */
export const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] as const;

export interface EndpointPattern {
  method: string | null;
  regex: RegExp;
}

// Braces for Twilio's `{AccountSid}` placeholder (SPEC §4).
const SEGMENT = /^[A-Za-z0-9\-._~:@!$&'()+,;=*{}]+$/;

/** Why a pattern is not of the contract's form, or null when it is. */
export function patternProblem(pattern: string): string | null {
  const m = /^(?:([A-Z]+) )?(\/\S*)$/.exec(pattern);
  if (!m) return 'must be "[METHOD ]/path", e.g. "POST /v1/payment_intents"';
  if (m[1] && !(METHODS as readonly string[]).includes(m[1])) return `unknown method ${m[1]}`;
  if (pattern.length > 512) return "must be at most 512 characters";
  const segments = m[2]!.split("/").slice(1);
  for (const seg of segments) {
    if (seg === "") return "must not contain empty segments (// or a trailing /)";
    if (seg === "." || seg === "..") return "must not contain . or .. segments";
    if (!SEGMENT.test(seg)) return `segment "${seg}" has characters a vendor path never has`;
  }
  return null;
}

/**
 * A pattern with its path written as the vendor's paths are matched (Twilio: any account as `{AccountSid}`), so
 * a pattern naming the real SID neither misses nor keeps the SID in the database.
 */
export function publicPattern(pattern: string, publicPath: (path: string) => string): string {
  const m = /^(?:([A-Z]+) )?(\/\S*)$/.exec(pattern)!;
  return (m[1] ? `${m[1]} ` : "") + publicPath(m[2]!);
}

export function compilePattern(pattern: string, publicPath: (path: string) => string = (p) => p): EndpointPattern {
  const m = /^(?:([A-Z]+) )?(\/\S*)$/.exec(publicPattern(pattern, publicPath))!;
  const segments = m[2]!.split("/").slice(1);
  const last = segments.length - 1;
  const body = segments
    .map((seg, i) => {
      if (seg === "*" && i === last) return "(?:/[^/]+)+";
      if (seg === "*") return "/[^/]+";
      return `/${seg.split("*").map(escapeRegex).join("[^/]*")}`;
    })
    .join("");
  return { method: m[1] ?? null, regex: new RegExp(`^${body}$`) };
}

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

export function matchEndpoint(patterns: EndpointPattern[], method: string, path: string): boolean {
  return patterns.some((p) => (p.method === null || p.method === method) && p.regex.test(path));
}

const compiled = new WeakMap<readonly string[], EndpointPattern[]>();

/**
 * A key's allowlist, compiled once per cached key policy (store/keys.ts hands out the same frozen array until
 * the key changes), not once per call; a policy dropped from that cache takes its compiled list with it.
 */
export function compiledAllowlist(patterns: readonly string[], publicPath: (path: string) => string): EndpointPattern[] {
  return getOrCreate(compiled, patterns, () => patterns.map((p) => compilePattern(p, publicPath)));
}

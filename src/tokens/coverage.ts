/**
 * Pattern coverage (SPEC §10): an issuer policy's `allowed_endpoints` cover a key's pattern when every request
 * the key's pattern matches, the policy's pattern matches too. Decided exactly on the patterns of SPEC §5 as
 * src/proxy/endpoints.ts compiles them:
 *
 * - a path is segments; a pattern is its method (none: any) and one matcher per segment, where a trailing `*`
 *   segment (the "tail") matches one or more further segments;
 * - any other segment that is exactly `*` matches one or more characters (`[^/]+`);
 * - any other segment is a glob: literal text, each `*` matching zero or more characters (`[^/]*`).
 *
 * Both languages are products of segment languages, so coverage is decided segment by segment. For two globs,
 * L(a) ⊆ L(b) exactly when b matches a with each of its `*` written as a character no pattern can contain: b
 * can only match that character with a `*` of its own, which then matches whatever a's `*` stands for.
 */

/** A character no endpoint pattern can contain (endpoints.ts admits only URL path characters). */
const FRESH = "\u0001";

type Segment = { kind: "plus" } | { kind: "glob"; parts: string[] };

export interface PatternShape {
  method: string | null;
  segments: Segment[];
  /** Ends in `/*`: one or more further segments. */
  tail: boolean;
}

export function patternShape(pattern: string): PatternShape {
  const m = /^(?:([A-Z]+) )?(\/\S*)$/.exec(pattern);
  if (!m) throw new Error(`not an endpoint pattern: ${pattern}`);
  const raw = m[2]!.split("/").slice(1);
  const tail = raw.at(-1) === "*";
  const fixed = tail ? raw.slice(0, -1) : raw;
  return {
    method: m[1] ?? null,
    segments: fixed.map((seg) => (seg === "*" ? { kind: "plus" } : { kind: "glob", parts: seg.split("*") })),
    tail,
  };
}

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Whether the glob matches the text, `*` as `[^/]*`. */
const globMatches = (parts: string[], text: string) => new RegExp(`^${parts.map(escapeRegex).join("[^/]*")}$`).test(text);

/** A glob of stars only (`**`) matches the empty segment; one with any literal text cannot. */
const canBeEmpty = (s: Segment) => s.kind === "glob" && s.parts.every((p) => p === "");

/** L(a) ⊆ L(b) for one segment. */
export function segmentCovered(a: Segment, b: Segment): boolean {
  if (b.kind === "plus") return !canBeEmpty(a);
  // `[^/]+` is covered by a glob exactly when the glob matches a lone fresh character (it is all stars).
  const witness = a.kind === "plus" ? FRESH : a.parts.join(FRESH);
  return globMatches(b.parts, witness);
}

/** Whether every request `key` matches (method and path), `policy` matches too. */
export function patternCovers(policy: string, key: string): boolean {
  const p = patternShape(policy);
  const k = patternShape(key);
  if (p.method !== null && p.method !== k.method) return false;
  const fixed = p.segments.length;
  if (!p.tail) {
    // The key must match exactly as many segments as the policy does.
    if (k.tail || k.segments.length !== fixed) return false;
    return k.segments.every((s, i) => segmentCovered(s, p.segments[i]!));
  }
  // The policy: its fixed segments, then one or more non-empty ones. The key's paths must have at least
  // fixed + 1 segments, its first ones covered, and the rest never empty (the tail's segments never are).
  if (k.segments.length + (k.tail ? 1 : 0) < fixed + 1) return false;
  return k.segments.every((s, i) => (i < fixed ? segmentCovered(s, p.segments[i]!) : !canBeEmpty(s)));
}

/** The first of the key's patterns no policy pattern covers, or null when every one is covered. */
export function uncoveredPattern(policy: readonly string[], key: readonly string[]): string | null {
  return key.find((k) => !policy.some((p) => patternCovers(p, k))) ?? null;
}

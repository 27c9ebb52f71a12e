/**
 * A vendor's closed catalogue (SPEC §6): every endpoint Keybrake forwards, each with its class. Whatever is not
 * in it is refused (422 endpoint_not_catalogued) unless the operator's KEYBRAKE_<VENDOR>_FREE_ENDPOINTS name it:
 * an allowlist narrows the catalogue, it never widens it. A denylist of money movers is never complete; a
 * catalogue fails closed.
 */

/**
 * - `priced`: POST is priced by the entry's `price` (its class in SPEC §6).
 * - `free`: moves no money and mints no credential; `why` says so in one line.
 * - `refused`: can move money Keybrake does not price (422 unpriceable_request).
 * - `credential`: mints, reveals or manages a credential or an account (403 credential_endpoint_refused), for
 *   every method: a read of such a resource can carry a secret.
 */
export type EndpointClass = "priced" | "free" | "refused" | "credential";

export interface CatalogueEntry<Price = unknown> {
  /** The methods it covers; "*" for every method. GET covers HEAD. */
  methods: readonly string[] | "*";
  /** The path as the vendor documents it; `{name}` is one object id segment; a trailing `/*` is one or more segments. */
  shape: string;
  class: EndpointClass;
  /** Free: why it moves no money and mints no credential; refused or credential: what it does; priced: what is held. */
  why: string;
  /** Priced entries: how the call is priced (the vendor module's own function). */
  price?: Price;
}

/** How a vendor's paths may be written and still reach the same endpoint (SPEC §6, aliases). */
export interface AliasRules {
  /** Format extensions the vendor accepts on the last segment (Twilio: json, xml); none elsewhere. */
  extensions?: readonly string[];
  /** Segments written literally in shapes (Twilio's `{AccountSid}` placeholder). */
  literals?: readonly string[];
}

/** What a call is, by the catalogue. `ids` are the path's `{name}` segments, in order. */
export type Classification<Price = unknown> =
  | { class: "priced"; entry: CatalogueEntry<Price>; ids: string[] }
  | { class: "free"; entry: CatalogueEntry<Price> | null; why: string }
  | { class: "refused"; entry: CatalogueEntry<Price> }
  | { class: "credential"; entry: CatalogueEntry<Price> }
  /** A priced path, with a method other than GET, HEAD or POST that no entry covers (405 method_not_priced). */
  | { class: "method_not_priced"; entry: CatalogueEntry<Price> }
  | { class: "not_catalogued" };

/**
 * Object ids as the vendors write them (`cus_1`, `SM0123…`, a UUID). Dots, `;` and percent-escapes are not id
 * characters: `.json` is an extension (or not catalogued), `;params` and escapes are aliases nobody documents.
 */
const ID = "([A-Za-z0-9_-]+)";

interface Compiled<Price> {
  entry: CatalogueEntry<Price>;
  regex: RegExp;
  /** How many of its segments are literal. */
  specificity: number;
}

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/**
 * Literal segments match in any case (every form a vendor might route to the entry is classed as the entry), a
 * trailing slash is optional, and the last segment may carry one of the vendor's extensions.
 */
function compile<Price>(entry: CatalogueEntry<Price>, rules: AliasRules): Compiled<Price> {
  const segments = entry.shape.split("/").slice(1);
  const rest = segments.at(-1) === "*";
  if (rest) segments.pop();
  const body = segments
    .map((seg) => (rules.literals?.includes(seg) ? escapeRegex(seg) : /^\{\w+\}$/.test(seg) ? ID : escapeRegex(seg)))
    .join("/");
  const extension = rules.extensions?.length ? `(?:\\.(?:${rules.extensions.map(escapeRegex).join("|")}))?` : "";
  // A rest (`/*`) reaches whole families (Treasury, /v2): its ids are not read, only its class.
  const tail = rest ? "(?:/[^/]+)+" : extension;
  const specificity = segments.filter((seg) => !/^\{\w+\}$/.test(seg) || rules.literals?.includes(seg)).length;
  return { entry, regex: new RegExp(`^/${body}${tail}/?$`, "i"), specificity };
}

const covers = (entry: CatalogueEntry<unknown>, method: string) =>
  entry.methods === "*" || entry.methods.includes(method === "HEAD" ? "GET" : method);

/** A catalogue compiled once per vendor, asked once per call. */
export class Catalogue<Price = unknown> {
  private readonly compiled: Compiled<Price>[];

  constructor(
    readonly entries: readonly CatalogueEntry<Price>[],
    readonly rules: AliasRules = {},
  ) {
    for (const e of entries) {
      if (e.class === "priced" && !e.price) throw new Error(`catalogue: priced ${e.shape} has no price`);
      if (e.why.trim() === "") throw new Error(`catalogue: ${e.shape} says nothing of why`);
    }
    this.compiled = entries.map((e) => compile(e, rules));
  }

  /**
   * Credential resources first, whatever the method; then a read of any catalogued resource is free (GET and HEAD
   * move no money); then the entry for the method; a priced path with another method is 405; else not catalogued.
   */
  classify(method: string, path: string): Classification<Price> {
    const hits = this.compiled.flatMap((c) => {
      const m = c.regex.exec(path);
      return m ? [{ entry: c.entry, ids: m.slice(1) as string[], specificity: c.specificity }] : [];
    });
    if (hits.length === 0) return { class: "not_catalogued" };
    const credential = hits.find((h) => h.entry.class === "credential");
    if (credential) return { class: "credential", entry: credential.entry };
    if (method === "GET" || method === "HEAD") {
      const read = hits.find((h) => h.entry.class === "free" && covers(h.entry, method));
      return { class: "free", entry: read?.entry ?? hits[0]!.entry, why: read?.entry.why ?? "a read moves no money" };
    }
    // As the vendors route: a literal segment (`/v1/invoices/create_preview`) before an id (`/v1/invoices/{id}`).
    const covering = hits.filter((h) => covers(h.entry, method));
    const mostSpecific = Math.max(...covering.map((h) => h.specificity));
    const forMethod = covering.filter((h) => h.specificity === mostSpecific);
    // Two entries for one call at the same depth: the stricter class wins.
    const refused = forMethod.find((h) => h.entry.class === "refused");
    if (refused) return { class: "refused", entry: refused.entry };
    const priced = forMethod.find((h) => h.entry.class === "priced");
    if (priced) return { class: "priced", entry: priced.entry, ids: priced.ids };
    const free = forMethod.find((h) => h.entry.class === "free");
    if (free) return { class: "free", entry: free.entry, why: free.entry.why };
    const pricedPath = hits.find((h) => h.entry.class === "priced");
    if (pricedPath) return { class: "method_not_priced", entry: pricedPath.entry };
    return { class: "not_catalogued" };
  }
}

/** Entry builders, so a catalogue reads as a table. */
export const free = (methods: readonly string[] | "*", why: string, ...shapes: string[]): CatalogueEntry<never>[] =>
  shapes.map((shape) => ({ methods, shape, class: "free", why }));

export const refused = (what: string, ...shapes: string[]): CatalogueEntry<never>[] =>
  shapes.map((shape) => ({ methods: "*", shape, class: "refused", why: what }));

/** Refused for the given methods only (a resource whose reads and some writes are free, others move money). */
export const refusedFor = (methods: readonly string[], what: string, ...shapes: string[]): CatalogueEntry<never>[] =>
  shapes.map((shape) => ({ methods, shape, class: "refused", why: what }));

export const credential = (what: string, ...shapes: string[]): CatalogueEntry<never>[] =>
  shapes.map((shape) => ({ methods: "*", shape, class: "credential", why: what }));

export const priced = <Price>(why: string, price: Price, ...shapes: string[]): CatalogueEntry<Price>[] =>
  shapes.map((shape) => ({ methods: ["POST"], shape, class: "priced", why, price }));

/** The catalogue as a Markdown table (the README's catalogue section is generated from it, and tested against it). */
export function catalogueMarkdown(vendor: string, catalogue: Catalogue<unknown>): string {
  const rows = catalogue.entries.map((e) => {
    const methods = e.methods === "*" ? "any" : e.methods.join(", ");
    return `| ${vendor} | ${methods} | \`${e.shape}\` | ${e.class} | ${e.why.replaceAll("|", "\\|")} |`;
  });
  return ["| vendor | methods | path | class | why |", "|---|---|---|---|---|", ...rows].join("\n");
}

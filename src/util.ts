const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** Uniform base62 string from the CSPRNG (rejection sampling: no modulo bias). */
export function randomBase62(length: number): string {
  let out = "";
  while (out.length < length) {
    const bytes = crypto.getRandomValues(new Uint8Array(length * 2));
    for (const b of bytes) {
      if (b < 248 && out.length < length) out += BASE62[b % 62];
    }
  }
  return out;
}

export function sha256Hex(text: string): string {
  return new Bun.CryptoHasher("sha256").update(text).digest("hex");
}

export const MICROS_PER_USD = 1_000_000;

/** USD as the API speaks it (JSON number) from integer micro-dollars. */
export const microsToUsd = (micros: number): number => micros / MICROS_PER_USD;

/** A cap as the API shows it: USD, or null when there is none. */
export const capUsd = (micros: number | null): number | null => (micros === null ? null : microsToUsd(micros));

/** A cap as the store keeps it: micro-dollars, or null when none was given. */
export const capMicros = (usd: number | null | undefined): number | null => (usd == null ? null : usdToMicros(usd));

/** Micro-dollars from a USD amount, rounded to the nearest micro-dollar. */
export const usdToMicros = (usd: number): number => Math.round(usd * MICROS_PER_USD);

/** The UTC calendar day a timestamp falls on, as the ledger buckets it. */
export const utcDay = (ms: number): string => new Date(ms).toISOString().slice(0, 10);

/** Milliseconds from `ms` until the next UTC midnight. */
export function msUntilUtcMidnight(ms: number): number {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1) - ms;
}

/** A USD amount for people: micro-dollars with at least 2 decimals and no trailing zeros beyond (4.2 -> "4.20"). */
export function formatUsd(micros: number): string {
  const text = (micros / MICROS_PER_USD).toFixed(6).replace(/0+$/, "");
  const decimals = text.length - text.indexOf(".") - 1;
  return decimals < 2 ? (micros / MICROS_PER_USD).toFixed(2) : text;
}

export const iso = (ms: number | null | undefined): string | null => (ms == null ? null : new Date(ms).toISOString());

/** The map's value for `key`, made and stored by `make` the first time (a Map or a WeakMap). */
export function getOrCreate<K, V>(map: { get(key: K): V | undefined; set(key: K, value: V): unknown }, key: K, make: () => V): V {
  const found = map.get(key);
  if (found !== undefined) return found;
  const made = make();
  map.set(key, made);
  return made;
}

const DURATION = /^(?=\d)(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/;

/** `90s`, `10m`, `2h`, `1d`, `1w`, `1h30m` -> milliseconds; null when `text` is not such a duration. */
export function parseDurationMs(text: string): number | null {
  const m = DURATION.exec(text.trim());
  if (!m) return null;
  const [w = 0, d = 0, h = 0, min = 0, s = 0] = m.slice(1).map((part) => Number(part ?? 0));
  return ((((w * 7 + d) * 24 + h) * 60 + min) * 60 + s) * 1000;
}

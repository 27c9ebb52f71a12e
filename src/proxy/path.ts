/**
 * Path safety. Bun has already resolved `.`/`..` segments and turned `\` into `/`; what survives and could
 * make the vendor see a different path than the one we matched is refused here. Percent-escapes of unreserved
 * characters are decoded, so `/v1/payment_%69ntents` is matched, priced and forwarded as `/v1/payment_intents`.
 * Returns the normalized path, or null when the path is unsafe.
 */
export function normalizeVendorPath(raw: string): string | null {
  if (!raw.startsWith("/") || raw.includes("//") || raw.includes("\\")) return null;
  let out = "";
  for (let i = 0; i < raw.length; i++) {
    const ch = raw.charCodeAt(i);
    if (ch <= 0x20 || ch === 0x7f) return null;
    if (ch !== 0x25 /* % */) {
      out += raw[i];
      continue;
    }
    const hex = raw.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return null;
    const byte = parseInt(hex, 16);
    const decoded = String.fromCharCode(byte);
    if (byte < 0x20 || byte === 0x7f || decoded === "/" || decoded === "\\" || decoded === ".") return null;
    out += /[A-Za-z0-9\-_~]/.test(decoded) ? decoded : `%${hex.toUpperCase()}`;
    i += 2;
  }
  for (const seg of out.split("/").slice(1)) if (seg === "." || seg === "..") return null;
  return out;
}

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const TIME_CHARS = 8;
const RANDOM_CHARS = 14;

/** CSPRNG bytes drawn a pool at a time: one getRandomValues per ~150 ids instead of one per id. */
const pool = new Uint8Array(4096);
let used = pool.length;

/** Uniform base62 characters from the pool (rejection sampling: no modulo bias). */
function randomChars(length: number): string {
  let out = "";
  while (out.length < length) {
    if (used === pool.length) {
      crypto.getRandomValues(pool);
      used = 0;
    }
    const b = pool[used++]!;
    if (b < 248) out += BASE62[b % 62];
  }
  return out;
}

/**
 * A call's id (`kbr_…`, `hold_…`): 22 base62 characters as before, the first 8 the time in milliseconds (fixed
 * width, in an alphabet whose byte order is its numeric order), the other 14 random (83 bits). Ids of one moment
 * sort together, so the ledger's and the audit's id indexes take each new row at their end: one group commit's
 * rows share a leaf page instead of dirtying one random page each (a page is a WAL frame written per commit).
 * They stay unguessable: nothing authorises by id, and two calls of one millisecond still differ in 83 bits.
 */
export function callId(prefix: string, now: number): string {
  let time = "";
  let t = Math.max(0, Math.floor(now));
  for (let i = 0; i < TIME_CHARS; i++) {
    time = BASE62[t % 62] + time;
    t = Math.floor(t / 62);
  }
  return prefix + time + randomChars(RANDOM_CHARS);
}

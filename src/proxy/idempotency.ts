import { KeybrakeError } from "../errors";
import type { Store } from "../store/index";
import { randomBase62, sha256Hex } from "../util";

/** Idempotency memory lasts as long as Stripe's and Resend's own: 24 hours. */
export const IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000;

/** Stripe's limit. A longer key is refused, never truncated: two keys that differ past it would collide. */
const MAX_KEY_LENGTH = 255;

/** The job's Idempotency-Key, or null when it sent none. Empty, blank or over-long keys are refused (SPEC §7). */
export function idempotencyKeyOf(headers: Headers): string | null {
  const key = headers.get("idempotency-key");
  if (key === null) return null;
  if (key.trim() === "" || key.length > MAX_KEY_LENGTH) {
    throw new KeybrakeError("invalid_idempotency_key", `An Idempotency-Key must be 1 to ${MAX_KEY_LENGTH} characters and not blank.`);
  }
  return key;
}

/**
 * The keys SDKs make up for every POST: a bare UUID v4 (stripe-python), or one behind `…-retry-`
 * (`stripe-node-retry-…`, the OpenAI and Anthropic SDKs' `stainless-…-retry-…`). Fresh on every run of the code
 * that sends them, so a task's retry never repeats its first attempt's key: they de-duplicate nothing a job retries.
 */
const SDK_GENERATED = /^(?:[a-z0-9-]+-retry-)?[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

/**
 * `require_idempotency_key` (SPEC §3): a priced call needs a key the job chose, stable across its retries (a run
 * id and what it charges), not one its SDK generated: stripe-python adds a random one to every POST, so a task
 * that forgot `idempotency_key=` would otherwise pass and charge again when its orchestrator retries it.
 */
export function requireJobChosenKey(jobKey: string | null): void {
  if (jobKey === null) throw new KeybrakeError("idempotency_key_required");
  if (SDK_GENERATED.test(jobKey)) {
    throw new KeybrakeError(
      "idempotency_key_required",
      `This key requires an Idempotency-Key the job chooses, stable across its retries (e.g. "<run id>-<customer id>"); "${jobKey}" is the random key an SDK adds to every POST, which a retried task does not repeat.`,
    );
  }
}

/**
 * What makes two calls "the same call" (SPEC §7): method, path, query, content type, body, and the headers that
 * change what the vendor does. Each part is length-prefixed so no two different calls can run together into
 * the same text.
 */
export function callFingerprint(parts: {
  method: string;
  path: string;
  search: string;
  headers: Headers;
  contextHeaders: string[];
  body: Uint8Array;
}): string {
  const fields = [
    parts.method,
    parts.path,
    parts.search,
    parts.headers.get("content-type") ?? "",
    ...parts.contextHeaders.map((h) => parts.headers.get(h) ?? ""),
  ];
  const head = fields.map((f) => `${f.length}:${f}`).join("|");
  return sha256Hex(`${head}|${parts.body.length}:${Buffer.from(parts.body).toString("latin1")}`);
}

const SECRET_SETTING = "idempotency_derivation_secret";

/**
 * The Idempotency-Key the vendor sees: a keyed hash of (the minter of the vault key, the job's key). Retries of
 * one call carry the same vendor key even under a fresh vault key from the same minter, while two minters
 * (tenants sharing one real account) never share one, so the vendor never replays one tenant's answer to another.
 * The hash key is random per installation, kept in the database so every restart derives the same keys.
 */
export function idempotencyDeriver(store: Store): (mintedBy: string, jobKey: string) => Promise<string> {
  let secret: Promise<string> | undefined;
  const load = async () => {
    const existing = await store.getSetting(SECRET_SETTING);
    if (existing) return existing;
    const fresh = randomBase62(43);
    await store.setSetting(SECRET_SETTING, fresh);
    return fresh;
  };
  return async (mintedBy, jobKey) => {
    secret ??= load().catch((err) => {
      secret = undefined; // a failed read is tried again by the next call
      throw err;
    });
    // Bun's hasher keyed with the secret is HMAC-SHA256, as node:crypto's createHmac, at half its cost per call.
    const mac = new Bun.CryptoHasher("sha256", await secret).update(`${mintedBy.length}:${mintedBy}|${jobKey}`).digest("base64url");
    return `kb_${mac}`;
  };
}

import { timingSafeEqual } from "node:crypto";
import { Elysia } from "elysia";
import type { Config } from "../config";
import { unauthorized } from "../errors";
import type { Store } from "../store/index";
import { randomBase62, sha256Hex } from "../util";

const TOKEN_SETTING = "admin_token_sha256";

export interface AdminAuth {
  /** The caller's fingerprint when the bearer token is the admin token, else null. */
  check(authorization: string | null): Promise<string | null>;
}

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

/** Checks bearer tokens against the admin token's SHA-256 digest with timingSafeEqual. */
export function adminAuth(config: Config, store: Store): AdminAuth {
  let expected: Promise<Buffer | null> | undefined;
  const load = async () => {
    const hex = config.adminToken ? sha256Hex(config.adminToken) : await store.getSetting(TOKEN_SETTING);
    return hex ? Buffer.from(hex, "hex") : null;
  };
  return {
    async check(authorization) {
      const m = /^Bearer (\S+)$/i.exec(authorization ?? "");
      expected ??= load();
      const want = await expected;
      if (!m || !want) return null;
      const givenHex = sha256Hex(m[1]!);
      return timingSafeEqual(Buffer.from(givenHex, "hex"), want) ? tokenFingerprint(givenHex) : null;
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

/** Routes behind this plugin need the admin token; `actor` is the caller's token fingerprint. */
export const adminGuard = (auth: AdminAuth) =>
  new Elysia({ name: "admin-guard", seed: auth }).derive({ as: "scoped" }, async ({ request }) => {
    const actor = await auth.check(request.headers.get("authorization"));
    if (!actor) throw unauthorized();
    return { actor };
  });

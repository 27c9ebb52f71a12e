const VAULT_KEY = /^kb_(?:live|test)_[0-9A-Za-z]{32,}$/;

/**
 * The vault key a caller presented: `Authorization: Bearer <key>` (Stripe, Resend, OpenAI SDKs), HTTP Basic with the
 * key as user name (`curl -u key:`) or password (Twilio's `AccountSid:<key>`), or `x-api-key: <key>` (Anthropic's
 * SDKs and examples). Null when none is there.
 */
export function presentedVaultKey(headers: Headers): string | null {
  const apiKey = headers.get("x-api-key")?.trim();
  if (apiKey && VAULT_KEY.test(apiKey)) return apiKey;
  const authorization = headers.get("authorization");
  if (!authorization) return null;
  const [scheme, value = ""] = authorization.trim().split(/\s+/, 2);
  if (/^bearer$/i.test(scheme!)) return VAULT_KEY.test(value) ? value : null;
  if (!/^basic$/i.test(scheme!)) return null;
  let decoded: string;
  try {
    decoded = Buffer.from(value, "base64").toString("utf8");
  } catch {
    return null;
  }
  const sep = decoded.indexOf(":");
  const user = sep < 0 ? decoded : decoded.slice(0, sep);
  const pass = sep < 0 ? "" : decoded.slice(sep + 1);
  if (VAULT_KEY.test(user)) return user;
  return VAULT_KEY.test(pass) ? pass : null;
}

import { z } from "zod";

/** What the token routes answer; nothing but zod, like every responses.ts (see src/keys/responses.ts). */

export const ROLES = ["admin", "issuer", "viewer", "approver"] as const;

export const TokenRecordSchema = z.object({
  id: z.string().describe("tok_…"),
  name: z.string(),
  role: z.enum(ROLES),
  token_hint: z.string().describe("The token's first and last characters, to recognise it"),
  policy: z.record(z.string(), z.unknown()).nullable(),
  status: z.enum(["active", "revoked", "expired"]),
  created_at: z.string(),
  created_by: z.string().describe("The fingerprint of the token that created it, or cli:<user>"),
  expires_at: z.string().nullable(),
  revoked_at: z.string().nullable(),
});

export const IssuedTokenSchema = TokenRecordSchema.extend({
  token: z.string().describe("kb_adm_…, kb_iss_…, kb_view_… or kb_appr_…: shown this once, only its SHA-256 is kept"),
});

export const RevokedTokenSchema = TokenRecordSchema.extend({
  revoked_keys: z.number().describe("Keys revoked with it (revoke_keys=true); 0 otherwise"),
});

export const TokenPage = z.object({ data: z.array(TokenRecordSchema), next_cursor: z.string().nullable() });

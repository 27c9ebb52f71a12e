import { z } from "zod";
import { ROLES } from "../tokens/responses";

/** What the dashboard's session routes answer; nothing but zod, like every responses.ts (see src/keys/responses.ts). */

export const SessionSchema = z.object({
  role: z.enum(ROLES),
  token_id: z.string().describe('The token the session was opened with: tok_…, or "admin" for the bootstrap token'),
  token_name: z.string(),
  csrf_token: z.string().describe("Send it back in the X-CSRF-Token header on every write made with the session cookie"),
  expires_at: z.string().describe("When the session ends (8 hours after sign-in)"),
  vendors: z.array(z.string()).describe("The vendors this Keybrake serves (its registry), for the dashboard's filters"),
  free_endpoints: z
    .record(z.string(), z.array(z.string()))
    .describe("By vendor, the operator's KEYBRAKE_<VENDOR>_FREE_ENDPOINTS: forwarded at $0 although the catalogue does not know them"),
});

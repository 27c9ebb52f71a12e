import { z } from "zod";

/** What the hold routes answer; nothing but zod, like every responses.ts (see src/keys/responses.ts). */

export const HoldSchema = z.object({
  id: z.string(),
  key_id: z.string(),
  label: z.string().nullable(),
  day: z.string(),
  state: z.enum(["held", "settled", "released", "ambiguous", "orphaned"]),
  hold_usd: z.number(),
  cost_usd: z.number().nullable(),
  created_at: z.string().nullable(),
  settled_at: z.string().nullable(),
});

export const HoldList = z.object({ data: z.array(HoldSchema) });

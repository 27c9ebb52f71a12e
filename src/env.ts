import { z } from "zod";

/**
 * Parsers of KEYBRAKE_* variables, shared by the core configuration (config.ts) and each vendor's own part
 * of it (src/vendors/*.ts). Each refusal message completes "NAME: …".
 */

/** A bad configuration: one line naming the variable; start-up stops. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

export const secret = z.string().min(1, "must not be empty").optional();

export const httpUrl = (fallback: string) =>
  z
    .url({ protocol: /^https?$/, error: "must be an http(s) URL" })
    .default(fallback)
    .transform((u) => u.replace(/\/+$/, ""));
export const int = (min: number, max: number, fallback: number) =>
  z.coerce
    .number({ error: `must be an integer from ${min} to ${max}` })
    .int(`must be an integer from ${min} to ${max}`)
    .min(min, `must be an integer from ${min} to ${max}`)
    .max(max, `must be an integer from ${min} to ${max}`)
    .default(fallback);
export const unitPrice = (fallback: number) =>
  z.coerce
    .number({ error: "must be a USD amount like 0.0083" })
    .nonnegative("must be a USD amount >= 0")
    .max(100, "must be a USD amount <= 100")
    .default(fallback);
export const flag = z
  .enum(["0", "1", "true", "false"], { error: "must be 0 or 1" })
  .default("0")
  .transform((v) => v === "1" || v === "true");

/**
 * `A=1.08,B=2` -> { A: "1.08", B: "2" } (names upper-cased, values kept as decimal strings). `problem` says what is
 * wrong with one entry, or null; an entry not of the form NAME=decimal is refused with `form`.
 */
export const decimalTable = (name: RegExp, form: string, problem: (name: string, value: string, part: string) => string | null) =>
  z
    .string()
    .default("")
    .transform((raw, ctx) => {
      const table: Record<string, string> = {};
      for (const part of raw
        .split(",")
        .map((p) => p.trim())
        .filter(Boolean)) {
        const m = new RegExp(`^(${name.source})=(\\d+(?:\\.\\d+)?)$`).exec(part);
        const why = m ? problem(m[1]!.toUpperCase(), m[2]!, part) : `"${part}" is not ${form}`;
        if (why !== null) {
          ctx.addIssue({ code: "custom", message: why });
          return z.NEVER;
        }
        table[m![1]!.toUpperCase()] = m![2]!;
      }
      return table;
    });

import { existsSync, readFileSync } from "node:fs";
import { ADMIN_TOKEN } from "./harness";
import { ANTHROPIC_KEY, ANTHROPIC_TEST_KEY } from "./mock-anthropic";
import { OPENAI_KEY, OPENAI_TEST_KEY } from "./mock-openai";
import { RESEND_KEY, RESEND_TEST_KEY } from "./mock-resend";
import { STRIPE_LIVE_SECRET, STRIPE_TEST_SECRET } from "./mock-stripe";
import { TWILIO_TEST_TOKEN, TWILIO_TOKEN } from "./mock-twilio";

/** Every secret the harness configures: the admin token and the real vendor credentials. */
export const CONFIGURED_SECRETS = [
  ADMIN_TOKEN,
  STRIPE_LIVE_SECRET,
  STRIPE_TEST_SECRET,
  TWILIO_TOKEN,
  TWILIO_TEST_TOKEN,
  RESEND_KEY,
  RESEND_TEST_KEY,
  OPENAI_KEY,
  OPENAI_TEST_KEY,
  ANTHROPIC_KEY,
  ANTHROPIC_TEST_KEY,
];

/** The files' raw bytes as one string (latin1 keeps every byte); a file that does not exist (no WAL) adds nothing. */
export const rawBytes = (...paths: string[]) =>
  paths
    .filter((p) => existsSync(p))
    .map((p) => readFileSync(p).toString("latin1"))
    .join("\n");

/** The secrets that occur in `text`: expect [] (a failure names the secret that leaked). */
export const secretsIn = (text: string, secrets: readonly string[]) => secrets.filter((s) => text.includes(s));

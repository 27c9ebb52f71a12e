/**
 * The README's catalogue section, generated from the vendor modules' closed catalogues (SPEC §6: "The README
 * lists the catalogue"). test/catalogue.test.ts fails when README.md differs from what this prints.
 *
 *   bun test/helpers/catalogue-doc.ts           prints the section
 *   bun test/helpers/catalogue-doc.ts --write   rewrites README.md between the markers
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ANTHROPIC_CATALOGUE } from "../../src/vendors/anthropic";
import { catalogueMarkdown } from "../../src/vendors/catalogue";
import { OPENAI_CATALOGUE } from "../../src/vendors/openai";
import { RESEND_CATALOGUE } from "../../src/vendors/resend";
import { STRIPE_CATALOGUE } from "../../src/vendors/stripe";
import { TWILIO_CATALOGUE } from "../../src/vendors/twilio";

export const README_PATH = join(import.meta.dir, "../../README.md");
export const START_MARKER = "<!-- catalogue:start -->";
export const END_MARKER = "<!-- catalogue:end -->";
export const REGENERATE = "bun test/helpers/catalogue-doc.ts --write";

// The built-in vendors, named here rather than read from the registry: a test that registers a plugin
// vendor in the same process must not change the README's section.
const SECTIONS = [
  ["Stripe", "stripe", STRIPE_CATALOGUE],
  ["Twilio", "twilio", TWILIO_CATALOGUE],
  ["Resend", "resend", RESEND_CATALOGUE],
  ["OpenAI", "openai", OPENAI_CATALOGUE],
  ["Anthropic", "anthropic", ANTHROPIC_CATALOGUE],
] as const;

/** The text between the README's markers: one heading and one table per vendor. */
export function catalogueSection(): string {
  return SECTIONS.map(([heading, vendor, catalogue]) => `### ${heading}\n\n${catalogueMarkdown(vendor, catalogue)}`).join("\n\n");
}

/** The README's text between the markers (without the newlines around it), or null when a marker is missing. */
export function readmeSection(readme: string): string | null {
  const start = readme.indexOf(START_MARKER);
  const end = readme.indexOf(END_MARKER);
  if (start < 0 || end < start) return null;
  return readme
    .slice(start + START_MARKER.length, end)
    .replace(/^\n+/, "")
    .replace(/\n+$/, "");
}

/** The README with the section between its markers replaced by `catalogueSection()`. */
export function withSection(readme: string): string {
  const start = readme.indexOf(START_MARKER);
  const end = readme.indexOf(END_MARKER);
  if (start < 0 || end < start) throw new Error(`README.md has no ${START_MARKER} … ${END_MARKER} markers`);
  return `${readme.slice(0, start + START_MARKER.length)}\n${catalogueSection()}\n${readme.slice(end)}`;
}

if (import.meta.main) {
  if (process.argv.includes("--write")) {
    const before = readFileSync(README_PATH, "utf8");
    const after = withSection(before);
    if (after !== before) writeFileSync(README_PATH, after);
    console.log(after === before ? "README.md: catalogue section already up to date" : "README.md: catalogue section rewritten");
  } else {
    console.log(catalogueSection());
  }
}

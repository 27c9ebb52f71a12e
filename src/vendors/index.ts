import { z } from "zod";
import { anthropic } from "./anthropic";
import { openai } from "./openai";
import { resend } from "./resend";
import { stripe } from "./stripe";
import { twilio } from "./twilio";
import type { AnyVendor } from "./types";

const registry = new Map<string, AnyVendor>();

/**
 * Adds a vendor: its variables join the configuration, its routes the proxy, its name the keys' `vendor`.
 * Register before loading the configuration and creating the app.
 */
export function registerVendor(vendor: AnyVendor) {
  if (registry.has(vendor.name)) throw new Error(`vendor ${vendor.name} is registered twice`);
  registry.set(vendor.name, vendor);
}

export const registeredVendors = (): AnyVendor[] => [...registry.values()];

/** The registered vendors' names as a sentence says them: "stripe, twilio or resend" (help texts). */
export function vendorChoices(): string {
  const names = [...registry.keys()];
  return names.length < 2 ? names.join("") : `${names.slice(0, -1).join(", ")} or ${names.at(-1)}`;
}

/** A registered vendor's name, checked when parsed (a vendor registered later is accepted too). */
export const vendorName = z
  .string()
  .refine((name) => registry.has(name), { error: () => `must be one of ${[...registry.keys()].join(", ")}` });
export const vendorNamed = (name: string): AnyVendor | undefined => registry.get(name);

registerVendor(stripe);
registerVendor(twilio);
registerVendor(resend);
registerVendor(openai);
registerVendor(anthropic);

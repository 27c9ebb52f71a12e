import type { VendorName } from "../store/types";
import { resend } from "./resend";
import { stripe } from "./stripe";
import { twilio } from "./twilio";
import type { Vendor } from "./types";

export const VENDORS: Record<VendorName, Vendor> = { stripe, twilio, resend };
export const VENDOR_NAMES = ["stripe", "twilio", "resend"] as const satisfies readonly VendorName[];

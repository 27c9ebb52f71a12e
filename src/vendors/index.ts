import type { VendorName } from "../store/types";
import { stripe } from "./stripe";
import type { Vendor } from "./types";

export const VENDORS: Partial<Record<VendorName, Vendor>> = { stripe };
export const VENDOR_NAMES = ["stripe", "twilio", "resend"] as const satisfies readonly VendorName[];

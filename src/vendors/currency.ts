import { KeybrakeError } from "../errors";

const ZERO_DECIMAL = new Set("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split(" "));
const THREE_DECIMAL = new Set("BHD JOD KWD OMR TND".split(" "));

/** Digits after the decimal point in the amounts vendors send (ISK is zero-decimal but sent with two). */
export function minorUnitExponent(currency: string): number {
  const c = currency.toUpperCase();
  if (ZERO_DECIMAL.has(c)) return 0;
  if (THREE_DECIMAL.has(c)) return 3;
  return 2;
}

/**
 * Micro-dollars for `digits / 10^scale` units of a currency, through KEYBRAKE_FX (USD per unit). Exact rational
 * arithmetic in BigInt; a fraction of a micro-dollar rounds up, so a hold is never smaller than the charge.
 */
export function decimalToMicros(digits: bigint, scale: number, currency: string, fx: Record<string, string>): number {
  const code = currency.toUpperCase();
  const rate = code === "USD" ? "1" : fx[code];
  if (rate === undefined) {
    throw new KeybrakeError("currency_not_priced", `No KEYBRAKE_FX rate for ${code}; the call was not forwarded.`);
  }
  const [whole, frac = ""] = rate.split(".");
  const num = digits * BigInt(whole! + frac) * 1_000_000n;
  const den = 10n ** BigInt(scale + frac.length);
  return Number((num + den - 1n) / den);
}

/** Micro-dollars for an amount in a currency's minor units (what Stripe sends). */
export const minorToMicros = (amountMinor: number, currency: string, fx: Record<string, string>): number =>
  decimalToMicros(BigInt(amountMinor), minorUnitExponent(currency), currency, fx);

/** Micro-dollars for a USD unit price times a count, rounded up. */
export const unitPriceMicros = (usd: number, count: number): number => Math.ceil((Math.round(usd * 1e8) * count) / 100);

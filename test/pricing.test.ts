import { describe, expect, test } from "bun:test";
import { smsSegments } from "../src/vendors/sms";
import { decimalToMicros, minorToMicros, unitPriceMicros } from "../src/vendors/currency";
import { duplicateKey } from "../src/vendors/body";
import { recipients } from "../src/vendors/resend";

describe("SMS segments", () => {
  const cases: [string, string, number][] = [
    ["empty", "", 1],
    ["160 GSM chars", "a".repeat(160), 1],
    ["161 GSM chars", "a".repeat(161), 2],
    ["306 GSM chars", "a".repeat(306), 2],
    ["307 GSM chars", "a".repeat(307), 3],
    ["70 UCS-2 chars", "ж".repeat(70), 1],
    ["71 UCS-2 chars", "ж".repeat(71), 2],
    ["134 UCS-2 chars", "ж".repeat(134), 2],
    ["135 UCS-2 chars", "ж".repeat(135), 3],
    ["one non-GSM char makes it UCS-2", `${"a".repeat(69)}ж`, 1],
    ["one non-GSM char makes 71 UCS-2", `${"a".repeat(70)}ж`, 2],
    ["GSM accents stay GSM", "é".repeat(160), 1],
    ["80 extension chars = 160 septets", "{".repeat(80), 1],
    ["81 extension chars = 162 septets", "{".repeat(81), 2],
    ["159 + one € counts 161", `${"a".repeat(159)}€`, 2],
    ["emoji count as two UTF-16 units", "😀".repeat(35), 1],
    ["36 emoji = 72 units", "😀".repeat(36), 2],
  ];
  for (const [name, body, segments] of cases) test(`${name} -> ${segments}`, () => expect(smsSegments(body)).toBe(segments));

  test("each extension character counts double", () => {
    for (const ch of ["{", "}", "[", "]", "~", "\\", "|", "^", "€"]) {
      expect(smsSegments("a".repeat(158) + ch)).toBe(1);
      expect(smsSegments("a".repeat(159) + ch)).toBe(2);
    }
  });
});

describe("money conversion", () => {
  test("minor units through FX, exact and rounded up", () => {
    expect(minorToMicros(2900, "usd", {})).toBe(29_000_000);
    expect(minorToMicros(10_000, "JPY", { JPY: "0.0067" })).toBe(67_000_000);
    expect(minorToMicros(1250, "kwd", { KWD: "3.25" })).toBe(4_062_500);
    expect(minorToMicros(1, "eur", { EUR: "1.0833333" })).toBe(10_834); // 10,833.333 micro-dollars, rounded up
    expect(() => minorToMicros(100, "eur", {})).toThrow("KEYBRAKE_FX");
    expect(decimalToMicros(750n, 5, "USD", {})).toBe(7_500);
    expect(unitPriceMicros(0.0083, 3)).toBe(24_900);
    expect(unitPriceMicros(0.0009, 1)).toBe(900);
  });
});

describe("parsing what vendors read", () => {
  test("duplicate keys are found at any depth, not inside strings", () => {
    expect(duplicateKey('{"amount":1,"amount":2}')).toBe("amount");
    expect(duplicateKey('{"a":{"b":1,"b":2}}')).toBe("b");
    expect(duplicateKey('[{"to":"x"},{"to":"y"}]')).toBeNull();
    expect(duplicateKey('{"a":"\\"amount\\":1,","amount":1}')).toBeNull();
    expect(duplicateKey('{"am\\u006funt":1,"amount":2}')).toBe("amount");
  });

  test("Resend recipients: to as a string or a list, plus cc and bcc", () => {
    expect(recipients({ to: "a@x.com" })).toBe(1);
    expect(recipients({ to: ["a@x.com", "b@x.com"], cc: "c@x.com", bcc: ["d@x.com", "e@x.com"] })).toBe(5);
    expect(recipients({ to: "a@x.com, b@x.com" })).toBe(2);
    expect(() => recipients({ cc: "a@x.com" })).toThrow('"to" is missing');
    expect(() => recipients({ to: [{ email: "a@x.com" }] })).toThrow();
  });
});

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { compilePattern, matchEndpoint, patternProblem } from "../src/endpoints";
import { patternCovers, uncoveredPattern } from "../src/tokens/coverage";

// An issuer policy's allowed_endpoints must cover each of a key's patterns (SPEC §10): every request the key's
// pattern lets through, the policy's pattern lets through too. The proxy's own matcher is the judge here.

const matches = (pattern: string, method: string, path: string) => matchEndpoint([compilePattern(pattern)], method, path);

describe("coverage on the contract's examples", () => {
  const cases: [policy: string, key: string, covered: boolean][] = [
    ["POST /v1/payment_intents/*", "POST /v1/*", false], // SPEC §10's own example
    ["POST /v1/*", "POST /v1/payment_intents/*", true],
    ["POST /v1/*", "POST /v1/payment_intents", true],
    ["/v1/payment_intents/*", "POST /v1/payment_intents/pi_*/confirm", true],
    ["/v1/payment_intents/*", "/v1/payment_intents", false], // a trailing /* needs one more segment
    ["POST /v1/payment_intents", "/v1/payment_intents", false], // the key allows every method
    ["/v1/payment_intents", "GET /v1/payment_intents", true],
    ["GET /v1/payment_intents", "POST /v1/payment_intents", false],
    ["POST /v1/payment_intents/*/confirm", "POST /v1/payment_intents/pi_*/confirm", true],
    ["POST /v1/payment_intents/pi_*/confirm", "POST /v1/payment_intents/*/confirm", false],
    ["POST /v1/*/confirm", "POST /v1/**/confirm", false], // `**` also matches an empty segment, `*` never
    ["POST /v1/**/confirm", "POST /v1/*/confirm", true],
    ["/v1/a*b*", "/v1/a*b", true],
    ["/v1/a*b", "/v1/a*b*", false],
    ["/v1/*", "/v1/x/*", true],
    ["/v1/x/*", "/v1/*", false],
    ["/2010-04-01/Accounts/{AccountSid}/Messages*", "POST /2010-04-01/Accounts/{AccountSid}/Messages.json", true],
  ];
  for (const [policy, key, covered] of cases) {
    test(`${JSON.stringify(policy)} ${covered ? "covers" : "does not cover"} ${JSON.stringify(key)}`, () => {
      expect(patternCovers(policy, key)).toBe(covered);
    });
  }

  test("a key's list is covered when each of its patterns is covered by one of the policy's", () => {
    const policy = ["POST /v1/payment_intents", "POST /v1/payment_intents/*"];
    expect(uncoveredPattern(policy, ["POST /v1/payment_intents", "POST /v1/payment_intents/*/confirm"])).toBeNull();
    expect(uncoveredPattern(policy, ["POST /v1/payment_intents", "POST /v1/refunds"])).toBe("POST /v1/refunds");
  });
});

// Patterns over a tiny alphabet, so that random patterns overlap often enough for both answers to occur.
const literal = fc.constantFrom("a", "b", "ab");
const segment = fc.oneof(
  literal,
  fc.constant("*"),
  fc.constant("**"),
  fc.tuple(literal, fc.constant("*")).map(([l, s]) => l + s),
  fc.tuple(fc.constant("*"), literal).map(([s, l]) => s + l),
  fc.tuple(literal, literal).map(([l, r]) => `${l}*${r}`),
);
const method = fc.constantFrom(null, "GET", "POST");
const pattern = fc
  .tuple(method, fc.array(segment, { minLength: 1, maxLength: 4 }))
  .map(([m, segs]) => `${m ? `${m} ` : ""}/${segs.join("/")}`)
  .filter((p) => patternProblem(p) === null);

/**
 * Policy and key pairs: independent ones (mostly not covered), and keys made from the policy by changing a few
 * segments, adding a method or more segments (often covered, often only just not).
 */
const pair = fc.oneof(
  fc.tuple(pattern, pattern),
  fc
    .tuple(pattern, fc.array(fc.option(segment, { freq: 2 }), { minLength: 4, maxLength: 4 }), method, fc.array(segment, { maxLength: 2 }))
    .map(([policy, changes, m, extra]) => {
      const [, pm, path] = /^(?:([A-Z]+) )?(\/\S*)$/.exec(policy)!;
      const segs = path!
        .split("/")
        .slice(1)
        .map((seg, i) => changes[i] ?? seg);
      const key = `${pm ?? m ?? ""}${pm || m ? " " : ""}/${[...segs, ...extra].join("/")}`;
      return [policy, key] as [string, string];
    })
    .filter(([, key]) => patternProblem(key) === null),
);

/** A request the key's pattern matches: `fill(segment, star)` for each `*`, the tail `tailSegments` long. */
function instance(key: string, fill: (segment: number, star: number) => string, methodChoice: string, tailSegments: number) {
  const m = /^(?:([A-Z]+) )?(\/\S*)$/.exec(key)!;
  const segs = m[2]!.split("/").slice(1);
  const parts = segs.flatMap((seg, i) => {
    if (seg === "*" && i === segs.length - 1) return Array.from({ length: tailSegments }, (_, j) => `${fill(i, j)}t`);
    if (seg === "*") return [`${fill(i, 0)}x`]; // one or more characters
    return [seg.split("*").reduce((acc, lit, j) => (j === 0 ? lit : acc + fill(i, j) + lit), "")];
  });
  return { method: m[1] ?? methodChoice, path: `/${parts.join("/")}` };
}

/** Fillings of the stars, characters other than the patterns' a and b included. */
const fill = fc.oneof({ arbitrary: fc.constant(""), weight: 3 }, { arbitrary: fc.constantFrom("a", "b", "z", "az", "zb", "q"), weight: 4 });

describe("coverage, as a property against the proxy's matcher", () => {
  test("if the policy covers the key's pattern, every path the key matches, the policy matches too", () => {
    fc.assert(
      fc.property(
        pair,
        fc.array(fill, { minLength: 1, maxLength: 8 }),
        fc.constantFrom("GET", "POST", "DELETE"),
        fc.integer({ min: 1, max: 3 }),
        ([policy, key], fills, m, tail) => {
          let n = 0;
          const call = instance(key, () => fills[n++ % fills.length]!, m, tail);
          expect(matches(key, call.method, call.path)).toBe(true); // the generator makes only the key's requests
          if (patternCovers(policy, key)) expect(matches(policy, call.method, call.path)).toBe(true);
        },
      ),
      { numRuns: 20_000 },
    );
  });

  test("and it is a real subset test, not a cautious refusal: when it says no, some request of the key shows it", () => {
    // Where a segment is not covered, its stars all empty or all a character the policy has not (SPEC §5's
    // segments are independent), so trying those two per segment finds the request that shows it.
    const choices = ["", "z"];
    fc.assert(
      fc.property(pair, ([policy, key]) => {
        if (patternCovers(policy, key)) return;
        const segments = key.split("/").length - 1;
        let witness = false;
        for (let n = 0; n < 2 ** segments && !witness; n++)
          for (const m of ["GET", "POST", "DELETE"])
            for (const tail of [1, 2]) {
              const call = instance(key, (i) => choices[(n >> i) & 1]!, m, tail);
              if (matches(key, call.method, call.path) && !matches(policy, call.method, call.path)) witness = true;
            }
        expect({ policy, key, witness }).toEqual({ policy, key, witness: true });
      }),
      { numRuns: 10_000 },
    );
  });
});

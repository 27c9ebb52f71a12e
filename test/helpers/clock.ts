/** A clock one test owns: Keybrake reads `now`, the test moves it. Never shared between tests. */
export interface TestClock {
  now: () => number;
  set(at: number): void;
  advance(ms: number): void;
}

export function testClock(start: number): TestClock {
  let at = start;
  return {
    now: () => at,
    set: (t) => void (at = t),
    advance: (ms) => void (at += ms),
  };
}

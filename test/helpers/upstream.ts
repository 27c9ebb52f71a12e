import type { Fault } from "./mock-vendor";

/** Nothing listens on port 1: every call to it is refused before a byte is sent. */
export const REFUSING_URL = "http://127.0.0.1:1";

/** For the tests that wait for an upstream timeout: short, so the wait costs little. */
export const SHORT_UPSTREAM_TIMEOUT_MS = 200;

/**
 * The vendor answers long after SHORT_UPSTREAM_TIMEOUT_MS: Keybrake has answered 504 by then, and a retry sent
 * right after the 504 reaches the vendor before it has acted on the first attempt.
 */
export const ANSWER_AFTER_SHORT_TIMEOUT: Fault = { kind: "delay", ms: 10 * SHORT_UPSTREAM_TIMEOUT_MS };

import type { RequestLimiter } from "../store/index";
import { getOrCreate } from "../util";
const WINDOW_MS = 60_000;
const MIN_CAPACITY = 8;

/**
 * Per-key request limits over a sliding minute, in memory: one process owns the SQLite ledger. On PostgreSQL the
 * fleet shares one log instead (store/pg/rate.ts).
 *
 * A call is admitted only when fewer than `limit` calls of its key were admitted in the 60 s before it, so no
 * 60-second interval ever holds more than `limit` calls. A fixed window, which this replaced, let `limit` calls
 * through just before its boundary and `limit` more just after. Keeping the exact times (a sliding log) rather than
 * two weighted counters keeps that promise exact; it costs one float per admitted call still in the window.
 */
export class RateLimiter implements RequestLimiter {
  private logs = new Map<string, AdmittedLog>();
  private lastSweep = Number.NEGATIVE_INFINITY;

  /** Counts the call; returns seconds to wait when the key is over its limit, else 0. */
  take(keyId: string, limit: number, now: number): number {
    this.sweep(now);
    const log = getOrCreate(this.logs, keyId, () => new AdmittedLog(limit));
    log.clampTo(now);
    log.forgetOlderThan(now - WINDOW_MS);
    log.fit(limit);
    // Entries beyond a lowered limit are kept until they expire: a limit raised again within the minute still counts them.
    if (log.size >= limit) return Math.max(1, Math.ceil((log.at(log.size - limit) + WINDOW_MS - now) / 1000));
    log.push(now, limit);
    return 0;
  }

  /** What is held: keys tracked and timestamp slots allocated across them. */
  stats(): { keys: number; slots: number } {
    let slots = 0;
    for (const log of this.logs.values()) slots += log.capacity;
    return { keys: this.logs.size, slots };
  }

  /**
   * Keys that stop calling would otherwise stay forever. One pass per window of clock time (not per call, which
   * would be quadratic under many active keys) leaves only keys that were admitted within the last two windows.
   */
  private sweep(now: number) {
    if (now - this.lastSweep < WINDOW_MS && now >= this.lastSweep) return;
    this.lastSweep = now;
    for (const [id, log] of this.logs) if (log.size === 0 || now - log.at(log.size - 1) >= WINDOW_MS) this.logs.delete(id);
  }
}

/**
 * One key's admitted times, oldest first, in a ring sized to what the window holds: at most the limit, or the
 * calls still counted after it was lowered.
 */
class AdmittedLog {
  private ring: Float64Array;
  private head = 0;
  size = 0;

  constructor(limit: number) {
    this.ring = new Float64Array(Math.min(limit, MIN_CAPACITY));
  }

  get capacity() {
    return this.ring.length;
  }

  at(i: number): number {
    return this.ring[(this.head + i) % this.ring.length]!;
  }

  /**
   * The wall clock can step backwards (NTP). Times ahead of it are taken as now, so the key waits at most one
   * window instead of the length of the step.
   */
  clampTo(now: number) {
    for (let i = this.size - 1; i >= 0 && this.at(i) > now; i--) this.ring[(this.head + i) % this.ring.length] = now;
  }

  forgetOlderThan(cutoff: number) {
    while (this.size > 0 && this.at(0) <= cutoff) {
      this.head = (this.head + 1) % this.ring.length;
      this.size--;
    }
  }

  /** A burst that has left the window, or a lowered limit, gives its memory back. */
  fit(limit: number) {
    const most = Math.max(limit, this.size);
    const length = this.ring.length;
    if (length > most || (length > MIN_CAPACITY && this.size * 4 <= length))
      this.resize(Math.min(most, Math.max(MIN_CAPACITY, this.size * 2)));
  }

  push(time: number, limit: number) {
    if (this.size === this.ring.length) this.resize(Math.min(limit, this.ring.length * 2));
    this.ring[(this.head + this.size) % this.ring.length] = time;
    this.size++;
  }

  private resize(capacity: number) {
    const ring = new Float64Array(capacity);
    for (let i = 0; i < this.size; i++) ring[i] = this.at(i);
    this.ring = ring;
    this.head = 0;
  }
}

/** Per-key request counts in one-minute windows, in memory (one process owns the ledger). */
export class RateLimiter {
  private windows = new Map<string, { start: number; count: number }>();

  /** Counts the call; returns seconds to wait when the key is over its limit, else 0. */
  take(keyId: string, limit: number, now: number): number {
    let w = this.windows.get(keyId);
    if (!w || now - w.start >= 60_000) {
      if (this.windows.size > 10_000) this.prune(now);
      w = { start: now, count: 0 };
      this.windows.set(keyId, w);
    }
    if (w.count >= limit) return Math.max(1, Math.ceil((w.start + 60_000 - now) / 1000));
    w.count++;
    return 0;
  }

  private prune(now: number) {
    for (const [id, w] of this.windows) if (now - w.start >= 60_000) this.windows.delete(id);
  }
}

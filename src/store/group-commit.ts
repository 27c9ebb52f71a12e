import type { Database } from "bun:sqlite";

const SCHEDULE: (f: () => void) => void = process.env.GC_MODE === "micro" ? queueMicrotask : (f) => setImmediate(f);

interface Pending {
  op: () => unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/**
 * Group commit. Writes submitted during one turn of the event loop run, in submission order, inside one
 * `BEGIN IMMEDIATE` transaction, each in its own savepoint (a failing write rolls back alone). Every caller's
 * promise resolves only after the shared COMMIT, so a hold is durable before its call is forwarded; concurrent
 * callers share the ~20 µs a commit costs instead of paying it one after another.
 */
export class GroupCommit {
  private queue: Pending[] = [];
  private scheduled = false;

  constructor(private readonly db: Database) {}

  submit<T>(op: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ op, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        SCHEDULE(() => this.flush());
      }
    });
  }

  /** Runs what is queued now. Also called on shutdown, so nothing submitted is left behind. */
  flush() {
    this.scheduled = false;
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    const outcomes: { ok: boolean; value: unknown }[] = [];
    try {
      this.db
        .transaction(() => {
          // A batch of one needs no savepoint: if it fails, the whole transaction is just that write.
          if (batch.length === 1) return void outcomes.push({ ok: true, value: batch[0]!.op() });
          for (const item of batch) {
            try {
              outcomes.push({ ok: true, value: this.db.transaction(item.op)() });
            } catch (error) {
              outcomes.push({ ok: false, value: error });
            }
          }
        })
        .immediate();
    } catch (error) {
      for (const item of batch) item.reject(error);
      return;
    }
    batch.forEach((item, i) => (outcomes[i]!.ok ? item.resolve(outcomes[i]!.value) : item.reject(outcomes[i]!.value)));
  }
}

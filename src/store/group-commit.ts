import type { Database } from "bun:sqlite";

interface Pending {
  op: () => unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/**
 * Group commit. Writes submitted during one turn of the event loop run, in submission order, inside one
 * `BEGIN IMMEDIATE` transaction, each in its own savepoint (a failing write rolls back alone). Every caller's
 * promise resolves only after the shared COMMIT, so a hold is durable before its call is forwarded; concurrent
 * callers share the cost of a commit instead of paying it one after another.
 */
export class GroupCommit {
  private queue: Pending[] = [];
  private scheduled = false;
  private readonly begin;
  private readonly commit;
  private readonly rollback;
  private readonly savepoint;
  private readonly release;
  private readonly rollbackTo;

  constructor(db: Database) {
    // Prepared once: bun:sqlite's db.transaction() builds a new wrapper on every call, too slow per write.
    this.begin = db.prepare("BEGIN IMMEDIATE");
    this.commit = db.prepare("COMMIT");
    this.rollback = db.prepare("ROLLBACK");
    this.savepoint = db.prepare("SAVEPOINT one_write");
    this.release = db.prepare("RELEASE one_write");
    this.rollbackTo = db.prepare("ROLLBACK TO one_write");
  }

  submit<T>(op: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ op, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        // After this turn's I/O: every request parsed in this turn joins the same transaction.
        setImmediate(() => this.flush());
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
      this.begin.run();
      // A batch of one needs no savepoint: if it fails, the whole transaction is just that write.
      for (const item of batch) outcomes.push(batch.length === 1 ? { ok: true, value: item.op() } : this.inSavepoint(item.op));
      this.commit.run();
    } catch (error) {
      try {
        this.rollback.run();
      } catch {
        // SQLite already rolled back
      }
      for (const item of batch) item.reject(error);
      return;
    }
    for (const [i, item] of batch.entries()) {
      const outcome = outcomes[i]!;
      if (outcome.ok) item.resolve(outcome.value);
      else item.reject(outcome.value);
    }
  }

  /** One write of a batch: a failure rolls back this write alone and is reported to its caller alone. */
  private inSavepoint(op: () => unknown): { ok: boolean; value: unknown } {
    this.savepoint.run();
    try {
      const value = op();
      this.release.run();
      return { ok: true, value };
    } catch (error) {
      this.rollbackTo.run();
      this.release.run();
      return { ok: false, value: error };
    }
  }
}

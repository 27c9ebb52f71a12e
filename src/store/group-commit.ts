import type { Database } from "bun:sqlite";

interface Pending {
  op: () => unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/** SQLite's `PRAGMA synchronous` levels. */
const NORMAL = 1;
const FULL = 2;

export interface GroupCommitOptions {
  /** Called after every commit with the `synchronous` level it committed at (tests observe the policy with it). */
  onCommit?: (commit: { synchronous: number; writes: number }) => void;
}

/**
 * Group commit. Writes submitted during one turn of the event loop run, in submission order, inside one
 * `BEGIN IMMEDIATE` transaction, each in its own savepoint (a failing write rolls back alone). Every caller's
 * promise resolves only after the shared COMMIT; concurrent callers share the cost of a commit instead of
 * paying it one after another.
 *
 * Two kinds of writes (SPEC §6):
 * - `submit`: durable before its caller proceeds (a hold before its call is forwarded, a key or token, an
 *   operator's decision). A group that holds one commits at the connection's level (`synchronous=FULL` by
 *   default: the WAL is synced before any promise of the group resolves).
 * - `defer`: what may be lost to a power loss because what it finishes stays counted (a settlement and its audit
 *   row: lost, its hold is still on disk and recovered as orphaned at start; a webhook attempt's bookkeeping:
 *   the alert is sent again). A group of deferred writes only commits with `synchronous=NORMAL`: the WAL is
 *   written but not synced. WAL frames are recovered in order up to the first one missing, so the next synced
 *   commit makes every earlier one durable too, and nothing after a lost write survives without it. A deferred
 *   write queued with durable ones shares their commit (and its one sync).
 *
 * Both commit in the next turn (or sooner: reads and shutdown flush first, see read-your-writes.ts), so a
 * SIGKILL loses at most the writes of one turn; none of them is a hold whose call was forwarded. With
 * `synchronous=NORMAL` configured, every group commits at NORMAL: nothing is synced on commit.
 */
export class GroupCommit {
  private queue: Pending[] = [];
  /** Whether the queue holds a durable write. */
  private durableQueued = false;
  private scheduled = false;
  /** Whether the connection is at NORMAL for a deferred group (set back right after it). */
  private relaxedNow = false;
  private readonly begin;
  private readonly commit;
  private readonly rollback;
  private readonly savepoint;
  private readonly release;
  private readonly rollbackTo;
  private readonly relax: (() => void) | null;
  private readonly restore: (() => void) | null;
  /** The connection's configured level: what a durable group commits at. */
  private readonly level: number;
  private readonly onCommit?: GroupCommitOptions["onCommit"];

  constructor(db: Database, opts: GroupCommitOptions = {}) {
    // Prepared once: bun:sqlite's db.transaction() builds a new wrapper on every call, too slow per write.
    this.begin = db.prepare("BEGIN IMMEDIATE");
    this.commit = db.prepare("COMMIT");
    this.rollback = db.prepare("ROLLBACK");
    this.savepoint = db.prepare("SAVEPOINT one_write");
    this.release = db.prepare("RELEASE one_write");
    this.rollbackTo = db.prepare("ROLLBACK TO one_write");
    this.level = db.query<{ synchronous: number }, []>("PRAGMA synchronous").get()!.synchronous;
    // SQLite applies `PRAGMA synchronous` when the statement is prepared, so it is run anew each time (under a
    // microsecond), outside any transaction (SQLite refuses it inside one).
    this.relax = this.level > NORMAL ? () => db.run(`PRAGMA synchronous = ${NORMAL}`) : null;
    this.restore = this.level > NORMAL ? () => db.run(`PRAGMA synchronous = ${this.level}`) : null;
    this.onCommit = opts.onCommit;
  }

  /** A durable write: its promise resolves once it is committed at the connection's level (synced with FULL). */
  submit<T>(op: () => T): Promise<T> {
    this.durableQueued = true;
    return this.enqueue(op);
  }

  /** A write that is not synced by itself: lost to a power loss, what it finishes stays counted (see the class). */
  defer<T>(op: () => T): Promise<T> {
    return this.enqueue(op);
  }

  private enqueue<T>(op: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ op, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        // After this turn's I/O: every request parsed in this turn joins the same transaction.
        setImmediate(() => this.flush());
      }
    });
  }

  /** Runs what is queued now. Also called before reads and on shutdown, so nothing submitted is left behind. */
  flush() {
    this.scheduled = false;
    const batch = this.queue;
    const durable = this.durableQueued;
    this.queue = [];
    this.durableQueued = false;
    if (batch.length === 0) return;
    const relaxed = !durable && this.relax !== null;
    const outcomes: { ok: boolean; value: unknown }[] = [];
    try {
      if (relaxed) {
        this.relax!();
        this.relaxedNow = true;
      } else if (this.relaxedNow) {
        // Never a durable group on a connection left relaxed (a restore that failed after a failed rollback).
        this.restoreLevel();
      }
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
    } finally {
      if (relaxed) this.restoreLevel();
    }
    this.onCommit?.({ synchronous: relaxed ? NORMAL : this.level, writes: batch.length });
    for (const [i, item] of batch.entries()) {
      const outcome = outcomes[i]!;
      if (outcome.ok) item.resolve(outcome.value);
      else item.reject(outcome.value);
    }
  }

  /** The connection back at its configured level, for the next durable group and for writes made outside. */
  private restoreLevel() {
    this.restore!();
    this.relaxedNow = false;
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

export { FULL as SYNCHRONOUS_FULL, NORMAL as SYNCHRONOUS_NORMAL };

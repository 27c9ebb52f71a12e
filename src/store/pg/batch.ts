import { appendToChain, deferAuditRows, stopDeferring } from "./audit-chain";
import type { Pg } from "./client";

type Op = (tx: Pg) => Promise<unknown>;

interface Pending {
  lockKey: string | null;
  op: Op;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/** Which transaction a group ran, and on which server: the start time of its postmaster, new at every restart. */
interface Ran {
  txid: string;
  server: string;
}

/** How a group's transaction ended. */
type GroupResult =
  /** Each op's own outcome stands: committed, or rolled back alone (to its savepoint, or a group of one entirely). */
  | { state: "done"; outcomes: Outcome[] }
  /** Nothing of the group is in the database. */
  | { state: "rolled back"; error: unknown }
  /** No connection to the server could be had: no op ran. */
  | { state: "unreachable"; error: unknown }
  /** COMMIT was sent and its answer lost, and the server could not say what became of it. */
  | { state: "unknown"; error: unknown };

/** SQLSTATEs of a statement PostgreSQL failed to break a conflict between transactions: running it again is safe. */
const CONFLICT_STATES = new Set(["40001", "40P01"]);
const isConflict = (error: unknown) => CONFLICT_STATES.has((error as { errno?: string } | null)?.errno ?? "");

/** An op the group could not commit runs again alone, at most this many times in all. */
const ATTEMPTS_ALONE = 3;

/**
 * Group commit for PostgreSQL. Ops submitted during one turn of the event loop (or while the previous group
 * commits) run in one transaction on one connection, each in its own savepoint (a failing op rolls back alone and rejects alone); every promise resolves
 * only after the COMMIT. Ops are sorted (stably) by the key whose row they lock, ops without one first, so that the
 * groups of every instance lock keys in one order and never deadlock one another.
 *
 * If the group as a whole fails (a lost connection, the server ending it), each op runs again alone, in its own
 * transaction, instead of failing with the others. If no connection can be had, the group is tried again whole and
 * then refused whole: its ops one by one would each wait out the others' attempts (an outage's 503s, one at a time). If the answer to COMMIT itself is lost, the server is asked
 * whether the transaction committed (`txid_status`, see fateOf), so an op is never applied twice.
 *
 * SAVEPOINT and RELEASE travel in the same round trip as the ops' statements next to them (Bun pipelines the
 * queries of one connection): a group costs its ops' round trips plus one (COMMIT): BEGIN travels with the first op.
 *
 * An op gets the group's connection (a reserved one, in a transaction begun by hand): it must not begin, release
 * or make savepoints itself, and must await every query it starts.
 */
export class PgBatch {
  private queue: Pending[] = [];
  private scheduled = false;
  /**
   * The group being committed. One at a time: what arrives meanwhile waits and goes in the next group, so under
   * load groups grow instead of many small transactions queueing for the same key's row (and for connections).
   */
  private running: Promise<void> | null = null;

  /**
   * `durable: false`: the group's COMMIT does not wait for its WAL to reach the disk (`synchronous_commit = off`
   * for that transaction only). PostgreSQL writes the WAL in order, so such a commit is on disk at the latest
   * with the next durable commit of any transaction, or within a few hundred milliseconds; a crash before then
   * loses it, never a later durable one.
   */
  constructor(
    private readonly sql: Pg,
    private readonly durable = true,
  ) {}

  submit<T>(lockKey: string | null, op: (tx: Pg) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ lockKey, op, resolve: resolve as (value: unknown) => void, reject });
      if (!this.scheduled && !this.running) {
        this.scheduled = true;
        // After this turn's I/O: every request parsed in this turn joins the same transaction.
        setImmediate(() => this.startQueued());
      }
    });
  }

  /** Resolves once everything submitted so far is committed (or has failed). */
  async flush(): Promise<void> {
    while (this.running || this.queue.length > 0) {
      this.startQueued();
      await this.running;
    }
  }

  private startQueued() {
    this.scheduled = false;
    if (this.running || this.queue.length === 0) return;
    const group = this.queue.sort(byLockKey);
    this.queue = [];
    this.running = this.commitGroup(group).finally(() => {
      this.running = null;
      this.startQueued();
    });
  }

  private async commitGroup(group: Pending[]): Promise<void> {
    let result = await this.runTogether(group);
    for (let attempt = 1; result.state === "unreachable" && attempt < ATTEMPTS_ALONE; attempt++) {
      await Bun.sleep(50 * attempt);
      result = await this.runTogether(group);
    }
    if (result.state === "unknown" || result.state === "unreachable") {
      for (const p of group) p.reject(result.error);
      return;
    }
    if (result.state === "rolled back") {
      for (const p of group) await this.runAlone(p);
      return;
    }
    const conflicted: Pending[] = [];
    for (const [i, p] of group.entries()) {
      const outcome = result.outcomes[i]!;
      if (outcome.ok) p.resolve(outcome.value);
      else if (isConflict(outcome.error)) conflicted.push(p);
      else p.reject(outcome.error);
    }
    for (const p of conflicted) await this.runAlone(p);
  }

  /** One op in a transaction of its own, tried again while what failed is the transaction, not the op. */
  private async runAlone(p: Pending): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const result = await this.runTogether([p]);
      const last = attempt >= ATTEMPTS_ALONE;
      if (result.state === "done") {
        const outcome = result.outcomes[0]!;
        if (outcome.ok) return p.resolve(outcome.value);
        if (last || !isConflict(outcome.error)) return p.reject(outcome.error);
      } else if (last || result.state !== "rolled back") {
        // Unknown, or no connection to be had (the server went down under the group): refused now, not after
        // sleeps that the ops queued behind this one would each wait out again.
        return p.reject(result.error);
      }
      await Bun.sleep(50 * attempt);
    }
  }

  private async runTogether(group: Pending[]): Promise<GroupResult> {
    let conn: Awaited<ReturnType<Pg["reserve"]>>;
    try {
      conn = await this.sql.reserve();
    } catch (error) {
      return { state: "unreachable", error };
    }
    let ran: Ran | null = null;
    // Set once every op has run: from then on COMMIT may have reached the server.
    let committing: Outcome[] | null = null;
    // The audit rows its ops write go to the chain last, each op's only if it succeeded (see audit-chain.ts).
    const auditRows = deferAuditRows(conn);
    try {
      // Sent, not awaited: they travel with the first op's statements, and are awaited before the COMMIT.
      const begun = [
        conn`BEGIN ISOLATION LEVEL READ COMMITTED`.execute(),
        ...(this.durable ? [] : [conn`SET LOCAL synchronous_commit TO OFF`.execute()]),
        conn`SELECT txid_current()::text AS txid, pg_postmaster_start_time()::text AS server`.execute(),
      ];
      for (const started of begun) started.catch(() => {});
      const outcomes: Outcome[] = [];
      const releases: Promise<unknown>[] = [];
      if (group.length === 1) {
        // A group of one needs no savepoint: if its op fails, the whole transaction is just that op.
        const outcome = await run(group[0]!.op, conn);
        if (!outcome.ok) {
          await conn`ROLLBACK`;
          return { state: "done", outcomes: [outcome] };
        }
        outcomes.push(outcome);
      } else {
        for (const p of group) {
          const written = auditRows.length;
          const outcome = await inSavepoint(conn, p.op, releases);
          if (!outcome.ok) auditRows.length = written;
          outcomes.push(outcome);
        }
      }
      await appendToChain(conn, auditRows);
      const begin = await Promise.all(begun);
      ran = (begin.at(-1) as Ran[])[0]!;
      committing = outcomes;
      const [commit] = await Promise.all([conn`COMMIT`, ...releases]);
      // PostgreSQL answers the COMMIT of a transaction that had failed with ROLLBACK.
      if (commit.command !== "COMMIT") return { state: "rolled back", error: new Error("the transaction failed and was rolled back") };
      return { state: "done", outcomes };
    } catch (error) {
      await conn`ROLLBACK`.catch(() => {});
      if (committing === null) return { state: "rolled back", error };
      const fate = await this.fateOf(ran);
      return fate === "committed" ? { state: "done", outcomes: committing } : { state: fate, error };
    } finally {
      stopDeferring(conn);
      await conn.release();
    }
  }

  /**
   * Asks the server what became of a transaction whose answer to COMMIT was lost. Only the server that ran it, still
   * up since, can tell: a restarted server or a promoted standby may not have the transaction (its WAL lost with the
   * crash, never streamed) and hands its txid to another transaction, whose fate is not this one's. Then "unknown":
   * a hold may have committed (recovery orphans it, counted) and is never taken as durable.
   */
  private async fateOf(ran: Ran | null): Promise<"committed" | "rolled back" | "unknown"> {
    if (ran === null) return "rolled back";
    for (let attempt = 1; attempt <= 10; attempt++) {
      try {
        // CASE: txid_status() is not even called on another server (it throws for a txid that server has not reached).
        const [row] = await this.sql`
          SELECT pg_postmaster_start_time()::text AS server,
                 CASE WHEN pg_postmaster_start_time()::text = ${ran.server} THEN txid_status(${ran.txid}::bigint) END AS status`;
        if (row.server !== ran.server) return "unknown";
        if (row.status === "committed") return "committed";
        if (row.status === "aborted") return "rolled back";
        // "in progress": the server has not yet noticed that the connection is gone.
      } catch {
        // The server is unreachable for now.
      }
      await Bun.sleep(100 * attempt);
    }
    return "unknown";
  }
}

async function run(op: Op, conn: Pg): Promise<Outcome> {
  try {
    return { ok: true, value: await op(conn) };
  } catch (error) {
    return { ok: false, error };
  }
}

/**
 * One op of a group: a failure rolls back this op alone and is reported to its caller alone. SAVEPOINT is sent
 * with the op's first statements and RELEASE with the next op's (added to `releases`, awaited with the COMMIT).
 */
async function inSavepoint(conn: Pg, op: Op, releases: Promise<unknown>[]): Promise<Outcome> {
  const savepoint = conn`SAVEPOINT one_op`.execute();
  try {
    const value = await op(conn);
    await savepoint;
    releases.push(release(conn));
    return { ok: true, value };
  } catch (error) {
    await savepoint.catch(() => {});
    // Throws if the transaction cannot go on (a lost connection): then the whole group has failed.
    await conn`ROLLBACK TO SAVEPOINT one_op`;
    releases.push(release(conn));
    return { ok: false, error };
  }
}

/** RELEASE, started now (it travels with the next op's statements) and awaited with the COMMIT. */
function release(conn: Pg): Promise<unknown> {
  const released = conn`RELEASE SAVEPOINT one_op`.execute();
  // Its failure, if the group fails before the COMMIT awaits it, is the group's: no unhandled rejection.
  released.catch(() => {});
  return released;
}

/** Ops without a key first, then by key id in code-unit order (the ids are ASCII: PostgreSQL's COLLATE "C" order). */
function byLockKey(a: Pending, b: Pending): number {
  if (a.lockKey === b.lockKey) return 0;
  if (a.lockKey === null) return -1;
  if (b.lockKey === null) return 1;
  return a.lockKey < b.lockKey ? -1 : 1;
}

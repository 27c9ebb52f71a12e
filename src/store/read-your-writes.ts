/**
 * Read-your-writes (see AdminStore): every operation first commits what the call path has queued. `flush` is
 * synchronous for SQLite (its group commit runs in-process) and a promise for PostgreSQL (its batch is in flight).
 */
export function committingQueuedWritesFirst<T extends object>(ops: T, flush: () => void | Promise<void>): T {
  const wrap =
    <A extends unknown[], R>(op: (...args: A) => Promise<R>) =>
    (...args: A): Promise<R> => {
      const flushing = flush();
      return flushing ? flushing.then(() => op(...args)) : op(...args);
    };
  return Object.fromEntries(Object.entries(ops).map(([name, op]) => [name, wrap(op)])) as T;
}

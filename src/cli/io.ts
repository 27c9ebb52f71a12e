import { AsyncLocalStorage } from "node:async_hooks";
import { stderrSink } from "../ops/log";

/** Standard output for a stream of rows (`audit --format ndjson|csv`): written as given, flushed page by page. */
export interface RowStream {
  write(text: string): unknown;
  flush(): unknown;
  end(): unknown;
}

/**
 * What a CLI command reads its environment from and writes its words to: the process's own, or a test's, which
 * runs commands inside the test process (`runCli(argv, io)` in main.ts) instead of starting the binary for each.
 * The commands ask for it (`cliIo()`, `writeOut`, `writeErr`) rather than reading `process.env` and writing to
 * `console` themselves; it travels with the command's async calls, so commands run side by side keep theirs apart.
 */
export interface CliIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  /** The width of the terminal standard output goes to; null for a pipe, a file or a test. */
  readonly columns: number | null;
  out(line: string): void;
  err(line: string): void;
  stream(): RowStream;
}

const processIo: CliIo = {
  env: process.env,
  get columns() {
    return process.stdout.isTTY && process.stdout.columns ? process.stdout.columns : null;
  },
  out: (line) => console.log(line),
  err: stderrSink,
  stream: () => Bun.stdout.writer(),
};

const current = new AsyncLocalStorage<CliIo>();

export const cliIo = (): CliIo => current.getStore() ?? processIo;
export const withCliIo = <T>(io: CliIo, run: () => Promise<T>): Promise<T> => current.run(io, run);
/** A line on the command's standard output. */
export const writeOut = (line: string) => cliIo().out(line);
/** A line on the command's standard error. */
export const writeErr = (line: string) => cliIo().err(line);

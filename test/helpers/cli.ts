import { runCli } from "../../src/main";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * `keybrake <args>` run inside the test process: main.ts's `runCli` with an environment and outputs of its own, the
 * code the binary runs without the binary's start (~0.15 s of CPU a run). Only `env` is the command's environment;
 * a relative path resolves against the test process's folder, so tests give KEYBRAKE_DB as an absolute path. Not
 * for `serve`. What only the binary shows (exit codes reaching the shell, a closed pipe, the start) is tested on
 * the binary (test/binary.test.ts, test/cli-usage.test.ts).
 */
export async function cliInProcess(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  let stdout = "";
  let stderr = "";
  const code = await runCli(args, {
    env: { ...env },
    columns: null,
    out: (line) => {
      stdout += `${line}\n`;
    },
    err: (line) => {
      stderr += `${line}\n`;
    },
    stream: () => ({
      write: (text: string) => {
        stdout += text;
      },
      flush() {},
      end() {},
    }),
  });
  return { code, stdout, stderr };
}

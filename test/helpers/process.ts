import type { Subprocess } from "bun";

export interface Started {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  url: string;
  stderr: () => string;
}

/** Starts `cmd` (a Keybrake server) and waits for its "listening on" line; the port comes from that line. */
export async function startProcess(cmd: string[], opts: { cwd: string; env: Record<string, string> }): Promise<Started> {
  const proc = Bun.spawn(cmd, {
    cwd: opts.cwd,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...opts.env },
    stdout: "pipe",
    stderr: "pipe",
  });
  let err = "";
  const reader = proc.stderr.getReader();
  const decoder = new TextDecoder();
  const deadline = Date.now() + 15_000;
  while (!/listening on http:\/\/[^:]+:(\d+)/.test(err)) {
    if (Date.now() > deadline) throw new Error(`server did not start: ${err}`);
    const { value, done } = await reader.read();
    if (done) throw new Error(`server exited: ${err}`);
    err += decoder.decode(value);
  }
  void (async () => {
    for (;;) {
      const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
      if (done) return;
      err += decoder.decode(value);
    }
  })();
  const port = /listening on http:\/\/[^:]+:(\d+)/.exec(err)![1];
  return { proc, url: `http://127.0.0.1:${port}`, stderr: () => err };
}

export async function run(cmd: string[], opts: { cwd: string; env: Record<string, string> }) {
  const proc = Bun.spawn(cmd, {
    cwd: opts.cwd,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...opts.env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [code, stdout, stderr] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  return { code, stdout, stderr };
}

/** A free TCP port on 127.0.0.1 (taken and released at once), for a server a test starts. */
export function freePort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

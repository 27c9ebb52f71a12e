/** What every bench script needs to run servers of its own on this machine. */
import { join } from "node:path";

/** A free local TCP port (taken and released at once). */
export async function freePort(): Promise<number> {
  const s = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response() });
  const port = s.port!;
  s.stop(true);
  return port;
}

/** Resolves once `url` answers at all (any status); gives up after about 10 s. */
export async function waitUp(url: string) {
  for (let i = 0; i < 400; i++) {
    try {
      await fetch(url);
      return;
    } catch {
      await Bun.sleep(25);
    }
  }
  throw new Error(`${url} did not come up`);
}

/** Starts one of bench/'s Bun servers (its first argument is its port), added to `children` to be stopped. */
export function startBun(children: { kill(signal?: number | NodeJS.Signals): void }[], script: string, ...args: number[]) {
  const p = Bun.spawn(["bun", join(import.meta.dir, script), ...args.map(String)], { stdout: "ignore", stderr: "inherit" });
  children.push(p);
  return waitUp(`http://127.0.0.1:${args[0]}/`);
}

/**
 * Starts a built keybrake (`serve`) on `port`, in `cwd`, with only PATH and `env` in its environment; added to
 * `children` to be stopped. Resolves once it answers /healthz.
 */
export function startKeybrakeBinary(
  children: { kill(signal?: number | NodeJS.Signals): void }[],
  bin: string,
  port: number,
  cwd: string,
  env: Record<string, string>,
) {
  const p = Bun.spawn([bin, "serve"], {
    cwd,
    env: { PATH: process.env.PATH ?? "", KEYBRAKE_PORT: String(port), KEYBRAKE_HOST: "127.0.0.1", ...env },
    stdout: "ignore",
    stderr: "ignore",
  });
  children.push(p);
  return waitUp(`http://127.0.0.1:${port}/healthz`);
}

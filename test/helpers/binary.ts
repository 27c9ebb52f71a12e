import { join } from "node:path";
import { run } from "./process";

const root = join(import.meta.dir, "../..");
let built: Promise<string> | undefined;

/** `bun run build` once per test process; the path of dist/keybrake. */
export function ensureBinary(): Promise<string> {
  built ??= run(["bun", "run", "build"], { cwd: root, env: {} }).then((r) => {
    if (r.code !== 0) throw new Error(`build failed: ${r.stderr}`);
    return join(root, "dist/keybrake");
  });
  return built;
}

/**
 * How tests run `keybrake`: the built binary, which users run and which starts in a third of the time
 * `bun src/main.ts` takes.
 */
export const keybrakeCommand = async (...args: string[]) => [await ensureBinary(), ...args];

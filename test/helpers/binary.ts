import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run } from "./process";

const root = join(import.meta.dir, "../..");
let built: Promise<string> | undefined;

/**
 * `bun run build` once per test process, the release build exactly, into a folder of this process's own (the last
 * `--outfile` wins): two test runs side by side never run a binary the other is rewriting. Its path.
 */
export function ensureBinary(): Promise<string> {
  built ??= build(join(mkdtempSync(join(tmpdir(), "keybrake-build-")), "keybrake"));
  return built;
}

async function build(outfile: string): Promise<string> {
  const r = await run(["bun", "run", "build", "--outfile", outfile], { cwd: root, env: {} });
  if (r.code !== 0) throw new Error(`build failed: ${r.stderr}`);
  return outfile;
}

/**
 * How tests run `keybrake`: the built binary, which users run and which starts in a third of the time
 * `bun src/main.ts` takes.
 */
export const keybrakeCommand = async (...args: string[]) => [await ensureBinary(), ...args];

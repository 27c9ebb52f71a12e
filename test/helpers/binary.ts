import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  utimesSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { run } from "./process";

const root = join(import.meta.dir, "../..");
/** The builds tests run, one folder per state of the sources, shared by the workers of a run and by later runs. */
const CACHE = join(tmpdir(), "keybrake-test-builds");
/** A build no run has used for this long is removed; a run takes minutes, so no running test loses its binary. */
const UNUSED_FOR_MS = 60 * 60_000;
/** A lock older than this is a builder that died: taken over. A build takes seconds. */
const STALE_LOCK_MS = 3 * 60_000;

let built: Promise<string> | undefined;

/**
 * The release build (`bun run build`) of the sources as they are now: built once for them, whichever test worker or
 * run asks first, and reused while they do not change. Its path.
 */
export function ensureBinary(): Promise<string> {
  built ??= buildOnce(sourceHash());
  return built;
}

/**
 * How tests run `keybrake`: the built binary, which users run and which starts in a third of the time
 * `bun src/main.ts` takes.
 */
export const keybrakeCommand = async (...args: string[]) => [await ensureBinary(), ...args];

/** What the binary is built from: the sources, the migrations, the dependencies' lockfile and the build's settings. */
function sourceHash(): string {
  const hasher = new Bun.CryptoHasher("sha256");
  const files = ["src", "drizzle"].flatMap((dir) => filesUnder(join(root, dir)));
  for (const file of [...files, ...["package.json", "bun.lock", "tsconfig.json"].map((f) => join(root, f))].sort()) {
    hasher.update(relative(root, file));
    hasher.update(readFileSync(file));
  }
  return hasher.digest("hex").slice(0, 16);
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? filesUnder(join(dir, entry.name)) : entry.isFile() ? [join(dir, entry.name)] : [],
  );
}

async function buildOnce(key: string): Promise<string> {
  mkdirSync(CACHE, { recursive: true });
  const folder = join(CACHE, key);
  const binary = join(folder, "keybrake");
  const lock = join(CACHE, `${key}.lock`);
  for (;;) {
    if (existsSync(binary)) {
      const now = new Date();
      utimesSync(folder, now, now); // in use: not pruned
      return binary;
    }
    let fd: number;
    try {
      fd = openSync(lock, "wx");
    } catch {
      // Another worker is building these sources: wait for its binary, or take over from a builder that died.
      if (Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? 0) > STALE_LOCK_MS) rmSync(lock, { force: true });
      await Bun.sleep(100);
      continue;
    }
    try {
      const building = mkdtempSync(join(CACHE, `${key}.building-`));
      const r = await run(["bun", "run", "build", "--outfile", join(building, "keybrake")], { cwd: root, env: {} });
      if (r.code !== 0) {
        rmSync(building, { recursive: true, force: true });
        throw new Error(`build failed: ${r.stderr}`);
      }
      renameSync(building, folder); // whole or not at all: a waiting worker never runs a half-written binary
      pruneUnused(key);
      return binary;
    } finally {
      closeSync(fd);
      unlinkSync(lock);
    }
  }
}

/** Builds of other sources that no run has used for an hour: ~120 MB each. */
function pruneUnused(keep: string) {
  for (const name of readdirSync(CACHE)) {
    if (name.startsWith(keep)) continue;
    const path = join(CACHE, name);
    if (Date.now() - (statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? Date.now()) > UNUSED_FOR_MS) {
      rmSync(path, { recursive: true, force: true });
    }
  }
}

/**
 * Bun macros (imported `with { type: "macro" }`): they run when the importing file is bundled or transpiled,
 * and their result is inlined. So `bun build --compile` puts the dashboard's script into the binary as a
 * string, and `bun src/main.ts` and `bun test` build it on first import: nothing is generated on disk.
 */
import { join } from "node:path";

/** src/ui/app/main.tsx and everything it imports (Preact included), bundled for the browser and minified. */
export function dashboardScript(): string {
  // Bun.build cannot run inside a macro while the bundler waits for it: the CLI does the same.
  const entry = join(import.meta.dir, "app", "main.tsx");
  const built = Bun.spawnSync([process.execPath, "build", entry, "--target=browser", "--format=esm", "--minify"], {
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, NO_COLOR: "1" },
  });
  if (built.exitCode !== 0) throw new Error(`the dashboard's script did not build:\n${built.stderr.toString()}`);
  return built.stdout.toString();
}

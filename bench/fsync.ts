/**
 * What one durable commit costs on this disk at least: the median time of a 4 KiB write followed by `fdatasync`
 * (what SQLite does for a small WAL commit with `synchronous=FULL`), in a file next to the ledger (`dir`). The
 * file is preallocated and rewritten in place, like a WAL that has started over; `append: true` grows it
 * instead, which also syncs the file's size. The bench targets are stated against this number.
 *
 * Usage: bun bench/fsync.ts [dir] [samples]   (prints one JSON line: {"fsync_median_us":…,"fsync_p90_us":…})
 */
import { closeSync, fdatasyncSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface FsyncProbe {
  samples: number;
  median_us: number;
  p90_us: number;
}

export function measureFsync(dir: string, opts: { samples?: number; append?: boolean } = {}): FsyncProbe {
  const samples = opts.samples ?? 200;
  const work = mkdtempSync(join(dir, "keybrake-fsync-"));
  const path = join(work, "probe");
  const fd = openSync(path, "w+");
  const page = Buffer.alloc(4096, 0x5a);
  const slots = 64;
  try {
    if (!opts.append) {
      for (let i = 0; i < slots; i++) writeSync(fd, page, 0, page.length, i * page.length);
      fdatasyncSync(fd);
    }
    const times: number[] = [];
    for (let i = 0; i < samples + 10; i++) {
      const offset = (opts.append ? i : i % slots) * page.length;
      const started = Bun.nanoseconds();
      writeSync(fd, page, 0, page.length, offset);
      fdatasyncSync(fd);
      // The first few warm the path up.
      if (i >= 10) times.push((Bun.nanoseconds() - started) / 1000);
    }
    times.sort((a, b) => a - b);
    const at = (q: number) => Math.round(times[Math.min(times.length - 1, Math.floor(q * times.length))]!);
    return { samples, median_us: at(0.5), p90_us: at(0.9) };
  } finally {
    closeSync(fd);
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const dir = process.argv[2] ?? tmpdir();
  const samples = Number(process.argv[3] ?? 200);
  const probe = measureFsync(dir, { samples });
  console.log(JSON.stringify({ fsync_median_us: probe.median_us, fsync_p90_us: probe.p90_us, samples }));
}

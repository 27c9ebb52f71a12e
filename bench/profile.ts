/**
 * A smaller `bun run bench` for the per-call hot path: the upstream directly, the bare Bun hop and Keybrake on
 * SQLite (`synchronous=full`, the default, and `normal`), at concurrency 1 and 64 (wrk, bench/post.lua), next to
 * one 4 KiB write + fdatasync of the disk (bench/fsync.ts), with the round-3 targets checked as ratios of this
 * one run. Keybrake is dist/keybrake (built unless PROFILE_BUILD=0) or, with PROFILE_CPU=<dir>, `bun --cpu-prof
 * src/main.ts serve`, whose profile is written to that folder when the bench stops it (markdown next to it).
 *
 * PROFILE_DURATION (seconds per measurement, default 5), PROFILE_WARMUP (default 1), PROFILE_ROUNDS (default 1:
 * each target is measured that many times, interleaved, and the median of each number printed),
 * PROFILE_TARGETS (default "direct,bun hop,full,normal"), PROFILE_CONCURRENCY (default "1,64"),
 * PROFILE_BASELINE (another keybrake binary, e.g. one built from the last commit: measured as "base full" and
 * "base normal" in the same run, for before/after numbers on a noisy machine), PROFILE_IDEMPOTENCY=1 (every call
 * carries a fresh Idempotency-Key, as the Stripe SDKs send one with every POST).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { measureFsync } from "./fsync";
import { freePort, startBun, waitUp } from "./processes";

const root = join(import.meta.dir, "..");
const DURATION = Number(process.env.PROFILE_DURATION ?? 5);
const WARMUP = Number(process.env.PROFILE_WARMUP ?? 1);
const ROUNDS = Number(process.env.PROFILE_ROUNDS ?? 1);
const CPU_DIR = process.env.PROFILE_CPU;
const WANTED = (process.env.PROFILE_TARGETS ?? "direct,bun hop,full,normal").split(",");
const CONCURRENCY = (process.env.PROFILE_CONCURRENCY ?? "1,64").split(",").map(Number);
const BASELINE = process.env.PROFILE_BASELINE;
const IDEMPOTENCY = process.env.PROFILE_IDEMPOTENCY === "1";
const ADMIN_TOKEN = "bench-admin-token-0123456789abcdefghijklmnop";
const work = mkdtempSync(join(tmpdir(), "keybrake-profile-"));
const children: { kill(signal?: number | NodeJS.Signals): void; exited: Promise<number> }[] = [];

async function startKeybrake(port: number, upstreamPort: number, synchronous: "full" | "normal", binary?: string) {
  const cmd = binary
    ? [binary, "serve"]
    : CPU_DIR
      ? [
          "bun",
          "--cpu-prof",
          "--cpu-prof-md",
          `--cpu-prof-dir=${CPU_DIR}`,
          `--cpu-prof-name=keybrake-${synchronous}.cpuprofile`,
          join(root, "src/main.ts"),
          "serve",
        ]
      : [join(root, "dist/keybrake"), "serve"];
  const p = Bun.spawn(cmd, {
    cwd: work,
    env: {
      PATH: process.env.PATH ?? "",
      KEYBRAKE_PORT: String(port),
      KEYBRAKE_HOST: "127.0.0.1",
      KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
      KEYBRAKE_STRIPE_SECRET_KEY: "sk_live_bench",
      KEYBRAKE_STRIPE_BASE_URL: `http://127.0.0.1:${upstreamPort}`,
      KEYBRAKE_DB: join(work, `keybrake-${binary ? "base-" : ""}${synchronous}.db`),
      KEYBRAKE_DB_SYNCHRONOUS: synchronous,
    },
    stdout: "ignore",
    stderr: "ignore",
  });
  children.push(p);
  await waitUp(`http://127.0.0.1:${port}/healthz`);
  const res = await fetch(`http://127.0.0.1:${port}/vault/keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({
      vendor: "stripe",
      daily_usd_cap: 10_000_000,
      allowed_endpoints: ["POST /v1/payment_intents"],
      expires_in: "1d",
      agent_run_label: "bench/profile",
    }),
  });
  return ((await res.json()) as { vault_key: string }).vault_key;
}

interface WrkResult {
  requests: number;
  p50_us: number;
  p99_us: number;
  rps: number;
}

/** bench/post.lua, with a fresh Idempotency-Key on every request: unique per wrk run (BENCH_RUN), thread and call. */
function idempotentScript(): string {
  const path = join(work, "post-idempotent.lua");
  const base = readFileSync(join(import.meta.dir, "post.lua"), "utf8");
  writeFileSync(
    path,
    `${base}
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
function request()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = "bench-" .. (os.getenv("BENCH_RUN") or "0") .. "-" .. tostring(tid) .. "-" .. counter
  return wrk.format()
end
`,
  );
  return path;
}
let script: string | undefined;
let runs = 0;

function wrk(url: string, connections: number, seconds: number, key: string): WrkResult {
  const threads = Math.min(connections, 2);
  script ??= IDEMPOTENCY ? idempotentScript() : join(import.meta.dir, "post.lua");
  const r = Bun.spawnSync(["wrk", "-t", String(threads), "-c", String(connections), "-d", `${seconds}s`, "-s", script, url], {
    env: { ...process.env, BENCH_KEY: key, BENCH_RUN: `${process.pid}-${++runs}` },
    stdout: "pipe",
    stderr: "pipe",
  });
  const line = r.stdout
    .toString()
    .split("\n")
    .find((l) => l.startsWith("RESULT "));
  if (!line) throw new Error(`wrk printed no result: ${r.stdout} ${r.stderr}`);
  const result = JSON.parse(line.slice(7)) as { requests: number; duration_us: number; errors: number; p50_us: number; p99_us: number };
  if (result.errors > 0) console.error(`  (wrk: ${result.errors} errors)`);
  return { requests: result.requests, p50_us: result.p50_us, p99_us: result.p99_us, rps: result.requests / (result.duration_us / 1e6) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main() {
  if (!CPU_DIR && process.env.PROFILE_BUILD !== "0") {
    const built = Bun.spawnSync(["bun", "run", "build"], { cwd: root, stdout: "pipe", stderr: "pipe" });
    if (built.exitCode !== 0) throw new Error(`build failed: ${built.stderr}`);
  }
  const [upPort, hopPort, fullPort, normalPort, baseFullPort, baseNormalPort] = await Promise.all(Array.from({ length: 6 }, freePort));
  await startBun(children, "upstream.ts", upPort!);
  await startBun(children, "bun-hop.ts", hopPort!, upPort!);
  const local = (port: number) => `http://127.0.0.1:${port}/v1/payment_intents`;
  const all: Record<string, { url: string; key: string }> = {
    direct: { url: local(upPort!), key: "none" },
    "bun hop": { url: local(hopPort!), key: "none" },
  };
  if (WANTED.includes("full")) all.full = { url: local(fullPort!), key: await startKeybrake(fullPort!, upPort!, "full") };
  if (WANTED.includes("normal")) all.normal = { url: local(normalPort!), key: await startKeybrake(normalPort!, upPort!, "normal") };
  if (BASELINE && WANTED.includes("full")) {
    all["base full"] = { url: local(baseFullPort!), key: await startKeybrake(baseFullPort!, upPort!, "full", BASELINE) };
    WANTED.push("base full");
  }
  if (BASELINE && WANTED.includes("normal")) {
    all["base normal"] = { url: local(baseNormalPort!), key: await startKeybrake(baseNormalPort!, upPort!, "normal", BASELINE) };
    WANTED.push("base normal");
  }
  // The hop and direct are measured for the targets (ratios to them); under --cpu-prof only Keybrake is, so the
  // profile holds the load and little idle time.
  const targets = Object.entries(all).filter(([name]) => WANTED.includes(name) || (!CPU_DIR && (name === "direct" || name === "bun hop")));

  const fsync = measureFsync(work, { samples: 300 });
  const runs: Record<string, WrkResult[]> = {};
  for (let round = 0; round < ROUNDS; round++) {
    for (const c of CONCURRENCY) {
      for (const [name, t] of targets) {
        process.stderr.write(`round ${round + 1} c=${c} ${name} ...\n`);
        wrk(t.url, c, WARMUP, t.key);
        (runs[`${c} ${name}`] ??= []).push(wrk(t.url, c, DURATION, t.key));
      }
    }
  }
  const fsyncAfter = measureFsync(work, { samples: 300 });
  const fsyncUs = Math.round((fsync.median_us + fsyncAfter.median_us) / 2);

  const got = (c: number, name: string) => {
    const rs = runs[`${c} ${name}`];
    if (!rs) return null;
    return { p50: median(rs.map((r) => r.p50_us)), p99: median(rs.map((r) => r.p99_us)), rps: median(rs.map((r) => r.rps)) };
  };
  console.log(
    `\n${DURATION}s x ${ROUNDS} per measurement (medians), Keybrake ${CPU_DIR ? "from source under --cpu-prof" : "dist/keybrake"}`,
  );
  console.log(`fsync (4 KiB write + fdatasync, median): ${fsync.median_us} µs before, ${fsyncAfter.median_us} µs after the load`);
  console.log("| c | target | req/s | p50 | p99 | added p50 | added p99 | req/s vs bun hop |");
  console.log("|---|---|---|---|---|---|---|---|");
  for (const c of CONCURRENCY) {
    const direct = got(c, "direct") ?? { p50: 0, p99: 0, rps: 0 };
    const hop = got(c, "bun hop") ?? { p50: 0, p99: 0, rps: 0 };
    for (const [name] of targets) {
      const r = got(c, name)!;
      const added = name === "direct" ? "-" : `${r.p50 - direct.p50} µs | ${r.p99 - direct.p99} µs`;
      console.log(
        `| ${c} | ${name} | ${r.rps.toFixed(0)} | ${r.p50} µs | ${r.p99} µs | ${name === "direct" ? "- | -" : added} | ${(r.rps / hop.rps).toFixed(2)} |`,
      );
    }
  }
  if (CPU_DIR) return;
  const full = CONCURRENCY.includes(1) ? got(1, "full") : null;
  if (full) {
    const direct = got(1, "direct")!;
    const hop = got(1, "bun hop")!;
    const hopAdded = hop.p50 - direct.p50;
    const p50Target = 2 * hopAdded + fsyncUs;
    console.log(
      `\ntarget c=1 added p50 <= 2 x ${hopAdded} + ${fsyncUs} = ${p50Target} µs: ${full.p50 - direct.p50} µs ${full.p50 - direct.p50 <= p50Target ? "met" : "NOT met"}`,
    );
    const p99Target = 1000 + fsyncUs;
    console.log(
      `target c=1 p99 <= 1000 + ${fsyncUs} = ${p99Target} µs: ${full.p99} µs ${full.p99 <= p99Target ? "met" : "NOT met"} (added p99 ${full.p99 - direct.p99} µs; the direct call's p99 ${direct.p99} µs, the hop's ${hop.p99} µs)`,
    );
  }
  const full64 = CONCURRENCY.includes(64) ? got(64, "full") : null;
  if (full64) {
    const ratio = full64.rps / got(64, "bun hop")!.rps;
    console.log(`target c=64 >= 0.60 of the bun hop: ${ratio.toFixed(2)} ${ratio >= 0.6 ? "met" : "NOT met"}`);
  }
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(async () => {
    for (const c of children) c.kill("SIGTERM");
    await Promise.race([Promise.all(children.map((c) => c.exited)), Bun.sleep(5000)]);
    rmSync(work, { recursive: true, force: true });
  });

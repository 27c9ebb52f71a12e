/**
 * `bun run bench`: what Keybrake costs per call, measured against the direct call, a bare nginx hop and a bare
 * Bun hop (the stack's floor, bun-hop.ts) in the same run, at concurrency 1 and 64 (wrk); Keybrake twice, with
 * KEYBRAKE_DB_SYNCHRONOUS=full (the default) and =normal, for what power-loss safety costs; at `full` with the key
 * in a budget (the target's configuration: the audit's hash chain is always on), for what a budget costs; with
 * tracing on, for what OpenTelemetry costs. Beside them, the disk's fsync (fsync.ts), which the targets are stated
 * against. Then the ledger alone, the audit chain apart from HTTP (audit-chain.ts), the race bench, and a streamed
 * chat completion's first byte (llm-stream.ts). Then the PostgreSQL ledger (SPEC §13), on a server with fsync and
 * synchronous_commit on: one instance with one hot key, and three behind nginx (round robin; its hop is in those
 * numbers) with 64 keys, with the race spread over the three, and the round trips a hold takes (pg-round-trips.ts).
 * Last, the growth bench (growth.ts): the SQLite ledger empty, at 1 M and at 10 M audit rows, start-up on each.
 * Prints the tables, then the targets (targets.ts) beside what was measured, and writes everything to
 * bench/results/latest.json (results.ts), from which `bun run bench:readme` (readme.ts) writes the README's
 * Performance section.
 *
 * Installs wrk and nginx with apt-get when they are missing. PostgreSQL: KEYBRAKE_TEST_DATABASE_URL when set (its
 * fsync and synchronous_commit are read and recorded), otherwise a durable cluster of the bench's own from
 * Debian's binaries (postgres.ts); skipped when there is neither.
 *
 * BENCH_DURATION (seconds per measurement, default 10), BENCH_WARMUP (default 2); the growth bench's own knobs
 * (BENCH_GROWTH_ROWS, ...) are in growth.ts.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { release, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { dropTestDatabase, testDatabaseUrl } from "../test/helpers/postgres";
import { growthTable, runGrowth } from "./growth";
import { benchChain, chainLines } from "./audit-chain";
import { measureFsync } from "./fsync";
import { benchLedger } from "./ledger";
import { runRace } from "./race";
import { llmStreamTable, runLlmStream } from "./llm-stream";
import { countHoldRoundTrips } from "./pg-round-trips";
import { type BenchPostgres, postgresSettings, startDurablePostgres } from "./postgres";
import { freePort, startBun, startKeybrakeBinary, waitUp } from "./processes";
import { type BenchResults, HTTP_TARGETS, type HttpTarget, type Measurements, type WrkResult } from "./results";
import { targetsOf, targetsTable } from "./targets";

const root = join(import.meta.dir, "..");
const DURATION = Number(process.env.BENCH_DURATION ?? 10);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 2);
const ADMIN_TOKEN = "bench-admin-token-0123456789abcdefghijklmnop";
const work = mkdtempSync(join(tmpdir(), "keybrake-bench-"));
const children: { kill(signal?: number | NodeJS.Signals): void }[] = [];
/** The PostgreSQL cluster this run started, if it started one: stopped at the end, or on a failure. */
let ownPostgres: BenchPostgres | null = null;
/** The keys the three PostgreSQL instances' wrk run spreads its calls over (#30: 64 keys at c=64). */
const FLEET_KEYS = 64;

function sh(cmd: string[], env: Record<string, string> = {}) {
  const r = Bun.spawnSync(cmd, { env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

function ensureTool(bin: string, pkg: string) {
  if (Bun.which(bin) || existsSync(`/usr/sbin/${bin}`)) return;
  console.error(`installing ${pkg} with apt-get ...`);
  sh(["apt-get", "update", "-qq"]);
  const r = sh(["apt-get", "install", "-y", "-qq", pkg], { DEBIAN_FRONTEND: "noninteractive" });
  if (r.code !== 0) throw new Error(`apt-get install ${pkg} failed: ${r.err}`);
}

/** nginx with one server per entry: `port` proxies to `upstreams` (round robin, kept-alive connections). */
function startNginx(servers: { port: number; upstreams: number[] }[]) {
  const conf = join(work, "nginx.conf");
  const blocks = servers.map(
    ({ port, upstreams }) => `
  upstream u${port} { ${upstreams.map((u) => `server 127.0.0.1:${u};`).join(" ")} keepalive 128; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://u${port};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }`,
  );
  writeFileSync(
    conf,
    `worker_processes 1;
pid ${join(work, "nginx.pid")};
error_log ${join(work, "nginx-error.log")} warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${work}/client_body;
  proxy_temp_path ${work}/proxy;
  fastcgi_temp_path ${work}/fastcgi;
  uwsgi_temp_path ${work}/uwsgi;
  scgi_temp_path ${work}/scgi;
${blocks.join("\n")}
}
`,
  );
  const p = Bun.spawn([Bun.which("nginx") ?? "/usr/sbin/nginx", "-c", conf], { stdout: "ignore", stderr: "inherit" });
  children.push(p);
  return waitUp(`http://127.0.0.1:${servers[0]!.port}/`);
}

function build() {
  const built = sh(["bun", "run", "build"], {});
  if (built.code !== 0) throw new Error(`build failed: ${built.err}`);
}

/** dist/keybrake on the ledger `ledger` names (a SQLite file's variables, or PostgreSQL's). */
const startKeybrake = (port: number, upstreamPort: number, ledger: Record<string, string>) =>
  startKeybrakeBinary(children, join(root, "dist/keybrake"), port, work, {
    KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
    KEYBRAKE_STRIPE_SECRET_KEY: "sk_live_bench",
    KEYBRAKE_STRIPE_BASE_URL: `http://127.0.0.1:${upstreamPort}`,
    ...ledger,
  });

const sqliteLedger = (synchronous: "full" | "normal") => ({
  KEYBRAKE_DB: join(work, `keybrake-${synchronous}.db`),
  KEYBRAKE_DB_SYNCHRONOUS: synchronous,
});

const adminPost = async (port: number, path: string, body: unknown) =>
  (await (
    await fetch(`http://127.0.0.1:${port}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    })
  ).json()) as Record<string, string>;

/** The vault key of a key whose cap never runs out; `budgeted`: in a budget that never runs out either (SPEC §14). */
async function issueBenchKey(port: number, budgeted = false): Promise<string> {
  const budget = budgeted ? await adminPost(port, "/budgets", { name: "bench", daily_usd_cap: 10_000_000 }) : null;
  const key = await adminPost(port, "/vault/keys", {
    vendor: "stripe",
    daily_usd_cap: 10_000_000,
    allowed_endpoints: ["POST /v1/payment_intents"],
    expires_in: "1d",
    agent_run_label: "bench/run",
    ...(budget ? { budget_id: budget.id } : {}),
  });
  return key.vault_key!;
}

/** One wrk run of post.lua against `url`, its calls spread over `keys` in turn. */
function wrk(url: string, connections: number, seconds: number, keys: string[]): WrkResult {
  const threads = Math.min(connections, 2);
  const r = sh(
    ["wrk", "-t", String(threads), "-c", String(connections), "-d", `${seconds}s`, "-s", join(import.meta.dir, "post.lua"), url],
    { BENCH_KEYS: keys.join(",") },
  );
  const line = r.out.split("\n").find((l) => l.startsWith("RESULT "));
  if (!line) throw new Error(`wrk printed no result: ${r.out} ${r.err}`);
  const result = JSON.parse(line.slice(7)) as Omit<WrkResult, "rps">;
  return { ...result, rps: result.requests / (result.duration_us / 1e6) };
}

/** Keybrake's own work per call (the vendor excluded), as its /metrics histogram counts it: calls per bucket. */
async function overheadBuckets(kbUrl: string): Promise<Map<number, number>> {
  const text = await (await fetch(`${kbUrl}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
  const buckets = new Map<number, number>();
  for (const m of text.matchAll(/^keybrake_overhead_duration_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm)) {
    buckets.set(m[1] === "+Inf" ? Infinity : Number(m[1]), Number(m[2]));
  }
  return buckets;
}

/** The share of calls at or under each bound, between two snapshots of the histogram. */
function overheadShares(before: Map<number, number>, after: Map<number, number>): { le_us: number | null; share: number }[] {
  const total = after.get(Infinity)! - before.get(Infinity)!;
  return [...after].map(([le, n]) => ({ le_us: le === Infinity ? null : Math.round(le * 1e6), share: (n - before.get(le)!) / total }));
}

/** What synchronous=full costs over normal: added latency at c=1 (one call, one fsync) and throughput at c=64 (shared). */
function durability(results: BenchResults["wrk"]): string {
  const added = (name: HttpTarget, p: "p50_us" | "p99_us") => results.c1[name]![p] - results.c1.direct![p];
  const line = (label: string, name: HttpTarget) =>
    `${label}: c=1 added p50 ${added(name, "p50_us").toFixed(0)} µs, p99 ${added(name, "p99_us").toFixed(0)} µs; c=64 ${results.c64[name]!.rps.toFixed(0)} req/s`;
  return `synchronous, full vs normal\n  ${line("full  ", "keybrake")}\n  ${line("normal", "keybrake normal")}`;
}

/** The machine the run is on, for the README: the same numbers on another machine are other numbers. */
function machine(): BenchResults["machine"] {
  const firstLine = (text: string, pattern: RegExp) => pattern.exec(text)?.[1]?.trim() ?? "unknown";
  const read = (path: string) => (existsSync(path) ? readFileSync(path, "utf8") : "");
  const nginx = sh([Bun.which("nginx") ?? "/usr/sbin/nginx", "-v"]);
  return {
    cpu: firstLine(read("/proc/cpuinfo"), /^model name\s*:(.*)$/m),
    cores: navigator.hardwareConcurrency,
    memory_gib: Math.round(totalmem() / 2 ** 30),
    os: `${firstLine(read("/etc/os-release"), /^PRETTY_NAME="?([^"\n]*)/m)}, Linux ${release()}`,
    bun: Bun.version,
    nginx: firstLine(nginx.err + nginx.out, /nginx\/(\S+)/),
    wrk: firstLine(sh(["wrk", "-v"]).out, /^wrk (\S+)/),
  };
}

async function main() {
  ensureTool("wrk", "wrk");
  ensureTool("nginx", "nginx");
  const [upPort, nginxPort, hopPort, kbPort, kbNormalPort, pgPort, pgLbPort, kbTracedPort, otlpPort, kbBudgetPort] = await Promise.all(
    Array.from({ length: 10 }, freePort),
  );
  const pgFleetPorts = [pgPort!, await freePort(), await freePort()];
  if (!process.env.KEYBRAKE_TEST_DATABASE_URL) {
    ownPostgres = await startDurablePostgres();
    // testDatabaseUrl makes its databases on the server this names.
    if (ownPostgres) process.env.KEYBRAKE_TEST_DATABASE_URL = ownPostgres.url;
  }
  const pgUrl = await testDatabaseUrl();
  await startBun(children, "upstream.ts", upPort!);
  const upstream = children.at(-1)!;
  await startNginx([
    { port: nginxPort!, upstreams: [upPort!] },
    { port: pgLbPort!, upstreams: pgFleetPorts },
  ]);
  await startBun(children, "bun-hop.ts", hopPort!, upPort!);
  build();
  const local = (port: number) => `http://127.0.0.1:${port}`;
  const keybrakeTarget = async (port: number, ledger: Record<string, string>, budgeted = false) => {
    await startKeybrake(port, upPort!, ledger);
    return { url: `${local(port)}/v1/payment_intents`, keys: [await issueBenchKey(port, budgeted)], keybrake: local(port) };
  };
  const targets: Partial<Record<HttpTarget, { url: string; keys: string[]; keybrake?: string }>> = {
    direct: { url: `${local(upPort!)}/v1/payment_intents`, keys: ["none"] },
    nginx: { url: `${local(nginxPort!)}/v1/payment_intents`, keys: ["none"] },
    "bun hop": { url: `${local(hopPort!)}/v1/payment_intents`, keys: ["none"] },
    keybrake: await keybrakeTarget(kbPort!, sqliteLedger("full")),
    "keybrake normal": await keybrakeTarget(kbNormalPort!, sqliteLedger("normal")),
    // The key in a budget, at `full`: every hold and settlement also moves the budget's day (SPEC §14), and every
    // audit row goes through the hash chain, as always. The SQLite targets are measured on this one (#30).
    "keybrake budget": await keybrakeTarget(
      kbBudgetPort!,
      { KEYBRAKE_DB: join(work, "keybrake-budget.db"), KEYBRAKE_DB_SYNCHRONOUS: "full" },
      true,
    ),
    // OpenTelemetry on (SPEC §19): every call's spans exported as OTLP/HTTP JSON to a local sink that answers 200.
    "keybrake traced": await (async () => {
      await startBun(children, "upstream.ts", otlpPort!);
      return keybrakeTarget(kbTracedPort!, {
        KEYBRAKE_DB: join(work, "keybrake-traced.db"),
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${otlpPort}`,
      });
    })(),
  };
  if (pgUrl) {
    // One instance alone, then two more on the same database: "pg x3" goes through nginx to all three.
    const fleet = (port: number, id: string) => ({ KEYBRAKE_DATABASE_URL: pgUrl, KEYBRAKE_INSTANCE_ID: id, KEYBRAKE_PORT: String(port) });
    targets["keybrake pg"] = await keybrakeTarget(pgPort!, fleet(pgPort!, "bench-1"));
    for (const [i, port] of pgFleetPorts.slice(1).entries()) await startKeybrake(port, upPort!, fleet(port, `bench-${i + 2}`));
    const fleetKeys: string[] = [];
    for (let i = 0; i < FLEET_KEYS; i++) fleetKeys.push(await issueBenchKey(pgPort!));
    targets["keybrake pg x3"] = { url: `${local(pgLbPort!)}/v1/payment_intents`, keys: fleetKeys };
  } else {
    console.error("no PostgreSQL here: the PostgreSQL rows are skipped");
  }
  const kbUrl = targets.keybrake!.keybrake!;
  // The disk's fsync, next to the ledgers, before the load starts.
  const fsync = measureFsync(work);
  const results: BenchResults["wrk"] = { c1: {}, c64: {} };
  const overhead: Record<string, { le_us: number | null; share: number }[]> = {};
  for (const connections of [1, 64] as const) {
    for (const [name, target] of Object.entries(targets) as [HttpTarget, NonNullable<(typeof targets)[HttpTarget]>][]) {
      process.stderr.write(`wrk ${name} c=${connections} ...\n`);
      wrk(target.url, connections, WARMUP, target.keys);
      const before = target.keybrake ? await overheadBuckets(target.keybrake) : null;
      results[`c${connections}`][name] = wrk(target.url, connections, DURATION, target.keys);
      if (before)
        overhead[`c${connections}_${name.replaceAll(" ", "_")}`] = overheadShares(before, await overheadBuckets(target.keybrake!));
    }
  }

  const ledger = await benchLedger(join(work, "ledger.db"), 20_000);
  const chain = await benchChain(join(root, "dist/keybrake"));
  const race = await runRace(kbUrl, ADMIN_TOKEN, { calls: 10_000, admit: 137 });
  const postgres = pgUrl
    ? {
        settings: await postgresSettings(pgUrl),
        fleet_keys: FLEET_KEYS,
        hold_round_trips: await countHoldRoundTrips(pgUrl),
        race: await runRace(local(pgLbPort!), ADMIN_TOKEN, { calls: 10_000, admit: 137 }),
      }
    : null;
  // A streamed completion's first byte (SPEC §18), on a Keybrake and an upstream of its own.
  const llmStream = await runLlmStream({ bin: join(root, "dist/keybrake") });
  // Flat as the ledger grows (growth.ts): the servers above are stopped first, so they do not share the CPU.
  for (const c of children) if (c !== upstream) c.kill("SIGTERM");
  await Bun.sleep(500);
  if (pgUrl) await dropTestDatabase(pgUrl);
  await ownPostgres?.stop();
  const growth = await runGrowth({ upstreamPort: upPort!, workDir: work });
  for (const c of children) c.kill("SIGTERM");

  const rows: string[] = [];
  const us = (v: number) => `${v.toFixed(0)} µs`;
  rows.push("| concurrency | target | req/s | p50 | p99 | added p50 | added p99 | req/s vs nginx |");
  rows.push("|---|---|---|---|---|---|---|---|");
  for (const [c, byTarget] of Object.entries(results)) {
    const direct = byTarget.direct!;
    for (const [name, r] of Object.entries(byTarget)) {
      const added = name === "direct" ? null : { p50: r.p50_us - direct.p50_us, p99: r.p99_us - direct.p99_us };
      const ratio = name === "direct" || name === "nginx" ? "" : (r.rps / byTarget.nginx!.rps).toFixed(2);
      rows.push(
        `| ${c.slice(1)} | ${name} | ${r.rps.toFixed(0)} | ${us(r.p50_us)} | ${us(r.p99_us)} | ${added ? us(added.p50) : "-"} | ${added ? us(added.p99) : "-"} | ${ratio} |`,
      );
    }
  }
  const errors = Object.values(results)
    .flatMap((t) => Object.values(t))
    .reduce((n, r) => n + r.errors, 0);

  console.log(
    `\nKeybrake ${DURATION}s per measurement on ${navigator.hardwareConcurrency} cores (${process.platform}), Bun ${Bun.version}`,
  );
  console.log(
    `${Object.entries(HTTP_TARGETS)
      .map(([name, what]) => `${name}: ${what}`)
      .join("\n")}\n`,
  );
  console.log(rows.join("\n"));
  console.log(
    `\none durable commit on this disk (fsync.ts, 4 KiB write + fdatasync): median ${us(fsync.median_us)}, p90 ${us(fsync.p90_us)}`,
  );
  console.log(`\n${durability(results)}`);
  // At c=1 nothing waits for anything else, so this is Keybrake's own work; at c=64 it is mostly queueing.
  for (const mode of ["keybrake", "keybrake_normal"]) {
    const alone = overhead[`c1_${mode}`]!.filter((b) => b.le_us !== null && b.le_us >= 100 && b.le_us <= 1000);
    console.log(
      `\n${mode.replace("_", " ")}: its own work per call at c=1 (X-Keybrake-Overhead-Ms: from its handler's start to the answer, the vendor's time excluded): ${alone.map((b) => `${(b.share * 100).toFixed(1)}% <= ${b.le_us} µs`).join(", ")}`,
    );
  }
  console.log(
    `\nledger alone: ${ledger.opsPerSecond.toFixed(0)} hold+settle pairs/s (${ledger.pairs} pairs, ${ledger.microsPerPair.toFixed(1)} µs each)`,
  );
  const raceLine = (r: typeof race, where: string) =>
    `race (${where}): ${r.calls} concurrent priced calls against a cap that admits ${r.expected}: admitted ${r.admitted}, overspend ${r.overspendMicros} micro-dollars`;
  for (const c of ["c1", "c64"] as const) {
    const [plain, budgeted] = [results[c].keybrake!, results[c]["keybrake budget"]!];
    console.log(
      `a budget over the key, ${c}: p50 ${us(budgeted.p50_us - plain.p50_us)} added, ${budgeted.rps.toFixed(0)} req/s against ${plain.rps.toFixed(0)}`,
    );
  }
  for (const c of ["c1", "c64"] as const) {
    const [plain, traced] = [results[c].keybrake!, results[c]["keybrake traced"]!];
    console.log(
      `tracing on (OTLP/HTTP JSON to a local sink), ${c}: p50 ${us(traced.p50_us - plain.p50_us)} added, ${traced.rps.toFixed(0)} req/s against ${plain.rps.toFixed(0)}`,
    );
  }
  console.log(`\nthe audit's hash chain (SPEC §19):\n${chainLines(chain)}\n`);
  console.log(raceLine(race, "SQLite"));
  if (postgres) {
    console.log(raceLine(postgres.race, "PostgreSQL, three instances behind nginx"));
    const { version, fsync: pgFsync, synchronous_commit } = postgres.settings;
    console.log(`PostgreSQL ${version}: fsync ${pgFsync}, synchronous_commit ${synchronous_commit}`);
    console.log(`PostgreSQL: round trips per hold (pg-round-trips.ts, on the wire): ${postgres.hold_round_trips.toFixed(1)}`);
  }
  if (errors > 0) console.log(`wrk reported ${errors} errors`);
  console.log(
    `\nstreamed chat completions, ${llmStream.calls} each way, one at a time (SQLite, synchronous=full); settled at their usage exactly: ${llmStream.settled_exactly}\n${llmStreamTable(llmStream)}`,
  );
  console.log(`\nas the ledger grows (SQLite, synchronous=full):\n${growthTable(growth)}`);

  const measured: Measurements = {
    at: new Date().toISOString(),
    machine: machine(),
    duration_s: DURATION,
    warmup_s: WARMUP,
    fsync,
    wrk: results,
    keybrake_overhead_share_at_or_under: overhead,
    ledger,
    audit_chain: chain,
    race,
    postgres,
    llm_stream: llmStream,
    growth,
    wrk_errors: errors,
  };
  const out: BenchResults = { ...measured, targets: targetsOf(measured) };
  console.log(`\ntargets (issues #19, #30):\n${targetsTable(out.targets)}`);
  mkdirSync(join(import.meta.dir, "results"), { recursive: true });
  writeFileSync(join(import.meta.dir, "results/latest.json"), JSON.stringify(out, null, 2));
  console.log("\nwrote bench/results/latest.json (`bun run bench:readme` puts it in the README)");
  rmSync(work, { recursive: true, force: true });
  const exact =
    [race, postgres?.race ?? race].every((r) => r.admitted === r.expected && r.overspendMicros === 0) && llmStream.settled_exactly;
  process.exit(exact ? 0 : 1);
}

main().catch(async (err) => {
  for (const c of children) c.kill("SIGKILL");
  await ownPostgres?.stop();
  console.error(err);
  process.exit(1);
});

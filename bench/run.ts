/**
 * `bun run bench`: what Keybrake costs per call, measured against the direct call, a bare nginx hop and a bare
 * Bun hop (the stack's floor, bun-hop.ts) in the same run, at concurrency 1 and 64 (wrk); Keybrake twice, with
 * KEYBRAKE_DB_SYNCHRONOUS=full (the default) and =normal, for what power-loss safety costs; with the key in a
 * budget, for what a budget costs; with tracing on, for what OpenTelemetry costs. Then the ledger
 * alone, the race bench, and a streamed chat completion's first byte (llm-stream.ts). Then the PostgreSQL ledger (SPEC §13): one instance, and three behind nginx
 * (round robin; its hop is in those numbers), with the race spread over the three. Last, the growth bench
 * (growth.ts): the SQLite ledger empty, at 1 M and at 10 M audit rows. Prints the tables and writes
 * bench/results/latest.json. Installs wrk and nginx with apt-get when they are missing; PostgreSQL as the tests
 * find it (KEYBRAKE_TEST_DATABASE_URL, or a throwaway cluster from Debian's binaries), skipped when there is none.
 *
 * BENCH_DURATION (seconds per measurement, default 10), BENCH_WARMUP (default 2).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dropTestDatabase, testDatabaseUrl } from "../test/helpers/postgres";
import { growthTable, runGrowth } from "./growth";
import { benchChain, chainLines } from "./audit-chain";
import { benchLedger } from "./ledger";
import { runRace } from "./race";
import { llmStreamTable, runLlmStream } from "./llm-stream";
import { freePort, startBun, startKeybrakeBinary, waitUp } from "./processes";

const root = join(import.meta.dir, "..");
const DURATION = Number(process.env.BENCH_DURATION ?? 10);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 2);
const ADMIN_TOKEN = "bench-admin-token-0123456789abcdefghijklmnop";
const work = mkdtempSync(join(tmpdir(), "keybrake-bench-"));
const children: { kill(signal?: number | NodeJS.Signals): void }[] = [];

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

interface WrkResult {
  requests: number;
  duration_us: number;
  errors: number;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  max_us: number;
  mean_us: number;
  rps: number;
}

function wrk(url: string, connections: number, seconds: number, key: string): WrkResult {
  const threads = Math.min(connections, 2);
  const r = sh(
    ["wrk", "-t", String(threads), "-c", String(connections), "-d", `${seconds}s`, "-s", join(import.meta.dir, "post.lua"), url],
    { BENCH_KEY: key },
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
function durability(results: Record<string, Record<string, WrkResult>>): string {
  const added = (name: string, p: "p50_us" | "p99_us") => results.c1![name]![p] - results.c1!.direct![p];
  const line = (label: string, name: string) =>
    `${label}: c=1 added p50 ${added(name, "p50_us").toFixed(0)} µs, p99 ${added(name, "p99_us").toFixed(0)} µs; c=64 ${results.c64![name]!.rps.toFixed(0)} req/s`;
  return `synchronous, full vs normal\n  ${line("full  ", "keybrake")}\n  ${line("normal", "keybrake normal")}`;
}

async function main() {
  ensureTool("wrk", "wrk");
  ensureTool("nginx", "nginx");
  const [upPort, nginxPort, hopPort, kbPort, kbNormalPort, pgPort, pgLbPort, kbTracedPort, otlpPort, kbBudgetPort] = await Promise.all(
    Array.from({ length: 10 }, freePort),
  );
  const pgFleetPorts = [pgPort!, await freePort(), await freePort()];
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
    return { url: `${local(port)}/v1/payment_intents`, key: await issueBenchKey(port, budgeted), keybrake: local(port) };
  };
  const targets: Record<string, { url: string; key: string; keybrake?: string }> = {
    direct: { url: `${local(upPort!)}/v1/payment_intents`, key: "none" },
    nginx: { url: `${local(nginxPort!)}/v1/payment_intents`, key: "none" },
    "bun hop": { url: `${local(hopPort!)}/v1/payment_intents`, key: "none" },
    keybrake: await keybrakeTarget(kbPort!, sqliteLedger("full")),
    "keybrake normal": await keybrakeTarget(kbNormalPort!, sqliteLedger("normal")),
    // The key in a budget: every hold and settlement also moves the budget's day (SPEC §14).
    "keybrake budget": await keybrakeTarget(kbBudgetPort!, { KEYBRAKE_DB: join(work, "keybrake-budget.db") }, true),
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
    targets["keybrake pg x3"] = { url: `${local(pgLbPort!)}/v1/payment_intents`, key: await issueBenchKey(pgLbPort!) };
  } else {
    console.error("no PostgreSQL here: the PostgreSQL rows are skipped");
  }
  const kbUrl = targets.keybrake!.keybrake!;
  const results: Record<string, Record<string, WrkResult>> = {};
  const overhead: Record<string, { le_us: number | null; share: number }[]> = {};
  for (const connections of [1, 64]) {
    for (const [name, target] of Object.entries(targets)) {
      process.stderr.write(`wrk ${name} c=${connections} ...\n`);
      wrk(target.url, connections, WARMUP, target.key);
      const before = target.keybrake ? await overheadBuckets(target.keybrake) : null;
      results[`c${connections}`] ??= {};
      results[`c${connections}`]![name] = wrk(target.url, connections, DURATION, target.key);
      if (before)
        overhead[`c${connections}_${name.replaceAll(" ", "_")}`] = overheadShares(before, await overheadBuckets(target.keybrake!));
    }
  }

  const ledger = await benchLedger(join(work, "ledger.db"), 20_000);
  const chain = await benchChain(join(root, "dist/keybrake"));
  const race = await runRace(kbUrl, ADMIN_TOKEN, { calls: 10_000, admit: 137 });
  const pgRace = pgUrl ? await runRace(local(pgLbPort!), ADMIN_TOKEN, { calls: 10_000, admit: 137 }) : null;
  // A streamed completion's first byte (SPEC §18), on a Keybrake and an upstream of its own.
  const llmStream = await runLlmStream({ bin: join(root, "dist/keybrake") });
  // Flat as the ledger grows (growth.ts): the servers above are stopped first, so they do not share the CPU.
  for (const c of children) if (c !== upstream) c.kill("SIGTERM");
  await Bun.sleep(500);
  const growth = await runGrowth({ upstreamPort: upPort!, workDir: work });
  for (const c of children) c.kill("SIGTERM");
  if (pgUrl) {
    await Bun.sleep(500);
    await dropTestDatabase(pgUrl);
  }

  const rows: string[] = [];
  const us = (v: number) => `${v.toFixed(0)} µs`;
  rows.push("| concurrency | target | req/s | p50 | p99 | added p50 | added p99 | req/s vs nginx |");
  rows.push("|---|---|---|---|---|---|---|---|");
  const summary: Record<string, unknown> = {};
  for (const [c, byTarget] of Object.entries(results)) {
    const direct = byTarget.direct!;
    for (const [name, r] of Object.entries(byTarget)) {
      const added = name === "direct" ? null : { p50: r.p50_us - direct.p50_us, p99: r.p99_us - direct.p99_us };
      const ratio = name === "direct" || name === "nginx" ? "" : (r.rps / byTarget.nginx!.rps).toFixed(2);
      rows.push(
        `| ${c.slice(1)} | ${name} | ${r.rps.toFixed(0)} | ${us(r.p50_us)} | ${us(r.p99_us)} | ${added ? us(added.p50) : "-"} | ${added ? us(added.p99) : "-"} | ${ratio} |`,
      );
      const id = name.replaceAll(" ", "_");
      if (added) summary[`${c}_${id}_added_p50_us`] = added.p50;
      if (added) summary[`${c}_${id}_added_p99_us`] = added.p99;
    }
    summary[`${c}_keybrake_over_nginx_rps`] = byTarget.keybrake!.rps / byTarget.nginx!.rps;
    summary[`${c}_keybrake_normal_over_nginx_rps`] = byTarget["keybrake normal"]!.rps / byTarget.nginx!.rps;
    summary[`${c}_bun_hop_over_nginx_rps`] = byTarget["bun hop"]!.rps / byTarget.nginx!.rps;
    for (const pg of ["keybrake pg", "keybrake pg x3"]) {
      if (byTarget[pg]) summary[`${c}_${pg.replaceAll(" ", "_")}_over_nginx_rps`] = byTarget[pg]!.rps / byTarget.nginx!.rps;
    }
  }
  const errors = Object.values(results)
    .flatMap((t) => Object.values(t))
    .reduce((n, r) => n + r.errors, 0);

  console.log(
    `\nKeybrake ${DURATION}s per measurement on ${navigator.hardwareConcurrency} cores (${process.platform}), Bun ${Bun.version}`,
  );
  console.log(
    "(keybrake: SQLite, synchronous=full, the default; keybrake normal: KEYBRAKE_DB_SYNCHRONOUS=normal; keybrake pg: one instance on PostgreSQL; pg x3: three instances behind nginx)\n",
  );
  console.log(rows.join("\n"));
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
  for (const c of ["c1", "c64"]) {
    const [plain, budgeted] = [results[c]!.keybrake!, results[c]!["keybrake budget"]!];
    console.log(
      `a budget over the key, ${c}: p50 ${us(budgeted.p50_us - plain.p50_us)} added, ${budgeted.rps.toFixed(0)} req/s against ${plain.rps.toFixed(0)}`,
    );
  }
  for (const c of ["c1", "c64"]) {
    const [plain, traced] = [results[c]!.keybrake!, results[c]!["keybrake traced"]!];
    console.log(
      `tracing on (OTLP/HTTP JSON to a local sink), ${c}: p50 ${us(traced.p50_us - plain.p50_us)} added, ${traced.rps.toFixed(0)} req/s against ${plain.rps.toFixed(0)}`,
    );
  }
  console.log(`\nthe audit's hash chain (SPEC §19):\n${chainLines(chain)}\n`);
  console.log(raceLine(race, "SQLite"));
  if (pgRace) console.log(raceLine(pgRace, "PostgreSQL, three instances behind nginx"));
  if (errors > 0) console.log(`wrk reported ${errors} errors`);
  console.log(
    `\nstreamed chat completions, ${llmStream.calls} each way, one at a time (SQLite, synchronous=full); settled at their usage exactly: ${llmStream.settled_exactly}\n${llmStreamTable(llmStream)}`,
  );
  console.log(`\nas the ledger grows (SQLite, synchronous=full):\n${growthTable(growth)}`);

  const out = {
    at: new Date().toISOString(),
    machine: { cores: navigator.hardwareConcurrency, platform: process.platform, bun: Bun.version },
    duration_s: DURATION,
    wrk: results,
    summary,
    keybrake_overhead_share_at_or_under: overhead,
    ledger,
    audit_chain: chain,
    race,
    pg_race: pgRace,
    llm_stream: llmStream,
    growth,
    wrk_errors: errors,
  };
  mkdirSync(join(import.meta.dir, "results"), { recursive: true });
  writeFileSync(join(import.meta.dir, "results/latest.json"), JSON.stringify(out, null, 2));
  console.log("\nwrote bench/results/latest.json");
  rmSync(work, { recursive: true, force: true });
  const exact = [race, pgRace ?? race].every((r) => r.admitted === r.expected && r.overspendMicros === 0) && llmStream.settled_exactly;
  process.exit(exact ? 0 : 1);
}

main().catch((err) => {
  for (const c of children) c.kill("SIGKILL");
  console.error(err);
  process.exit(1);
});

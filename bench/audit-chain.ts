/**
 * The audit's hash chain (SPEC §19), measured apart from HTTP: what hashing a row costs, what appending through
 * the chain adds to a SQLite insert in a transaction of one row (as at c=1) and of 64 rows (a group commit at
 * c=64), how fast `keybrake audit verify` reads a chain back, and how long the binary takes to start with tracing
 * off and on. Usage: `bun bench/audit-chain.ts [bin]` alone, or `benchChain()` from run.ts.
 */
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { verifyAudit } from "../src/audit/verify";
import { auditAppender, CHAIN_COLUMN_NAMES } from "../src/store/audit-append";
import { canonicalForm, chainHash, chainValues, GENESIS_HASH } from "../src/store/audit-chain";
import { auditRow, openStore } from "../src/store/index";
import { freePort } from "./processes";

const row = (i: number) =>
  auditRow({
    id: `kbr_0Vd61I331nFXhuBSgn${String(i).padStart(6, "0")}`,
    at: Date.now(),
    keyId: "vk_8mJq2LwXc4Rt6YpN0aZb1Hs3",
    label: "airflow-billing/run_2026_11_22",
    vendor: "stripe",
    mode: "live",
    method: "POST",
    path: "/v1/payment_intents",
    status: 200,
    decision: "allowed",
    holdMicros: 29_000_000,
    costMicros: 29_000_000,
    costSource: "response",
    currency: "usd",
    amountMinor: 2900,
    vendorRequestId: "req_4QfZ0c1hW2mXa7Lr",
    upstreamMs: 123.456,
    overheadMs: 0.187,
    clientIp: "10.0.0.7",
  });

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** µs per row of the canonical form and its SHA-256, the chain's CPU work on the hot path. */
function hashPerRow(rows = 200_000): number {
  const samples: number[] = [];
  for (let round = 0; round < 5; round++) {
    let prev = GENESIS_HASH;
    const t0 = performance.now();
    for (let i = 0; i < rows; i++) prev = chainHash(prev, canonicalForm(chainValues(row(i))));
    samples.push(((performance.now() - t0) * 1000) / rows);
  }
  return median(samples);
}

/**
 * µs per row that appending through the chain (read the newest hash, hash, insert with it) adds to a plain
 * insert of the same row, in transactions of `perTransaction` rows (synchronous=NORMAL: no fsync in the way).
 */
function appendCost(
  file: string,
  perTransaction: number,
  transactions: number,
): { plain_us: number; chained_us: number; added_us: number } {
  const store = openStore(file);
  void store.close();
  const db = new Database(file);
  db.run("PRAGMA synchronous = NORMAL");
  const plain = db.prepare(
    `INSERT INTO audit_events (${CHAIN_COLUMN_NAMES.join(", ")}) VALUES (${CHAIN_COLUMN_NAMES.map(() => "?").join(", ")})`,
  );
  const append = auditAppender(db);
  const time = (write: (i: number) => void) => {
    const t0 = performance.now();
    let i = 0;
    for (let t = 0; t < transactions; t++)
      db.transaction(() => {
        for (let r = 0; r < perTransaction; r++) write(i++);
      }).immediate();
    return ((performance.now() - t0) * 1000) / (transactions * perTransaction);
  };
  const plainSamples: number[] = [];
  const chainedSamples: number[] = [];
  // Alternately, so that the table's growth weighs on both alike.
  for (let round = 0; round < 5; round++) {
    plainSamples.push(time((i) => plain.run(...chainValues(row(i)))));
    chainedSamples.push(time((i) => append(row(i))));
  }
  db.close();
  const [p, c] = [median(plainSamples), median(chainedSamples)];
  return { plain_us: p, chained_us: c, added_us: c - p };
}

/** `keybrake audit verify`'s reading and recomputing, in rows per second, over a chain of `rows` rows. */
async function verifyRate(file: string, rows: number): Promise<{ rows: number; rows_per_s: number }> {
  const store = openStore(file);
  try {
    for (let done = 0; done < rows; done += 5000)
      await Promise.all(Array.from({ length: 5000 }, (_, i) => store.recordAudit(row(done + i))));
    const report = await verifyAudit(store);
    if (!report.ok) throw new Error(`the bench's chain does not verify: ${JSON.stringify(report.problems[0])}`);
    return { rows: report.rows, rows_per_s: report.rows / report.seconds };
  } finally {
    await store.close();
  }
}

/** Milliseconds from spawning `keybrake serve` to its first 200 on /healthz, the median of `starts`. */
async function startup(bin: string, dir: string, env: Record<string, string>, starts = 5): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < starts; i++) {
    const port = await freePort();
    const t0 = performance.now();
    const p = Bun.spawn([bin, "serve"], {
      cwd: dir,
      env: {
        PATH: process.env.PATH ?? "",
        KEYBRAKE_PORT: String(port),
        KEYBRAKE_HOST: "127.0.0.1",
        KEYBRAKE_DB: join(dir, "start.db"),
        ...env,
      },
      stdout: "ignore",
      stderr: "ignore",
    });
    for (;;) {
      const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) break;
      await Bun.sleep(2);
    }
    samples.push(performance.now() - t0);
    p.kill("SIGTERM");
    await p.exited;
  }
  return median(samples);
}

export interface ChainBench {
  hash_us_per_row: number;
  append_c1: ReturnType<typeof appendCost>;
  append_c64: ReturnType<typeof appendCost>;
  verify: { rows: number; rows_per_s: number };
  startup_ms: { tracing_off: number; tracing_on: number } | null;
}

export async function benchChain(bin: string | null): Promise<ChainBench> {
  const dir = mkdtempSync(join(tmpdir(), "keybrake-bench-chain-"));
  try {
    return {
      hash_us_per_row: hashPerRow(),
      append_c1: appendCost(join(dir, "c1.db"), 1, 5000),
      append_c64: appendCost(join(dir, "c64.db"), 64, 300),
      verify: await verifyRate(join(dir, "verify.db"), 200_000),
      startup_ms:
        bin === null
          ? null
          : {
              tracing_off: await startup(bin, dir, {}),
              // An endpoint nobody listens at: starting does not wait for it.
              tracing_on: await startup(bin, dir, { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${await freePort()}` }),
            },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function chainLines(c: ChainBench): string {
  const f = (v: number) => v.toFixed(1);
  return [
    `hash per row (canonical form + SHA-256): ${c.hash_us_per_row.toFixed(2)} µs`,
    `append through the chain, 1 row per transaction (c=1): +${f(c.append_c1.added_us)} µs per row (${f(c.append_c1.plain_us)} → ${f(c.append_c1.chained_us)} µs)`,
    `append through the chain, 64 rows per transaction (c=64 group commit): +${f(c.append_c64.added_us)} µs per row (${f(c.append_c64.plain_us)} → ${f(c.append_c64.chained_us)} µs)`,
    `keybrake audit verify: ${Math.round(c.verify.rows_per_s).toLocaleString("en-US")} rows/s (${c.verify.rows.toLocaleString("en-US")} rows)`,
    ...(c.startup_ms
      ? [`start to first 200: ${c.startup_ms.tracing_off.toFixed(0)} ms tracing off, ${c.startup_ms.tracing_on.toFixed(0)} ms tracing on`]
      : []),
  ].join("\n");
}

if (import.meta.main) {
  console.log(chainLines(await benchChain(process.argv[2] ? resolve(process.argv[2]) : null)));
}

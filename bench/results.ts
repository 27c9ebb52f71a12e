/** What `bun run bench` writes to bench/results/latest.json (run.ts), and what targets.ts and readme.ts read from it. */
import type { ChainBench } from "./audit-chain";
import type { FsyncProbe } from "./fsync";
import type { GrowthResult } from "./growth";
import type { benchLedger } from "./ledger";
import type { LlmStreamResult } from "./llm-stream";
import type { PostgresSettings } from "./postgres";
import type { RaceResult } from "./race";
import type { TargetRow } from "./targets";

/** One wrk measurement (post.lua's RESULT line), with its throughput. */
export interface WrkResult {
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

/** The HTTP targets wrk drives (run.ts), by name, and what each is; the PostgreSQL ones only when there is a PostgreSQL. */
export const HTTP_TARGETS = {
  direct: "the mock upstream, called directly",
  nginx: "through a bare nginx hop",
  "bun hop": "through a bare Bun hop (`Bun.serve` + `fetch`, nothing else)",
  keybrake: "Keybrake, SQLite, `synchronous=full` (the default)",
  "keybrake normal": "Keybrake, SQLite, `KEYBRAKE_DB_SYNCHRONOUS=normal`",
  "keybrake budget": "Keybrake, SQLite, `full`, the key in a budget",
  "keybrake traced": "Keybrake, SQLite, `full`, tracing on (OTLP/HTTP to a local sink)",
  "keybrake pg": "Keybrake on PostgreSQL, one instance, one key",
  "keybrake pg x3": "Keybrake on PostgreSQL, three instances behind nginx, 64 keys",
} as const;
export type HttpTarget = keyof typeof HTTP_TARGETS;

export interface BenchResults {
  at: string;
  machine: { cpu: string; cores: number; memory_gib: number; os: string; bun: string; nginx: string; wrk: string };
  duration_s: number;
  warmup_s: number;
  /** What one durable commit costs on this disk at least (fsync.ts), next to the ledgers. */
  fsync: FsyncProbe;
  /** By concurrency (`c1`, `c64`), then by target. */
  wrk: Record<"c1" | "c64", Partial<Record<HttpTarget, WrkResult>>>;
  keybrake_overhead_share_at_or_under: Record<string, { le_us: number | null; share: number }[]>;
  ledger: Awaited<ReturnType<typeof benchLedger>>;
  audit_chain: ChainBench;
  race: RaceResult;
  /** null: no PostgreSQL in this run. */
  postgres: {
    settings: PostgresSettings;
    /** Keys the three instances' wrk run spreads its calls over. */
    fleet_keys: number;
    /** Round trips per hold, counted on the wire (pg-round-trips.ts). */
    hold_round_trips: number;
    race: RaceResult;
  } | null;
  llm_stream: LlmStreamResult;
  growth: GrowthResult;
  wrk_errors: number;
  targets: TargetRow[];
}

/** The results before their targets are checked against them. */
export type Measurements = Omit<BenchResults, "targets">;

import { anchorBefore, ChainCheck, type ChainHead, type ChainProblem } from "../store/audit-chain";
import type { Store } from "../store/index";

/** Rows read from the store at a time: memory stays flat however long the audit is. */
export const VERIFY_PAGE_ROWS = 5000;

export interface VerifyOptions {
  /** Check only rows at or after this time (ms), each chain from the hash of its row just before. */
  since?: number;
  /** Heads held elsewhere (from /audit/head, /metrics or a webhook): each must be met in a chain. */
  heads?: readonly string[];
  pageRows?: number;
}

export interface VerifyReport {
  ok: boolean;
  rows: number;
  seconds: number;
  /** Each chain checked: its rows and where it ends now. */
  chains: { chain: string; rows: number; head: ChainHead | null }[];
  /** Each head given, and the seq where it was met (null: not found). */
  heads: { hash: string; seq: number | null }[];
  problems: ChainProblem[];
}

/**
 * `keybrake audit verify` (SPEC §19): streams every audit row in seq order (a page at a time), recomputes each
 * chain and compares it with the hashes the rows carry and the checkpoints standing for rows sealed or pruned;
 * then checks that each chain's head (PostgreSQL keeps one per instance) is where its rows end, and that the heads
 * given were met. A row edited, deleted or moved shows as the first row after it that no longer links.
 */
export async function verifyAudit(store: Store, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const started = performance.now();
  const pageRows = opts.pageRows ?? VERIFY_PAGE_ROWS;
  const [checkpoints, heads] = await Promise.all([store.auditCheckpoints(), store.auditHeads()]);
  const check = new ChainCheck(checkpoints, opts.heads ?? []);
  const first = opts.since === undefined ? 1 : await store.auditSeqSince(opts.since);
  let after = first === null ? null : first - 1;
  while (after !== null) {
    const page = await store.auditChainPage(after, pageRows);
    for (const row of page) {
      if (!check.started(row.chain)) {
        // From --since, a chain starts at the hash its row just before carries; else at its checkpoint or the genesis.
        const stored = opts.since === undefined ? null : await store.auditHashBefore(row.chain, row.seq);
        check.start(row.chain, stored ?? anchorBefore(checkpoints, row.chain, row.seq), row.seq);
      }
      check.row(row);
    }
    after = page.length === pageRows ? page[page.length - 1]!.seq : null;
  }
  const problems = check.finish(heads);
  return {
    ok: problems.length === 0,
    rows: check.rows,
    seconds: (performance.now() - started) / 1000,
    chains: check.checked().map(({ chain, rows }) => ({ chain, rows, head: heads.find((h) => h.chain === chain) ?? null })),
    heads: (opts.heads ?? []).map((hash) => ({ hash, seq: check.metAt(hash) })),
    problems,
  };
}

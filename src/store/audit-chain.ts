import type { AuditRow, ChainHead, ChainRow, ChainValue, Checkpoint } from "./types";

export type { ChainHead, ChainRow, ChainValue, Checkpoint };

/**
 * The audit's hash chain (SPEC §19), pure: what a row's hash is, and how a run of rows is checked against the
 * hashes they carry and the checkpoints that stand for rows no longer there. Both stores write with it and
 * `keybrake audit verify` reads with it.
 *
 * `hash = hex(SHA-256(prev ‖ canonical))`: `prev` is the previous row's hash in the same chain (64 lowercase hex
 * characters; the genesis is 64 zeros), `canonical` the row's canonical form (`canonicalForm`), both as UTF-8 text,
 * concatenated with nothing between. So `printf '%s%s' "$prev" "$canonical" | sha256sum` recomputes one.
 */

/** The previous hash of a chain's first row. */
export const GENESIS_HASH = "0".repeat(64);

/** The SQLite ledger's one chain; PostgreSQL has one per instance, named by its instance id. */
export const SQLITE_CHAIN = "main";

/**
 * The chain of rows PostgreSQL holds from before the chain existed (their `chain` column is empty): sealed by
 * checkpoints, never written to again.
 */
export const PRE_CHAIN = "";

/**
 * The columns of the canonical form, in its order: every audit column but `seq`, `hash` and `chain`. A column
 * added later goes at the end and must be NULL in rows written before it: trailing NULLs are left out of the
 * canonical form, so those rows keep their hashes.
 */
export const CHAIN_FIELDS = [
  "id",
  "at",
  "keyId",
  "label",
  "vendor",
  "mode",
  "method",
  "path",
  "status",
  "decision",
  "holdMicros",
  "costMicros",
  "costSource",
  "currency",
  "amountMinor",
  "vendorRequestId",
  "idempotencyKey",
  "upstreamMs",
  "overheadMs",
  "clientIp",
  "requests",
  "secretsScrubbed",
  "wouldDeny",
] as const satisfies readonly (keyof AuditRow)[];

/**
 * A row's values in CHAIN_FIELDS order, as the database will hold them: what is inserted and what is hashed. A
 * string with a lone surrogate (a label sent as JSON can carry one) is stored as UTF-8 with U+FFFD in its place,
 * so it is hashed that way too.
 */
export function chainValues(row: AuditRow): ChainValue[] {
  return CHAIN_FIELDS.map((field) => {
    const value = field === "requests" ? (row.requests ?? 1) : row[field];
    return typeof value === "string" ? value.toWellFormed() : (value ?? null);
  });
}

/** The canonical form: a JSON array of the values in CHAIN_FIELDS order (JSON.stringify's), trailing nulls left out. */
export function canonicalForm(values: readonly ChainValue[]): string {
  let end = values.length;
  while (end > 0 && values[end - 1] === null) end--;
  return JSON.stringify(end === values.length ? values : values.slice(0, end));
}

/** The hash of a row whose canonical form is `canonical`, after a row (or checkpoint) whose hash is `prev`. */
export function chainHash(prev: string, canonical: string): string {
  // The one-shot hasher: about a third of the time of an incremental one (two updates) per row.
  return Bun.SHA256.hash(prev + canonical, "hex");
}

/** What a check found wrong, at the first row (or checkpoint) where it shows. */
export interface ChainProblem {
  /** Null for a head that is in no chain. */
  chain: string | null;
  seq: number | null;
  /** The row's request id (`kbr_…`), when the problem is a row. */
  id: string | null;
  message: string;
}

const idOf = (row: ChainRow) => row.values[0] as string;

/** One chain's progress through a check. */
interface ChainState {
  /** The hash the next row must link to: recomputed, or taken from a stored hash after a mismatch. */
  prev: string;
  /** The last row seen, and whether it verified. */
  last: { seq: number; id: string } | null;
  /** Checkpoints not yet passed, oldest first. */
  ahead: Checkpoint[];
  rows: number;
}

/**
 * Checks rows against their hashes, chain by chain, fed in seq order (any number of chains interleaved): each
 * row's hash must be SHA-256 of the previous hash and its canonical form, and each checkpoint a run of rows
 * passes must hold the hash they reach. Memory grows with the number of chains, not of rows.
 *
 * After a mismatch the check goes on from the row's stored hash, so one edited or deleted row is one problem,
 * and the rows after it are still checked.
 */
export class ChainCheck {
  private readonly chains = new Map<string, ChainState>();
  readonly problems: ChainProblem[] = [];
  /** Hashes that must appear in the chains (heads held elsewhere), and the seq where each was met. */
  private readonly wanted = new Map<string, number | null>();
  rows = 0;

  /** `checkpoints`: every chain's (those before where a chain's check starts are its anchors, see `start`). */
  constructor(
    private readonly checkpoints: readonly Checkpoint[],
    wantedHashes: readonly string[] = [],
  ) {
    for (const hash of wantedHashes) this.wanted.set(hash, null);
    for (const c of checkpoints) if (this.wanted.has(c.hash)) this.wanted.set(c.hash, c.seq);
  }

  /** Whether `chain` has been started (its anchor given). */
  started(chain: string): boolean {
    return this.chains.has(chain);
  }

  /** Begins `chain` at `anchor`: the hash its first row to come must link to. */
  start(chain: string, anchor: string, fromSeq: number) {
    const ahead = this.checkpoints.filter((c) => c.chain === chain && c.seq >= fromSeq).sort((a, b) => a.seq - b.seq);
    this.chains.set(chain, { prev: anchor, last: null, ahead, rows: 0 });
  }

  /** The next row of its chain (started first). */
  row(row: ChainRow) {
    const state = this.chains.get(row.chain)!;
    this.passCheckpoints(row.chain, state, row.seq);
    const computed = chainHash(state.prev, canonicalForm(row.values));
    const id = idOf(row);
    if (row.hash === null) {
      // Rows from before the chain carry no hash: a seal ahead stands for them.
      if (!state.ahead.some((c) => c.reason === "sealed")) {
        this.problem(row.chain, row.seq, id, "has no hash, and no seal covers it (written by a Keybrake older than the chain?)");
      }
      state.prev = computed;
    } else if (row.hash !== computed) {
      this.problem(
        row.chain,
        row.seq,
        id,
        state.last === null
          ? "does not link to where its chain starts (its content was changed, or rows before it were deleted)"
          : "does not match its hash (its content was changed, or rows before it were deleted or moved)",
      );
      state.prev = row.hash;
    } else {
      state.prev = computed;
    }
    if (row.hash !== null && this.wanted.get(row.hash) === null) this.wanted.set(row.hash, row.seq);
    state.last = { seq: row.seq, id };
    state.rows++;
    this.rows++;
  }

  /**
   * Ends the check: checkpoints past a chain's last row, and heads that were never met. `heads`: where each
   * chain's writer says it stands (PostgreSQL keeps one per chain), compared with where its rows end.
   */
  finish(heads: readonly ChainHead[] = []): ChainProblem[] {
    for (const [chain, state] of this.chains) this.passCheckpoints(chain, state, Number.POSITIVE_INFINITY);
    for (const head of heads) {
      const state = this.chains.get(head.chain);
      if (!state?.last) continue;
      if (head.seq > state.last.seq) {
        this.problem(
          head.chain,
          head.seq,
          null,
          `is where the chain's head says it ends, but its rows end at seq ${state.last.seq}: rows were deleted`,
        );
      } else if (head.seq === state.last.seq && head.hash !== state.prev) {
        this.problem(head.chain, head.seq, state.last.id, "is the chain's head, but the head's hash is not the row's");
      }
    }
    for (const [hash, seq] of this.wanted) {
      if (seq !== null) continue;
      this.problems.push({
        chain: null,
        seq: null,
        id: null,
        message: `the head ${hash} is in no chain: rows at or before it were deleted, or it is not from this ledger`,
      });
    }
    return this.problems;
  }

  /** The chains checked, with how many rows of each. */
  checked(): { chain: string; rows: number }[] {
    return [...this.chains].map(([chain, state]) => ({ chain, rows: state.rows }));
  }

  /** The seq at which a wanted hash was met (null: not met). */
  metAt(hash: string): number | null {
    return this.wanted.get(hash) ?? null;
  }

  private passCheckpoints(chain: string, state: ChainState, beforeSeq: number) {
    while (state.ahead.length > 0 && state.ahead[0]!.seq < beforeSeq) {
      const c = state.ahead.shift()!;
      if (state.last === null || state.last.seq !== c.seq) {
        this.problem(
          chain,
          c.seq,
          null,
          `is a ${c.reason} checkpoint, but its row is gone (${state.last ? `the row before it is seq ${state.last.seq}` : "no row before it"})`,
        );
      } else if (c.hash !== state.prev) {
        this.problem(
          chain,
          c.seq,
          state.last.id,
          `is a ${c.reason} checkpoint the rows up to it no longer reach (a row up to it was changed, deleted or moved)`,
        );
        // The rows after it link to the checkpoint: they are checked from there.
        state.prev = c.hash;
      }
    }
  }

  private problem(chain: string, seq: number, id: string | null, message: string) {
    this.problems.push({ chain, seq, id, message });
  }
}

/**
 * The heads as Keybrake gives them out (GET /audit/head, alert webhooks): every chain's, and with a single chain
 * its name, seq and hash at the top.
 */
export function presentHeads(heads: readonly ChainHead[]) {
  const only = heads.length === 1 ? heads[0]! : null;
  return { chain: only?.chain ?? null, seq: only?.seq ?? null, hash: only?.hash ?? null, heads: [...heads] };
}
export type PresentedHeads = ReturnType<typeof presentHeads>;

/** The latest checkpoint of `chain` before `seq`: where a run of its rows starting at `seq` links to; else the genesis. */
export function anchorBefore(checkpoints: readonly Checkpoint[], chain: string, seq: number): string {
  let best: Checkpoint | null = null;
  for (const c of checkpoints) if (c.chain === chain && c.seq < seq && (best === null || c.seq > best.seq)) best = c;
  return best?.hash ?? GENESIS_HASH;
}

/**
 * Retention's cut (SPEC §19): the longest run of rows from the start of `rows` (the oldest by seq) all older than
 * `before`, a prefix of every chain; and, for each chain it reaches into, the checkpoint that will stand for its
 * deleted rows: the hash of its last deleted row (recomputed from the chain's anchor when that row carries none).
 */
export function pruneCut(
  rows: readonly (ChainRow & { at: number })[],
  before: number,
  checkpoints: readonly Checkpoint[],
): { lastSeq: number | null; count: number; checkpoints: { chain: string; seq: number; hash: string }[] } {
  const reached = new Map<string, { seq: number; hash: string }>();
  let count = 0;
  for (const row of rows) {
    if (row.at >= before) break;
    const prev = reached.get(row.chain)?.hash ?? anchorBefore(checkpoints, row.chain, row.seq);
    reached.set(row.chain, { seq: row.seq, hash: row.hash ?? chainHash(prev, canonicalForm(row.values)) });
    count++;
  }
  return {
    lastSeq: count === 0 ? null : rows[count - 1]!.seq,
    count,
    checkpoints: [...reached].map(([chain, { seq, hash }]) => ({ chain, seq, hash })),
  };
}

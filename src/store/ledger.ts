import type { Statement } from "bun:sqlite";
import {
  type ApprovalState,
  type BudgetState,
  type DayState,
  type Entry,
  type EntryWithDay,
  type HoldSnapshot,
  type KeyState,
  type RememberedCall,
  decideHold,
  decideResolution,
  decideSettlement,
  orphanAlerts,
} from "../ledger/rules";
import type { AlertOutbox } from "./alerts";
import type { GroupCommit } from "./group-commit";
import type { Db } from "./sqlite";
import { auditAppender } from "./audit-append";
import { asEntry, type HoldRow, holdAuditRow, holdRecord, MAX_STORED_RESPONSE_BYTES } from "./ledger-shared";
import { sqliteBudgetChain, sqliteLedgerWriter } from "./ledger-writes";
import { OPEN_HOLDS, WAITING_ON_APPROVAL } from "./schema";
import type {
  DayUsage,
  HoldRecord,
  HoldRequest,
  HoldResult,
  IdempotencyResult,
  SettleRequest,
  StoredResponse,
  TrackedObject,
} from "./types";

/**
 * Holds and settlements on SQLite: the rule book's decisions (ledger/rules.ts), each read and applied inside a
 * `BEGIN IMMEDIATE` transaction (shared with the other writes of the same event-loop turn, see GroupCommit): the
 * write lock is taken before any balance is read and the writes run one after another, so no two holds can both
 * see the same headroom, and no two calls can both claim the same Idempotency-Key.
 */
export function ledgerQueries(db: Db, commits: GroupCommit, alerts: AlertOutbox) {
  const client = db.$client;
  const apply = sqliteLedgerWriter(client, alerts);
  const { chain, chainIds } = sqliteBudgetChain(client);
  const keyState = client.prepare<KeyState & { budgetId: string | null }, [string]>(
    `SELECT status, daily_cap_micros AS daily, total_cap_micros AS total,
            spent_total_micros AS spent, held_total_micros AS held, budget_id AS budgetId
       FROM vault_keys WHERE id = ?`,
  );
  const approvalFor = client.prepare<ApprovalState, [string, string]>(
    `SELECT id, key_id AS keyId, status, fingerprint, hold_id AS holdId, expires_at AS expiresAt FROM approvals
      WHERE key_id = ? AND idempotency_key = ?`,
  );
  const counterpartyDay = client.prepare<DayUsage, [string, string, string]>(
    `SELECT settled_micros AS settledMicros, held_micros AS heldMicros FROM counterparty_days
      WHERE key_id = ? AND day = ? AND counterparty = ?`,
  );
  const dayBalance = client.prepare<DayUsage, [string, string]>(
    `SELECT settled_micros AS settledMicros, held_micros AS heldMicros FROM spend_days WHERE key_id = ? AND day = ?`,
  );
  const entryById = client.prepare<Entry, [string]>(
    `SELECT id, key_id AS keyId, state, hold_micros AS hold, cost_micros AS cost, day, counterparty FROM ledger_entries WHERE id = ?`,
  );
  const appendAudit = auditAppender(client);
  const upsertTracked = client.prepare(
    `INSERT INTO tracked_objects (object_id, key_id, currency, amount_minor, counted_micros, updated_at)
     VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT (object_id) DO UPDATE SET currency = excluded.currency, amount_minor = excluded.amount_minor,
            counted_micros = excluded.counted_micros, updated_at = excluded.updated_at`,
  );
  const trackedById = client.prepare<TrackedObject, [string]>(
    `SELECT object_id AS objectId, key_id AS keyId, currency, amount_minor AS amountMinor, counted_micros AS countedMicros
       FROM tracked_objects WHERE object_id = ?`,
  );
  const idemGet = client.prepare<
    {
      fingerprint: string;
      state: RememberedCall["state"];
      holdId: string | null;
      status: number | null;
      headers: string | null;
      body: Uint8Array | null;
      vendorRequestId: string | null;
      expiresAt: number;
    },
    [string, string]
  >(
    `SELECT fingerprint, state, hold_id AS holdId, status, headers, body, vendor_request_id AS vendorRequestId, expires_at AS expiresAt
       FROM idempotency_entries WHERE key_id = ? AND idempotency_key = ?`,
  );
  const idemSetState = client.prepare(`UPDATE idempotency_entries SET state = ?3 WHERE key_id = ?1 AND idempotency_key = ?2`);
  const idemComplete = client.prepare(
    `UPDATE idempotency_entries SET state = 'completed', status = ?3, headers = ?4, body = ?5, body_too_large = ?6, vendor_request_id = ?7
      WHERE key_id = ?1 AND idempotency_key = ?2`,
  );
  const idemForget = client.prepare(`DELETE FROM idempotency_entries WHERE key_id = ? AND idempotency_key = ?`);
  const idemPrune = client.prepare(
    `DELETE FROM idempotency_entries WHERE rowid IN (SELECT rowid FROM idempotency_entries WHERE expires_at <= ? LIMIT ?)`,
  );

  const dayState = (row: DayUsage | null): DayState => ({ settled: row?.settledMicros ?? 0, held: row?.heldMicros ?? 0 });
  const day = (keyId: string, d: string): DayState => dayState(dayBalance.get(keyId, d));

  const remembered = (keyId: string, idemKey: string): RememberedCall | null => {
    const prior = idemGet.get(keyId, idemKey);
    if (!prior) return null;
    const response: StoredResponse | null =
      prior.state === "completed"
        ? { status: prior.status!, headers: JSON.parse(prior.headers ?? "[]"), body: prior.body, vendorRequestId: prior.vendorRequestId }
        : null;
    return { fingerprint: prior.fingerprint, state: prior.state, holdId: prior.holdId, expiresAt: prior.expiresAt, response };
  };

  const entryWithDay = (holdId: string, budgets: readonly BudgetState[]): EntryWithDay | null => {
    const entry = entryById.get(holdId);
    if (!entry) return null;
    const d = day(entry.keyId, entry.day);
    return {
      ...entry,
      daySettled: d.settled,
      dayHeld: d.held,
      budgetDays: chain(budgets[0]?.id ?? null, entry.day).map((b) => b.day),
      counterpartyDay: entry.counterparty === null ? null : dayState(counterpartyDay.get(entry.keyId, entry.day, entry.counterparty)),
    };
  };

  const HOLD_COLUMNS = `e.id, e.key_id AS keyId, k.label, k.vendor, k.mode, e.day, e.hold_micros AS holdMicros, e.cost_micros AS costMicros,
            e.state, e.created_at AS createdAt, e.settled_at AS settledAt, e.method, e.path, e.request_id AS requestId
       FROM ledger_entries e LEFT JOIN vault_keys k ON k.id = e.key_id`;
  // The state is spelled into each query so SQLite can use the partial index on open holds.
  const entriesIn = Object.fromEntries(
    (["held", "orphaned", "ambiguous"] as const).map((state) => [
      state,
      client.prepare<HoldRow, [number]>(
        `SELECT ${HOLD_COLUMNS} WHERE e.${OPEN_HOLDS} AND e.state = '${state}' ORDER BY e.created_at LIMIT ?`,
      ),
    ]),
  ) as Record<"held" | "orphaned" | "ambiguous", Statement<HoldRow, [number]>>;
  const heldEntryById = client.prepare<HoldRow, [string]>(`SELECT ${HOLD_COLUMNS} WHERE e.id = ?`);
  const leftBehind = client.prepare<HoldRow, []>(
    `SELECT ${HOLD_COLUMNS} WHERE e.${OPEN_HOLDS} AND e.state = 'held' AND NOT ${WAITING_ON_APPROVAL("e")} ORDER BY e.created_at`,
  );
  const orphanEntries = client.prepare(
    `UPDATE ledger_entries AS e SET state = 'orphaned' WHERE e.${OPEN_HOLDS} AND e.state = 'held' AND NOT ${WAITING_ON_APPROVAL("e")}`,
  );
  const ambiguousInFlight = client.prepare(`UPDATE idempotency_entries SET state = 'ambiguous' WHERE state = 'in_flight'`);

  function rememberOutcome(keyId: string, idemKey: string, result: IdempotencyResult) {
    if (result.kind === "forget") return idemForget.run(keyId, idemKey);
    if (result.kind === "ambiguous") return idemSetState.run(keyId, idemKey, "ambiguous");
    const r = result.response;
    const tooLarge = r.body !== null && r.body.byteLength > MAX_STORED_RESPONSE_BYTES;
    idemComplete.run(keyId, idemKey, r.status, JSON.stringify(r.headers), tooLarge ? null : r.body, tooLarge ? 1 : 0, r.vendorRequestId);
  }

  const hold = (req: HoldRequest): HoldResult => {
    const key = keyState.get(req.keyId);
    const budgets = chain(key?.budgetId ?? null, req.day);
    const seen: HoldSnapshot = {
      key,
      day: day(req.keyId, req.day),
      budgets,
      counterpartyDay: req.counterparty ? dayState(counterpartyDay.get(req.keyId, req.day, req.counterparty.id)) : null,
      remembered: req.idempotency ? remembered(req.keyId, req.idempotency.key) : null,
      approval: req.idempotency ? approvalFor.get(req.keyId, req.idempotency.key) : null,
    };
    let decision = decideHold(req, seen);
    if ("needsEntry" in decision) decision = decideHold(req, { ...seen, entry: entryWithDay(decision.needsEntry, budgets) });
    if ("needsEntry" in decision) throw new Error("decideHold asked twice for the entry");
    apply(decision.writes, req.now);
    return decision.result;
  };

  const settle = (req: SettleRequest): number => {
    const entry = req.holdId ? entryById.get(req.holdId) : null;
    const { result: costMicros, writes } = decideSettlement({ ...req, requestId: req.audit.id }, entry, chainIds(req.keyId));
    apply(writes, req.now);
    appendAudit({ ...req.audit, costMicros });
    if (req.track) {
      const t = req.track;
      upsertTracked.run(t.objectId, t.keyId, t.currency, t.amountMinor, t.countedMicros, req.now);
    }
    if (req.idempotency) rememberOutcome(req.keyId, req.idempotency.key, req.idempotency.result);
    return costMicros;
  };

  const recover = client.transaction((now: number): HoldRecord[] => {
    const held = leftBehind.all();
    orphanEntries.run();
    ambiguousInFlight.run();
    for (const h of held) appendAudit(holdAuditRow(h, h.requestId ?? `kbr_orphan_${h.id}`, now, "orphaned_hold", 0));
    apply(orphanAlerts(held.map(asEntry)), now);
    return held.map((h) => ({ ...h, state: "orphaned" as const }));
  });

  /**
   * An operator's decision on an orphaned hold (still counted as held) or an ambiguous entry (counted as spent at
   * its hold): settled at `costMicros`, or released at 0. An ambiguous entry's spend moves by the difference.
   */
  const resolve = client.transaction((id: string, outcome: "settled" | "released", costMicros: number, now: number) => {
    const entry = entryById.get(id);
    const decision = entry && decideResolution(entry, outcome, costMicros, chainIds(entry.keyId));
    if (!decision) return false;
    apply(decision.writes, now);
    const h = heldEntryById.get(id)!;
    const auditDecision = outcome === "settled" ? "hold_settled" : "hold_released";
    appendAudit(holdAuditRow(h, `kbr_hold_${outcome}_${id}`, now, auditDecision, decision.result));
    return true;
  });

  return {
    holdSpend: (req: HoldRequest) => commits.submit(() => hold(req)),
    // Deferred (group-commit.ts): a settlement lost to a power loss leaves its hold counted, orphaned at start.
    settleCall: (req: SettleRequest) => commits.defer(() => settle(req)),
    async findTracked(objectId: string) {
      return trackedById.get(objectId) ?? null;
    },
    async idempotencyFingerprint(keyId: string, idemKey: string, now: number) {
      const prior = idemGet.get(keyId, idemKey);
      return prior && prior.expiresAt > now ? prior.fingerprint : null;
    },
    async recoverOrphanedHolds(now: number) {
      return recover.immediate(now).map(holdRecord);
    },
    async listHolds(state: "held" | "orphaned" | "ambiguous", limit: number) {
      return entriesIn[state].all(limit).map(holdRecord);
    },
    async resolveHold(id: string, outcome: "settled" | "released", costMicros: number, now: number) {
      if (!resolve.immediate(id, outcome, costMicros, now)) return null;
      return holdRecord(heldEntryById.get(id)!);
    },
    async findHold(id: string) {
      const row = heldEntryById.get(id);
      return row ? holdRecord(row) : null;
    },
    async pruneIdempotency(now: number, batch: number) {
      return idemPrune.run(now, batch).changes;
    },
  };
}

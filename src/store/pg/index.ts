import { hostname } from "node:os";
import type { RequestLimiter } from "../types";
import { committingQueuedWritesFirst } from "../read-your-writes";
import type { AdminStore, CallPathStore, HoldRecord, SpendCounter, Store } from "../types";
import { pgAdminQueries } from "./admin";
import { pgAlertOutbox, pgAlertQueries } from "./alerts";
import { pgAuditQueries } from "./audit";
import { PgBatch } from "./batch";
import { pgBudgetQueries } from "./budgets";
import { connectPg } from "./client";
import { registerChain } from "./audit-chain";
import { pgKeyQueries } from "./keys";
import { type LeaseHolder, pgLeases } from "./lease";
import { pgLedgerQueries } from "./ledger";
import { applyPgMigrations, pendingPgMigrations } from "./migrate";
import { pgRateLimiter } from "./rate";
import { pgApprovalQueries } from "./approvals";
import { pgReconcileQueries } from "./reconcile";
import { pgSpendCounters } from "./spend-counters";
import { pgTokenQueries } from "./tokens";

export interface PgOptions {
  /** Names this instance's holds in the shared ledger (KEYBRAKE_INSTANCE_ID). */
  instanceId?: string;
  /** How long this instance's lease lasts unrenewed; it is renewed every third of that. */
  leaseMs?: number;
  /** false: the schema must already be current (`keybrake migrate`); the CLI's commands never migrate. */
  migrate?: boolean;
  /** Hears that a failover moved this instance to another of KEYBRAKE_DATABASE_URL's hosts (`host:port`). */
  onPrimaryMoved?: (where: string) => void;
  /**
   * The pool's size (16). Bun's pool opens every one of them at the first query, and each costs the server ~30 ms
   * of CPU to start and warm its catalog caches: a one-shot CLI command and tests of short-lived stores take few.
   */
  connections?: number;
}

/** The PostgreSQL store (SPEC §13): the same Store, shared by every instance pointed at the database. */
export interface PgStore extends Store {
  kind: "postgres";
  instanceId: string;
  /** max_requests_per_minute counted for the whole fleet. */
  rateLimiter: RequestLimiter;
  /** Spend counted by this instance id in earlier runs, and by the fleet's other instances (for /metrics). */
  spendCounters: { own(): Promise<SpendCounter[]>; others(): Promise<SpendCounter[]> };
  /**
   * Serving: takes this instance's lease (waiting out a dead holder of the same id elsewhere, refusing a live one:
   * a ConfigError naming KEYBRAKE_INSTANCE_ID) and keeps it. Each
   * renewal also saves this instance's spend counters (`counters`, saved once more at close) and recovers the
   * holds of instances whose lease lapsed (`onRecovered` hears what it found).
   */
  startInstance(serving: {
    onRecovered: (holds: HoldRecord[]) => void;
    counters: () => SpendCounter[];
    /** Hears once that another process holds this instance id's lease, which is waited out. */
    onWaitForLease?: (holder: LeaseHolder) => void;
  }): Promise<void>;
}

const DEFAULT_LEASE_MS = 15_000;
/** /healthz's write probe: a server that does not answer within this is as unwritable as one that refuses. */
const WRITABLE_PROBE_MS = 2_000;

export async function openPgStore(url: string, opts: PgOptions = {}): Promise<PgStore> {
  const instanceId = opts.instanceId ?? `${hostname()}:${process.pid}`;
  // Each pool (a new one after a failover) writes this instance's audit chain.
  const sql = await connectPg(url, opts.connections ?? 16, (pool) => registerChain(pool, instanceId), opts.onPrimaryMoved);
  try {
    if (opts.migrate !== false) await applyPgMigrations(sql);
    else {
      // The CLI's commands: a database not migrated yet is named now, not by the first query that fails.
      const pending = await pendingPgMigrations(sql);
      if (pending.length > 0)
        throw new Error(`the schema lacks ${pending.join(", ")}: run keybrake migrate (or start keybrake serve) first`);
    }
  } catch (error) {
    await sql.close({ timeout: 1 });
    throw error;
  }
  const leaseMs = opts.leaseMs ?? DEFAULT_LEASE_MS;
  const batches = { durable: new PgBatch(sql), deferred: new PgBatch(sql, false) };
  const flushBatches = async () => {
    await Promise.all([batches.durable.flush(), batches.deferred.flush()]);
  };
  const outbox = pgAlertOutbox();
  const leases = pgLeases(sql, instanceId, leaseMs);
  const { findKeyByHash, ...keys } = pgKeyQueries(sql, outbox);
  const { idempotencyFingerprint, holdSpend, settleCall, ...ledger } = pgLedgerQueries(sql, batches, outbox, instanceId);
  const { recordAudit, ...audit } = pgAuditQueries(sql, batches.deferred, instanceId);
  const callPath: CallPathStore = { findKeyByHash, idempotencyFingerprint, holdSpend, settleCall, recordAudit };
  const spend = pgSpendCounters(sql, instanceId);
  let heartbeat: Timer | undefined;
  let serving: Parameters<PgStore["startInstance"]>[0] | undefined;
  const admin: AdminStore = {
    ...pgBudgetQueries(sql),
    ...keys,
    ...ledger,
    ...pgReconcileQueries(sql, batches.durable, outbox, instanceId),
    ...pgApprovalQueries(sql, batches.durable, outbox, instanceId),
    ...pgAlertQueries(sql),
    ...audit,
    ...pgAdminQueries(sql),
    ...pgTokenQueries(sql),
    async checkWritable() {
      const probe = sql`INSERT INTO settings (name, value) VALUES ('healthz', ${String(Date.now())})
                        ON CONFLICT (name) DO UPDATE SET value = excluded.value`;
      let timer: Timer | undefined;
      const late = new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), WRITABLE_PROBE_MS);
      });
      try {
        // Unreachable (refused, closed, a standby's 25006), or no answer in time: not writable, never a throw.
        return await Promise.race([probe.then(() => true), late]);
      } catch {
        return false;
      } finally {
        clearTimeout(timer);
        // A probe still waiting for a connection (the pool's connectionTimeout is 10 s) is not left queued.
        probe.cancel();
      }
    },
    async close() {
      clearInterval(heartbeat);
      await flushBatches();
      if (serving) {
        await spend.save(serving.counters());
        // A clean stop has settled every call: its lease goes at once, nothing of it is left to recover.
        await leases.release();
      }
      await sql.close({ timeout: 5 });
    },
  };
  return {
    kind: "postgres",
    instanceId,
    rateLimiter: pgRateLimiter(sql),
    ...callPath,
    ...committingQueuedWritesFirst(admin, flushBatches),
    spendCounters: { own: () => spend.own(), others: () => spend.others() },
    async startInstance(how) {
      await leases.register(Date.now(), how.onWaitForLease);
      serving = how;
      heartbeat = setInterval(
        async () => {
          try {
            const now = Date.now();
            await leases.renew(now);
            await spend.save(how.counters());
            const recovered = await ledger.recoverOrphanedHolds(now);
            if (recovered.length > 0) how.onRecovered(recovered);
          } catch {
            // The database is unreachable: calls fail on their own; the next beat tries again.
          }
        },
        Math.max(100, Math.floor(leaseMs / 3)),
      );
      heartbeat.unref();
    },
  };
}

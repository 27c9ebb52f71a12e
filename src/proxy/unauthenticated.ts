import { auditRow, type AuditRow, type Store } from "../store/index";
import { callId } from "./ids";

const MINUTE_MS = 60_000;
/** Past this many clients in one minute the rest share one tally, so memory stays flat under address churn. */
const MAX_CLIENTS = 1_000;
/** The client of that shared tally, and what an aggregate row says where its requests differed. */
const MANY = "*";

/** One client's denials in one UTC minute after the first (which has a row of its own). */
interface Tally {
  minute: number;
  count: number;
  lastAt: number;
  vendor: AuditRow["vendor"];
  method: string;
  path: string;
}

/**
 * SPEC §9: denials without a valid vault key (`invalid_key`) cannot grow the database a row per request.
 * Per client (IP) and minute, the first is audited as a row of its own, so it shows at once with everything it
 * carried; the rest are only counted, and written as one row whose `requests` says how many once the minute
 * is over (or on stop). Each row costs a commit and a few pages of WAL; a flood now costs at most two rows per
 * client and minute, and at most MAX_CLIENTS + 1 clients are tracked.
 */
export class UnauthenticatedDenials {
  private tallies = new Map<string, Tally>();
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly store: Pick<Store, "recordAudit">,
    private readonly now: () => number,
    private readonly log: (message: string) => void,
    private readonly maxClients = MAX_CLIENTS,
  ) {}

  /** Audits one `invalid_key` denial: resolves once it is written, or at once when it is only counted. */
  record(row: AuditRow): Promise<void> {
    const minute = Math.floor(row.at / MINUTE_MS);
    const client = this.tallyKey(row.clientIp ?? "");
    const tally = this.tallies.get(client);
    if (tally?.minute === minute) {
      tally.count++;
      tally.lastAt = row.at;
      if (tally.vendor !== row.vendor) tally.vendor = null;
      if (tally.method !== row.method) tally.method = MANY;
      if (tally.path !== row.path) tally.path = MANY;
      return Promise.resolve();
    }
    if (tally) this.write(client, tally);
    this.tallies.set(client, { minute, count: 0, lastAt: row.at, vendor: row.vendor, method: row.method, path: row.path });
    this.flushWhenTheMinuteEnds();
    return this.store.recordAudit(row);
  }

  /** Writes every tally now: on stop, before the store closes. */
  flush() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const [client, tally] of this.tallies) this.write(client, tally);
    this.tallies.clear();
  }

  private tallyKey(client: string): string {
    return this.tallies.has(client) || this.tallies.size < this.maxClients ? client : MANY;
  }

  /** Writes the tallies of minutes that are over; the timer is rearmed while any tally is left. */
  private flushEndedMinutes() {
    this.timer = null;
    const minute = Math.floor(this.now() / MINUTE_MS);
    for (const [client, tally] of this.tallies) {
      if (tally.minute >= minute) continue;
      this.write(client, tally);
      this.tallies.delete(client);
    }
    if (this.tallies.size > 0) this.flushWhenTheMinuteEnds();
  }

  private flushWhenTheMinuteEnds() {
    if (this.timer) return;
    this.timer = setTimeout(() => this.flushEndedMinutes(), MINUTE_MS - (this.now() % MINUTE_MS) + 100);
    // A pending aggregate must not keep a stopping process alive: stop flushes it.
    this.timer.unref();
  }

  private write(client: string, tally: Tally) {
    if (tally.count === 0) return;
    const row = auditRow({
      id: callId("kbr_", tally.lastAt),
      at: tally.lastAt,
      vendor: tally.vendor,
      method: tally.method,
      path: tally.path,
      status: 401,
      decision: "invalid_key",
      clientIp: client === "" ? null : client,
      requests: tally.count,
    });
    // Nobody waits for an aggregate; a failure loses a count, never a call's own row.
    this.store.recordAudit(row).catch((err: unknown) => {
      this.log(
        `keybrake: could not audit ${tally.count} unauthenticated denial(s) from ${client || "an unknown client"}: ${err instanceof Error ? err.message : String(err)}`,
      );
    });
  }
}

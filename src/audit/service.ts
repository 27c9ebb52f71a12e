import type { z } from "zod";
import { presentHeads } from "../store/audit-chain";
import type { AuditFilter, AuditRow, SpendGroup, Store } from "../store/index";
import { iso, microsToUsd } from "../util";
import type { AuditFilters, AuditQuery } from "./model";

export function presentAudit(r: AuditRow) {
  return {
    id: r.id,
    at: iso(r.at)!,
    key_id: r.keyId,
    label: r.label,
    vendor: r.vendor,
    mode: r.mode,
    method: r.method,
    path: r.path,
    status: r.status,
    decision: r.decision,
    hold_usd: microsToUsd(r.holdMicros),
    cost_usd: microsToUsd(r.costMicros),
    cost_source: r.costSource,
    currency: r.currency,
    amount_minor: r.amountMinor,
    vendor_request_id: r.vendorRequestId,
    idempotency_key: r.idempotencyKey,
    upstream_ms: r.upstreamMs,
    overhead_ms: r.overheadMs,
    client_ip: r.clientIp,
    requests: r.requests ?? 1,
    secrets_scrubbed: r.secretsScrubbed ?? 0,
    would_deny: r.wouldDeny ?? null,
  };
}
export type PresentedAudit = ReturnType<typeof presentAudit>;

const toFilter = (q: AuditFilters): Omit<AuditFilter, "limit" | "cursor"> => ({
  requestId: q.request_id,
  keyId: q.key_id,
  label: q.label,
  labelPrefix: q.label_prefix,
  vendor: q.vendor,
  decision: q.decision,
  since: q.since,
  until: q.until,
});

/**
 * A page of audit rows, each with the approval of its call when a person decided one (SPEC §15: who decided and
 * when is on the call's audit row). Read beside the rows, not stored in them: a decision comes after the rows
 * of the call that asked, and the hash chain never rewrites a row.
 */
export async function listAudit(store: Store, q: z.infer<typeof AuditQuery>) {
  const page = await store.listAudit({ ...toFilter(q), limit: q.limit, cursor: q.cursor });
  const calls = page.data.flatMap((r) => (r.keyId && r.idempotencyKey ? [{ keyId: r.keyId, idempotencyKey: r.idempotencyKey }] : []));
  const approvals = new Map((await store.approvalsOfCalls(calls)).map((a) => [callOf(a.keyId, a.idempotencyKey), a]));
  return {
    data: page.data.map((r) => {
      const a = r.keyId && r.idempotencyKey ? approvals.get(callOf(r.keyId, r.idempotencyKey)) : undefined;
      const approval = a ? { id: a.id, status: a.status, decided_by: a.decidedBy, decided_at: iso(a.decidedAt) } : null;
      return { ...presentAudit(r), approval };
    }),
    next_cursor: page.nextCursor === null ? null : String(page.nextCursor),
  };
}

const callOf = (keyId: string, idempotencyKey: string) => `${keyId}\n${idempotencyKey}`;

/**
 * Per-run spend (group_by=label), or per key, vendor or UTC day: every group, or with `limit` the first ones (the
 * biggest spenders, days in order) and a cursor, so a dashboard's top runs over 100 k keys is a small answer.
 */
export async function spendBy(store: Store, group: SpendGroup, q: AuditFilters & { limit?: number; cursor?: number }) {
  const { limit, cursor: from = 0, ...filters } = q;
  const rows = await store.spendBy(group, toFilter(filters));
  const page = rows.slice(from, limit === undefined ? undefined : from + limit);
  const next = limit === undefined ? {} : { next_cursor: from + limit < rows.length ? String(from + limit) : null };
  return {
    data: page.map((r) => ({
      group: r.group,
      calls: r.calls,
      allowed: r.allowed,
      denied: r.denied,
      spend_usd: microsToUsd(r.spendMicros),
      ambiguous_usd: microsToUsd(r.ambiguousMicros),
    })),
    ...next,
  };
}

/** Where the audit's chains stand (SPEC §19): GET /audit/head. */
export async function auditHead(store: Store) {
  return presentHeads(await store.auditHeads());
}

/** Rows read from the store at a time by `auditRows`; one page is one chunk of an export. */
export const AUDIT_PAGE_ROWS = 1000;

/** Every matching row, newest first, one page of the store at a time: memory stays flat however many rows. */
export async function* auditRows(store: Store, q: AuditFilters, pageRows = AUDIT_PAGE_ROWS): AsyncGenerator<PresentedAudit[]> {
  let cursor: number | undefined;
  do {
    const page = await store.listAudit({ ...toFilter(q), limit: pageRows, cursor });
    yield page.data.map(presentAudit);
    cursor = page.nextCursor ?? undefined;
  } while (cursor !== undefined);
}

export const AUDIT_COLUMNS = [
  "id",
  "at",
  "key_id",
  "label",
  "vendor",
  "mode",
  "method",
  "path",
  "status",
  "decision",
  "hold_usd",
  "cost_usd",
  "cost_source",
  "currency",
  "amount_minor",
  "vendor_request_id",
  "idempotency_key",
  "upstream_ms",
  "overhead_ms",
  "client_ip",
  "requests",
  "secrets_scrubbed",
  "would_deny",
] as const satisfies readonly (keyof PresentedAudit)[];

/** What a spreadsheet takes for the start of a formula (OWASP "CSV injection"). */
const FORMULA_START = /^[=+\-@\t\r]/;

/**
 * RFC 4180: a field with a comma, quote, CR or LF is quoted, and quotes inside are doubled. A text cell that
 * would start a formula is prefixed with `'` first (OWASP): labels, paths and Idempotency-Keys come from
 * clients, unauthenticated ones included. Numbers are left alone: `String()` of a number is never a formula,
 * and a negative amount, should one ever appear, must stay a number in the spreadsheet.
 */
export function csvField(value: unknown): string {
  if (value === null || value === undefined) return "";
  let text = String(value);
  if (typeof value === "string" && FORMULA_START.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export const csvLine = (row: PresentedAudit) => `${AUDIT_COLUMNS.map((c) => csvField(row[c])).join(",")}\r\n`;
export const csvHeader = () => `${AUDIT_COLUMNS.join(",")}\r\n`;

/** The export as a byte stream: each pull renders one page, so the first bytes leave before the last are read. */
export function exportStream(
  store: Store,
  q: AuditFilters,
  format: "ndjson" | "csv",
  pageRows = AUDIT_PAGE_ROWS,
): ReadableStream<Uint8Array> {
  const pages = auditRows(store, q, pageRows);
  const encoder = new TextEncoder();
  let headerSent = format !== "csv";
  return new ReadableStream({
    async pull(controller) {
      if (!headerSent) {
        headerSent = true;
        controller.enqueue(encoder.encode(csvHeader()));
        return;
      }
      const next = await pages.next();
      if (next.done) return controller.close();
      const text = next.value.map((row) => (format === "csv" ? csvLine(row) : `${JSON.stringify(row)}\n`)).join("");
      if (text) controller.enqueue(encoder.encode(text));
    },
    async cancel() {
      await pages.return(undefined);
    },
  });
}

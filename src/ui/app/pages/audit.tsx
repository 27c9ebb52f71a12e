import { useState } from "preact/hooks";
import { type AuditList, type AuditRow, api, type Session, qs } from "../api";
import { ErrorNotice, Loading, useData } from "../ui";
import { AuditTable } from "./key";

const FILTERS = ["key_id", "label", "label_prefix", "vendor", "decision", "since", "until"] as const;
const DECISIONS = [
  "allowed",
  "cap_exhausted",
  "key_revoked",
  "key_expired",
  "invalid_key",
  "endpoint_not_allowed",
  "rate_limited",
  "unpriceable_request",
  "upstream_timeout",
  "upstream_unreachable",
];

/** SPEC §8's /audit with its filters (kept in the URL: #/audit?vendor=stripe), pages, and export links. */
export function AuditPage({ session, params }: { session: Session; params: URLSearchParams }) {
  const filters = Object.fromEntries(FILTERS.map((f) => [f, params.get(f) ?? ""])) as Record<(typeof FILTERS)[number], string>;
  const key = FILTERS.map((f) => filters[f]).join("\u0000");
  const [more, setMore] = useState<{ rows: AuditRow[]; next: string | null } | null>(null);
  const [moreError, setMoreError] = useState<Error | null>(null);
  const { data, error } = useData(() => {
    setMore(null);
    return api<AuditList>(`/audit${qs({ ...filters, limit: 100 })}`);
  }, [key]);
  const rows = [...(data?.data ?? []), ...(more?.rows ?? [])];
  const next = more ? more.next : (data?.next_cursor ?? null);
  const loadMore = async () => {
    try {
      const page = await api<AuditList>(`/audit${qs({ ...filters, limit: 100, cursor: next })}`);
      setMore({ rows: [...(more?.rows ?? []), ...page.data], next: page.next_cursor });
    } catch (err) {
      setMoreError(err as Error);
    }
  };
  const submit = (e: Event) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget as HTMLFormElement);
    const values = Object.fromEntries(FILTERS.map((f) => [f, String(form.get(f) ?? "").trim()]));
    location.hash = `#/audit${qs(values)}`;
  };
  return (
    <>
      <h1>Audit</h1>
      <section class="panel" aria-labelledby="filters">
        <h2 id="filters">Filters</h2>
        <form class="filters" onSubmit={submit} key={key}>
          <label>
            Run label
            <input name="label" defaultValue={filters.label} placeholder="airflow-billing/run_2026_11_22" />
          </label>
          <label>
            Label prefix
            <input name="label_prefix" defaultValue={filters.label_prefix} placeholder="airflow-billing/" />
          </label>
          <label>
            Key id
            <input name="key_id" defaultValue={filters.key_id} placeholder="vk_…" />
          </label>
          <label>
            Vendor
            <select name="vendor" defaultValue={filters.vendor}>
              <option value="">any</option>
              {session.vendors.map((v) => (
                <option key={v} value={v}>
                  {v}
                </option>
              ))}
            </select>
          </label>
          <label>
            Decision
            <input name="decision" list="decisions" defaultValue={filters.decision} placeholder="allowed, cap_exhausted…" />
            <datalist id="decisions">
              {DECISIONS.map((d) => (
                <option key={d} value={d} />
              ))}
            </datalist>
          </label>
          <label>
            Since
            <input name="since" defaultValue={filters.since} placeholder="2h, 1d, 2026-11-22" />
          </label>
          <label>
            Until
            <input name="until" defaultValue={filters.until} placeholder="2026-11-23T00:00:00Z" />
          </label>
          <div class="actions">
            <button class="primary" type="submit">
              Apply
            </button>
            <a class="button" href="#/audit">
              Clear
            </a>
          </div>
        </form>
        <p class="hint">
          Export every matching row:{" "}
          <a href={`/audit/export${qs({ ...filters, format: "csv" })}`} download>
            CSV
          </a>{" "}
          ·{" "}
          <a href={`/audit/export${qs({ ...filters, format: "ndjson" })}`} download>
            NDJSON
          </a>
        </p>
      </section>
      <ErrorNotice error={error ?? moreError} />
      <section class="panel" aria-labelledby="rows">
        <h2 id="rows">
          Calls <span class="sub">newest first</span>
        </h2>
        {!data ? (
          <Loading />
        ) : rows.length === 0 ? (
          <p class="muted">No calls match these filters.</p>
        ) : (
          <>
            <AuditTable rows={rows} caption="Audit rows" showRun />
            {next && (
              <p>
                <button type="button" onClick={loadMore}>
                  Load 100 more
                </button>
              </p>
            )}
          </>
        )}
      </section>
    </>
  );
}

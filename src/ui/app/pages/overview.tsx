import {
  ApiError,
  type AuditList,
  type AuditRow,
  api,
  type Hold,
  type HoldList,
  type KeyList,
  type Session,
  type SpendList,
  type SpendRow,
  qs,
} from "../api";
import { clock, plural, todayUtc, usd, when } from "../format";
import { ErrorNotice, FirstKey, Loading, Table, useData } from "../ui";

const REFRESH_MS = 5000;

interface Overview {
  byVendor: SpendRow[];
  lastHour: SpendRow[];
  lastDay: SpendRow[];
  capHits: AuditRow[];
  activeKeys: number;
  anyKeys: boolean;
  /** null: this token does not read holds (an issuer). */
  holds: { held: Hold[]; orphaned: Hold[]; ambiguous: Hold[] } | null;
}

const TOP_RUNS = 8;
const spend = (params: Record<string, string>) => api<SpendList>(`/audit/spend${qs(params)}`).then((r) => r.data);
const top = (rows: SpendRow[]) =>
  rows
    .filter((r) => r.spend_usd > 0)
    .sort((a, b) => b.spend_usd - a.spend_usd)
    .slice(0, TOP_RUNS);

async function load(): Promise<Overview> {
  const holds = (state: string) => api<HoldList>(`/vault/holds${qs({ state, limit: 1000 })}`).then((r) => r.data);
  const [byVendor, lastHour, lastDay, capHits, active, any, held] = await Promise.all([
    spend({ group_by: "vendor", since: todayUtc() }),
    // The biggest spenders first: the top runs without every run of 100 k keys.
    spend({ group_by: "label", since: "1h", limit: String(TOP_RUNS) }),
    spend({ group_by: "label", since: "1d", limit: String(TOP_RUNS) }),
    api<AuditList>(`/audit${qs({ decision: "cap_exhausted", since: "1d", limit: 20 })}`).then((r) => r.data),
    api<KeyList>(`/vault/keys${qs({ status: "active", limit: 1000 })}`).then((r) => r.data.length),
    api<KeyList>(`/vault/keys${qs({ limit: 1 })}`).then((r) => r.data.length > 0),
    Promise.all([holds("held"), holds("orphaned"), holds("ambiguous")]).then(
      ([h, o, a]) => ({ held: h, orphaned: o, ambiguous: a }),
      (err) => {
        if (err instanceof ApiError && err.status === 403) return null;
        throw err;
      },
    ),
  ]);
  return { byVendor, lastHour: top(lastHour), lastDay: top(lastDay), capHits, activeKeys: active, anyKeys: any, holds: held };
}

function TopRuns({ rows, caption }: { rows: SpendRow[]; caption: string }) {
  if (rows.length === 0) return <p class="muted">No spend.</p>;
  return (
    <Table caption={caption}>
      <thead>
        <tr>
          <th scope="col">Run</th>
          <th scope="col" class="num">
            Spend
          </th>
          <th scope="col" class="num">
            Calls
          </th>
        </tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr key={r.group ?? ""}>
            <td>{r.group ? <a href={`#/audit${qs({ label: r.group })}`}>{r.group}</a> : <span class="muted">(no label)</span>}</td>
            <td class="num">{usd(r.spend_usd)}</td>
            <td class="num">{r.calls}</td>
          </tr>
        ))}
      </tbody>
    </Table>
  );
}

export function OverviewPage({ session }: { session: Session }) {
  const { data, error, loadedAt } = useData(load, [], REFRESH_MS);
  const total = data?.byVendor.reduce((sum, r) => sum + r.spend_usd, 0) ?? 0;
  return (
    <>
      <div class="pagehead">
        <h1>Overview</h1>
        <p class="sub" aria-live="off">
          {session.role === "issuer" ? "The keys this token minted. " : ""}Refreshes every 5 s
          {loadedAt ? ` · updated ${clock(loadedAt)}` : ""}
        </p>
      </div>
      <ErrorNotice error={error} />
      {!data ? (
        <Loading />
      ) : (
        <>
          {!data.anyKeys && (
            <section class="panel" aria-labelledby="first-key">
              <h2 id="first-key">Get started</h2>
              <FirstKey role={session.role} />
            </section>
          )}
          <div class="grid cards">
            <section class="panel" aria-labelledby="today">
              <h2 id="today">Spend today (UTC)</h2>
              <div class="stat">{usd(total)}</div>
              <div class="stat-row">
                {data.byVendor.length === 0 && <span class="muted">No calls today.</span>}
                {data.byVendor.map((r) => (
                  <div key={r.group ?? ""}>
                    <div class="stat-label">{r.group ?? "unknown"}</div>
                    <div>
                      {usd(r.spend_usd)} <span class="muted">· {plural(r.calls, "call")}</span>
                    </div>
                  </div>
                ))}
              </div>
            </section>
            <section class="panel" aria-labelledby="keys-now">
              <h2 id="keys-now">Active keys</h2>
              <div class="stat">{data.activeKeys}</div>
              <a href="#/runs">See the runs</a>
            </section>
            <section class="panel" aria-labelledby="cap-hits">
              <h2 id="cap-hits">Cap hits, last 24 h</h2>
              <div class="stat">{data.capHits.length >= 20 ? "20+" : data.capHits.length}</div>
              <a href={`#/audit${qs({ decision: "cap_exhausted", since: "1d" })}`}>See them in the audit</a>
            </section>
            {data.holds && (
              <section class="panel" aria-labelledby="holds-now">
                <h2 id="holds-now">Holds</h2>
                <dl class="facts counts">
                  <dt>Open (in flight)</dt>
                  <dd>{data.holds.held.length}</dd>
                  <dt>Orphaned</dt>
                  <dd>{data.holds.orphaned.length}</dd>
                  <dt>Ambiguous</dt>
                  <dd>{data.holds.ambiguous.length}</dd>
                </dl>
                {data.holds.orphaned.length + data.holds.ambiguous.length > 0 && <a href="#/holds">Resolve them</a>}
              </section>
            )}
          </div>
          <div class="grid">
            <section class="panel" aria-labelledby="top-hour">
              <h2 id="top-hour">Runs spending most, last hour</h2>
              <TopRuns rows={data.lastHour} caption="Runs spending most in the last hour" />
            </section>
            <section class="panel" aria-labelledby="top-day">
              <h2 id="top-day">Runs spending most, last 24 h</h2>
              <TopRuns rows={data.lastDay} caption="Runs spending most in the last 24 hours" />
            </section>
          </div>
          {data.capHits.length > 0 && (
            <section class="panel" aria-labelledby="hits">
              <h2 id="hits">Latest cap hits</h2>
              <Table caption="Latest cap hits">
                <thead>
                  <tr>
                    <th scope="col">When</th>
                    <th scope="col">Run</th>
                    <th scope="col">Call</th>
                  </tr>
                </thead>
                <tbody>
                  {data.capHits.slice(0, 8).map((r) => (
                    <tr key={r.id}>
                      <td>{when(r.at)}</td>
                      <td>{r.key_id ? <a href={`#/keys/${r.key_id}`}>{r.label ?? r.key_id}</a> : "—"}</td>
                      <td class="mono">
                        {r.method} {r.path}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </Table>
            </section>
          )}
        </>
      )}
    </>
  );
}

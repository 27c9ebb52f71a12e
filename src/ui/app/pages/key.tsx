import { Fragment } from "preact";
import { useState } from "preact/hooks";
import {
  ApiError,
  type AuditList,
  type AuditRow,
  api,
  type Budget,
  type KeyRecord,
  type Session,
  type SpendList,
  type SpendRow,
  qs,
  writesKeys,
} from "../api";
import { type Mark, SpendChart } from "../chart";
import { ago, stamp, usd, when } from "../format";
import { familyOf } from "../runs-model";
import { Badge, Confirm, ErrorNotice, Loading, Meter, NotBraking, NumberField, numberField, Status, Table, useData } from "../ui";

interface KeyView {
  key: KeyRecord;
  rows: AuditRow[];
  next: string | null;
  days: SpendRow[];
  /** The budget the key draws from; null when it draws from none, or from one deleted since. */
  budget: Budget | null;
}

async function load(id: string): Promise<KeyView> {
  const [key, page, days] = await Promise.all([
    api<KeyRecord>(`/vault/keys/${encodeURIComponent(id)}`),
    api<AuditList>(`/audit${qs({ key_id: id, limit: 1000 })}`),
    api<SpendList>(`/audit/spend${qs({ key_id: id, group_by: "day" })}`),
  ]);
  const budget =
    key.budget_id === null
      ? null
      : await api<Budget>(`/budgets/${encodeURIComponent(key.budget_id)}`).catch((err: unknown) => {
          if (err instanceof ApiError && err.status === 404) return null;
          throw err;
        });
  return { key, rows: page.data, next: page.next_cursor, days: days.data, budget };
}

function EditKey({ keyRecord, onSaved }: { keyRecord: KeyRecord; onSaved: (k: KeyRecord) => void }) {
  const [error, setError] = useState<Error | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const body: Record<string, unknown> = {};
    const daily = numberField(form, "daily_usd_cap", keyRecord.daily_usd_cap);
    const total = numberField(form, "total_usd_cap", keyRecord.total_usd_cap);
    const rpm = numberField(form, "max_requests_per_minute", keyRecord.max_requests_per_minute);
    if (daily !== undefined) body.daily_usd_cap = daily;
    if (total !== undefined) body.total_usd_cap = total;
    if (rpm !== undefined) body.max_requests_per_minute = rpm;
    const expiresIn = (form.elements.namedItem("expires_in") as HTMLInputElement).value.trim();
    if (expiresIn) body.expires_in = expiresIn;
    if (Object.keys(body).length === 0) {
      setError(new Error("Nothing to change: edit a field first."));
      return;
    }
    setBusy(true);
    try {
      onSaved(await api<KeyRecord>(`/vault/keys/${encodeURIComponent(keyRecord.id)}`, { method: "PATCH", body }));
      setError(null);
      (form.elements.namedItem("expires_in") as HTMLInputElement).value = "";
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="edit" onSubmit={submit} aria-describedby="edit-hint">
      <NumberField label="Daily cap (USD)" name="daily_usd_cap" value={keyRecord.daily_usd_cap} money />
      <NumberField label="Lifetime cap (USD)" name="total_usd_cap" value={keyRecord.total_usd_cap} money />
      <NumberField label="Requests per minute" name="max_requests_per_minute" value={keyRecord.max_requests_per_minute} />
      <label>
        New expiry, from now
        <input name="expires_in" type="text" placeholder="6h, 2d, 1h30m" pattern="^(\d+d)?(\d+h)?(\d+m)?(\d+s)?$" />
      </label>
      <div class="actions">
        <button class="primary" type="submit" disabled={busy}>
          Save changes
        </button>
      </div>
      <p id="edit-hint" class="hint wide">
        Empty a cap to remove it (one cap must remain). Now expires {when(keyRecord.expires_at)} ({ago(keyRecord.expires_at)}).
      </p>
      <div class="wide">
        <ErrorNotice error={error} />
      </div>
    </form>
  );
}

export function KeyPage({ session, id }: { session: Session; id: string }) {
  const { data, error, reload } = useData(() => load(id), [id], 15_000);
  const [confirming, setConfirming] = useState(false);
  const [message, setMessage] = useState<{ text: string; kind: "ok" | "error" } | null>(null);
  const canWrite = writesKeys(session.role);
  if (error && !data) return <ErrorNotice error={error} />;
  if (!data) return <Loading />;
  const { key, rows, days, budget } = data;
  const family = familyOf(key.label);
  const priced = rows.filter((r) => r.cost_usd > 0).map((r) => ({ t: Date.parse(r.at), usd: r.cost_usd }));
  // Replays cost nothing and observed refusals went out anyway: both are marked on the line where they happened.
  const marks = rows.flatMap((r): Mark[] =>
    r.cost_source === "replay"
      ? [{ t: Date.parse(r.at), kind: "replay" }]
      : r.would_deny && r.decision === "allowed"
        ? [{ t: Date.parse(r.at), kind: "would_deny" }]
        : [],
  );
  return (
    <>
      <p>
        <a href="#/runs">← Runs</a>
        {family && (
          <>
            {" · "}
            <a href={`#/audit${qs({ label_prefix: family })}`}>{family} audit</a>
          </>
        )}
      </p>
      <div class="pagehead">
        <h1>
          {key.label ?? key.id} <Badge value={key.status} />
          {key.enforcement === "observe" && (
            <>
              {" "}
              <NotBraking />
            </>
          )}
        </h1>
        {canWrite && key.status === "active" && (
          <button type="button" class="danger" onClick={() => setConfirming(true)}>
            Revoke this key
          </button>
        )}
      </div>
      <Status message={message} />
      <ErrorNotice error={error} />
      {key.enforcement === "observe" && (
        <p class="notice observe">
          This key only observes: calls over its caps, budget or approval threshold are forwarded anyway, and their audit rows say what
          enforcing would have answered (<code>would_deny</code>). Mint the next run's key with <code>"enforcement": "enforce"</code> to
          brake.
        </p>
      )}
      <div class="grid">
        <section class="panel" aria-labelledby="usage">
          <h2 id="usage">Spend</h2>
          <dl class="facts">
            <dt>Today</dt>
            <dd>
              <Meter spent={key.spent_today_usd + key.held_usd} cap={key.daily_usd_cap} label="daily" />
            </dd>
            <dt>Lifetime</dt>
            <dd>
              <Meter spent={key.spent_total_usd} cap={key.total_usd_cap} label="lifetime" />
            </dd>
            <dt>Held now</dt>
            <dd>{usd(key.held_usd)}</dd>
            <dt>Remaining today</dt>
            <dd>{usd(key.remaining_today_usd)}</dd>
            <dt>Calls</dt>
            <dd>
              {key.calls} <span class="muted">· last used {ago(key.last_used_at)}</span>
            </dd>
          </dl>
        </section>
        <section class="panel" aria-labelledby="policy">
          <h2 id="policy">Policy</h2>
          <dl class="facts">
            <dt>Key</dt>
            <dd class="mono">
              {key.id} ({key.key_hint})
            </dd>
            <dt>Vendor</dt>
            <dd>
              {key.vendor} ({key.mode})
            </dd>
            <dt>Endpoints</dt>
            <dd class="mono">{key.allowed_endpoints.join(", ")}</dd>
            <dt>Budget</dt>
            <dd>
              {key.budget_id === null ? (
                "none"
              ) : (
                <a href={`#/budgets/${encodeURIComponent(key.budget_id)}`}>{budget ? budget.name : `${key.budget_id} (deleted)`}</a>
              )}
            </dd>
            {key.per_customer_usd_cap !== null && (
              <>
                <dt>Per customer</dt>
                <dd>{usd(key.per_customer_usd_cap)} a day for each Stripe customer</dd>
              </>
            )}
            {key.per_destination_usd_cap !== null && (
              <>
                <dt>Per destination</dt>
                <dd>{usd(key.per_destination_usd_cap)} a day for each Twilio destination</dd>
              </>
            )}
            <dt>Rate limit</dt>
            <dd>{key.max_requests_per_minute ? `${key.max_requests_per_minute} / min` : "none"}</dd>
            <dt>Idempotency-Key</dt>
            <dd>{key.require_idempotency_key ? "required on priced calls, chosen by the job" : "optional"}</dd>
            <dt>Enforcement</dt>
            <dd>{key.enforcement === "observe" ? "observe: limits reported, not enforced" : "enforce"}</dd>
            <dt>Created</dt>
            <dd>{when(key.created_at)}</dd>
            <dt>{key.status === "revoked" ? "Revoked" : "Expires"}</dt>
            <dd>{key.status === "revoked" ? when(key.revoked_at) : `${when(key.expires_at)} (${ago(key.expires_at)})`}</dd>
            {Object.entries(key.metadata).map(([k, v]) => (
              <Fragment key={k}>
                <dt>{k}</dt>
                <dd>{v}</dd>
              </Fragment>
            ))}
          </dl>
        </section>
      </div>
      <section class="panel" aria-labelledby="chart">
        <h2 id="chart">Spend over time</h2>
        <SpendChart
          points={priced}
          marks={marks}
          dailyCap={key.daily_usd_cap}
          cap={key.total_usd_cap}
          until={Date.now()}
          title="Cumulative spend of this key"
        />
        {days.length > 1 && (
          <p class="hint">
            Per UTC day:{" "}
            {days
              .filter((d) => d.group)
              .map((d) => `${d.group} ${usd(d.spend_usd)}`)
              .join(" · ")}
          </p>
        )}
      </section>
      {canWrite && key.status === "active" && (
        <section class="panel" aria-labelledby="change">
          <h2 id="change">Change caps and expiry</h2>
          <EditKey
            keyRecord={key}
            onSaved={() => {
              setMessage({ text: "Saved.", kind: "ok" });
              void reload();
            }}
          />
        </section>
      )}
      <section class="panel" aria-labelledby="calls">
        <h2 id="calls">
          Calls <span class="sub">(newest first{data.next ? ", the latest 1000" : ""})</span>
        </h2>
        <p class="hint">
          <a href={`#/audit${qs({ key_id: key.id })}`}>Filter the audit by this key</a> ·{" "}
          <a href={`/audit/export${qs({ key_id: key.id, format: "csv" })}`} download>
            Export CSV
          </a>
        </p>
        {rows.length === 0 ? <p class="muted">No calls yet.</p> : <AuditTable rows={rows.slice(0, 200)} caption="This key's calls" />}
      </section>
      {confirming && (
        <Confirm
          title="Revoke this key?"
          confirmLabel="Revoke 1 key"
          danger
          onConfirm={async () => {
            await api(`/vault/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
            setMessage({ text: "Revoked. Its next call gets 401 key_revoked.", kind: "ok" });
            await reload();
          }}
          onClose={() => setConfirming(false)}
        >
          <p>
            This revokes <strong>1 key</strong>: {key.label ?? "(no label)"} (<code>{key.id}</code>). Its next proxied call gets 401{" "}
            <code>key_revoked</code>.
          </p>
        </Confirm>
      )}
    </>
  );
}

export function AuditTable({ rows, caption, showRun = false }: { rows: AuditRow[]; caption: string; showRun?: boolean }) {
  return (
    <Table caption={caption}>
      <thead>
        <tr>
          <th scope="col">When (UTC)</th>
          {showRun && <th scope="col">Run</th>}
          <th scope="col">Call</th>
          <th scope="col" class="num">
            Status
          </th>
          <th scope="col">Decision</th>
          <th scope="col" class="num">
            Cost
          </th>
          <th scope="col" class="hide-narrow">
            Vendor request
          </th>
          <th scope="col" class="num hide-narrow">
            <abbr title="Time the vendor took, in milliseconds">Vendor ms</abbr>
          </th>
        </tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr key={r.id}>
            <td class="nowrap" title={`${r.at} (${r.id})`}>
              {stamp(r.at)}
            </td>
            {showRun && (
              <td class="label">{r.key_id ? <a href={`#/keys/${r.key_id}`}>{r.label ?? r.key_id}</a> : <span class="muted">—</span>}</td>
            )}
            <td class="mono">
              {r.vendor ? `${r.vendor} ` : ""}
              {r.method} {r.path}
              {r.requests > 1 ? ` ×${r.requests}` : ""}
            </td>
            <td class="num">{r.status || "—"}</td>
            <td>
              <Badge value={r.decision} />
              {r.would_deny && (
                <div class="hint">
                  {r.decision === "dry_run" ? "verdict" : "would deny"}: {r.would_deny}
                </div>
              )}
            </td>
            <td class="num" title={r.cost_source ?? undefined}>
              {usd(r.cost_usd)}
            </td>
            <td class="mono hide-narrow">{r.vendor_request_id ?? "—"}</td>
            <td class="num hide-narrow">{r.upstream_ms === null ? "—" : Math.round(r.upstream_ms)}</td>
          </tr>
        ))}
      </tbody>
    </Table>
  );
}

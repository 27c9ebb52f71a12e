import { useState } from "preact/hooks";
import { api, type DeliveryList, qs, type WebhookList } from "../api";
import { ago, when } from "../format";
import { Badge, ErrorNotice, Loading, Table, useData } from "../ui";

/** SPEC §12 as the dashboard shows it (admins): where alerts go, and how their deliveries went; failures first to see. */
export function AlertsPage() {
  const [status, setStatus] = useState("");
  const hooks = useData(() => api<WebhookList>("/alerts/webhooks").then((r) => r.data), []);
  const deliveries = useData(
    () => api<DeliveryList>(`/alerts/deliveries${qs({ status, limit: 100 })}`).then((r) => r.data),
    [status],
    10_000,
  );
  return (
    <>
      <h1>Alerts</h1>
      <p class="sub">
        Webhooks are managed through the API (<code>POST /alerts/webhooks</code>, <code>keybrake alerts</code>); here is where they go and
        how delivery went.
      </p>
      <ErrorNotice error={hooks.error ?? deliveries.error} />
      <section class="panel" aria-labelledby="webhooks">
        <h2 id="webhooks">Webhooks</h2>
        {!hooks.data ? (
          <Loading />
        ) : hooks.data.length === 0 ? (
          <p class="muted">No webhooks: cap thresholds, cap hits and revocations are only in the audit and the logs.</p>
        ) : (
          <Table caption="Webhooks">
            <thead>
              <tr>
                <th scope="col">Destination</th>
                <th scope="col">Events</th>
                <th scope="col">Label prefix</th>
                <th scope="col">Format</th>
                <th scope="col">Created</th>
              </tr>
            </thead>
            <tbody>
              {hooks.data.map((w) => (
                <tr key={w.id}>
                  <td>
                    <span class="mono">{w.url}</span>
                    <div class="hint mono">{w.id}</div>
                  </td>
                  <td>{w.events.join(", ")}</td>
                  <td>{w.label_prefix ?? <span class="muted">any</span>}</td>
                  <td>{w.format}</td>
                  <td>{when(w.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </Table>
        )}
      </section>
      <section class="panel" aria-labelledby="deliveries">
        <div class="pagehead">
          <h2 id="deliveries">Deliveries</h2>
          <label class="inline">
            Show
            <select value={status} onChange={(e) => setStatus((e.currentTarget as HTMLSelectElement).value)}>
              <option value="">all</option>
              <option value="failed">failed</option>
              <option value="pending">pending</option>
              <option value="delivered">delivered</option>
              <option value="cancelled">cancelled</option>
            </select>
          </label>
        </div>
        {!deliveries.data ? (
          <Loading />
        ) : deliveries.data.length === 0 ? (
          <p class="muted">No {status || "recent"} deliveries.</p>
        ) : (
          <Table caption="Alert deliveries">
            <thead>
              <tr>
                <th scope="col">Event</th>
                <th scope="col">Run</th>
                <th scope="col">To</th>
                <th scope="col">Status</th>
                <th scope="col" class="num">
                  Attempts
                </th>
                <th scope="col">Last answer</th>
              </tr>
            </thead>
            <tbody>
              {deliveries.data.map((d) => (
                <tr key={d.seq}>
                  <td>
                    {d.event ?? "—"}
                    <div class="hint">{when(d.created_at)}</div>
                  </td>
                  <td>{d.key_id ? <a href={`#/keys/${d.key_id}`}>{d.label ?? d.key_id}</a> : <span class="muted">—</span>}</td>
                  <td class="mono">{d.destination ?? d.webhook_id}</td>
                  <td>
                    <Badge value={d.status === "delivered" ? "active" : d.status === "failed" ? "revoked" : "expired"} text={d.status} />
                  </td>
                  <td class="num">{d.attempts}</td>
                  <td>
                    {d.last_status ?? d.last_error ?? "—"}
                    {d.status === "pending" && d.next_attempt_at && <div class="hint">next {ago(d.next_attempt_at)}</div>}
                  </td>
                </tr>
              ))}
            </tbody>
          </Table>
        )}
      </section>
    </>
  );
}

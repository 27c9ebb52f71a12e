import { useState } from "preact/hooks";
import { all, api, type KeyRecord, type Session, qs } from "../api";
import { ago, familyOf, plural, usd, when } from "../format";
import { Badge, Confirm, ErrorNotice, FirstKey, Loading, Meter, Status, Table, useData } from "../ui";

interface Family {
  /** "airflow-billing/", or null for keys whose label has no "/" (or no label). */
  prefix: string | null;
  keys: KeyRecord[];
}

function families(keys: KeyRecord[]): Family[] {
  const byPrefix = new Map<string | null, KeyRecord[]>();
  for (const k of keys) {
    const prefix = familyOf(k.label);
    byPrefix.set(prefix, [...(byPrefix.get(prefix) ?? []), k]);
  }
  return [...byPrefix.entries()]
    .map(([prefix, list]) => ({ prefix, keys: list }))
    .sort((a, b) => (a.prefix === null ? 1 : b.prefix === null ? -1 : a.prefix.localeCompare(b.prefix)));
}

type Pending = { kind: "family"; prefix: string; count: number } | { kind: "key"; key: KeyRecord };

export function RunsPage({ session }: { session: Session }) {
  const [status, setStatus] = useState("active");
  const [message, setMessage] = useState<{ text: string; kind: "ok" | "error" } | null>(null);
  const [pending, setPending] = useState<Pending | null>(null);
  const [actionError, setActionError] = useState<Error | null>(null);
  const { data, error, reload } = useData(() => all<KeyRecord>("/vault/keys", { status: status || undefined }), [status], 15_000);
  const canWrite = session.role !== "viewer";

  /** The confirmation states the count the server will act on: the active keys with this prefix, read now. */
  const askFamily = async (prefix: string) => {
    setActionError(null);
    try {
      const active = await all<KeyRecord>("/vault/keys", { label_prefix: prefix, status: "active" });
      if (active.length === 0) setMessage({ text: `No active keys start with ${prefix}.`, kind: "ok" });
      else setPending({ kind: "family", prefix, count: active.length });
    } catch (err) {
      setActionError(err as Error);
    }
  };
  const revokeFamily = async (prefix: string, count: number) => {
    const { revoked } = await api<{ revoked: number }>("/vault/keys/revoke", { body: { label_prefix: prefix } });
    const extra = revoked !== count ? ` (${revoked - count} more had been issued since you asked)` : "";
    setMessage({ text: `Revoked ${plural(revoked, "key")} of ${prefix}${extra}. Their next call gets 401 key_revoked.`, kind: "ok" });
    await reload();
  };
  const revokeKey = async (key: KeyRecord) => {
    await api(`/vault/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
    setMessage({ text: `Revoked ${key.label ?? key.id}. Its next call gets 401 key_revoked.`, kind: "ok" });
    await reload();
  };

  return (
    <>
      <div class="pagehead">
        <h1>Runs</h1>
        <label class="inline">
          Show
          <select value={status} onChange={(e) => setStatus((e.currentTarget as HTMLSelectElement).value)}>
            <option value="active">active keys</option>
            <option value="">all keys</option>
            <option value="revoked">revoked keys</option>
            <option value="expired">expired keys</option>
          </select>
        </label>
      </div>
      <p class="sub">
        Keys grouped by the family of their run label (the part up to the first <code>/</code>).
        {session.role === "issuer" ? " Only the keys this token minted." : ""}
      </p>
      <Status message={message} />
      <ErrorNotice error={error ?? actionError} />
      {!data ? (
        <Loading />
      ) : data.length === 0 ? (
        <section class="panel">{status === "active" ? <NoActive role={session.role} /> : <p>No {status} keys.</p>}</section>
      ) : (
        <section class="panel">
          <Table caption="Vault keys by run family">
            <thead>
              <tr>
                <th scope="col">Run</th>
                <th scope="col">Status</th>
                <th scope="col">Spend against caps</th>
                <th scope="col" class="num">
                  Left today
                </th>
                <th scope="col">Calls, last used</th>
                {canWrite && <th scope="col">Action</th>}
              </tr>
            </thead>
            {families(data).map((f) => {
              const active = f.keys.filter((k) => k.status === "active").length;
              const spent = f.keys.reduce((sum, k) => sum + k.spent_today_usd, 0);
              return (
                <tbody key={f.prefix ?? "-"}>
                  <tr class="family">
                    <th colSpan={canWrite ? 6 : 5} scope="rowgroup">
                      <div class="family-head">
                        <span class="grow">
                          {f.prefix ?? "Runs without a family"}{" "}
                          <span class="sub">
                            {plural(f.keys.length, "key")}, {active} active · {usd(spent)} today
                          </span>
                        </span>
                        {canWrite && f.prefix && active > 0 && (
                          <button type="button" class="danger small" onClick={() => askFamily(f.prefix!)}>
                            Revoke family<span class="sr-only"> {f.prefix}</span>
                          </button>
                        )}
                      </div>
                    </th>
                  </tr>
                  {f.keys.map((k) => (
                    <tr key={k.id}>
                      <td>
                        <a href={`#/keys/${k.id}`}>{k.label ?? k.id}</a>
                        <div class="hint">
                          {k.vendor} {k.mode}
                          <span class="mono hide-narrow"> · {k.id}</span>
                        </div>
                      </td>
                      <td>
                        <Badge value={k.status} />
                      </td>
                      <td>
                        <Spend k={k} />
                      </td>
                      <td class="num">{usd(k.remaining_today_usd)}</td>
                      <td title={when(k.last_used_at)}>
                        {k.calls}
                        <div class="hint">{ago(k.last_used_at)}</div>
                      </td>
                      {canWrite && (
                        <td>
                          {k.status === "active" && (
                            <button type="button" class="danger small" onClick={() => setPending({ kind: "key", key: k })}>
                              Revoke <span class="sr-only">{k.label ?? k.id}</span>
                            </button>
                          )}
                        </td>
                      )}
                    </tr>
                  ))}
                </tbody>
              );
            })}
          </Table>
        </section>
      )}
      {pending?.kind === "family" && (
        <Confirm
          title={`Revoke the ${pending.prefix} family?`}
          confirmLabel={`Revoke ${plural(pending.count, "key")}`}
          danger
          onConfirm={() => revokeFamily(pending.prefix, pending.count)}
          onClose={() => setPending(null)}
        >
          <p>
            This revokes <strong>{plural(pending.count, "active key")}</strong> whose run label starts with <code>{pending.prefix}</code>.
            Their next proxied call gets 401 <code>key_revoked</code>. A revoked key cannot be restored.
          </p>
        </Confirm>
      )}
      {pending?.kind === "key" && (
        <Confirm
          title="Revoke this key?"
          confirmLabel="Revoke 1 key"
          danger
          onConfirm={() => revokeKey(pending.key)}
          onClose={() => setPending(null)}
        >
          <p>
            This revokes <strong>1 key</strong>: {pending.key.label ?? "(no label)"} (<code>{pending.key.id}</code>). Its next proxied call
            gets 401 <code>key_revoked</code>.
          </p>
        </Confirm>
      )}
    </>
  );
}

/** Today's spend (settled + held) against the daily cap, and the lifetime spend against its cap when there is one. */
function Spend({ k }: { k: KeyRecord }) {
  return (
    <>
      {k.daily_usd_cap !== null && <Meter spent={k.spent_today_usd + k.held_usd} cap={k.daily_usd_cap} label="today" />}
      {k.total_usd_cap !== null ? (
        <Meter spent={k.spent_total_usd} cap={k.total_usd_cap} label="lifetime" />
      ) : (
        <div class="hint">{usd(k.spent_total_usd)} lifetime</div>
      )}
    </>
  );
}

function NoActive({ role }: { role: string }) {
  const { data } = useData(() => api<{ data: KeyRecord[] }>(`/vault/keys${qs({ limit: 1 })}`).then((r) => r.data.length), []);
  if (data === null) return <Loading />;
  if (data > 0) return <p>No active keys right now. Choose “all keys” to see revoked and expired runs.</p>;
  return <FirstKey role={role} />;
}

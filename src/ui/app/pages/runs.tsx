import { useEffect, useState } from "preact/hooks";
import { all, api, type KeyList, type KeyRecord, type RevokedCount, type Role, type Session, qs, writesKeys } from "../api";
import { ago, plural, usd, when } from "../format";
import { arrange, type SortBy } from "../runs-model";
import { Badge, Confirm, ErrorNotice, FirstKey, Loading, Meter, NotBraking, Status, Table, useData } from "../ui";

const PAGE_SIZE = 50;
/** "Near the cap": today's spend (settled and held) at 80% of the daily cap or more, the alerts' second threshold. */
const NEAR_CAP = 0.8;

/** How many active keys a typed prefix would revoke, read from the server as the operator types (null: none typed). */
function usePrefixCount(prefix: string): { count: number | null; error: Error | null } {
  const [state, setState] = useState<{ count: number | null; error: Error | null }>({ count: null, error: null });
  useEffect(() => {
    if (!prefix) {
      setState({ count: null, error: null });
      return;
    }
    setState({ count: null, error: null });
    let current = true;
    // Asked once typing pauses, not on every key press.
    const timer = setTimeout(() => {
      all<KeyList>("/vault/keys", { label_prefix: prefix, status: "active" }).then(
        (keys) => current && setState({ count: keys.length, error: null }),
        (error: Error) => current && setState({ count: null, error }),
      );
    }, 250);
    return () => {
      current = false;
      clearTimeout(timer);
    };
  }, [prefix]);
  return state;
}

type Pending = { kind: "family"; prefix: string; count: number } | { kind: "key"; key: KeyRecord };

export function RunsPage({ session }: { session: Session }) {
  const [status, setStatus] = useState("active");
  const [search, setSearch] = useState("");
  const [sort, setSort] = useState<SortBy>("label");
  const [nearCap, setNearCap] = useState(false);
  const [page, setPage] = useState(0);
  const [prefix, setPrefix] = useState("");
  const typed = usePrefixCount(prefix.trim());
  const [message, setMessage] = useState<{ text: string; kind: "ok" | "error" } | null>(null);
  const [pending, setPending] = useState<Pending | null>(null);
  const [actionError, setActionError] = useState<Error | null>(null);
  const { data, error, reload } = useData(() => all<KeyList>("/vault/keys", { status: status || undefined }), [status], 15_000);
  const canWrite = writesKeys(session.role);

  /** The confirmation states the count the server will act on: the active keys with this prefix, read now. */
  const askFamily = async (prefix: string) => {
    setActionError(null);
    try {
      const active = await all<KeyList>("/vault/keys", { label_prefix: prefix, status: "active" });
      if (active.length === 0) setMessage({ text: `No active keys start with ${prefix}.`, kind: "ok" });
      else setPending({ kind: "family", prefix, count: active.length });
    } catch (err) {
      setActionError(err as Error);
    }
  };
  const revokeFamily = async (prefix: string, count: number) => {
    const { revoked } = await api<RevokedCount>("/vault/keys/revoke", { body: { label_prefix: prefix } });
    const extra = revoked !== count ? ` (${revoked - count} more had been issued since you asked)` : "";
    setMessage({ text: `Revoked ${plural(revoked, "key")} of ${prefix}${extra}. Their next call gets 401 key_revoked.`, kind: "ok" });
    await reload();
  };
  const revokeKey = async (key: KeyRecord) => {
    await api(`/vault/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
    setMessage({ text: `Revoked ${key.label ?? key.id}. Its next call gets 401 key_revoked.`, kind: "ok" });
    await reload();
  };

  // Any change of what is shown starts again at its first page.
  const view =
    <T,>(set: (v: T) => void) =>
    (v: T) => {
      set(v);
      setPage(0);
    };
  const typedPrefix = prefix.trim();
  const shown =
    data &&
    arrange(typedPrefix ? data.filter((k) => (k.label ?? "").startsWith(typedPrefix)) : data, {
      search,
      sort,
      nearCap: nearCap ? NEAR_CAP : null,
      page,
      pageSize: PAGE_SIZE,
    });
  const currentPage = Math.min(page, (shown?.pages ?? 1) - 1);

  return (
    <>
      <div class="pagehead">
        <h1>Runs</h1>
        <label class="inline">
          Show
          <select value={status} onChange={(e) => view(setStatus)((e.currentTarget as HTMLSelectElement).value)}>
            <option value="active">active keys</option>
            <option value="">all keys</option>
            <option value="revoked">revoked keys</option>
            <option value="expired">expired keys</option>
          </select>
        </label>
      </div>
      <p class="sub">
        Keys grouped by the family of their run label: the part up to its <code>/</code> (<code>airflow-billing/</code>), else up to its
        first <code>-</code> or <code>:</code> (<code>celery-</code>). Type any prefix below for a finer family.
        {session.role === "issuer" ? " Only the keys this token minted." : ""}
      </p>
      <section class="panel" aria-labelledby="find-keys">
        <h2 id="find-keys" class="sr-only">
          Find keys
        </h2>
        <div class="filters runs-filters">
          <label>
            Label prefix
            <input
              name="label_prefix"
              value={prefix}
              placeholder="celery-billing-, flask-u1-"
              onInput={(e) => view(setPrefix)((e.currentTarget as HTMLInputElement).value)}
            />
          </label>
          <label>
            Search
            <input
              type="search"
              value={search}
              placeholder="label or key id"
              onInput={(e) => view(setSearch)((e.currentTarget as HTMLInputElement).value)}
            />
          </label>
          <label>
            Sort by
            <select value={sort} onChange={(e) => view(setSort)((e.currentTarget as HTMLSelectElement).value as SortBy)}>
              <option value="label">label</option>
              <option value="spent">spend today</option>
              <option value="remaining">least left today</option>
              <option value="last_used">last used</option>
            </select>
          </label>
          <label class="check">
            <input type="checkbox" checked={nearCap} onChange={(e) => view(setNearCap)((e.currentTarget as HTMLInputElement).checked)} />
            Near the cap ({Math.round(NEAR_CAP * 100)}% of today's or more)
          </label>
        </div>
        {typedPrefix && (
          <p class="prefix-preview" aria-live="polite">
            {typed.error ? (
              <span class="muted">Could not count the keys of {typedPrefix}.</span>
            ) : typed.count === null ? (
              <span class="muted">Counting…</span>
            ) : (
              <>
                <strong>{plural(typed.count, "active key")}</strong> start with <code>{typedPrefix}</code>.{" "}
                {canWrite && typed.count > 0 && (
                  <button type="button" class="danger small" onClick={() => askFamily(typedPrefix)}>
                    Revoke {plural(typed.count, "key")}
                    <span class="sr-only"> starting with {typedPrefix}</span>
                  </button>
                )}
              </>
            )}
          </p>
        )}
      </section>
      <Status message={message} />
      <ErrorNotice error={error ?? actionError} />
      {!data || !shown ? (
        <Loading />
      ) : data.length === 0 ? (
        <section class="panel">{status === "active" ? <NoActive role={session.role} /> : <p>No {status} keys.</p>}</section>
      ) : shown.matching === 0 ? (
        <section class="panel">
          <p>No keys match.</p>
        </section>
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
            {shown.families.map((f) => {
              const active = f.all.filter((k) => k.status === "active").length;
              const spent = f.all.reduce((sum, k) => sum + k.spent_today_usd, 0);
              return (
                <tbody key={f.prefix ?? "-"}>
                  <tr class="family">
                    <th colSpan={canWrite ? 6 : 5} scope="rowgroup">
                      <div class="family-head">
                        <span class="grow">
                          {f.prefix ?? "Runs without a family"}{" "}
                          <span class="sub">
                            {plural(f.all.length, "key")}, {active} active · {usd(spent)} today
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
                      <td class="label">
                        <a href={`#/keys/${k.id}`}>{k.label ?? k.id}</a>
                        <div class="hint">
                          {k.vendor} {k.mode}
                          <span class="mono hide-narrow"> · {k.id}</span>
                        </div>
                      </td>
                      <td>
                        <Badge value={k.status} />
                        {k.enforcement === "observe" && <NotBraking />}
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
          {shown.pages > 1 && (
            <nav class="pager" aria-label="Pages of runs">
              <button type="button" disabled={currentPage === 0} onClick={() => setPage(currentPage - 1)}>
                Previous
              </button>
              <span>
                Page {currentPage + 1} of {shown.pages} · {plural(shown.matching, "key")}
              </span>
              <button type="button" disabled={currentPage >= shown.pages - 1} onClick={() => setPage(currentPage + 1)}>
                Next
              </button>
            </nav>
          )}
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

function NoActive({ role }: { role: Role }) {
  const { data } = useData(() => api<KeyList>(`/vault/keys${qs({ limit: 1 })}`).then((r) => r.data.length), []);
  if (data === null) return <Loading />;
  if (data > 0) return <p>No active keys right now. Choose “all keys” to see revoked and expired runs.</p>;
  return <FirstKey role={role} />;
}

import { useState } from "preact/hooks";
import { api, type Hold, type HoldList, type Session, qs } from "../api";
import { usd, when } from "../format";
import { Badge, Confirm, ErrorNotice, Loading, Status, Table, useData } from "../ui";

type Action = { hold: Hold; kind: "settle" | "release"; cost?: number };

/** Orphaned holds (a crash left the call unsettled) and ambiguous ones (vendor 5xx or timeout): resolved by hand. */
export function HoldsPage({ session }: { session: Session }) {
  const [state, setState] = useState("orphaned");
  const [pending, setPending] = useState<Action | null>(null);
  const [message, setMessage] = useState<{ text: string; kind: "ok" | "error" } | null>(null);
  const [inputError, setInputError] = useState<Error | null>(null);
  const { data, error, reload } = useData(
    () => api<HoldList>(`/vault/holds${qs({ state, limit: 1000 })}`).then((r) => r.data),
    [state],
    10_000,
  );
  const canResolve = session.role === "admin" && state !== "held";
  const settleAt = (hold: Hold) => {
    const input = document.getElementById(`cost-${hold.id}`) as HTMLInputElement | null;
    const text = input?.value.trim() ?? "";
    if (text === "") return setPending({ hold, kind: "settle" });
    const cost = Number(text);
    if (!Number.isFinite(cost) || cost < 0) return setInputError(new Error("The charged amount must be a number of USD, 0 or more."));
    setInputError(null);
    setPending({ hold, kind: "settle", cost });
  };
  const run = async (a: Action) => {
    const path = `/vault/holds/${encodeURIComponent(a.hold.id)}/${a.kind}`;
    await api(path, { method: "POST", body: a.kind === "settle" && a.cost !== undefined ? { cost_usd: a.cost } : {} });
    setMessage({
      text:
        a.kind === "release" ? `Released ${a.hold.id}: it no longer counts.` : `Settled ${a.hold.id} at ${usd(a.cost ?? a.hold.hold_usd)}.`,
      kind: "ok",
    });
    await reload();
  };
  return (
    <>
      <div class="pagehead">
        <h1>Holds</h1>
        <label class="inline">
          Show
          <select value={state} onChange={(e) => setState((e.currentTarget as HTMLSelectElement).value)}>
            <option value="orphaned">orphaned (a crash left them unsettled)</option>
            <option value="ambiguous">ambiguous (vendor 5xx or timeout)</option>
            <option value="held">open (calls in flight)</option>
          </select>
        </label>
      </div>
      <p class="sub">
        Orphaned holds count as held and ambiguous ones as spent until someone checks the vendor's dashboard: settle at what was really
        charged, or release when nothing was.
      </p>
      <Status message={message} />
      <ErrorNotice error={error ?? inputError} />
      {!data ? (
        <Loading />
      ) : data.length === 0 ? (
        <section class="panel">
          <p>No {state === "held" ? "open" : state} holds. Nothing needs resolving.</p>
        </section>
      ) : (
        <section class="panel">
          <Table caption={`${state} holds`}>
            <thead>
              <tr>
                <th scope="col">Hold</th>
                <th scope="col">Run</th>
                <th scope="col">State</th>
                <th scope="col" class="num">
                  Held
                </th>
                <th scope="col">Since</th>
                {canResolve && <th scope="col">Resolve</th>}
              </tr>
            </thead>
            <tbody>
              {data.map((h) => (
                <tr key={h.id}>
                  <td class="mono">{h.id}</td>
                  <td>
                    <a href={`#/keys/${h.key_id}`}>{h.label ?? h.key_id}</a>
                  </td>
                  <td>
                    <Badge value={h.state} />
                  </td>
                  <td class="num">{usd(h.hold_usd)}</td>
                  <td>{when(h.created_at)}</td>
                  {canResolve && (
                    <td>
                      <div class="actions">
                        <label class="inline">
                          <span class="sr-only">Charged for {h.id}, USD</span>
                          <input id={`cost-${h.id}`} type="number" min="0" step="any" placeholder={String(h.hold_usd)} size={8} />
                        </label>
                        <button type="button" class="small" onClick={() => settleAt(h)}>
                          Settle
                        </button>
                        <button type="button" class="small danger" onClick={() => setPending({ hold: h, kind: "release" })}>
                          Release
                        </button>
                      </div>
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </Table>
        </section>
      )}
      {pending && (
        <Confirm
          title={pending.kind === "release" ? "Release this hold?" : "Settle this hold?"}
          confirmLabel={pending.kind === "release" ? "Release 1 hold" : "Settle 1 hold"}
          danger={pending.kind === "release"}
          onConfirm={() => run(pending)}
          onClose={() => setPending(null)}
        >
          <p>
            {pending.kind === "release"
              ? `The vendor never charged for ${pending.hold.id}: its ${usd(pending.hold.hold_usd)} stops counting against ${pending.hold.label ?? pending.hold.key_id}.`
              : `${pending.hold.id} counts as spent at ${usd(pending.cost ?? pending.hold.hold_usd)} for ${pending.hold.label ?? pending.hold.key_id}.`}
          </p>
        </Confirm>
      )}
    </>
  );
}

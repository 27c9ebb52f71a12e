import { useRef, useState } from "preact/hooks";
import { type Approval, type ApprovalList, api, decidesApprovals, qs, type Session } from "../api";
import { ago, usd, when } from "../format";
import { Badge, Confirm, ErrorNotice, Loading, Status, Table, useData } from "../ui";

type Deciding = { approval: Approval; kind: "approve" | "deny" };

/** Each status's colour: waiting and lapsed amber, went (or may go) out green, refused red. */
const TONES = { pending: "expired", approved: "active", used: "active", denied: "denied", expired: "expired" } as const;

const callOf = (a: Approval) => `${a.method} ${a.path}`;
const runOf = (a: Approval) => a.label ?? a.key_id;
/** Still pending in the ledger but past its expiry: the sweep (every minute) has yet to release its hold. */
const lapsed = (a: Approval, now: number) => a.status === "pending" && Date.parse(a.expires_at) <= now;

/**
 * SPEC §15: the calls above their key's approval threshold, pending first, each waiting on its reserved hold.
 * Admins and approvers approve (the job's retry with the same Idempotency-Key then goes out once) or deny with a
 * reason (the hold is released); everyone else reads.
 */
export function ApprovalsPage({ session }: { session: Session }) {
  const [status, setStatus] = useState("");
  const [deciding, setDeciding] = useState<Deciding | null>(null);
  const [message, setMessage] = useState<{ text: string; kind: "ok" | "error" } | null>(null);
  const reason = useRef<HTMLTextAreaElement>(null);
  const { data, error, reload, loadedAt } = useData(
    // The API pages newest first (its cursor is the sequence); the page puts the pending ones on top.
    () =>
      api<ApprovalList>(`/approvals${qs({ status, limit: 1000 })}`).then((r) =>
        r.data.toSorted((a, b) => Number(b.status === "pending") - Number(a.status === "pending")),
      ),
    [status],
    5_000,
  );
  const canDecide = decidesApprovals(session.role);
  const now = loadedAt ?? Date.now();

  const decide = async ({ approval: a, kind }: Deciding) => {
    const path = `/approvals/${encodeURIComponent(a.id)}/${kind}`;
    const why = reason.current?.value.trim();
    await api(path, { method: "POST", body: kind === "deny" && why ? { reason: why } : {} });
    setMessage({
      text:
        kind === "approve"
          ? `Approved ${a.id}: ${callOf(a)} for ${usd(a.price_usd)} goes out once when ${runOf(a)} retries it, before ${when(a.expires_at)}.`
          : `Denied ${a.id}: its ${usd(a.price_usd)} hold is released and ${runOf(a)}'s retry is refused.`,
      kind: "ok",
    });
    await reload();
  };

  return (
    <>
      <div class="pagehead">
        <h1>Approvals</h1>
        <label class="inline">
          Show
          <select value={status} onChange={(e) => setStatus((e.currentTarget as HTMLSelectElement).value)}>
            <option value="">all, pending first</option>
            <option value="pending">pending</option>
            <option value="approved">approved, not yet retried</option>
            <option value="used">used (went out)</option>
            <option value="denied">denied</option>
            <option value="expired">expired</option>
          </select>
        </label>
      </div>
      <p class="sub">
        A call above its key's <code>approval_above_usd</code> waits here with its hold reserved (the caps count it). Approved, the job's
        next retry with the same Idempotency-Key goes out once; denied or left to expire, the hold is released. Refreshes every 5 s.
        {canDecide ? "" : " Admins and approvers decide; this token reads."}
      </p>
      <Status message={message} />
      <ErrorNotice error={error} />
      {!data ? (
        <Loading />
      ) : data.length === 0 ? (
        <section class="panel">
          <p>{status ? `No ${status} approvals.` : "No approvals yet: no call has asked for one."}</p>
        </section>
      ) : (
        <section class="panel">
          <Table caption="Approvals, pending first">
            <thead>
              <tr>
                <th scope="col">Run</th>
                <th scope="col">Call</th>
                <th scope="col" class="num">
                  Price
                </th>
                <th scope="col">Asked</th>
                <th scope="col">Expires</th>
                <th scope="col">Status</th>
                {canDecide && <th scope="col">Decide</th>}
              </tr>
            </thead>
            <tbody>
              {data.map((a) => (
                <tr key={a.id}>
                  <td>
                    <a href={`#/keys/${encodeURIComponent(a.key_id)}`}>{runOf(a)}</a>
                    <div class="hint mono">{a.id}</div>
                  </td>
                  <td>
                    <code>{callOf(a)}</code>
                    {a.vendor && <div class="hint">{a.vendor}</div>}
                  </td>
                  <td class="num">{usd(a.price_usd)}</td>
                  <td>
                    {when(a.requested_at)}
                    <div class="hint">by {a.requested_by ?? "—"}</div>
                  </td>
                  <td>
                    {when(a.expires_at)}
                    {(a.status === "pending" || a.status === "approved") && (
                      <div class="hint">{lapsed(a, now) ? "lapsed" : ago(a.expires_at, now)}</div>
                    )}
                  </td>
                  <td>
                    <Badge value={a.status} tone={TONES[a.status]} text={lapsed(a, now) ? "lapsed" : a.status} />
                    {a.decided_by && (
                      <div class="hint">
                        by {a.decided_by}, {when(a.decided_at)}
                      </div>
                    )}
                    {a.reason && <div class="hint">“{a.reason}”</div>}
                  </td>
                  {canDecide && (
                    <td>
                      {a.status === "pending" && !lapsed(a, now) && (
                        <div class="actions">
                          <button
                            type="button"
                            class="small"
                            aria-label={`Approve ${a.id}`}
                            onClick={() => setDeciding({ approval: a, kind: "approve" })}
                          >
                            Approve
                          </button>
                          <button
                            type="button"
                            class="small danger"
                            aria-label={`Deny ${a.id}`}
                            onClick={() => setDeciding({ approval: a, kind: "deny" })}
                          >
                            Deny
                          </button>
                        </div>
                      )}
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </Table>
        </section>
      )}
      {deciding && (
        <Confirm
          title={deciding.kind === "approve" ? "Approve this call?" : "Deny this call?"}
          confirmLabel={`${deciding.kind === "approve" ? "Approve" : "Deny"} ${usd(deciding.approval.price_usd)}`}
          danger={deciding.kind === "deny"}
          onConfirm={() => decide(deciding)}
          onClose={() => setDeciding(null)}
        >
          <p>
            {deciding.kind === "approve"
              ? `${callOf(deciding.approval)} for ${usd(deciding.approval.price_usd)} of ${runOf(deciding.approval)} goes out once, when the job retries it with the same Idempotency-Key before ${when(deciding.approval.expires_at)}.`
              : `${callOf(deciding.approval)} for ${usd(deciding.approval.price_usd)} of ${runOf(deciding.approval)} never goes out: its hold is released and the job's retry gets 403 approval_denied.`}
          </p>
          {deciding.kind === "deny" && (
            <label>
              Reason (optional: kept with the approval and sent in the approval_decided alert)
              <textarea ref={reason} name="reason" rows={2} maxLength={500} />
            </label>
          )}
        </Confirm>
      )}
    </>
  );
}

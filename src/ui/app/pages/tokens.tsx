import { useState } from "preact/hooks";
import { all, api, type IssuedToken, type RevokedToken, type TokenList, type TokenRecord, writesKeys } from "../api";
import { when } from "../format";
import { Badge, Confirm, ErrorNotice, Loading, Status, Table, useData } from "../ui";

/** Admin, issuer, viewer and approver tokens (SPEC §10): created here (shown once), listed, revoked. Admins only. */
export function TokensPage() {
  const { data, error, reload } = useData(() => all<TokenList>("/admin/tokens", {}), []);
  const [created, setCreated] = useState<IssuedToken | null>(null);
  const [formError, setFormError] = useState<Error | null>(null);
  const [pending, setPending] = useState<{ token: TokenRecord; keys: boolean } | null>(null);
  const [message, setMessage] = useState<{ text: string; kind: "ok" | "error" } | null>(null);
  const [role, setRole] = useState("issuer");

  const create = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const values = new FormData(form);
    const body: Record<string, unknown> = { name: String(values.get("name") ?? "").trim(), role };
    const expires = String(values.get("expires_in") ?? "").trim();
    if (expires) body.expires_in = expires;
    const policy = String(values.get("policy") ?? "").trim();
    if (role === "issuer" && policy) {
      try {
        body.policy = JSON.parse(policy);
      } catch {
        setFormError(new Error("The policy is not valid JSON."));
        return;
      }
    }
    try {
      setCreated(await api<IssuedToken>("/admin/tokens", { body }));
      setFormError(null);
      form.reset();
      await reload();
    } catch (err) {
      setFormError(err as Error);
    }
  };

  return (
    <>
      <h1>Tokens</h1>
      <Status message={message} />
      <section class="panel" aria-labelledby="new-token">
        <h2 id="new-token">Create a token</h2>
        <form class="edit" onSubmit={create}>
          <label>
            Name
            <input name="name" required maxLength={100} placeholder="airflow-prod" />
          </label>
          <label>
            Role
            <select name="role" value={role} onChange={(e) => setRole((e.currentTarget as HTMLSelectElement).value)}>
              <option value="issuer">issuer: mints keys within a policy</option>
              <option value="viewer">viewer: reads only</option>
              <option value="approver">approver: reads, and decides approvals</option>
              <option value="admin">admin: everything</option>
            </select>
          </label>
          <label>
            Expires in
            <input name="expires_in" placeholder="90d (empty: never)" />
          </label>
          {role === "issuer" && (
            <label>
              Policy (JSON)
              <textarea
                name="policy"
                rows={3}
                placeholder='{"vendors": ["stripe"], "label_prefix": "airflow-billing/", "max_daily_usd_cap": 500}'
              />
            </label>
          )}
          <div class="actions">
            <button class="primary" type="submit">
              Create token
            </button>
          </div>
        </form>
        <ErrorNotice error={formError} />
        {created && (
          <div class="notice ok" role="alert">
            <p>
              Created <strong>{created.name}</strong> ({created.role}). Copy the token now: it is shown this once and Keybrake keeps only
              its hash.
            </p>
            <label>
              Token
              <input class="secret" readOnly value={created.token} onFocus={(e) => (e.currentTarget as HTMLInputElement).select()} />
            </label>
            <p>
              <button type="button" onClick={() => setCreated(null)}>
                I have copied it
              </button>
            </p>
          </div>
        )}
      </section>
      <ErrorNotice error={error} />
      <section class="panel" aria-labelledby="token-list">
        <h2 id="token-list">Tokens</h2>
        {!data ? (
          <Loading />
        ) : data.length === 0 ? (
          <p class="muted">
            No tokens yet besides the bootstrap admin token. Give jobs an issuer token with a policy rather than the admin token.
          </p>
        ) : (
          <Table caption="Tokens">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Role</th>
                <th scope="col">Status</th>
                <th scope="col">Created</th>
                <th scope="col">Expires</th>
                <th scope="col">Revoke</th>
              </tr>
            </thead>
            <tbody>
              {data.map((t) => (
                <tr key={t.id}>
                  <td>
                    {t.name}
                    <div class="hint mono">
                      {t.id} · {t.token_hint}
                    </div>
                  </td>
                  <td>{t.role}</td>
                  <td>
                    <Badge value={t.status} />
                  </td>
                  <td>{when(t.created_at)}</td>
                  <td>{t.expires_at ? when(t.expires_at) : "never"}</td>
                  <td>
                    {t.status === "active" && (
                      <div class="actions">
                        <button type="button" class="small danger" onClick={() => setPending({ token: t, keys: false })}>
                          Revoke <span class="sr-only">{t.name}</span>
                        </button>
                        {writesKeys(t.role) && (
                          <button type="button" class="small danger" onClick={() => setPending({ token: t, keys: true })}>
                            Revoke with its keys <span class="sr-only">{t.name}</span>
                          </button>
                        )}
                      </div>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </Table>
        )}
      </section>
      {pending && (
        <Confirm
          title={`Revoke the token ${pending.token.name}?`}
          confirmLabel={pending.keys ? "Revoke the token and its keys" : "Revoke 1 token"}
          danger
          onConfirm={async () => {
            const r = await api<RevokedToken>(
              `/admin/tokens/${encodeURIComponent(pending.token.id)}${pending.keys ? "?revoke_keys=true" : ""}`,
              { method: "DELETE" },
            );
            setMessage({ text: `Revoked ${pending.token.name}${pending.keys ? ` and ${r.revoked_keys} of its keys` : ""}.`, kind: "ok" });
            await reload();
          }}
          onClose={() => setPending(null)}
        >
          <p>
            Its next request gets 401, and its dashboard sessions end.
            {pending.keys ? " Every active vault key it minted is revoked too: their next proxied call gets 401 key_revoked." : ""}
          </p>
        </Confirm>
      )}
    </>
  );
}

import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { all, api, type Budget, type BudgetList, type KeyList, type KeyRecord, type Session } from "../api";
import { plural, usd } from "../format";
import { ErrorNotice, Loading, Meter, NumberField, numberField, Status, Table, useData } from "../ui";

interface BudgetsView {
  budgets: Budget[];
  /** By budget: the active keys that draw from it directly. */
  keys: Map<string, KeyRecord[]>;
}

async function load(): Promise<BudgetsView> {
  const { data } = await api<BudgetList>("/budgets");
  const keys = await Promise.all(data.map((b) => all<KeyList>("/vault/keys", { budget_id: b.id, status: "active" })));
  return { budgets: data, keys: new Map(data.map((b, i) => [b.id, keys[i]!])) };
}

/** Today's share of the daily cap (settled and held) or the lifetime share of the total cap, whichever is higher. */
function fullest(b: Budget): number {
  const today = b.daily_usd_cap === null ? 0 : (b.spent_today_usd + b.held_usd) / b.daily_usd_cap;
  const lifetime = b.total_usd_cap === null ? 0 : b.spent_total_usd / b.total_usd_cap;
  return Math.max(today, lifetime);
}

/** Near (80%, the default alert threshold) or at a cap: said in words, next to the bars. */
function CapState({ budget }: { budget: Budget }) {
  const share = fullest(budget);
  if (share >= 1) return <span class="badge denied">at its cap</span>;
  if (share >= 0.8) return <span class="badge">near its cap ({Math.floor(share * 100)}%)</span>;
  return null;
}

/**
 * Budgets as a tree by parent (SPEC §14): each with its spend against its caps and the keys that draw from it;
 * admins set the caps. `focus`: the budget to scroll to (#/budgets/bud_…, from a key's page).
 */
export function BudgetsPage({ session, focus }: { session: Session; focus?: string }) {
  const { data, error, reload } = useData(load, [], 15_000);
  const [message, setMessage] = useState<{ text: string; kind: "ok" | "error" } | null>(null);
  const canWrite = session.role === "admin";
  const loaded = data !== null;
  useEffect(() => {
    if (loaded && focus) document.getElementById(`budget-${focus}`)?.focus();
  }, [loaded, focus]);

  if (error && !data) return <ErrorNotice error={error} />;
  if (!data) return <Loading />;
  const ids = new Set(data.budgets.map((b) => b.id));
  const below = (id: string | null) =>
    data.budgets.filter((b) => (id === null ? b.parent_id === null || !ids.has(b.parent_id) : b.parent_id === id));
  const node = (b: Budget, level: number): ComponentChildren => (
    <BudgetNode
      key={b.id}
      budget={b}
      level={level}
      keys={data.keys.get(b.id) ?? []}
      focused={b.id === focus}
      canWrite={canWrite}
      onSaved={(name) => {
        setMessage({ text: `Saved the caps of ${name}. They count from its keys' next call.`, kind: "ok" });
        void reload();
      }}
    >
      {below(b.id).map((child) => node(child, level + 1))}
    </BudgetNode>
  );
  return (
    <>
      <h1>Budgets</h1>
      <p class="sub">
        One ceiling over the keys that draw from it and the budgets below it: a call must fit its key and every budget up the chain.
        {session.role === "issuer" ? " Only the budget this token's keys draw from." : ""}
      </p>
      <Status message={message} />
      <ErrorNotice error={error} />
      {data.budgets.length === 0 ? (
        <section class="panel">
          <NoBudgets role={session.role} />
        </section>
      ) : (
        below(null).map((b) => node(b, 1))
      )}
    </>
  );
}

function BudgetNode(props: {
  budget: Budget;
  level: number;
  keys: KeyRecord[];
  focused: boolean;
  canWrite: boolean;
  onSaved: (name: string) => void;
  children: ComponentChildren;
}) {
  const { budget: b, keys } = props;
  const Heading = props.level === 1 ? "h2" : props.level === 2 ? "h3" : "h4";
  const headingId = `budget-${b.id}`;
  return (
    <section class={`panel budget${props.focused ? " focused" : ""}`} aria-labelledby={headingId}>
      <div class="pagehead">
        <Heading id={headingId} tabIndex={-1}>
          {b.name} <span class="sub mono">{b.id}</span>
        </Heading>
        <CapState budget={b} />
      </div>
      <dl class="facts">
        <dt>Today</dt>
        <dd>
          <Meter spent={b.spent_today_usd + b.held_usd} cap={b.daily_usd_cap} label="daily" />
        </dd>
        <dt>Lifetime</dt>
        <dd>
          <Meter spent={b.spent_total_usd} cap={b.total_usd_cap} label="lifetime" />
        </dd>
        <dt>Held now</dt>
        <dd>{usd(b.held_usd)}</dd>
        <dt>Left today</dt>
        <dd>{b.remaining_today_usd === null ? "no daily cap" : usd(b.remaining_today_usd)}</dd>
        <dt>Alerts at</dt>
        <dd>{b.alert_thresholds.length ? b.alert_thresholds.map((t) => `${Math.round(t * 100)}%`).join(", ") : "none"}</dd>
      </dl>
      <DrawingKeys budget={b} keys={keys} />
      {props.canWrite && <EditBudget budget={b} onSaved={() => props.onSaved(b.name)} />}
      {props.children}
    </section>
  );
}

function DrawingKeys({ budget, keys }: { budget: Budget; keys: KeyRecord[] }) {
  if (keys.length === 0) return <p class="hint">No active key draws from it directly.</p>;
  return (
    <Table caption={`Active keys that draw from ${budget.name}`}>
      <thead>
        <tr>
          <th scope="col">Key drawing from it ({plural(keys.length, "active key")})</th>
          <th scope="col">Spend today</th>
          <th scope="col" class="num">
            Left today
          </th>
        </tr>
      </thead>
      <tbody>
        {keys.map((k) => (
          <tr key={k.id}>
            <td>
              <a href={`#/keys/${k.id}`}>{k.label ?? k.id}</a>
              <div class="hint">
                {k.vendor} {k.mode}
              </div>
            </td>
            <td>
              <Meter spent={k.spent_today_usd + k.held_usd} cap={k.daily_usd_cap} label="today" />
            </td>
            <td class="num">{usd(k.remaining_today_usd)}</td>
          </tr>
        ))}
      </tbody>
    </Table>
  );
}

/** Admins only: a budget's caps (PATCH /budgets/{id}), behind a disclosure so the tree stays readable. */
function EditBudget({ budget, onSaved }: { budget: Budget; onSaved: () => void }) {
  const [error, setError] = useState<Error | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const body: Record<string, unknown> = {};
    const daily = numberField(form, "daily_usd_cap", budget.daily_usd_cap);
    const total = numberField(form, "total_usd_cap", budget.total_usd_cap);
    if (daily !== undefined) body.daily_usd_cap = daily;
    if (total !== undefined) body.total_usd_cap = total;
    if (Object.keys(body).length === 0) {
      setError(new Error("Nothing to change: edit a cap first."));
      return;
    }
    setBusy(true);
    try {
      await api<Budget>(`/budgets/${encodeURIComponent(budget.id)}`, { method: "PATCH", body });
      setError(null);
      onSaved();
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  };
  const of = <span class="sr-only"> of {budget.name}</span>;
  return (
    <details class="edit-budget">
      <summary>Set caps{of}</summary>
      <form class="edit" onSubmit={submit}>
        <NumberField label={<>Daily cap (USD){of}</>} name="daily_usd_cap" value={budget.daily_usd_cap} money />
        <NumberField label={<>Lifetime cap (USD){of}</>} name="total_usd_cap" value={budget.total_usd_cap} money />
        <div class="actions">
          <button class="primary" type="submit" disabled={busy}>
            Save caps{of}
          </button>
        </div>
        <p class="hint wide">Empty a cap to remove it (one cap must remain). The budget's parent never changes.</p>
        <div class="wide">
          <ErrorNotice error={error} />
        </div>
      </form>
    </details>
  );
}

/** No budget yet: what makes one, and how keys draw from it. */
function NoBudgets({ role }: { role: string }) {
  if (role === "issuer") return <p>This token's policy names no budget: its keys draw from none.</p>;
  const curl = `curl -X POST ${location.origin}/budgets \\
  -H "Authorization: Bearer $KEYBRAKE_ADMIN_TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{"name": "airflow-billing", "daily_usd_cap": 2000}'`;
  return (
    <div class="empty">
      <p>
        No budgets yet. A budget is one ceiling over many keys (every run of a DAG, a team's issuer token): keys draw from it with{" "}
        <code>budget_id</code> when they are issued.{role === "admin" ? " Create a first one:" : " An admin creates one:"}
      </p>
      <pre class="curl">{curl}</pre>
      <p class="hint">
        Or <code>keybrake budgets create --name airflow-billing --daily-usd-cap 2000</code>. The API is documented at{" "}
        <a href="/docs">/docs</a>.
      </p>
    </div>
  );
}

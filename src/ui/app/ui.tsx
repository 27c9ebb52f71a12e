import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { ApiError, type Role, writesKeys } from "./api";
import { usd } from "./format";

/** Loads with `load` now and whenever `deps` change (and every `refreshMs`, while the tab is visible). */
export function useData<T>(load: () => Promise<T>, deps: unknown[], refreshMs?: number) {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<ApiError | Error | null>(null);
  const [loadedAt, setLoadedAt] = useState<number | null>(null);
  const loadRef = useRef(load);
  loadRef.current = load;
  const reload = useCallback(async () => {
    try {
      setData(await loadRef.current());
      setError(null);
      setLoadedAt(Date.now());
    } catch (err) {
      setError(err as Error);
    }
  }, []);
  useEffect(() => {
    setData(null);
    void reload();
    if (!refreshMs) return;
    const timer = setInterval(() => {
      if (document.visibilityState === "visible") void reload();
    }, refreshMs);
    return () => clearInterval(timer);
  }, deps);
  return { data, error, reload, loadedAt };
}

export function ErrorNotice({ error }: { error: Error | null }) {
  if (!error) return null;
  const fields = error instanceof ApiError ? error.fields : [];
  return (
    <div class="notice error" role="alert">
      {error instanceof ApiError && <strong>{error.code}: </strong>}
      {error.message}
      {fields.length > 0 && (
        <ul>
          {fields.map((f) => (
            <li key={f.path}>
              <code>{f.path}</code> {f.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

/** A status line read out to screen readers when it changes. */
export function Status({ message }: { message: { text: string; kind: "ok" | "error" } | null }) {
  return (
    <div aria-live="polite" role="status">
      {message && <div class={`notice ${message.kind}`}>{message.text}</div>}
    </div>
  );
}

export function Loading() {
  return <p class="muted">Loading…</p>;
}

/**
 * A status as a coloured word: green for active/allowed, red for refusals and revocations, amber for the rest;
 * `tone` names the colour where the word alone does not (an approval's "pending" waits, its "used" went out).
 */
export function Badge({ value, text = value, tone }: { value: string; text?: string; tone?: "active" | "denied" | "expired" }) {
  const kind = tone ?? (value === "allowed" ? "active" : /^(active|revoked|expired|orphaned|ambiguous)$/.test(value) ? value : "denied");
  return <span class={`badge ${kind}`}>{text}</span>;
}

/** An observe-mode key (SPEC §16): its limits are reported, never enforced. */
export function NotBraking() {
  return <Badge value="observe" text="not braking" tone="expired" />;
}

/** Spend against a cap: the numbers, and a bar (decoration; the text says it all). */
export function Meter({ spent, cap, label }: { spent: number; cap: number | null; label: string }) {
  if (cap === null)
    return (
      <span>
        {usd(spent)} <span class="muted">(no {label} cap)</span>
      </span>
    );
  const share = cap > 0 ? Math.min(1, spent / cap) : 1;
  return (
    <div class="meter">
      <span>
        {usd(spent)}{" "}
        <span class="muted">
          of {usd(cap)}
          {label === "lifetime" ? " lifetime" : ""}
        </span>
      </span>
      <div class="bar" aria-hidden="true">
        <div class={`fill${share >= 1 ? " full" : ""}`} style={{ width: `${(share * 100).toFixed(1)}%` }} />
      </div>
    </div>
  );
}

/**
 * A modal confirmation (the native <dialog>: focus stays inside, Escape cancels). Its text says exactly what
 * will happen; the confirming button repeats it.
 */
export function Confirm(props: {
  title: string;
  children: ComponentChildren;
  confirmLabel: string;
  danger?: boolean;
  onConfirm: () => Promise<void> | void;
  onClose: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error | null>(null);
  useEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open) dialog.showModal();
  }, []);
  const confirm = async () => {
    setBusy(true);
    try {
      await props.onConfirm();
      ref.current?.close();
      props.onClose();
    } catch (err) {
      setError(err as Error);
      setBusy(false);
    }
  };
  return (
    <dialog ref={ref} aria-labelledby="confirm-title" aria-describedby="confirm-body" onClose={props.onClose}>
      <h2 id="confirm-title">{props.title}</h2>
      <div id="confirm-body">{props.children}</div>
      <ErrorNotice error={error} />
      <div class="actions">
        <button type="button" onClick={() => ref.current?.close()} autofocus>
          Cancel
        </button>
        <button type="button" class={props.danger ? "danger solid" : "primary"} disabled={busy} onClick={confirm}>
          {props.confirmLabel}
        </button>
      </div>
    </dialog>
  );
}

/** What to do when there are no keys yet: the request that issues a first one. */
export function FirstKey({ role }: { role: Role }) {
  const curl = `curl -X POST ${location.origin}/vault/keys \\
  -H "Authorization: Bearer $KEYBRAKE_ADMIN_TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{"vendor": "stripe", "daily_usd_cap": 500, "expires_in": "6h",
       "allowed_endpoints": ["POST /v1/payment_intents"],
       "agent_run_label": "airflow-billing/run_2026_11_22"}'`;
  return (
    <div class="empty">
      <p>
        No vault keys yet. A job gets one per run, with a dollar cap and an allowlist, and calls Stripe, Twilio, Resend, OpenAI or Anthropic
        through Keybrake with it.{writesKeys(role) ? " Issue a first key:" : " Ask an admin or issuer to issue one:"}
      </p>
      <pre class="curl">{curl}</pre>
      <p class="hint">
        Or{" "}
        <code>
          keybrake keys create --vendor stripe --daily-usd-cap 500 --allow "POST /v1/payment_intents" --label airflow-billing/run_1
        </code>
        . The API is documented at <a href="/docs">/docs</a>.
      </p>
    </div>
  );
}

export function Table({ caption, children }: { caption: string; children: ComponentChildren }) {
  return (
    <div class="table-wrap">
      <table>
        <caption class="sr-only">{caption}</caption>
        {children}
      </table>
    </div>
  );
}

/** A number field's value: undefined when unchanged, null when emptied (the cap is removed), else the number. */
export function numberField(form: HTMLFormElement, name: string, was: number | null): number | null | undefined {
  const text = (form.elements.namedItem(name) as HTMLInputElement).value.trim();
  if (text === "") return was === null ? undefined : null;
  const n = Number(text);
  return n === was ? undefined : n;
}

/** A labelled number input of an edit form: US dollars (`money`, any decimals) or a whole count from 1. */
export function NumberField({
  label,
  name,
  value,
  money = false,
}: {
  label: ComponentChildren;
  name: string;
  value: number | null | undefined;
  money?: boolean;
}) {
  return (
    <label>
      {label}
      <input
        name={name}
        type="number"
        min={money ? "0" : "1"}
        step={money ? "any" : "1"}
        inputMode={money ? "decimal" : "numeric"}
        defaultValue={value?.toString() ?? ""}
      />
    </label>
  );
}

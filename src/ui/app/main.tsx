import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { ApiError, api, type Session, useSession } from "./api";
import { AlertsPage } from "./pages/alerts";
import { ApprovalsPage } from "./pages/approvals";
import { AuditPage } from "./pages/audit";
import { BudgetsPage } from "./pages/budgets";
import { HoldsPage } from "./pages/holds";
import { KeyPage } from "./pages/key";
import { OverviewPage } from "./pages/overview";
import { RunsPage } from "./pages/runs";
import { TokensPage } from "./pages/tokens";
import { ErrorNotice } from "./ui";

/** The page from the URL's hash: #/runs, #/keys/vk_…, #/audit?vendor=stripe. */
function useRoute() {
  const read = () => {
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path = "/", query = ""] = hash.split("?");
    return { path, params: new URLSearchParams(query) };
  };
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const onChange = () => setRoute(read());
    addEventListener("hashchange", onChange);
    return () => removeEventListener("hashchange", onChange);
  }, []);
  return route;
}

function SignIn({ onSignedIn, notice }: { onSignedIn: (s: Session) => void; notice: string | null }) {
  const [error, setError] = useState<Error | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const input = form.elements.namedItem("token") as HTMLInputElement;
    setBusy(true);
    try {
      const session = await api<Session>("/ui/session", { method: "POST", body: { token: input.value.trim() } });
      // The token was sent once; the browser keeps only the HttpOnly cookie the answer set.
      input.value = "";
      onSignedIn(session);
    } catch (err) {
      setError(
        err instanceof ApiError && err.status === 401
          ? new Error("That token is not valid (unknown, revoked or expired).")
          : (err as Error),
      );
    } finally {
      setBusy(false);
    }
  };
  return (
    <main id="main" class="signin">
      <div class="panel">
        <h1>Keybrake</h1>
        <p>Watch what your jobs spend through Keybrake, and stop them.</p>
        {notice && <p class="notice">{notice}</p>}
        <form onSubmit={submit}>
          <label>
            Token
            <input
              name="token"
              type="password"
              autocomplete="off"
              required
              spellcheck={false}
              placeholder="kb_adm_…, kb_iss_…, kb_view_…, kb_appr_…"
            />
          </label>
          <span class="hint">
            Any Keybrake token: admin, issuer, viewer or approver. It is sent once; the browser keeps only a session cookie that scripts
            cannot read, for 8 hours.
          </span>
          <ErrorNotice error={error} />
          <div class="actions">
            <button class="primary" type="submit" disabled={busy}>
              Sign in
            </button>
          </div>
        </form>
      </div>
    </main>
  );
}

// An approver reads what a viewer reads (SPEC §10), and decides approvals.
const PAGES = [
  { path: "/", title: "Overview", roles: ["admin", "issuer", "viewer", "approver"] },
  { path: "/runs", title: "Runs", roles: ["admin", "issuer", "viewer", "approver"] },
  { path: "/budgets", title: "Budgets", roles: ["admin", "issuer", "viewer", "approver"] },
  { path: "/audit", title: "Audit", roles: ["admin", "issuer", "viewer", "approver"] },
  { path: "/approvals", title: "Approvals", roles: ["admin", "approver", "viewer"] },
  { path: "/holds", title: "Holds", roles: ["admin", "viewer", "approver"] },
  { path: "/tokens", title: "Tokens", roles: ["admin"] },
  { path: "/alerts", title: "Alerts", roles: ["admin"] },
] as const;

function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [notice, setNotice] = useState<string | null>(null);
  const route = useRoute();
  useSession(session ?? null, () => {
    setSession(null);
    setNotice("Your session ended (it expired, or its token was revoked). Sign in again.");
  });
  useEffect(() => {
    api<Session>("/ui/session").then(setSession, () => setSession(null));
  }, []);
  // A key's page belongs to Runs; one budget's (#/budgets/bud_…) to Budgets.
  const page = route.path.startsWith("/keys/") ? "/runs" : route.path.startsWith("/budgets/") ? "/budgets" : route.path;
  const current = PAGES.find((p) => p.path === page);
  useEffect(() => {
    document.title = `${current?.title ?? "Key"} · Keybrake`;
  }, [current]);

  if (session === undefined) return <p class="boot">Loading…</p>;
  if (session === null)
    return (
      <SignIn
        notice={notice}
        onSignedIn={(s) => {
          setNotice(null);
          setSession(s);
        }}
      />
    );

  const signOut = async () => {
    await api("/ui/session", { method: "DELETE" }).catch(() => undefined);
    setNotice("Signed out.");
    setSession(null);
    location.hash = "#/";
  };
  const allowed = PAGES.filter((p) => (p.roles as readonly string[]).includes(session.role));
  let body = (
    <p>
      Not found. <a href="#/">Overview</a>
    </p>
  );
  if (route.path === "/") body = <OverviewPage session={session} />;
  else if (route.path === "/runs") body = <RunsPage session={session} />;
  else if (route.path.startsWith("/keys/")) body = <KeyPage session={session} id={decodeURIComponent(route.path.slice(6))} />;
  else if (page === "/budgets") body = <BudgetsPage session={session} focus={decodeURIComponent(route.path.slice(9)) || undefined} />;
  else if (route.path === "/audit") body = <AuditPage session={session} params={route.params} />;
  else if (route.path === "/approvals" && allowed.some((p) => p.path === "/approvals")) body = <ApprovalsPage session={session} />;
  else if (route.path === "/holds" && allowed.some((p) => p.path === "/holds")) body = <HoldsPage session={session} />;
  else if (route.path === "/tokens" && session.role === "admin") body = <TokensPage />;
  else if (route.path === "/alerts" && session.role === "admin") body = <AlertsPage />;

  return (
    <>
      <button type="button" class="skip" onClick={() => document.getElementById("main")?.focus()}>
        Skip to content
      </button>
      <header class="top">
        <a class="brand" href="#/">
          Keybrake
        </a>
        <nav aria-label="Pages">
          <ul>
            {allowed.map((p) => (
              <li key={p.path}>
                <a href={`#${p.path}`} aria-current={p.path === page ? "page" : undefined}>
                  {p.title}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <span>
            {session.token_name} <span class="role">{session.role}</span>
          </span>
          <button type="button" onClick={signOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <FreeEndpoints byVendor={session.free_endpoints} />
        {body}
      </main>
    </>
  );
}

/** SPEC §2: what the operator lets through unpriced is said where the people watching spend look. */
function FreeEndpoints({ byVendor }: { byVendor: Record<string, string[]> }) {
  const widened = Object.entries(byVendor ?? {}).filter(([, patterns]) => patterns.length > 0);
  if (widened.length === 0) return null;
  return (
    <p class="notice" role="note">
      Forwarded at $0 although Keybrake's catalogue does not know them (KEYBRAKE_&lt;VENDOR&gt;_FREE_ENDPOINTS):{" "}
      {widened.map(([vendor, patterns]) => `${vendor}: ${patterns.join(", ")}`).join("; ")}
    </p>
  );
}

render(<App />, document.getElementById("app")!);

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { testClock } from "./helpers/clock";
import { ADMIN_TOKEN, startKeybrake, type Harness } from "./helpers/harness";
import { createApp } from "../src/server";
import { SESSION_TTL_MS } from "../src/ui/sessions";

// SPEC §11: the dashboard's session cookie authenticates the same admin API as the token it was opened with;
// writes made with it need the session's CSRF token; another site cannot use it; it expires; sign-out ends it.

type Json = Record<string, any>;
let kb: Harness;
const clock = testClock(Date.now());
let app: ReturnType<typeof createApp>;

beforeAll(async () => {
  kb = await startKeybrake();
  // The same database and configuration, on a clock the tests move.
  app = createApp(kb.config, kb.store, { now: clock.now });
});
afterAll(() => kb.stop());

const KEY = { vendor: "stripe", daily_usd_cap: 50, allowed_endpoints: ["POST /v1/payment_intents"], expires_in: "1h" };

function call(path: string, init: { method?: string; headers?: Record<string, string>; body?: unknown } = {}) {
  const headers: Record<string, string> = { ...init.headers };
  if (init.body !== undefined) headers["content-type"] ??= "application/json";
  return app.handle(
    new Request(`http://127.0.0.1${path}`, {
      method: init.method ?? (init.body === undefined ? "GET" : "POST"),
      headers,
      body: init.body === undefined ? undefined : typeof init.body === "string" ? init.body : JSON.stringify(init.body),
    }),
  );
}

interface Signed {
  cookie: string;
  setCookie: string;
  session: Json;
}

async function signIn(token: string, headers: Record<string, string> = {}): Promise<Signed> {
  const res = await call("/ui/session", { body: { token }, headers });
  expect(res.status).toBe(200);
  const setCookie = res.headers.get("set-cookie")!;
  return { setCookie, cookie: setCookie.split(";")[0]!, session: (await res.json()) as Json };
}

async function token(role: "admin" | "issuer" | "viewer", extra: Json = {}) {
  const res = await kb.admin("/admin/tokens", { body: { name: `${role}-${crypto.randomUUID().slice(0, 8)}`, role, ...extra } });
  expect(res.status).toBe(201);
  return (await res.json()) as { id: string; token: string };
}

describe("signing in", () => {
  test("any valid token opens a session: an opaque HttpOnly, SameSite=Strict cookie for 8 hours, never the token", async () => {
    const { setCookie, cookie, session } = await signIn(ADMIN_TOKEN);
    expect(setCookie).toMatch(/^keybrake_session=[0-9A-Za-z]{43}; /);
    const attrs = setCookie.split("; ").slice(1);
    expect(attrs).toEqual(["Path=/", "HttpOnly", "SameSite=Strict", `Max-Age=${SESSION_TTL_MS / 1000}`]);
    expect(setCookie).not.toContain(ADMIN_TOKEN);
    expect(session).toMatchObject({ role: "admin", token_id: "admin", expires_at: new Date(clock.now() + SESSION_TTL_MS).toISOString() });
    expect(session.csrf_token).toMatch(/^[0-9A-Za-z]{43}$/);
    // The cookie alone reads the admin API, as the token would.
    const keys = await call("/vault/keys", { headers: { cookie } });
    expect(keys.status).toBe(200);
    const again = await call("/ui/session", { headers: { cookie } });
    expect(((await again.json()) as Json).csrf_token).toBe(session.csrf_token);
  });

  test("behind a TLS proxy (X-Forwarded-Proto: https) the cookie is also Secure", async () => {
    const { setCookie } = await signIn(ADMIN_TOKEN, { "x-forwarded-proto": "https" });
    expect(setCookie.split("; ")).toContain("Secure");
  });

  test("with an https KEYBRAKE_PUBLIC_URL the cookie is Secure, and the public origin may write though a proxy rewrote Host", async () => {
    const behind = createApp({ ...kb.config, publicUrl: "https://keybrake.example.com" }, kb.store, { now: clock.now });
    const signIn = await behind.handle(
      new Request("http://127.0.0.1/ui/session", {
        method: "POST",
        headers: { "content-type": "application/json", host: "127.0.0.1:8080" },
        body: JSON.stringify({ token: ADMIN_TOKEN }),
      }),
    );
    const setCookie = signIn.headers.get("set-cookie")!;
    expect(setCookie.split("; ")).toContain("Secure");
    const { csrf_token } = (await signIn.json()) as Json;
    const write = (origin: string) =>
      behind.handle(
        new Request("http://127.0.0.1/vault/keys", {
          method: "POST",
          headers: {
            "content-type": "application/json",
            host: "127.0.0.1:8080",
            origin,
            cookie: setCookie.split(";")[0]!,
            "x-csrf-token": csrf_token,
          },
          body: JSON.stringify({ ...KEY, label: "public/one" }),
        }),
      );
    expect((await write("https://keybrake.example.com")).status).toBe(201);
    expect((await write("https://keybrake.example.com.evil.example")).status).toBe(403);
  });

  test("a wrong token gets 401 and no cookie; a body that is not JSON or a sign-in from another site is refused", async () => {
    const bad = await call("/ui/session", { body: { token: "kb_adm_not-a-real-token-000000000000000000" } });
    expect(bad.status).toBe(401);
    expect(bad.headers.get("set-cookie")).toBeNull();
    // A cross-site <form enctype="text/plain"> can send a body that parses as JSON; its content type gives it away.
    const form = await call("/ui/session", { body: JSON.stringify({ token: ADMIN_TOKEN }), headers: { "content-type": "text/plain" } });
    expect(form.status).toBe(400);
    expect(form.headers.get("set-cookie")).toBeNull();
    const cross = await call("/ui/session", { body: { token: ADMIN_TOKEN }, headers: { "sec-fetch-site": "cross-site" } });
    expect(cross.status).toBe(403);
    expect(((await cross.json()) as Json).code).toBe("cross_site_request");
    expect(cross.headers.get("set-cookie")).toBeNull();
  });
});

describe("CSRF: writes made with the cookie", () => {
  test("without the session's CSRF token, or with another session's, a write is refused and changes nothing", async () => {
    const { cookie, session } = await signIn(ADMIN_TOKEN);
    const other = await signIn(ADMIN_TOKEN);
    const label = `csrf/${crypto.randomUUID()}`;
    const missing = await call("/vault/keys", { body: { ...KEY, label }, headers: { cookie } });
    expect(missing.status).toBe(403);
    expect(((await missing.json()) as Json).code).toBe("csrf_failed");
    expect(missing.headers.get("x-keybrake-error")).toBe("csrf_failed");
    const wrong = await call("/vault/keys", { body: { ...KEY, label }, headers: { cookie, "x-csrf-token": other.session.csrf_token } });
    expect(wrong.status).toBe(403);
    const listed = (await (await kb.admin(`/vault/keys?label=${encodeURIComponent(label)}`)).json()) as Json;
    expect(listed.data).toEqual([]);
    // With it: the same write goes through, recorded as the token's (the bootstrap admin's) action.
    const ok = await call("/vault/keys", { body: { ...KEY, label }, headers: { cookie, "x-csrf-token": session.csrf_token } });
    expect(ok.status).toBe(201);
    const key = (await ok.json()) as Json;
    const revoke = await call(`/vault/keys/${key.id}`, { method: "DELETE", headers: { cookie } });
    expect(revoke.status).toBe(403);
    expect(((await (await kb.admin(`/vault/keys/${key.id}`)).json()) as Json).status).toBe("active");
  });

  test("a bearer token needs no CSRF token, even when the browser's cookie rides along", async () => {
    const { cookie } = await signIn(ADMIN_TOKEN);
    const res = await call("/vault/keys", {
      body: { ...KEY, label: "bearer/one" },
      headers: { cookie, authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(res.status).toBe(201);
  });
});

describe("cross-site requests", () => {
  test("a request the browser marks as from another site cannot use the session, even with the CSRF token", async () => {
    const { cookie, session } = await signIn(ADMIN_TOKEN);
    const write = { body: { ...KEY, label: "cross/one" }, headers: { cookie, "x-csrf-token": session.csrf_token } };
    for (const site of ["cross-site", "same-site"]) {
      const res = await call("/vault/keys", { ...write, headers: { ...write.headers, "sec-fetch-site": site } });
      expect(res.status).toBe(403);
      expect(((await res.json()) as Json).code).toBe("cross_site_request");
      const read = await call("/vault/keys", { headers: { cookie, "sec-fetch-site": site } });
      expect(read.status).toBe(403);
    }
    // An older browser without Sec-Fetch-Site: the Origin of a write must be this host.
    const foreign = await call("/vault/keys", { ...write, headers: { ...write.headers, origin: "https://evil.example" } });
    expect(foreign.status).toBe(403);
    expect(((await foreign.json()) as Json).code).toBe("cross_site_request");
    // The dashboard's own requests pass.
    const own = await call("/vault/keys", {
      ...write,
      headers: { ...write.headers, "sec-fetch-site": "same-origin", origin: "http://127.0.0.1" },
    });
    expect(own.status).toBe(201);
  });
});

describe("how sessions end", () => {
  test("a session expires 8 hours after sign-in, however much it is used", async () => {
    const { cookie } = await signIn(ADMIN_TOKEN);
    clock.advance(SESSION_TTL_MS - 1000);
    expect((await call("/vault/keys", { headers: { cookie } })).status).toBe(200);
    clock.advance(1000);
    const expired = await call("/vault/keys", { headers: { cookie } });
    expect(expired.status).toBe(401);
    expect(((await expired.json()) as Json).message).toContain("sign in again");
    expect((await call("/ui/session", { headers: { cookie } })).status).toBe(401);
  });

  test("revoking the token ends its sessions on their next request", async () => {
    const viewer = await token("viewer");
    const { cookie } = await signIn(viewer.token);
    expect((await call("/vault/keys", { headers: { cookie } })).status).toBe(200);
    expect((await kb.admin(`/admin/tokens/${viewer.id}`, { method: "DELETE" })).status).toBe(200);
    expect((await call("/vault/keys", { headers: { cookie } })).status).toBe(401);
    expect((await call("/ui/session", { headers: { cookie } })).status).toBe(401);
  });

  test("sign-out needs the CSRF token, ends the session and deletes the cookie", async () => {
    const { cookie, session } = await signIn(ADMIN_TOKEN);
    expect((await call("/ui/session", { method: "DELETE", headers: { cookie } })).status).toBe(403);
    const out = await call("/ui/session", { method: "DELETE", headers: { cookie, "x-csrf-token": session.csrf_token } });
    expect(out.status).toBe(200);
    expect(out.headers.get("set-cookie")).toMatch(/^keybrake_session=; Path=\/; HttpOnly; SameSite=Strict; Max-Age=0/);
    expect((await call("/vault/keys", { headers: { cookie } })).status).toBe(401);
  });
});

describe("roles through the session", () => {
  test("a viewer's session reads but cannot write; an issuer's sees only its keys", async () => {
    const viewer = await signIn((await token("viewer")).token);
    const refused = await call("/vault/keys", {
      body: { ...KEY, label: "viewer/one" },
      headers: { cookie: viewer.cookie, "x-csrf-token": viewer.session.csrf_token },
    });
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as Json).code).toBe("forbidden");
    expect(viewer.session.role).toBe("viewer");

    const issuer = await signIn((await token("issuer", { policy: { label_prefix: "iss/" } })).token);
    const mine = await call("/vault/keys", {
      body: { ...KEY, label: "iss/run_1" },
      headers: { cookie: issuer.cookie, "x-csrf-token": issuer.session.csrf_token },
    });
    expect(mine.status).toBe(201);
    const listed = (await (await call("/vault/keys?limit=1000", { headers: { cookie: issuer.cookie } })).json()) as Json;
    expect(listed.data.map((k: Json) => k.label)).toEqual(["iss/run_1"]);
  });
});

describe("the dashboard's page", () => {
  test("served from inside the app with a policy that lets it load nothing from elsewhere", async () => {
    const page = await call("/ui");
    expect(page.status).toBe(200);
    const csp = page.headers.get("content-security-policy")!;
    for (const rule of ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"])
      expect(csp).toContain(rule);
    const html = await page.text();
    expect(html).not.toMatch(/https?:\/\//);
    const script = await (await call("/ui/app.js")).text();
    expect(script.length).toBeGreaterThan(10_000);
    // Only XML namespace names (never fetched), no address of a CDN or font host.
    expect([...new Set(script.match(/https?:\/\/[^\s"'`)]+/g) ?? [])].every((u) => u.startsWith("http://www.w3.org/"))).toBe(true);
  });
});

import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, flagsToEnv, loadConfig, unknownVariables } from "../src/config";
import { ensureBinary } from "./helpers/binary";

// `openssl rand -hex 32`
const STRONG_TOKEN = "3f9c1a7e52b04d8e96a1c0f7b2d35e84a9c61f0e7d2b48a5c3e91f06d7a2b5c8";
const envExample = readFileSync(join(import.meta.dir, "../deploy/keybrake.env.example"), "utf8");
const exampleToken = /^KEYBRAKE_ADMIN_TOKEN=(.*)$/m.exec(envExample)![1]!;

describe("config", () => {
  test("defaults match the contract", () => {
    const c = loadConfig({});
    expect(c).toMatchObject({
      host: "0.0.0.0",
      port: 8080,
      dbPath: "./keybrake.db",
      dbSynchronous: "full",
      upstreamTimeoutMs: 80_000,
      maxBodyBytes: 1_048_576,
      fx: {},
    });
    const baseUrls = Object.fromEntries(Object.entries(c.vendors).map(([name, v]) => [name, v.baseUrl]));
    // toMatchObject: a test may register a vendor of its own in this process (test/plugin-vendor.test.ts).
    expect(baseUrls).toMatchObject({
      stripe: "https://api.stripe.com",
      twilio: "https://api.twilio.com",
      resend: "https://api.resend.com",
    });
    expect(c.adminToken).toBeUndefined();
  });

  test("an unknown KEYBRAKE_* variable is named (start-up warns); known ones, *_FILE secrets and others are not", () => {
    expect(
      unknownVariables({
        KEYBRAKE_PROT: "9000",
        KEYBRAKE_PORT: "1",
        KEYBRAKE_STRIPE_SECRET_KEY_FILE: "/x",
        KEYBRAKE_PORT_FILE: "/y",
        HOME: "/root",
      }),
    ).toEqual(["KEYBRAKE_PROT", "KEYBRAKE_PORT_FILE"]);
  });

  test("KEYBRAKE_DATABASE_URL's pool_max_conns sizes the pool and is taken out of the URL; other parameters stay", () => {
    const sized = loadConfig({
      KEYBRAKE_DATABASE_URL: "postgres://kb:s%40cret@db1:5432,db2:5432/kb?pool_max_conns=4&target_session_attrs=read-write",
    });
    expect(sized.postgres).toMatchObject({
      url: "postgres://kb:s%40cret@db1:5432,db2:5432/kb?target_session_attrs=read-write",
      poolSize: 4,
    });
    const alone = loadConfig({ KEYBRAKE_DATABASE_URL: "postgres://kb@db:5432/kb?pool_max_conns=8" }).postgres;
    expect(alone).toMatchObject({ url: "postgres://kb@db:5432/kb", poolSize: 8 });
    const plain = loadConfig({ KEYBRAKE_DATABASE_URL: "postgres://kb@db:5432/kb?sslmode=disable" }).postgres;
    expect(plain?.url).toBe("postgres://kb@db:5432/kb?sslmode=disable");
    expect(plain?.poolSize).toBeUndefined();
  });

  test("flags override the environment", () => {
    const { env, rest } = flagsToEnv(["serve", "--port", "9001", "--db=/tmp/x.db", "--json"]);
    expect(rest).toEqual(["serve", "--json"]);
    const c = loadConfig({ KEYBRAKE_PORT: "7000", KEYBRAKE_DB: "/tmp/env.db" }, env);
    expect(c.port).toBe(9001);
    expect(c.dbPath).toBe("/tmp/x.db");
  });

  test("global flags are parsed with parseArgs: a flag is never another flag's value; `--` ends them", () => {
    expect(() => flagsToEnv(["--db", "--port", "9000"])).toThrow("KEYBRAKE_DB: --db needs a value (got the flag --port)");
    expect(() => flagsToEnv(["migrate", "--port"])).toThrow("KEYBRAKE_PORT: --port needs a value");
    expect(flagsToEnv(["--db=--odd.db", "keys", "list", "--label", "x", "--port", "9000"])).toEqual({
      env: { KEYBRAKE_DB: "--odd.db", KEYBRAKE_PORT: "9000" },
      rest: ["keys", "list", "--label", "x"],
    });
    expect(flagsToEnv(["audit", "--", "--db", "x"])).toEqual({ env: {}, rest: ["audit", "--", "--db", "x"] });
  });

  test("a Stripe publishable key is refused as a secret", () => {
    expect(() => loadConfig({ KEYBRAKE_STRIPE_TEST_SECRET_KEY: "pk_test_abc" })).toThrow(
      /^KEYBRAKE_STRIPE_TEST_SECRET_KEY: is a publishable key/,
    );
    expect(loadConfig({ KEYBRAKE_STRIPE_SECRET_KEY: "rk_live_abc" }).vendors.stripe!.credentials.live).not.toBeNull();
  });

  test("NAME_FILE reads a secret from a file (trailing newline trimmed)", () => {
    const dir = mkdtempSync(join(tmpdir(), "kbcfg-"));
    writeFileSync(join(dir, "stripe"), "sk_live_fromfile\n");
    writeFileSync(join(dir, "admin"), `${STRONG_TOKEN}\n`);
    const c = loadConfig({ KEYBRAKE_STRIPE_SECRET_KEY_FILE: join(dir, "stripe"), KEYBRAKE_ADMIN_TOKEN_FILE: join(dir, "admin") });
    expect(c.vendors.stripe!.credentials.live!.headers.authorization).toBe("Bearer sk_live_fromfile");
    expect(c.adminToken).toBe(STRONG_TOKEN);
  });

  const bad: [Record<string, string>, RegExp][] = [
    [{ KEYBRAKE_PORT: "abc" }, /^KEYBRAKE_PORT: must be an integer from 0 to 65535$/],
    [{ KEYBRAKE_PORT: "70000" }, /^KEYBRAKE_PORT: /],
    [{ KEYBRAKE_ADMIN_TOKEN: "short" }, /^KEYBRAKE_ADMIN_TOKEN: must be at least 32 characters$/],
    [
      { KEYBRAKE_ADMIN_TOKEN: exampleToken },
      /^KEYBRAKE_ADMIN_TOKEN: is a placeholder, not a secret; generate one with: openssl rand -hex 32$/,
    ],
    [{ KEYBRAKE_ADMIN_TOKEN: `ChangeMe${STRONG_TOKEN}` }, /^KEYBRAKE_ADMIN_TOKEN: is a placeholder/],
    [{ KEYBRAKE_ADMIN_TOKEN: `${STRONG_TOKEN}-replace_me` }, /^KEYBRAKE_ADMIN_TOKEN: is a placeholder/],
    [{ KEYBRAKE_ADMIN_TOKEN: `example-${STRONG_TOKEN}` }, /^KEYBRAKE_ADMIN_TOKEN: is a placeholder/],
    [{ KEYBRAKE_ADMIN_TOKEN: `${STRONG_TOKEN}PLACEHOLDER` }, /^KEYBRAKE_ADMIN_TOKEN: is a placeholder/],
    [
      { KEYBRAKE_ADMIN_TOKEN: "a".repeat(40) },
      /^KEYBRAKE_ADMIN_TOKEN: is too uniform \(under 3 bits of entropy per character\); generate one with: openssl rand -hex 32$/,
    ],
    [{ KEYBRAKE_ADMIN_TOKEN: "ab".repeat(20) }, /^KEYBRAKE_ADMIN_TOKEN: is too uniform/],
    [{ KEYBRAKE_ADMIN_TOKEN: `Xk9#mP2$vL${"0".repeat(30)}` }, /^KEYBRAKE_ADMIN_TOKEN: is too uniform/],
    [{ KEYBRAKE_STRIPE_BASE_URL: "ftp://x" }, /^KEYBRAKE_STRIPE_BASE_URL: must be an http\(s\) URL$/],
    [{ KEYBRAKE_FX: "EUR=abc" }, /^KEYBRAKE_FX: "EUR=abc" is not CODE=rate/],
    [{ KEYBRAKE_FX: "EURO=1.1" }, /^KEYBRAKE_FX: /],
    [{ KEYBRAKE_TWILIO_SMS_USD: "-1" }, /^KEYBRAKE_TWILIO_SMS_USD: /],
    [{ KEYBRAKE_UPSTREAM_TIMEOUT_MS: "0" }, /^KEYBRAKE_UPSTREAM_TIMEOUT_MS: /],
    [{ KEYBRAKE_METRICS_PUBLIC: "yes" }, /^KEYBRAKE_METRICS_PUBLIC: must be 0 or 1$/],
    [{ KEYBRAKE_TWILIO_ACCOUNT_SID: "AC1" }, /^KEYBRAKE_TWILIO_ACCOUNT_SID: set together with KEYBRAKE_TWILIO_AUTH_TOKEN$/],
    [{ KEYBRAKE_STRIPE_SECRET_KEY_FILE: "/nonexistent/file" }, /^KEYBRAKE_STRIPE_SECRET_KEY_FILE: cannot read/],
    [{ KEYBRAKE_STRIPE_SECRET_KEY: "a", KEYBRAKE_STRIPE_SECRET_KEY_FILE: "/etc/hostname" }, /either/],
    [{ KEYBRAKE_DATABASE_URL: "postgres://kb@db:5432/kb?pool_max_conns=0" }, /^KEYBRAKE_DATABASE_URL: pool_max_conns must be a whole/],
    [{ KEYBRAKE_DATABASE_URL: "postgres://kb@db:5432/kb?pool_max_conns=4.5" }, /^KEYBRAKE_DATABASE_URL: pool_max_conns must be/],
    [{ KEYBRAKE_DATABASE_URL: "postgres://kb@db:5432/kb?pool_max_conns=101" }, /^KEYBRAKE_DATABASE_URL: pool_max_conns must be/],
  ];
  for (const [env, message] of bad) {
    test(`${JSON.stringify(env)} is refused with one line naming the variable`, () => {
      let error: unknown;
      try {
        loadConfig(env);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as Error).message).toMatch(message);
      expect((error as Error).message).not.toContain("\n");
    });
  }

  test("admin tokens that are long and random enough are accepted", () => {
    for (const token of [
      STRONG_TOKEN,
      "test-admin-token-0123456789abcdefghijklmnop",
      "kb_admin_4fQ9zL2mX8rT1vB6nK3pW7yC5hJ0dS2gA9eR4uZ1",
      "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg==",
    ]) {
      expect(loadConfig({ KEYBRAKE_ADMIN_TOKEN: token }).adminToken).toBe(token);
    }
  });

  test("the CLI prints one line and exits 2 on a bad value, with no stack trace", async () => {
    const proc = Bun.spawn([await ensureBinary(), "serve", "--port", "nope"], {
      cwd: tmpdir(),
      stderr: "pipe",
      stdout: "pipe",
    });
    const code = await proc.exited;
    const stderr = await new Response(proc.stderr).text();
    expect(code).toBe(2);
    expect(stderr.trim()).toBe("keybrake: invalid configuration: KEYBRAKE_PORT: must be an integer from 0 to 65535");
  });
});

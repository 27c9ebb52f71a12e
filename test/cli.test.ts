import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { keybrakeCommand } from "./helpers/binary";
import { run } from "./helpers/process";

// Each test runs the binary on a database or folder of its own, so the tests run side by side (`describe.concurrent`):
// their time is the binary's start, which a second core can take.
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "keybrake-cli-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** `keybrake ...` (the built binary), in `cwd`; under a permissive umask when asked, as a root shell often has. */
async function keybrake(args: string[], opts: { cwd: string; env?: Record<string, string>; umask?: string }) {
  const cmd = await keybrakeCommand(...args);
  const wrapped = opts.umask ? ["sh", "-c", `umask ${opts.umask} && exec "$@"`, "sh", ...cmd] : cmd;
  return run(wrapped, { cwd: opts.cwd, env: opts.env ?? {} });
}

describe.concurrent("CLI commands other than serve and migrate never create a database", () => {
  const commands = [
    ["keys", "revoke", "--label-prefix", "airflow-billing/"],
    ["keys", "list"],
    ["holds", "list"],
    ["approvals", "list"],
    ["audit"],
    ["spend"],
    ["backup", "copy.db"],
  ];
  for (const args of commands) {
    test(`keybrake ${args.join(" ")} with no database: one line naming the path and KEYBRAKE_DB, exit non-zero, nothing created`, async () => {
      const empty = mkdtempSync(join(dir, "empty-"));
      const result = await keybrake(args, { cwd: empty });
      expect(result.code).not.toBe(0);
      expect(result.stdout).toBe("");
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      expect(result.stderr).toContain("KEYBRAKE_DB");
      expect(result.stderr).toContain(join(empty, "keybrake.db"));
      expect(readdirSync(empty)).toEqual([]);
    });
  }

  test("keybrake migrate still creates one", async () => {
    const empty = mkdtempSync(join(dir, "migrate-"));
    const result = await keybrake(["migrate"], { cwd: empty });
    expect(result.code).toBe(0);
    expect(readdirSync(empty)).toContain("keybrake.db");
  });
});

describe.concurrent("the kill switch", () => {
  test("revokes what matches; when nothing matches it says so and exits non-zero", async () => {
    const env = { KEYBRAKE_DB: join(dir, "kill.db") };
    expect((await keybrake(["migrate"], { cwd: dir, env })).code).toBe(0);
    const create = [
      "keys",
      "create",
      "--vendor",
      "stripe",
      "--daily-usd-cap",
      "5",
      "--allow",
      "POST /v1/payment_intents",
      "--label",
      "airflow-billing/run_1",
    ];
    expect((await keybrake(create, { cwd: dir, env })).code).toBe(0);

    const first = await keybrake(["keys", "revoke", "--label-prefix", "airflow-billing/"], { cwd: dir, env });
    expect(first).toMatchObject({ code: 0, stdout: "revoked 1 key(s)\n" });

    for (const by of [
      ["--label-prefix", "airflow-billing/"],
      ["--label-prefix", "no-such-run/"],
      ["--ids", "vk_missing1,vk_missing2"],
    ]) {
      const again = await keybrake(["keys", "revoke", ...by], { cwd: dir, env });
      expect(again.code).not.toBe(0);
      expect(again.stdout).toBe("");
      expect(again.stderr.trim()).toBe(`keybrake: not_found: No such active key matching ${by.join(" ")}; nothing revoked.`);
    }
  }, 30_000);
});

describe.concurrent("keybrake backup", () => {
  test("writes the copy with mode 0600, even under umask 000", async () => {
    const env = { KEYBRAKE_DB: join(dir, "backup-source.db") };
    expect((await keybrake(["migrate"], { cwd: dir, env })).code).toBe(0);
    const file = join(dir, "backup-copy.db");
    const result = await keybrake(["backup", file], { cwd: dir, env, umask: "000" });
    expect(result.code).toBe(0);
    expect((statSync(file).mode & 0o777).toString(8)).toBe("600");
    const copy = new Database(file, { readonly: true });
    expect(copy.query<{ integrity_check: string }, []>("PRAGMA integrity_check").get()!.integrity_check).toBe("ok");
    copy.close();
  }, 15_000);
});

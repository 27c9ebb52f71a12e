import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { tableLines } from "../src/cli/output";
import { keybrakeCommand } from "./helpers/binary";
import { cliInProcess } from "./helpers/cli";
import { run, startProcess } from "./helpers/process";

// The operator's CLI in folders of its own: exit codes, output, and what it leaves behind. The commands run inside
// the test process (cliInProcess: the binary's code without its start); what only a process shows runs the built
// binary: --help and a bad word reaching the shell, a closed pipe, a start that fails, and the healthcheck's server.
// Each test has a folder of its own (the audit tests only read theirs), so the tests run side by side.

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "keybrake-cli-usage-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** `keybrake <args>` run in `cwd`: its default database is `cwd`/keybrake.db, as the binary's would be there. */
async function keybrake(args: string[], opts: { cwd: string; env?: Record<string, string> }) {
  return cliInProcess(args, { KEYBRAKE_DB: join(opts.cwd, "keybrake.db"), ...opts.env });
}
/** The same on the built binary, in `cwd`. */
async function onBinary(args: string[], opts: { cwd: string; env?: Record<string, string> }) {
  return run(await keybrakeCommand(...args), { cwd: opts.cwd, env: opts.env ?? {} });
}
const emptyFolder = (name: string) => mkdtempSync(join(dir, `${name}-`));

/** A database with keys and audit rows of its own, made by the CLI itself. */
async function seededDb(name: string) {
  const cwd = emptyFolder(name);
  const env = { KEYBRAKE_DB: join(cwd, "kb.db") };
  expect((await keybrake(["migrate"], { cwd, env })).code).toBe(0);
  return { cwd, env, db: env.KEYBRAKE_DB };
}

describe.concurrent("--help prints the command's usage, exits 0 and does nothing else", () => {
  const commands = [
    [],
    ["serve"],
    ["keys"],
    ["keys", "create"],
    ["keys", "list"],
    ["keys", "show"],
    ["keys", "revoke"],
    ["holds"],
    ["holds", "list"],
    ["holds", "settle"],
    ["holds", "release"],
    ["approvals"],
    ["approvals", "list"],
    ["approvals", "approve"],
    ["approvals", "deny"],
    ["audit"],
    ["spend"],
    ["backup"],
    ["migrate"],
    ["healthcheck"],
    ["version"],
  ];
  for (const words of commands) {
    for (const flag of ["--help", "-h"]) {
      test(`keybrake ${[...words, flag].join(" ")}`, async () => {
        const cwd = emptyFolder("help");
        // A broken environment does not matter: --help reads no configuration, opens nothing, listens nowhere.
        const result = await keybrake([...words, flag], { cwd, env: { KEYBRAKE_PORT: "not-a-port" } });
        expect(result.code).toBe(0);
        expect(result.stderr).toBe("");
        expect(result.stdout).toContain("usage:");
        if (words.length > 0) expect(result.stdout).toContain(words.at(-1)!);
        expect(readdirSync(cwd)).toEqual([]);
      });
    }
  }

  test("each subcommand has its own usage; keybrake help <command> is the same", async () => {
    const cwd = emptyFolder("help-sub");
    const create = await keybrake(["keys", "create", "--help"], { cwd });
    expect(create.stdout).toContain("--daily-usd-cap");
    expect(create.stdout).not.toContain("--label-prefix P");
    expect((await keybrake(["help", "keys", "create"], { cwd })).stdout).toBe(create.stdout);
    const audit = await keybrake(["audit", "--help"], { cwd });
    expect(audit.stdout).toContain("--request-id");
    expect(audit.stdout).toContain("--limit");
    expect(audit.stdout).toMatch(/10m, 2h, 1d/);
    expect(readdirSync(cwd)).toEqual([]);
  });
});

test("on the built binary: --help exits 0 and prints the usage; a bad word exits 2 with one line naming it", async () => {
  const cwd = emptyFolder("binary");
  const help = await onBinary(["keys", "create", "--help"], { cwd, env: { KEYBRAKE_PORT: "not-a-port" } });
  expect(help.code).toBe(0);
  expect(help.stderr).toBe("");
  expect(help.stdout).toContain("usage:");
  expect(help.stdout).toContain("--daily-usd-cap");
  const bad = await onBinary(["keys", "frob"], { cwd });
  expect(bad.code).toBe(2);
  expect(bad.stdout).toBe("");
  expect(bad.stderr.trim().split("\n")).toEqual([expect.stringContaining('"frob"')]);
  expect(readdirSync(cwd)).toEqual([]);
});

describe.concurrent("bad words are named", () => {
  const cases: [string[], string][] = [
    [["frob"], '"frob"'],
    [["--bogus"], "--bogus"],
    [["serve", "--bogus"], "--bogus"],
    [["migrate", "extra"], '"extra"'],
    [["keys", "frob"], '"frob"'],
    [["holds", "frob"], '"frob"'],
    [["approvals", "frob"], '"frob"'],
    [["approvals", "list", "--status", "waiting"], '--status is one of pending, approved, denied, expired, used, not "waiting"'],
    [["approvals", "approve"], "give one approval id"],
    [["keys", "create", "--alow", "POST /v1/charges"], "--alow"],
    [["keys", "list", "--limit"], "--limit needs a value"],
    [["audit", "--format", "xml"], '--format is table, ndjson or csv, not "xml"'],
    [["spend", "--group-by", "week"], "--group-by"],
    [["backup"], "give one file"],
    [["--db", "--port", "9000", "migrate"], "--db needs a value (got the flag --port)"],
  ];
  for (const [args, named] of cases) {
    test(`keybrake ${args.join(" ")}: exit 2, one line naming ${named}, nothing created`, async () => {
      const cwd = emptyFolder("bad");
      const result = await keybrake(args, { cwd, env: { KEYBRAKE_DB: join(cwd, "kb.db") } });
      expect(result.code).toBe(2);
      expect(result.stdout).toBe("");
      expect(result.stderr).toContain(named);
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      expect(readdirSync(cwd)).toEqual([]);
    });
  }

  test("errors name flags, not the API's JSON fields; every offending flag at once", async () => {
    const { cwd, env } = await seededDb("flags");
    const result = await keybrake(["keys", "create", "--vendor", "stripe", "--daily-usd-cap", "zero", "--expires-in", "soon"], {
      cwd,
      env,
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("--daily-usd-cap: must be a number of US dollars");
    expect(result.stderr).toContain("--allow: must list at least one endpoint");
    expect(result.stderr).toContain("--expires-in: must be a duration");
    expect(result.stderr).not.toMatch(/daily_usd_cap|allowed_endpoints|expires_in/);
    const second = await keybrake(
      ["keys", "create", "--vendor", "stripe", "--daily-usd-cap", "5", "--allow", "POST /v1/charges", "--allow", "FETCH /x"],
      { cwd, env },
    );
    expect(second.stderr).toContain("--allow #2: ");
  });

  test("the global flags are read with parseArgs anywhere before --: --db=x, --db x, after the command", async () => {
    const cwd = emptyFolder("global");
    expect((await keybrake([`--db=${join(cwd, "a.db")}`, "migrate"], { cwd })).code).toBe(0);
    expect((await keybrake(["migrate", "--db", join(cwd, "b.db")], { cwd })).code).toBe(0);
    expect(readdirSync(cwd).sort()).toEqual(["a.db", "b.db"]);
  });
});

describe.concurrent("audit and spend from the shell", () => {
  let seeded: Awaited<ReturnType<typeof seededDb>>;
  const now = Date.now();
  beforeAll(async () => {
    seeded = await seededDb("audit");
    const db = new Database(seeded.db);
    const insert = db.prepare(
      `INSERT INTO audit_events (id, at, key_id, label, vendor, method, path, status, decision, cost_micros, cost_source)
       VALUES (?, ?, 'vk_a', ?, 'stripe', 'POST', '/v1/payment_intents', 200, 'allowed', ?, 'request')`,
    );
    db.transaction(() => {
      // 2,500 rows, one a second back from now: run_big spends the most but is older than an hour.
      for (let i = 0; i < 2500; i++) {
        const label = i % 5 === 0 ? "airflow-billing/run_small" : "airflow-billing/run_big";
        insert.run(`kbr_row${i}`, now - i * 1000, label, label.endsWith("small") ? 10_000 : 1_000_000);
      }
      insert.run("kbr_old", now - 3 * 86_400_000, "airflow-billing/run_old", 99_000_000);
    })();
    db.close();
  });

  test("--request-id finds the one call a job saw", async () => {
    const result = await keybrake(["audit", "--request-id", "kbr_row42", "--format", "ndjson"], { cwd: seeded.cwd, env: seeded.env });
    expect(result.code).toBe(0);
    const rows = result.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(rows).toEqual([expect.objectContaining({ id: "kbr_row42", label: "airflow-billing/run_big" })]);
  });

  test("--since/--until take durations and ISO times; a bad one lists the forms", async () => {
    const { cwd, env } = seeded;
    const lines = (r: { stdout: string }) => r.stdout.trim().split("\n").filter(Boolean).length;
    // The 2,500 rows are at most 42 minutes old; one more is 3 days old.
    expect(lines(await keybrake(["audit", "--since", "2d", "--format", "ndjson"], { cwd, env }))).toBe(2500);
    expect(lines(await keybrake(["audit", "--since", "4d", "--format", "ndjson"], { cwd, env }))).toBe(2501);
    expect(lines(await keybrake(["audit", "--since", "1w", "--until", "1d", "--format", "ndjson"], { cwd, env }))).toBe(1);
    const since = new Date(now - 100_000).toISOString();
    const until = new Date(now - 50_000).toISOString();
    expect(lines(await keybrake(["audit", "--since", since, "--until", until, "--format", "ndjson"], { cwd, env }))).toBe(50);
    const bad = await keybrake(["audit", "--since", "yesterday"], { cwd, env });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(
      "--since: must be an ISO time (2026-11-27T18:00:00Z), a UTC date (2026-11-27) or a duration ago (10m, 2h, 1d)",
    );
  });

  test("the table says when it stopped at --limit and how to see more", async () => {
    const result = await keybrake(["audit", "--limit", "5"], { cwd: seeded.cwd, env: { ...seeded.env, COLUMNS: "200" } });
    expect(result.code).toBe(0);
    expect(result.stdout.trim().split("\n")).toHaveLength(6);
    expect(result.stderr).toMatch(/^keybrake: stopped at --limit 5; more rows match: add --cursor \d+ for the next page/);
  });

  test("spend sorts by spend, biggest first; --since 1h shows who is burning money now", async () => {
    const { cwd, env } = seeded;
    const all = JSON.parse((await keybrake(["spend", "--json"], { cwd, env })).stdout) as { group: string; spend_usd: number }[];
    expect(all.map((r) => r.group)).toEqual(["airflow-billing/run_big", "airflow-billing/run_old", "airflow-billing/run_small"]);
    const hour = JSON.parse((await keybrake(["spend", "--since", "1h", "--json"], { cwd, env })).stdout) as { group: string }[];
    expect(hour.map((r) => r.group)).toEqual(["airflow-billing/run_big", "airflow-billing/run_small"]);
  });

  test("audit --format ndjson | head ends quietly: exit 0, nothing on stderr", async () => {
    const cmd = await keybrakeCommand("audit", "--format", "ndjson");
    const script = `set -o pipefail; "${cmd.join('" "')}" | head -n 2 > /dev/null`;
    const result = await run(["bash", "-c", script], { cwd: seeded.cwd, env: seeded.env });
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
  });
});

describe.concurrent("tables fit the terminal", () => {
  test("a narrow audit table leaves out the ids first and keeps decision, status and cost", () => {
    const row = {
      at: "2026-11-22T06:00:01Z",
      id: "kbr_4QfZ0c1hW2mXa7Lr9sTb3k",
      label: "celery-billing-order-81723-7f9c2a",
      decision: "cap_exhausted",
      status: 429,
      cost_usd: 0,
      would_deny: null,
      method: "POST",
      path: "/v1/payment_intents",
      cost_source: null,
      vendor_request_id: "req_8mJq2LwXc4Rt6Y",
    };
    const { lines, hidden } = tableLines([row], Object.keys(row), 80);
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(80);
    expect(lines[0]).toMatch(/\bdecision\b.*\bstatus\b.*\bcost\b/);
    expect(lines[1]).toContain("cap_exhausted");
    expect(hidden).toContain("id");
    expect(hidden).toContain("vendor_request_id");
  });

  test("keys list at COLUMNS=80: every line fits, long labels shortened in the middle, money with fixed decimals", async () => {
    const { cwd, env } = await seededDb("tables");
    const label = "airflow-billing/run_2026_11_22T06:00:00+00:00_backfill_of_the_whole_month";
    const created = await keybrake(
      ["keys", "create", "--vendor", "stripe", "--daily-usd-cap", "5.5", "--allow", "POST /v1/payment_intents", "--label", label],
      { cwd, env },
    );
    expect(created.code).toBe(0);
    // A key for a vendor with no secret configured is issued, with a warning.
    expect(created.stderr).toContain("warning: No live secret is configured for stripe (KEYBRAKE_STRIPE_SECRET_KEY)");

    const narrow = await keybrake(["keys", "list"], { cwd, env: { ...env, COLUMNS: "80" } });
    expect(narrow.code).toBe(0);
    const lines = narrow.stdout.trimEnd().split("\n");
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(80);
    expect(lines[1]).toMatch(/ airflo\S*…\S*_month /); // shortened in the middle: both ends kept
    expect(lines[1]).toContain(" 0.00");
    expect(lines[1]).toMatch(/\s5\.50$|\s5\.50\s/);

    const wide = await keybrake(["keys", "list"], { cwd, env: { ...env, COLUMNS: "250" } });
    expect(wide.stdout).toContain(label);
    expect(wide.stdout.split("\n")[0]).toContain("last_used");
    expect(wide.stderr).toBe("");

    const id = /vk_\w+/.exec(wide.stdout)![0];
    const shown = await keybrake(["keys", "show", id], { cwd, env });
    expect(shown.stdout).toMatch(new RegExp(`^id: +${id}$`, "m"));
    expect(shown.stdout).toMatch(/^daily_usd_cap: +5\.50$/m);
    expect(shown.stdout).toMatch(/^allowed_endpoints: +POST \/v1\/payment_intents$/m);
    expect(shown.stdout).toMatch(/^last_used_at: +-$/m);

    expect((await keybrake(["keys", "revoke", id], { cwd, env })).code).toBe(0);
    const revoked = await keybrake(["keys", "show", id], { cwd, env });
    expect(revoked.stdout).toMatch(/^status: +revoked$/m);
    expect(revoked.stdout).toMatch(/^remaining_today_usd: +0\.00$/m); // a revoked key has nothing left to spend
  });
});

describe.concurrent("storage errors name the path", () => {
  test("a database in a folder that does not exist: one line with the path, exit 2, nothing created", async () => {
    const cwd = emptyFolder("storage");
    const missing = join(cwd, "no-such-folder", "keybrake.db");
    const result = await keybrake(["migrate"], { cwd, env: { KEYBRAKE_DB: missing } });
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toBe(
      `keybrake: invalid configuration: KEYBRAKE_DB: cannot open database ${missing}: the folder ${join(cwd, "no-such-folder")} does not exist`,
    );
    expect(readdirSync(cwd)).toEqual([]);
  });

  test("a Stripe publishable key given as the secret stops the start, naming the variable", async () => {
    const cwd = emptyFolder("pk");
    const result = await onBinary(["serve"], {
      cwd,
      env: { KEYBRAKE_STRIPE_SECRET_KEY: "pk_live_51Habcdefghijklmnop", KEYBRAKE_PORT: "0" },
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("KEYBRAKE_STRIPE_SECRET_KEY: is a publishable key (pk_…)");
    expect(readdirSync(cwd)).toEqual([]);
  });
});

describe.concurrent("keybrake healthcheck (the container's HEALTHCHECK)", () => {
  test("exit 0 while the local server's /healthz answers 200; exit 1 with nothing listening", async () => {
    const cwd = emptyFolder("health");
    const env = { KEYBRAKE_HOST: "127.0.0.1", KEYBRAKE_ADMIN_TOKEN: "test-admin-token-0123456789abcdefghijklmnop" };
    const server = await startProcess(await keybrakeCommand(), { cwd, env: { ...env, KEYBRAKE_PORT: "0" } });
    const port = new URL(server.url).port;
    try {
      const up = await keybrake(["healthcheck", "--port", port], { cwd, env });
      expect(up.code).toBe(0);
      expect(up.stdout).toContain(`http://127.0.0.1:${port}/healthz: 200`);
    } finally {
      server.proc.kill("SIGTERM");
      await server.proc.exited;
    }
    const down = await keybrake(["healthcheck", "--port", port], { cwd, env });
    expect(down.code).toBe(1);
    expect(down.stderr).toContain(`keybrake healthcheck: http://127.0.0.1:${port}/healthz:`);
  }, 30_000);
});

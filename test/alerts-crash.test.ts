import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { verifySignature } from "../src/alerts/payload";
import { ensureBinary } from "./helpers/binary";
import { cliInProcess } from "./helpers/cli";
import { ADMIN_TOKEN } from "./helpers/harness";
import { mockStripe, STRIPE_LIVE_SECRET, type MockStripe } from "./helpers/mock-stripe";
import { startProcess, type Started } from "./helpers/process";
import { Receiver, waitFor } from "./helpers/receiver";

// SPEC §12 with the built binary: an event committed but not yet delivered when Keybrake is SIGKILLed is
// delivered, with the same id, after the restart; and the CLI's `keybrake alerts` (in the test process: cliInProcess).

type Json = Record<string, any>;
let binary: string;
let stripe: MockStripe;
let dir: string;

beforeAll(async () => {
  binary = await ensureBinary();
  stripe = await mockStripe().start();
  dir = mkdtempSync(join(tmpdir(), "keybrake-alerts-crash-"));
}, 120_000);
afterAll(async () => {
  await stripe.stop();
  rmSync(dir, { recursive: true, force: true });
});

const env = (db: string) => ({
  KEYBRAKE_DB: join(dir, db),
  KEYBRAKE_PORT: "0",
  KEYBRAKE_HOST: "127.0.0.1",
  KEYBRAKE_ADMIN_TOKEN: ADMIN_TOKEN,
  KEYBRAKE_STRIPE_SECRET_KEY: STRIPE_LIVE_SECRET,
  KEYBRAKE_STRIPE_BASE_URL: stripe.url,
});

const admin = (server: Started, path: string, init: { method?: string; body?: unknown } = {}) =>
  fetch(server.url + path, {
    method: init.method ?? (init.body === undefined ? "GET" : "POST"),
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });

describe("SIGKILL between the commit of an event and its delivery", () => {
  test("the event is delivered after the restart, with the same id and a valid signature", async () => {
    const receiver = await new Receiver().up();
    receiver.mode = "hang"; // takes the first POST and never answers: the attempt is in flight when Keybrake dies
    const first = await startProcess([binary], { cwd: dir, env: env("kill.db") });
    let second: Started | undefined;
    try {
      const hook = (await (
        await admin(first, "/alerts/webhooks", { body: { url: receiver.url, events: ["cap_threshold"] } })
      ).json()) as Json;
      const key = (await (
        await admin(first, "/vault/keys", {
          body: { vendor: "stripe", daily_usd_cap: 100, allowed_endpoints: ["POST /v1/payment_intents"], alert_thresholds: [0.5] },
        })
      ).json()) as Json;
      const res = await fetch(`${first.url}/v1/payment_intents`, {
        method: "POST",
        headers: { authorization: `Bearer ${key.vault_key}`, "content-type": "application/x-www-form-urlencoded" },
        body: "amount=6000&currency=usd",
      });
      expect(res.status).toBe(200);
      await waitFor(() => receiver.received.length >= 1, 10_000, "the first attempt");
      first.proc.kill("SIGKILL");
      await first.proc.exited;

      // Committed, attempted, never recorded as delivered.
      const file = new Database(join(dir, "kill.db"), { readonly: true });
      const rows = file.query<{ status: string; attempts: number }, []>("SELECT status, attempts FROM alert_deliveries").all();
      file.close();
      expect(rows).toEqual([{ status: "pending", attempts: 0 }]);

      receiver.release();
      receiver.mode = "ok";
      second = await startProcess([binary], { cwd: dir, env: env("kill.db") });
      await waitFor(() => receiver.received.length >= 2, 10_000, "the delivery after the restart");
      const [before, after] = receiver.received;
      expect(after!.json.id).toBe(before!.json.id);
      expect(after!.body).toBe(before!.body);
      expect(after!.json).toMatchObject({ type: "cap_threshold", key: { id: key.id }, data: { threshold: 0.5, spent_usd: 60 } });
      expect(verifySignature(hook.secret, after!.body, after!.headers["keybrake-signature"]!, Date.now() / 1000)).toBe(true);
      await waitFor(
        async () => (((await (await admin(second!, "/alerts/deliveries")).json()) as Json).data[0]?.status ?? "") === "delivered",
        10_000,
        "delivered",
      );
      // Nothing fires again after the restart: the threshold is remembered.
      await Bun.sleep(1_500);
      expect(receiver.received).toHaveLength(2);
    } finally {
      first.proc.kill("SIGKILL");
      second?.proc.kill("SIGTERM");
      if (second) expect(await second.proc.exited).toBe(0);
      await receiver.down();
    }
  }, 60_000);
});

describe("keybrake alerts (the CLI, on the same database)", () => {
  const cli = (args: string[], db = "cli.db") => cliInProcess(args, env(db));

  test("--help on each subcommand prints its usage and does nothing", async () => {
    const commands = [
      ["alerts"],
      ["alerts", "add"],
      ["alerts", "list"],
      ["alerts", "remove"],
      ["alerts", "test"],
      ["alerts", "deliveries"],
    ];
    const results = await Promise.all(commands.map((words) => cliInProcess([...words, "--help"], { KEYBRAKE_DB: join(dir, "never.db") })));
    for (const [i, result] of results.entries()) {
      expect(result.code).toBe(0);
      expect(result.stdout).toContain("usage: keybrake alerts");
      expect(result.stdout).toContain(commands[i]!.at(-1)!);
    }
    expect(await Bun.file(join(dir, "never.db")).exists()).toBe(false);
    expect((await cliInProcess(["--help"])).stdout).toContain("keybrake alerts ...");
  });

  test("add prints the secret once; list never shows it; test signs and sends; remove deletes; bad input is named", async () => {
    expect((await cli(["migrate"])).code).toBe(0);
    const receiver = await new Receiver().up();
    try {
      const added = await cli([
        "alerts",
        "add",
        "--url",
        receiver.url,
        "--events",
        "cap_threshold,key_revoked",
        "--label-prefix",
        "etl/",
        "--json",
      ]);
      expect(added.code).toBe(0);
      const hook = JSON.parse(added.stdout) as Json;
      expect(hook).toMatchObject({ events: ["cap_threshold", "key_revoked"], label_prefix: "etl/", format: "json" });
      expect(hook.secret).toMatch(/^whsec_/);

      const listed = await cli(["alerts", "list"]);
      expect(listed.stdout).toContain(hook.id);
      expect(listed.stdout).not.toContain(hook.secret);

      const tested = await cli(["alerts", "test", hook.id]);
      expect(tested.code).toBe(0);
      expect(tested.stdout).toMatch(/^delivered evt_test_\w+ to wh_\w+: HTTP 200 in \d+ ms/);
      expect(receiver.received).toHaveLength(1);
      expect(
        verifySignature(hook.secret, receiver.received[0]!.body, receiver.received[0]!.headers["keybrake-signature"]!, Date.now() / 1000),
      ).toBe(true);
      receiver.mode = "fail";
      const failed = await cli(["alerts", "test", hook.id]);
      expect(failed.code).toBe(1);
      expect(failed.stderr).toContain("HTTP 500");

      // A revocation from the CLI writes its event for the server's worker to send.
      const key = JSON.parse(
        (
          await cli([
            "keys",
            "create",
            "--vendor",
            "stripe",
            "--daily-usd-cap",
            "5",
            "--allow",
            "POST /v1/charges",
            "--label",
            "etl/1",
            "--json",
          ])
        ).stdout,
      ) as Json;
      expect((await cli(["keys", "revoke", key.id])).code).toBe(0);
      const deliveries = JSON.parse((await cli(["alerts", "deliveries", "--json"])).stdout) as Json[];
      expect(deliveries).toMatchObject([{ event: "key_revoked", key_id: key.id, webhook_id: hook.id, status: "pending", attempts: 0 }]);

      expect((await cli(["alerts", "remove", hook.id])).stdout).toContain(`removed ${hook.id}`);
      expect((await cli(["alerts", "list"])).stdout).not.toContain(hook.id);
      const again = await cli(["alerts", "remove", hook.id]);
      expect(again.code).toBe(2);
      expect(again.stderr).toContain("not_found");

      const bad = await cli(["alerts", "add", "--url", "ftp://x", "--events", "nope"]);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain("--url: must be an http:// or https:// URL");
      expect(bad.stderr).toContain("--events #1: must be one of");
      const unknown = await cli(["alerts", "ad"]);
      expect(unknown.code).toBe(2);
      expect(unknown.stderr).toContain('unknown command "ad"');
    } finally {
      await receiver.down();
    }
  }, 60_000);
});

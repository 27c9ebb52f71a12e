import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary } from "./helpers/binary";
import { run } from "./helpers/process";

const root = join(import.meta.dir, "..");
const unit = readFileSync(join(root, "deploy/keybrake.service"), "utf8");
const hasSystemdAnalyze = Bun.which("systemd-analyze") !== null;

describe("deploy/keybrake.service", () => {
  test("is hardened as the operations issue asks", () => {
    for (const line of [
      "DynamicUser=yes",
      "StateDirectory=keybrake",
      "EnvironmentFile=-/etc/keybrake/keybrake.env",
      "NoNewPrivileges=yes",
      "ProtectSystem=strict",
      "ProtectHome=yes",
      "PrivateTmp=yes",
      "Restart=on-failure",
      "ExecStart=/usr/local/bin/keybrake serve",
    ]) {
      expect(unit.split("\n")).toContain(line);
    }
  });

  test.skipIf(!hasSystemdAnalyze)("passes systemd-analyze verify (with ExecStart pointed at the built binary)", async () => {
    const binary = await ensureBinary();
    const dir = mkdtempSync(join(tmpdir(), "keybrake-unit-"));
    writeFileSync(join(dir, "keybrake.service"), unit.replace("ExecStart=/usr/local/bin/keybrake", `ExecStart=${binary}`));
    const result = await run(["systemd-analyze", "verify", join(dir, "keybrake.service")], { cwd: dir, env: {} });
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
  }, 120_000);
});

describe("deploy/Dockerfile", () => {
  test("wraps the single binary, runs unprivileged, keeps the database on a volume", () => {
    const file = readFileSync(join(root, "deploy/Dockerfile"), "utf8");
    expect(file).toContain("COPY --chown=65532:65532 dist/keybrake /usr/local/bin/keybrake");
    expect(file).toContain("USER 65532:65532");
    expect(file).toContain('VOLUME ["/data"]');
    expect(file).toContain("KEYBRAKE_DB=/data/keybrake.db");
  });
});

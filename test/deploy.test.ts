import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../src/config";
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
      "Environment=KEYBRAKE_HOST=127.0.0.1",
    ]) {
      expect(unit.split("\n")).toContain(line);
    }
  });

  test("its env example binds to loopback and carries a placeholder token that Keybrake refuses", () => {
    const example = readFileSync(join(root, "deploy/keybrake.env.example"), "utf8");
    expect(example.split("\n")).toContain("KEYBRAKE_HOST=127.0.0.1");
    const env = Object.fromEntries(example.split("\n").filter((l) => /^KEYBRAKE_\w+=/.test(l)).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
    expect(() => loadConfig(env)).toThrow(/^KEYBRAKE_ADMIN_TOKEN: is a placeholder/);
    const { KEYBRAKE_ADMIN_TOKEN: _, ...rest } = env;
    expect(loadConfig(rest).host).toBe("127.0.0.1");
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
    expect(file).toContain('CMD ["serve", "--host", "0.0.0.0"]'); // inside the container; published on loopback
  });
});

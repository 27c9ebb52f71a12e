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

/** Lines as systemd and Docker join them: a trailing backslash continues a line; blank and comment lines go. */
const logicalLines = (text: string) =>
  text
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#") && !l.startsWith(";"));

/** A unit file's directives: section -> key -> every value assigned, in order (a key may be given again). */
function unitDirectives(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let section: Map<string, string[]> | undefined;
  for (const line of logicalLines(text)) {
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = sections.get(header[1]!) ?? new Map<string, string[]>();
      sections.set(header[1]!, section);
      continue;
    }
    const eq = line.indexOf("=");
    if (section === undefined || eq < 1) throw new Error(`not a directive in a section: ${line}`);
    const key = line.slice(0, eq).trim();
    section.set(key, [...(section.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return sections;
}

/** The value systemd uses for each of `keys` in `section`: the last one assigned. */
const effective = (section: Map<string, string[]> | undefined, keys: string[]) =>
  Object.fromEntries(keys.map((k) => [k, section?.get(k)?.at(-1)]));

/** The variables Environment= lines set: each holds space-separated NAME=value pairs; an empty one resets the list. */
function environment(section: Map<string, string[]> | undefined): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const value of section?.get("Environment") ?? []) {
    if (value === "") for (const name of Object.keys(vars)) delete vars[name];
    for (const pair of value.match(/(?:[^\s"]+|"[^"]*")+/g) ?? []) {
      const eq = pair.indexOf("=");
      vars[pair.slice(0, eq)] = pair.slice(eq + 1).replace(/^"(.*)"$/, "$1");
    }
  }
  return vars;
}

describe("deploy/keybrake.service", () => {
  test("is hardened as the operations issue asks", () => {
    const service = unitDirectives(unit).get("Service");
    expect(
      effective(service, [
        "ExecStart",
        "DynamicUser",
        "StateDirectory",
        "EnvironmentFile",
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "Restart",
      ]),
    ).toEqual({
      ExecStart: "/usr/local/bin/keybrake serve",
      DynamicUser: "yes",
      StateDirectory: "keybrake",
      EnvironmentFile: "-/etc/keybrake/keybrake.env",
      NoNewPrivileges: "yes",
      ProtectSystem: "strict",
      ProtectHome: "yes",
      PrivateTmp: "yes",
      Restart: "on-failure",
    });
    expect(service?.get("ExecStart")).toHaveLength(1); // a simple service runs one command
    expect(environment(service)).toMatchObject({ KEYBRAKE_HOST: "127.0.0.1" });
  });

  test("its env example binds to loopback and carries a placeholder token that Keybrake refuses", () => {
    const example = readFileSync(join(root, "deploy/keybrake.env.example"), "utf8");
    expect(example.split("\n")).toContain("KEYBRAKE_HOST=127.0.0.1");
    const env = Object.fromEntries(
      example
        .split("\n")
        .filter((l) => /^KEYBRAKE_\w+=/.test(l))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    expect(() => loadConfig(env)).toThrow(/^KEYBRAKE_ADMIN_TOKEN: is a placeholder/);
    const { KEYBRAKE_ADMIN_TOKEN: _, ...rest } = env;
    expect(loadConfig(rest).host).toBe("127.0.0.1");
  });

  test.skipIf(!hasSystemdAnalyze)(
    "passes systemd-analyze verify (with ExecStart pointed at the built binary)",
    async () => {
      const binary = await ensureBinary();
      const dir = mkdtempSync(join(tmpdir(), "keybrake-unit-"));
      writeFileSync(join(dir, "keybrake.service"), unit.replace("ExecStart=/usr/local/bin/keybrake", `ExecStart=${binary}`));
      const result = await run(["systemd-analyze", "verify", join(dir, "keybrake.service")], { cwd: dir, env: {} });
      expect(result.stderr).toBe("");
      expect(result.code).toBe(0);
    },
    120_000,
  );
});

/** The instructions of a Dockerfile's last stage (the image that runs), as [INSTRUCTION, arguments]. */
function finalStage(text: string): [string, string][] {
  const instructions = logicalLines(text).map((line): [string, string] => {
    const [, name, args] = /^(\S+)\s*(.*)$/.exec(line)!;
    return [name!.toUpperCase(), args!];
  });
  return instructions.slice(instructions.findLastIndex(([name]) => name === "FROM"));
}

describe("deploy/Dockerfile", () => {
  test("wraps the single binary, runs unprivileged, keeps the database on a volume", () => {
    const stage = finalStage(readFileSync(join(root, "deploy/Dockerfile"), "utf8"));
    const all = (name: string) => stage.filter(([n]) => n === name).map(([, args]) => args);
    const last = (name: string) => all(name).at(-1);
    expect(all("COPY")).toContain("--chown=65532:65532 dist/keybrake /usr/local/bin/keybrake");
    expect(last("USER")).toBe("65532:65532");
    expect(JSON.parse(last("VOLUME")!)).toEqual(["/data"]);
    const env = Object.fromEntries(all("ENV").flatMap((args) => args.split(/\s+/).map((pair) => pair.split("=", 2))));
    expect(env).toMatchObject({ KEYBRAKE_DB: "/data/keybrake.db" });
    expect(JSON.parse(last("ENTRYPOINT")!)).toEqual(["/usr/local/bin/keybrake"]);
    expect(JSON.parse(last("CMD")!)).toEqual(["serve", "--host", "0.0.0.0"]); // inside the container; published on loopback
  });
});

describe("deploy/ for the container and the unit", () => {
  const dockerfile = readFileSync(join(root, "deploy/Dockerfile"), "utf8");
  const readme = readFileSync(join(root, "README.md"), "utf8");

  test("the image checks its own health with the binary (no shell or curl in distroless)", () => {
    const stage = finalStage(dockerfile);
    const health = stage.filter(([n]) => n === "HEALTHCHECK").map(([, args]) => args);
    expect(health).toHaveLength(1);
    expect(JSON.parse(health[0]!.slice(health[0]!.indexOf("CMD") + 3))).toEqual(["/usr/local/bin/keybrake", "healthcheck"]);
  });

  test(".dockerignore sends the binary alone to the build", () => {
    const lines = logicalLines(readFileSync(join(root, ".dockerignore"), "utf8"));
    expect(lines).toEqual(["*", "!dist/keybrake"]);
    expect(dockerfile).toContain("COPY --chown=65532:65532 dist/keybrake /usr/local/bin/keybrake");
  });

  test("README and Dockerfile pass the env one way: --env-file with the systemd env file; the CLI runs inside", () => {
    const way = "--env-file /etc/keybrake/keybrake.env";
    expect(dockerfile).toContain(way);
    expect(readme).toContain(way);
    expect(dockerfile).not.toMatch(/docker run[^\n]* -e /);
    expect(readme).not.toMatch(/docker run[^\n]* -e KEYBRAKE/);
    expect(readme).toContain("docker exec keybrake keybrake keys list");
  });

  test("the unit's Documentation= points at what the README installs, and the served docs", () => {
    const docs = unitDirectives(unit).get("Unit")?.get("Documentation")?.at(-1)?.split(/\s+/) ?? [];
    expect(docs.length).toBeGreaterThan(0);
    for (const uri of docs) {
      if (uri.startsWith("file://")) expect(readme).toContain(`install -D -m 0644 README.md ${uri.slice("file://".length)}`);
      else expect(uri).toBe("http://127.0.0.1:8080/docs"); // the unit's KEYBRAKE_HOST and the default port
    }
  });
});

import { expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

/**
 * The dashboard's API types are inferred from the routes' zod schemas (src/<feature>/responses.ts), so a field
 * renamed on the server fails the dashboard's type check. That check runs with the browser's globals only
 * (src/ui/app/tsconfig.json): the server files it reaches must import nothing but zod and each other, or Bun's,
 * Node's and Elysia's types come in with them and browser code using `process` or `Bun` would type-check.
 */

const SRC = resolve(import.meta.dir, "../src");
const APP = join(SRC, "ui/app");

const IMPORT = /(?:^|\n)\s*(import|export)\b([^"';]*?)\bfrom\s*["']([^"']+)["']/g;

/** A file's import statements: whether each is type-only, and what it names (packages as written, files resolved). */
function importsOf(file: string) {
  return [...readFileSync(file, "utf8").matchAll(IMPORT)].map(([, , clause, specifier]) => {
    const base = resolve(dirname(file), specifier!);
    const resolved = [base, `${base}.ts`, `${base}.tsx`].find((p) => existsSync(p) && statSync(p).isFile());
    return { typeOnly: /^\s*type\b/.test(clause!), specifier: specifier!, file: specifier!.startsWith(".") ? resolved : undefined };
  });
}

const appFiles = (dir: string): string[] =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return appFiles(path);
    return /\.tsx?$/.test(name) ? [path] : [];
  });

/** The files outside src/ui/app that the dashboard's code reaches, however far round. */
function serverFilesReached(): string[] {
  const seen = new Set<string>();
  const queue = appFiles(APP).flatMap((f) => importsOf(f).flatMap((i) => (i.file && !i.file.startsWith(APP) ? [i.file] : [])));
  while (queue.length) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    for (const i of importsOf(file)) if (i.file) queue.push(i.file);
  }
  return [...seen].map((f) => relative(SRC, f)).sort();
}

test("the dashboard reaches the server's response schemas only, and they import nothing but zod", () => {
  const reached = serverFilesReached();
  expect(reached).toContain("keys/responses.ts");
  for (const file of reached) {
    expect({ file, isResponses: file.endsWith("/responses.ts") }).toEqual({ file, isResponses: true });
    const packages = importsOf(join(SRC, file)).flatMap((i) => (i.file ? [] : [i.specifier]));
    expect({ file, packages: [...new Set(packages)] }).toEqual({ file, packages: ["zod"] });
  }
});

test("the dashboard imports the server's files for their types only: its bundle carries none of their code", () => {
  const valueImports = appFiles(APP).flatMap((f) =>
    importsOf(f)
      .filter((i) => i.file && !i.file.startsWith(APP) && !i.typeOnly)
      .map((i) => `${relative(SRC, f)} -> ${i.specifier}`),
  );
  expect(valueImports).toEqual([]);
  const zodValueImports = appFiles(APP)
    .filter((f) => importsOf(f).some((i) => i.specifier === "zod" && !i.typeOnly))
    .map((f) => relative(SRC, f));
  expect(zodValueImports).toEqual([]);
});

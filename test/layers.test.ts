import { expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

/**
 * The folders of src/ import each other as a tree of layers (issue 24): no file imports a file that imports it
 * back, however far round, and no folder does either. Type-only imports count: a cycle of types is still two
 * places that must change together. Text and macro imports of other kinds of file (SQL, CSS) are not modules.
 */

const SRC = resolve(import.meta.dir, "../src");

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return /\.tsx?$/.test(name) && !name.endsWith(".d.ts") ? [path] : [];
  });
}

/** The project files a file imports (relative specifiers resolved; packages and non-code files left out). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const specifiers = [
    ...text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^"';]*?\bfrom\s*["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g),
  ].map((m) => m[1] ?? m[2]!);
  return specifiers
    .filter((s) => s.startsWith("."))
    .map((s) => resolve(dirname(file), s))
    .flatMap((base) =>
      [base, `${base}.ts`, `${base}.tsx`, join(base, "index.ts")].filter((p) => existsSync(p) && statSync(p).isFile()).slice(0, 1),
    )
    .filter((p) => /\.tsx?$/.test(p));
}

/** Strongly connected components with more than one member (or a self-loop): the cycles. */
function cycles(graph: Map<string, Set<string>>): string[][] {
  let index = 0;
  const order = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    order.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!order.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, order.get(w)!));
    }
    if (low.get(v) === order.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || graph.get(v)?.has(v)) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!order.has(v)) visit(v);
  return found;
}

const files = sourceFiles(SRC);
const fileGraph = new Map(files.map((f) => [relative(SRC, f), new Set(importsOf(f).map((i) => relative(SRC, i)))]));

/** A file's layer: its folder under src/ (`store/pg/ledger.ts` → `store`), or the file itself at the top. */
const layerOf = (path: string) => (path.includes("/") ? path.split("/")[0]! : path);

test("no import cycle between the files of src/", () => {
  expect(cycles(fileGraph)).toEqual([]);
});

test("no import cycle between the folders of src/: they stand as layers", () => {
  const folderGraph = new Map<string, Set<string>>();
  for (const [file, imports] of fileGraph) {
    const from = layerOf(file);
    const to = folderGraph.get(from) ?? new Set<string>();
    for (const i of imports) if (layerOf(i) !== from) to.add(layerOf(i));
    folderGraph.set(from, to);
  }
  // Which file ties each pair of a cycle, for the message.
  const ties = (cycle: string[]) =>
    [...fileGraph].flatMap(([file, imports]) =>
      [...imports]
        .filter((i) => cycle.includes(layerOf(file)) && cycle.includes(layerOf(i)) && layerOf(i) !== layerOf(file))
        .map((i) => `${file} -> ${i}`),
    );
  expect(cycles(folderGraph).map((c) => ({ cycle: c, ties: ties(c) }))).toEqual([]);
});

test("the scanner sees imports: the proxy stands on the store, the vendors and the errors", () => {
  const proxy = [...fileGraph.get("proxy/admission.ts")!];
  expect(proxy).toEqual(expect.arrayContaining(["store/index.ts", "vendors/index.ts", "errors.ts"]));
});

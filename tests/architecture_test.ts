// Rules of the code's shape, checked on the source: the import graph of src/ has no circle;
// dependencies are reached through their public entry points only; and the ledger's state
// (counters, segments) is assigned to in ledger.ts alone. The type checker enforces the last
// too (read-only views); this catches what a cast would slip past it.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize, relative, resolve } from "node:path";
import type { Ledger, SegmentView } from "../src/engine/ledger.ts";

const root = resolve(import.meta.dirname ?? ".", "..");

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...sources(path));
    else if (name.endsWith(".ts")) out.push(path);
  }
  return out;
}

const SRC = [...sources(join(root, "src")), join(root, "mod.ts"), join(root, "cli.ts")];
const text = new Map(SRC.map((f) => [f, readFileSync(f, "utf8")]));

/** Every import and export-from specifier of a file, static or dynamic (comments aside). */
function specifiers(source: string): string[] {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const out: string[] = [];
  const re = /(?:import|export)\s[^;]*?from\s*"([^"]+)"|import\(\s*"([^"]+)"\s*\)/g;
  for (const m of code.matchAll(re)) out.push(m[1] ?? m[2]);
  return out;
}

describe("the code's shape", () => {
  it("src/ has no import circle (type imports count too)", () => {
    const graph = new Map<string, string[]>();
    for (const [file, source] of text) {
      graph.set(
        file,
        specifiers(source).filter((s) => s.startsWith(".")).map((s) =>
          normalize(resolve(dirname(file), s))
        ),
      );
    }
    const state = new Map<string, "open" | "done">();
    const cycles: string[] = [];
    const visit = (file: string, path: string[]) => {
      if (state.get(file) === "done") return;
      if (state.get(file) === "open") {
        cycles.push(
          [...path.slice(path.indexOf(file)), file].map((f) => relative(root, f)).join(" -> "),
        );
        return;
      }
      state.set(file, "open");
      for (const next of graph.get(file) ?? []) visit(next, [...path, file]);
      state.set(file, "done");
    };
    for (const file of graph.keys()) visit(file, []);
    assert.deepEqual(cycles, []);
  });

  it("dependencies are imported through their public entry points, never an internal path", () => {
    const deep: string[] = [];
    for (const [file, source] of text) {
      for (const s of specifiers(source)) {
        if (s.startsWith(".") || s.startsWith("node:")) continue;
        // "pkg" or "@scope/pkg", with no path after it.
        if (!/^(@[^/]+\/)?[^/]+$/.test(s)) deep.push(`${relative(root, file)}: ${s}`);
      }
    }
    assert.deepEqual(deep, []);
  });

  it("no file but ledger.ts assigns to the ledger's counters or to a segment's fields", () => {
    const fields = "size|records|sealed|oldestTimestamp|newestTimestamp|checkpoint|" +
      "checkpointDirty|gone|removedAs";
    const assignment = String.raw`\s*(?:[-+*/]?=(?!=)|\+\+|--)`;
    const rules = [
      new RegExp(String.raw`ledger\.counters(?:\.\w+|\[[^\]]+\])${assignment}`),
      new RegExp(String.raw`\b(?:seg|segment|s)\.(?:${fields})${assignment}`),
    ];
    const found: string[] = [];
    for (const [file, source] of text) {
      if (file.endsWith("src/engine/ledger.ts")) continue;
      source.split("\n").forEach((line, i) => {
        if (rules.some((r) => r.test(line))) {
          found.push(`${relative(root, file)}:${i + 1}: ${line}`);
        }
      });
    }
    assert.deepEqual(found, []);
  });

  it("the type checker refuses assignments to the ledger's state from outside it", () => {
    // Never called: `deno check` (in CI) fails if an expected error is missing.
    const _outside = (ledger: Ledger, seg: SegmentView) => {
      // @ts-expect-error: the counters are read-only outside the ledger
      ledger.counters.delivered++;
      // @ts-expect-error: a segment is read-only outside the ledger
      seg.sealed = true;
      // @ts-expect-error: so is its checkpoint
      seg.checkpoint.offset = 0;
    };
    assert.equal(typeof _outside, "function");
  });
});

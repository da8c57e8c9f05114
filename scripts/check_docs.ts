/**
 * Checks the code blocks and relative links of README.md and docs/**\/*.md.
 *
 * Every fenced code block is checked by its language:
 * - `sh`, `bash`, `shell`: `bash -n` (syntax only; nothing runs);
 * - `ts`, `typescript`: written to files in `.check_docs/` under the repository root and
 *   type-checked with one `deno check`. A snippet is written as if it sat at the root, so
 *   its relative imports are rewritten: `"./mod.ts"` is the repository's `mod.ts`, and so is
 *   `"../messagebuffer/mod.ts"` (an app in a directory next to a clone named messagebuffer);
 * - `json`: `JSON.parse`;
 * - a fence without a language is an error (use `text` for output and listings);
 * - any other language (`text`, `python`, `go`, ...) is not checked.
 *
 * A block whose fence follows the line `<!-- check: skip -->` (blank lines between are
 * allowed) is skipped. Every relative link must name a file that exists, and a `#fragment`
 * must name a heading of that file (GitHub's anchors).
 *
 * Each failure is printed as `FILE:LINE: what`; the exit code is 1 if there was any.
 *
 *   deno run -A scripts/check_docs.ts [FILE.md ...]
 *
 * @module
 */

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import process from "node:process";

const root = resolve(dirname(new URL(import.meta.url).pathname), "..");
const tmp = join(root, ".check_docs");
const SKIP = "<!-- check: skip -->";

/** One fenced code block. */
interface Block {
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  body: string;
  skip: boolean;
}

interface Failure {
  file: string;
  line: number;
  what: string;
}

const failures: Failure[] = [];
const fail = (file: string, line: number, what: string) => failures.push({ file, line, what });

function markdownFiles(): string[] {
  const out = ["README.md"];
  const walk = (dir: string) => {
    for (const e of readdirSync(join(root, dir), { withFileTypes: true })) {
      const p = `${dir}/${e.name}`;
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".md")) out.push(p);
    }
  };
  if (existsSync(join(root, "docs"))) walk("docs");
  return out.sort();
}

/** The fenced blocks of a Markdown text (fences may be indented, as inside a list). */
function blocksOf(file: string, text: string): Block[] {
  const lines = text.split("\n");
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([^\s`]*)/.exec(lines[i]);
    if (!open) continue;
    const [, indent, fence, info] = open;
    let prev = i - 1;
    while (prev >= 0 && lines[prev].trim() === "") prev--;
    const skip = prev >= 0 && lines[prev].trim() === SKIP;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const close = /^\s*(`{3,}|~{3,})\s*$/.exec(lines[j]);
      if (close && close[1][0] === fence[0] && close[1].length >= fence.length) break;
      // Drop the fence's indentation (no more than the line has).
      let k = 0;
      while (k < indent.length && lines[j][k] === " ") k++;
      body.push(lines[j].slice(k));
    }
    if (j === lines.length) fail(file, i + 1, "code block is never closed");
    blocks.push({ file, line: i + 1, lang: info.toLowerCase(), body: body.join("\n"), skip });
    i = j;
  }
  return blocks;
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .replace(/`/g, "")
    .replace(/\[([^\]]*)\]\([^)]*\)/g, "$1")
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}

function anchorsOf(text: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  let inFence = false;
  for (const line of text.split("\n")) {
    if (/^\s*(`{3,}|~{3,})/.test(line)) inFence = !inFence;
    const h = inFence ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!h) continue;
    const base = slug(h[1]);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** Relative links (not inside code) must reach a file, and a fragment a heading in it. */
function checkLinks(file: string, text: string): void {
  const lines = text.split("\n");
  let inFence = false;
  lines.forEach((line, i) => {
    if (/^\s*(`{3,}|~{3,})/.test(line)) inFence = !inFence;
    if (inFence) return;
    const prose = line.replace(/`[^`]*`/g, "");
    for (const m of prose.matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1];
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:, ...
      const [path, fragment] = target.split("#", 2);
      const dest = path === "" ? file : join(dirname(file), path);
      if (!existsSync(join(root, dest))) {
        fail(file, i + 1, `link to ${target}: no such file ${dest}`);
        continue;
      }
      if (fragment !== undefined && dest.endsWith(".md")) {
        const anchors = anchorsOf(readFileSync(join(root, dest), "utf8"));
        if (!anchors.has(fragment)) fail(file, i + 1, `link to ${target}: no heading #${fragment}`);
      }
    }
  });
}

/** Relative import specifiers of a snippet, as seen from `.check_docs/`. */
function rewriteImports(code: string): string {
  return code.replace(
    /(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(["'])(\.{1,2}\/[^"']*)\2/g,
    (_m, lead: string, q: string, spec: string) => {
      const fromRoot = spec.replace(/^(\.\.\/)+messagebuffer\//, "./");
      return `${lead}${q}${fromRoot.replace(/^\.\//, "../")}${q}`;
    },
  );
}

const files = process.argv.length > 2 ? process.argv.slice(2) : markdownFiles();
const blocks: Block[] = [];
for (const file of files) {
  const text = readFileSync(join(root, file), "utf8");
  blocks.push(...blocksOf(file, text));
  checkLinks(file, text);
}

rmSync(tmp, { recursive: true, force: true });
mkdirSync(tmp, { recursive: true });
/** Temp file name -> the block it holds. */
const written = new Map<string, Block>();
const nameOf = (b: Block, ext: string) =>
  `${b.file.replace(/[^A-Za-z0-9]+/g, "_")}_L${b.line}.${ext}`;
const counts = { sh: 0, ts: 0, json: 0, skipped: 0, unchecked: 0 };
try {
  const tsFiles: string[] = [];
  for (const b of blocks) {
    if (b.skip) {
      counts.skipped++;
      continue;
    }
    if (b.lang === "") {
      fail(b.file, b.line, "code block without a language (use ```text for output)");
    } else if (b.lang === "sh" || b.lang === "bash" || b.lang === "shell") {
      counts.sh++;
      const name = nameOf(b, "sh");
      writeFileSync(join(tmp, name), b.body + "\n");
      const r = spawnSync("bash", ["-n", join(tmp, name)], { encoding: "utf8" });
      if (r.status !== 0) {
        for (const m of (r.stderr || "bash -n failed").trim().split("\n")) {
          const at = /line (\d+):\s*(.*)$/.exec(m);
          if (at) fail(b.file, b.line + Number(at[1]), `sh: ${at[2]}`);
          else fail(b.file, b.line, `sh: ${m}`);
        }
      }
    } else if (b.lang === "ts" || b.lang === "typescript") {
      counts.ts++;
      const name = nameOf(b, "ts");
      writeFileSync(join(tmp, name), rewriteImports(b.body) + "\n");
      written.set(name, b);
      tsFiles.push(join(tmp, name));
    } else if (b.lang === "json") {
      counts.json++;
      try {
        JSON.parse(b.body);
      } catch (e) {
        fail(b.file, b.line, `json: ${(e as Error).message}`);
      }
    } else {
      counts.unchecked++;
    }
  }
  if (tsFiles.length > 0) {
    const deno = (globalThis as { Deno?: unknown }).Deno
      ? process.execPath
      : join(root, "node_modules/.bin/deno");
    const r = spawnSync(deno, ["check", "--quiet", ...tsFiles], {
      cwd: root,
      encoding: "utf8",
      env: { ...process.env, NO_COLOR: "1" },
    });
    if (r.status !== 0) {
      const out = `${r.stdout}${r.stderr}`;
      // Each error: its message, then "at file:///.../.check_docs/NAME.ts:LINE:COL".
      const re =
        /((?:TS\d+ \[ERROR\]|error):[^\n]*)[\s\S]*?at file:\/\/\S*?\.check_docs\/([^:\s]+):(\d+):\d+/g;
      let found = 0;
      for (const m of out.matchAll(re)) {
        const b = written.get(m[2]);
        if (!b) continue;
        found++;
        fail(b.file, b.line + Number(m[3]), `ts: ${m[1].replace(/^error:\s*/, "")}`);
      }
      if (found === 0) {
        fail(files.join(", "), 0, `ts: deno check failed:\n${out.trim()}`);
      }
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

for (const f of failures) console.error(`${f.file}:${f.line}: ${f.what}`);
(failures.length === 0 ? console.log : console.error)(
  `check_docs: ${files.length} files, ${blocks.length} code blocks (${counts.sh} sh, ${counts.ts} ts, ${counts.json} json checked; ${counts.skipped} skipped, ${counts.unchecked} in other languages): ${
    failures.length === 0 ? "OK" : `${failures.length} failures`
  }`,
);
process.exit(failures.length === 0 ? 0 : 1);

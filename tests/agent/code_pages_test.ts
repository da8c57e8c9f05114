// Giving back the resident pages of the executable's own file (src/agent/code_pages.ts): which
// mappings may be dropped, read from smaps text; then, under Bun, the process's own: the
// resident set of its file falls, and the code it runs afterwards still runs.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import process from "node:process";
import { codePageTrimmer, droppableMappings } from "../../src/agent/code_pages.ts";

/** A mapping's head line and the two fields read from its body, as `/proc/PID/smaps` has them. */
function mapping(range: string, perms: string, file: string, anonymousKb: number): string {
  return [
    `${range} ${perms} 00000000 00:2a 1234                      ${file}`,
    "Size:              78888 kB",
    "Rss:               17164 kB",
    `Anonymous:         ${anonymousKb} kB`,
    "VmFlags: rd ex mr mw me",
  ].join("\n");
}

describe("droppableMappings", () => {
  const exe = "/opt/mb/messagebuffer";

  it("takes the executable's read-only private mappings without private pages, and nothing else", () => {
    const smaps = [
      mapping("00200000-01a39000", "r--p", exe, 0), // read-only data: taken
      mapping("01a40000-0684a000", "r-xp", exe, 0), // code: taken
      mapping("0684a000-0685f000", "rw-p", exe, 44), // writable data: never
      mapping("0685f000-06867000", "r--p", exe, 12), // relocated at load (RELRO): never
      mapping("06870000-06871000", "r--s", exe, 0), // shared: not the executable's pages alone
      mapping("7f0000000000-7f0000100000", "r-xp", "/usr/lib/libc.so.6", 0), // another file
      mapping("7f1000000000-7f1040000000", "rw-p", "", 11956), // the heap
      mapping("7f2000000000-7f2000001000", "r-xp", `${exe} (deleted)`, 0), // not this path
    ].join("\n");
    assert.deepEqual(droppableMappings(smaps, exe), [
      { start: 0x00200000n, length: 0x01a39000n - 0x00200000n },
      { start: 0x01a40000n, length: 0x0684a000n - 0x01a40000n },
    ]);
  });

  it("takes nothing from text that is not smaps, or from a mapping whose body is cut off", () => {
    assert.deepEqual(droppableMappings("", exe), []);
    assert.deepEqual(droppableMappings("not smaps\nAnonymous: 0 kB", exe), []);
    const cut = mapping("00200000-01a39000", "r-xp", exe, 0).split("\n").slice(0, 2).join("\n");
    assert.deepEqual(droppableMappings(cut, exe), []);
  });
});

describe("codePageTrimmer", () => {
  it("under Bun on Linux, gives back pages of the running executable, which then runs on", () => {
    const trim = codePageTrimmer();
    const can = process.platform === "linux" && "Bun" in globalThis;
    assert.equal(trim !== null, can, "Bun on Linux only");
    if (trim === null) return;
    const rssFile = () =>
      Number(/RssFile:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"))![1]);
    const before = rssFile();
    const dropped = trim();
    const after = rssFile();
    assert.ok(dropped >= 1, `mappings dropped: ${dropped}`);
    assert.ok(after < before, `resident pages of files: ${before} kB before, ${after} kB after`);
    // What runs next faults its pages back in from the file: the runtime's own code (JSON,
    // regular expressions, typed arrays), and a second trim.
    const text = JSON.stringify({ a: [1, 2, 3], b: "x".repeat(1000) });
    assert.equal(JSON.parse(text).b.length, 1000);
    assert.match("topic\tkey\tvalue", /^(\w+)\t(\w+)\t(\w+)$/);
    assert.equal(new Uint8Array(new ArrayBuffer(64)).fill(7).reduce((n, x) => n + x, 0), 448);
    assert.ok(trim() >= 1, "a second trim");
  });
});

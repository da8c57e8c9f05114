// Giving back the resident pages of the executable's own file (src/agent/code_pages.ts): which
// mappings may be dropped, read from smaps text; then, under Bun, the process's own: the
// resident set of its file falls, and the code it runs afterwards still runs.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import process from "node:process";
import { codePageTrimmer, droppableMappings } from "../../src/agent/code_pages.ts";

/** One mapping as `/proc/PID/smaps` shows it (the fields read, and some that are not). */
function mapping(
  range: string,
  perms: string,
  o: { dev?: string; inode?: number; anonymousKb?: number; swapKb?: number; flags?: string },
): string {
  const flags = o.flags ?? (perms.includes("x") ? "rd ex mr mw me" : "rd mr mw me");
  return [
    `${range} ${perms} 01838000 ${o.dev ?? "fe:00"} ${
      o.inode ?? 5308934
    }                   /opt/mb/messagebuffer`,
    "Size:              78888 kB",
    "Rss:               17164 kB",
    `Anonymous:         ${o.anonymousKb ?? 0} kB`,
    "KSM:                   0 kB",
    `Swap:              ${o.swapKb ?? 0} kB`,
    "Locked:                0 kB",
    `VmFlags: ${flags}`,
  ].join("\n");
}

const exe = { major: 0xfe, minor: 0, inode: 5308934 };

describe("droppableMappings", () => {
  it("takes the executable's read-only private mappings whose pages are all the file's, and nothing else", () => {
    const smaps = [
      mapping("00200000-01a39000", "r--p", {}), // read-only data: taken
      mapping("01a40000-0684a000", "r-xp", {}), // code: taken
      mapping("0684a000-0685f000", "rw-p", { anonymousKb: 44, flags: "rd wr mr mw me ac" }),
      // JavaScriptCore's configuration, written at start, then made read-only: never.
      mapping("0685f000-06867000", "r--p", { anonymousKb: 12, flags: "rd mr mw me ac" }),
      // The same, its pages swapped out: Anonymous reads 0, but Swap and the flag do not.
      mapping("06870000-06878000", "r--p", { swapKb: 12, flags: "rd mr mw me ac" }),
      mapping("06880000-06888000", "r--p", { swapKb: 12 }), // a page of its own, swapped out
      mapping("06890000-06898000", "r--p", { flags: "rd mr mw me ac" }), // was writable once
      mapping("068a0000-068a8000", "r--s", {}), // shared: not the process's pages alone
      mapping("7f0000000000-7f0000100000", "r-xp", { inode: 4242 }), // another file
      mapping("7f0100000000-7f0100100000", "r-xp", { dev: "fe:01" }), // another device
    ].join("\n");
    assert.deepEqual(droppableMappings(smaps, exe), [
      { start: 0x00200000n, length: 0x01a39000n - 0x00200000n },
      { start: 0x01a40000n, length: 0x0684a000n - 0x01a40000n },
    ]);
  });

  it('finds the file by device and inode, whatever the path says (replaced on disk: "(deleted)")', () => {
    const smaps = mapping("01a40000-0684a000", "r-xp", {}).replace(
      "/opt/mb/messagebuffer",
      "/opt/mb/messagebuffer (deleted)",
    );
    assert.equal(droppableMappings(smaps, exe).length, 1);
  });

  it("takes nothing from text that is not smaps, or from a mapping whose body is cut off", () => {
    assert.deepEqual(droppableMappings("", exe), []);
    assert.deepEqual(droppableMappings("not smaps\nAnonymous: 0 kB", exe), []);
    const whole = mapping("00200000-01a39000", "r-xp", {}).split("\n");
    for (const keep of [2, 5, 7]) {
      const cut = whole.slice(0, keep).join("\n"); // (without VmFlags, Swap or Anonymous)
      assert.deepEqual(droppableMappings(cut, exe), [], `first ${keep} lines`);
    }
    assert.equal(droppableMappings(whole.join("\n"), exe).length, 1);
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

// The agent's check of a buffer directory's owner and mode, as a function of what stat says.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { bufferDirProblem, octalMode } from "../../src/agent/buffer_dir.ts";

const DIR = 0o040000;

describe("bufferDirProblem", () => {
  it("accepts the Debian package's directory (the agent's user, 0700) and any not writable by others", () => {
    for (const mode of [0o700, 0o750, 0o755, 0o500, 0o1700]) {
      assert.equal(
        bufferDirProblem("/var/lib/messagebuffer", { uid: 998, mode: DIR | mode }, 998),
        null,
      );
    }
  });

  it("refuses another user's directory, whatever its mode, naming owner, mode and the override", () => {
    const p = bufferDirProblem("/srv/b", { uid: 1000, mode: DIR | 0o700 }, 998);
    assert.match(
      p!,
      /^buffer directory "\/srv\/b" is owned by uid 1000 \(mode 0700\), not by the user the agent runs as \(uid 998\)/,
    );
    assert.match(p!, /--allow-unsafe-buffer-dir/);
    // Root's agent does not take a directory of an unprivileged user either (symlinks planted
    // there would be followed with root's rights).
    assert.ok(bufferDirProblem("/srv/b", { uid: 1000, mode: DIR | 0o700 }, 0));
  });

  it("refuses a directory its group or others may write to, saying which", () => {
    const cases: Array<[number, RegExp]> = [
      [0o770, /mode 0770\) is writable by its group, who/],
      [0o722, /mode 0722\) is writable by its group and others, who/],
      [0o703, /mode 0703\) is writable by others, who/],
      [0o1777, /mode 1777\) is writable by its group and others, who/],
    ];
    for (const [mode, msg] of cases) {
      assert.match(bufferDirProblem("/b", { uid: 5, mode: DIR | mode }, 5)!, msg);
    }
  });

  it("shows modes as four octal digits", () => {
    assert.equal(octalMode(DIR | 0o755), "0755");
    assert.equal(octalMode(DIR | 0o1777), "1777");
  });
});

// The node:fs adapter creates what it creates owner-only (directories 0700, files 0600)
// whatever the umask, and leaves the mode of what exists alone.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { chmod, mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import process from "node:process";
import { LockedError } from "../../mod.ts";
import { NodeFileSystem } from "../../src/fs/node.ts";
import { tempDir } from "../_helpers.ts";

const modeOf = async (path: string) => ((await stat(path)).mode & 0o7777).toString(8);

/** Runs `fn` with the process's umask set to `mask`. */
async function underUmask<T>(mask: number, fn: () => Promise<T>): Promise<T> {
  const old = process.umask(mask);
  try {
    return await fn();
  } finally {
    process.umask(old);
  }
}

describe("NodeFileSystem permissions", () => {
  for (const mask of [0o000, 0o022, 0o277]) {
    it(`creates directories 0700 and files 0600 under umask ${mask.toString(8)}`, async () => {
      const t = await tempDir();
      try {
        const fs = new NodeFileSystem();
        const dir = `${t.dir}/a/b/c`;
        await underUmask(mask, async () => {
          await fs.mkdirp(dir);
          const fh = await fs.open(`${dir}/0.seg`, "create");
          await fh.append(new Uint8Array([1, 2, 3]));
          await fh.close();
          const lock = await fs.lock(dir);
          assert.equal(await modeOf(`${dir}/LOCK`), "600");
          await lock.release();
        });
        for (const d of [`${t.dir}/a`, `${t.dir}/a/b`, dir]) {
          assert.equal(await modeOf(d), "700", d);
        }
        assert.equal(await modeOf(`${dir}/0.seg`), "600");
      } finally {
        await t.cleanup();
      }
    });
  }

  it("leaves the mode of an existing directory and file alone", async () => {
    const t = await tempDir();
    try {
      const fs = new NodeFileSystem();
      await mkdir(`${t.dir}/old`);
      await chmod(`${t.dir}/old`, 0o755);
      const fh = await fs.open(`${t.dir}/old/x`, "create");
      await fh.close();
      await chmod(`${t.dir}/old/x`, 0o640);
      await fs.mkdirp(`${t.dir}/old`);
      await fs.mkdirp(`${t.dir}/old/new`);
      await (await fs.open(`${t.dir}/old/x`, "append")).close();
      assert.equal(await modeOf(`${t.dir}/old`), "755");
      assert.equal(await modeOf(`${t.dir}/old/new`), "700");
      assert.equal(await modeOf(`${t.dir}/old/x`), "640");
    } finally {
      await t.cleanup();
    }
  });
});

// The directory lock after a power cut: its LOCK file may be cut short (its write never
// reached the disk) or name a pid that a process of the new boot now has.
describe("NodeFileSystem lock", () => {
  const fs = new NodeFileSystem();
  const live = process.ppid; // a process that runs now, not this one
  const boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();

  async function withLock(content: string, fn: (dir: string) => Promise<void>) {
    const t = await tempDir();
    try {
      await writeFile(`${t.dir}/LOCK`, content);
      await fn(t.dir);
    } finally {
      await t.cleanup();
    }
  }

  it("writes its pid and this boot's id, and removes the file on release", async () => {
    await withLock("", async (dir) => {
      await rm(`${dir}/LOCK`);
      const lock = await fs.lock(dir);
      assert.equal(await readFile(`${dir}/LOCK`, "utf8"), `${process.pid} ${boot}\n`);
      await assert.rejects(fs.lock(dir), LockedError);
      await lock.release();
      await assert.rejects(stat(`${dir}/LOCK`), /ENOENT/);
    });
  });

  it("refuses a directory whose LOCK names a live process of this boot, in either format", async () => {
    for (const content of [`${live} ${boot}\n`, `${live}\n`]) {
      await withLock(content, async (dir) => {
        await assert.rejects(fs.lock(dir), (e) => {
          assert.ok(e instanceof LockedError);
          assert.match(e.message, new RegExp(`in use by process ${live}\\b`));
          return true;
        });
      });
    }
  });

  it("takes over a LOCK cut short by a power cut, or one of an earlier boot naming a live pid", async () => {
    const cases = {
      "empty": "",
      "a piece of the line (the pid 2, alive, is a prefix of it)": "2",
      "zeros": "\0\0\0\0\0\0",
      "an earlier boot": `${live} 00000000-0000-4000-8000-000000000000\n`,
    };
    for (const [what, content] of Object.entries(cases)) {
      await withLock(content, async (dir) => {
        const lock = await fs.lock(dir);
        assert.equal(await readFile(`${dir}/LOCK`, "utf8"), `${process.pid} ${boot}\n`, what);
        await lock.release();
      });
    }
  });
});

// The node:fs adapter creates what it creates owner-only (directories 0700, files 0600)
// whatever the umask, and leaves the mode of what exists alone.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdir, stat } from "node:fs/promises";
import process from "node:process";
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

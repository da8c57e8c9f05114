// pcfs, the power-cut file system the power-cut loop runs the agent on: what it keeps at a
// cut is what was fsynced plus what the mode says of the rest, and after the cut every call
// fails like a dead disk. Skipped (saying why) without root, /dev/fuse or Go.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, open, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { buildPcfs, Pcfs, pcfsUnavailable } from "../_pcfs.ts";
import { tempDir } from "../_helpers.ts";

const PAGE = 4096;
const why = pcfsUnavailable();

/** `n` bytes, each page filled with its page number plus one (so no page reads as zeros). */
function pages(n: number, from = 0): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = ((from + i) / PAGE + 1) & 0xff;
  return b;
}

describe("pcfs (power-cut file system)", { skip: why ?? false }, () => {
  let t: { dir: string; cleanup: () => Promise<void> };
  let bin = "";
  before(async () => {
    t = await tempDir("mb-pcfs-");
    const built = await buildPcfs(t.dir);
    if ("error" in built) throw new Error(built.error);
    bin = built.path;
  });
  after(() => t.cleanup());

  /** A fresh mount over a fresh directory: the mount, the backing directory and the mountpoint. */
  async function fresh(name: string) {
    const backing = join(t.dir, `${name}-disk`), mnt = join(t.dir, `${name}-mnt`);
    await mkdir(backing);
    await mkdir(mnt);
    const fs = await Pcfs.mount(bin, mnt, backing, join(t.dir, `${name}.sock`));
    return { fs, backing, mnt };
  }

  it("keeps what was fsynced and drops the rest at a cut; then every call fails with EIO", async () => {
    const { fs, backing, mnt } = await fresh("drop");
    try {
      const fh = await open(join(mnt, "f"), "w");
      await fh.write(pages(3 * PAGE), 0, 3 * PAGE, 0);
      await fh.datasync();
      await fh.write(pages(2 * PAGE, 3 * PAGE), 0, 2 * PAGE, 3 * PAGE);
      // The unsynced writes are readable through the mount, as from a page cache...
      assert.equal((await stat(join(mnt, "f"))).size, 5 * PAGE);
      assert.deepEqual(new Uint8Array(await readFile(join(mnt, "f"))), pages(5 * PAGE));
      // ...but not on the disk yet.
      assert.equal((await stat(join(backing, "f"))).size, 3 * PAGE);
      assert.equal(await fs.command("unsynced"), `ok files 1 bytes ${2 * PAGE}`);
      assert.match(await fs.cut("drop", 1), /^ok files 1 kept 0 dropped 8192$/);
      await assert.rejects(fh.write(new Uint8Array(1), 0, 1, 0), /EIO|Input\/output error/);
      await assert.rejects(readFile(join(mnt, "f")), /EIO|Input\/output error/);
      await fh.close().catch(() => {});
    } finally {
      await fs.unmount();
    }
    assert.deepEqual(new Uint8Array(await readFile(join(backing, "f"))), pages(3 * PAGE));
  });

  it("prefix keeps a prefix of the unsynced writes; holes keeps whole pages, zeros between", async () => {
    const seen = { holes: 0, short: 0 };
    for (const mode of ["prefix", "holes"] as const) {
      for (let seed = 1; seed <= 4; seed++) {
        const { fs, backing, mnt } = await fresh(`${mode}${seed}`);
        await writeFile(join(backing, "f"), pages(PAGE)); // on the disk before the mount
        try {
          const fh = await open(join(mnt, "f"), "r+");
          for (let p = 1; p < 8; p++) await fh.write(pages(PAGE, p * PAGE), 0, PAGE, p * PAGE);
          await fs.cut(mode, seed);
          await fh.close().catch(() => {});
        } finally {
          await fs.unmount();
        }
        const got = new Uint8Array(await readFile(join(backing, "f")));
        const want = pages(got.length);
        assert.deepEqual(got.subarray(0, PAGE), want.subarray(0, PAGE), `${mode} ${seed}: synced`);
        for (let at = PAGE; at < got.length; at += PAGE) {
          const page = got.subarray(at, at + PAGE);
          const whole = page.every((b, i) => b === want[at + i]);
          const zero = page.every((b) => b === 0);
          assert.ok(whole || (mode === "holes" && zero), `${mode} ${seed}: page ${at / PAGE}`);
          if (!whole) seen.holes++;
          // A prefix has no hole: once a page is missing, the file ends.
          if (mode === "prefix") assert.ok(whole);
        }
        if (got.length < 8 * PAGE) seen.short++;
      }
    }
    // The seeds did tear: some files came back short, some with holes.
    assert.ok(seen.holes > 0 && seen.short > 0, JSON.stringify(seen));
  });
});

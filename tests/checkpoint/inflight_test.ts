// The in-flight file: two slots written in turn, the newest valid one read back; a torn
// write falls back to the entry before it; an entry larger than a slot grows the file.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import {
  INFLIGHT_FIRST_CAPACITY,
  type InflightEntry,
  InflightFile,
  loadInflight,
} from "../../src/checkpoint/inflight.ts";

const PATH = "/buf/INFLIGHT";

function entry(n: number, identity: string | null = `id-${n}`): InflightEntry {
  return {
    segment: "00000000000000000000-abc.seg",
    from: { offset: 64 + n, skip: 0 },
    next: { offset: 128 + n, skip: 1 },
    ttlLimit: null,
    records: n,
    at: 1_700_000_000_000,
    provider: "kafka",
    identity,
  };
}

async function fresh(): Promise<MemoryFileSystem> {
  const fs = new MemoryFileSystem();
  await fs.mkdirp("/buf");
  return fs;
}

describe("in-flight file", () => {
  it("reads back the entry written last, across reopening", async () => {
    const fs = await fresh();
    const { file, created } = await InflightFile.open(fs, PATH);
    assert.equal(created, true);
    await file.write(entry(1), true, "/buf");
    await file.write(entry(2), true, "/buf");
    await file.write(entry(3), true, "/buf");
    await file.close();
    assert.deepEqual(await loadInflight(fs, PATH), entry(3));
    // A new process goes on from there: its next entry is newer, whatever slot it lands in.
    const again = await InflightFile.open(fs, PATH);
    assert.equal(again.created, false);
    await again.file.write(entry(4, null), true, "/buf");
    await again.file.close();
    assert.deepEqual(await loadInflight(fs, PATH), entry(4, null));
    assert.equal((await fs.stat(PATH))!.size, 2 * INFLIGHT_FIRST_CAPACITY);
  });

  it("falls back to the entry before when the last write was torn or never synced", async () => {
    const fs = await fresh();
    const { file } = await InflightFile.open(fs, PATH);
    await fs.syncDir("/buf"); // as the ledger does for a new file
    await file.write(entry(1), true, "/buf");
    await file.write(entry(2), false, "/buf"); // not fsynced: a power cut may take it back
    for (const cut of [{}, { torn: true }, { holes: true }]) {
      const after = fs.crash(cut);
      const found = await loadInflight(after, PATH);
      assert.ok(
        found !== null && (found.records === 1 || found.records === 2),
        `after a cut ${JSON.stringify(cut)}: ${JSON.stringify(found)}`,
      );
    }
    // The written slot's bytes damaged: the other slot is read.
    const bytes = (await fs.readFile(PATH))!;
    const damaged = new MemoryFileSystem();
    await damaged.mkdirp("/buf");
    const fh = await damaged.open(PATH, "create");
    bytes[INFLIGHT_FIRST_CAPACITY + 40] ^= 0xff; // entry 2 is in slot 1
    await fh.writeAt(bytes, 0);
    await fh.close();
    assert.deepEqual(await loadInflight(damaged, PATH), entry(1));
  });

  it("grows for an entry larger than a slot, and reads it back", async () => {
    const fs = await fresh();
    const { file } = await InflightFile.open(fs, PATH);
    await file.write(entry(1), true, "/buf");
    const big = entry(2, "x".repeat(3 * INFLIGHT_FIRST_CAPACITY));
    assert.equal(await file.write(big, true, "/buf"), true);
    assert.deepEqual(await loadInflight(fs, PATH), big);
    await file.write(entry(3), true, "/buf");
    await file.close();
    assert.deepEqual(await loadInflight(fs, PATH), entry(3));
    assert.equal((await fs.stat(PATH))!.size, 2 * 4 * INFLIGHT_FIRST_CAPACITY);
    assert.equal(await fs.stat(`${PATH}.new`), null);
  });

  it("reads a missing, empty or foreign file as no entry, and starts such a file over", async () => {
    const fs = await fresh();
    assert.equal(await loadInflight(fs, PATH), null);
    for (const content of [new Uint8Array(0), new TextEncoder().encode("not an in-flight file")]) {
      await fs.remove(PATH);
      const fh = await fs.open(PATH, "create");
      await fh.writeAt(content, 0);
      await fh.close();
      assert.equal(await loadInflight(fs, PATH), null);
      const { file, created } = await InflightFile.open(fs, PATH);
      assert.equal(created, true);
      await file.write(entry(5), true, "/buf");
      await file.close();
      assert.deepEqual(await loadInflight(fs, PATH), entry(5));
    }
  });
});

// S files: two slots written in turn in place; the reader takes the newest valid one.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  CheckpointFile,
  encodeSlot,
  loadCheckpoint,
  SLOT_SIZE,
} from "../../src/checkpoint/checkpoint.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";

const DIR = "/buf";
const PATH = `${DIR}/00000000000000000000-00000000001.s`;

async function fresh(): Promise<MemoryFileSystem> {
  const fs = new MemoryFileSystem();
  await fs.mkdirp(DIR);
  return fs;
}

describe("S files", () => {
  it("commit in turn to two slots and read back the newest", async () => {
    const fs = await fresh();
    const { file, created } = await CheckpointFile.open(fs, PATH, true);
    assert.ok(created);
    for (let i = 1; i <= 5; i++) {
      await file.commit({ offset: 16 + i * 100, skip: 0, delivered: i * 10 });
      assert.deepEqual(await loadCheckpoint(fs, PATH), {
        offset: 16 + i * 100,
        skip: 0,
        delivered: i * 10,
      });
    }
    await file.close();
    assert.equal(fs.peek(PATH)!.length, 2 * SLOT_SIZE);
  });

  it("a torn write spoils one slot only: the reader falls back one commit", async () => {
    const fs = await fresh();
    const { file } = await CheckpointFile.open(fs, PATH, true);
    await file.commit({ offset: 100, skip: 0, delivered: 10 }); // slot 0
    await file.commit({ offset: 200, skip: 3, delivered: 23 }); // slot 1
    await file.close();
    // Half of slot 1 rewritten, as a power loss in the middle of the next write to it leaves.
    fs.corrupt(PATH, SLOT_SIZE + 8, new Uint8Array(8).fill(0x5a));
    assert.deepEqual(await loadCheckpoint(fs, PATH), { offset: 100, skip: 0, delivered: 10 });
    // Reopened, the writer writes over the spoiled slot, never the one still good.
    const again = await CheckpointFile.open(fs, PATH, true);
    assert.equal(again.created, false);
    await again.file.commit({ offset: 300, skip: 0, delivered: 40 });
    await again.file.close();
    fs.corrupt(PATH, 8, new Uint8Array(8).fill(0x5a)); // now spoil slot 0
    assert.equal(typeof (await loadCheckpoint(fs, PATH)), "object");
    assert.deepEqual(await loadCheckpoint(fs, PATH), { offset: 300, skip: 0, delivered: 40 });
  });

  it("after a failed commit writes the same slot again, never the last good one", async () => {
    const fs = await fresh();
    const { file } = await CheckpointFile.open(fs, PATH, true);
    await file.commit({ offset: 100, skip: 0, delivered: 10 }); // slot 0, synced
    await fs.syncDir(DIR); // the new file's entry, as the ledger does after a first commit
    fs.failNext("sync", "EIO", PATH);
    await assert.rejects(file.commit({ offset: 200, skip: 0, delivered: 20 })); // slot 1
    await file.commit({ offset: 300, skip: 0, delivered: 30 }); // slot 1 again
    await file.close();
    // A power loss now keeps what was synced: slot 0 must still hold the first position.
    const slot0 = fs.crash().peek(PATH)!.subarray(0, SLOT_SIZE);
    assert.deepEqual(slot0, encodeSlot({ offset: 100, skip: 0, delivered: 10 }));
    assert.deepEqual(await loadCheckpoint(fs, PATH), { offset: 300, skip: 0, delivered: 30 });
  });

  it("reads a one-slot file as written before the two-slot layout, and names what is wrong", async () => {
    const fs = await fresh();
    const fh = await fs.open(PATH, "create");
    await fh.append(encodeSlot({ offset: 16, skip: 2, delivered: 2 }));
    await fh.close();
    assert.deepEqual(await loadCheckpoint(fs, PATH), { offset: 16, skip: 2, delivered: 2 });
    assert.equal(await loadCheckpoint(fs, `${DIR}/missing.s`), null);
  });

  it("names what is wrong with a file of two slots neither of which is valid", async () => {
    const fs = await fresh();
    const fh = await fs.open(PATH, "create");
    await fh.append(encodeSlot({ offset: 16, skip: 2, delivered: 2 }));
    await fh.append(encodeSlot({ offset: 116, skip: 0, delivered: 9 }));
    await fh.close();
    fs.corrupt(PATH, 0, new Uint8Array([0, 0, 0, 0]));
    fs.corrupt(PATH, 40, new Uint8Array([0xff]));
    assert.match(String(await loadCheckpoint(fs, PATH)), /bad magic/);
    const more = await fs.open(PATH, "append");
    await more.append(new Uint8Array([1]));
    await more.close();
    assert.match(String(await loadCheckpoint(fs, PATH)), /size 65, expected 32 or 64/);
  });

  // What a power cut leaves of an S file whose first write (or the first write of its second
  // slot) did not reach the disk: the file was created, the data was not all written.
  it("an S file cut short by a power loss: no position when no slot was whole, else the whole one", async () => {
    const fs = await fresh();
    const slot = encodeSlot({ offset: 116, skip: 1, delivered: 7 });
    const cases: Array<[string, Uint8Array, unknown]> = [
      ["empty (created, its first write lost)", new Uint8Array(0), null],
      ["zeros where the first slot goes", new Uint8Array(32), null],
      ["a piece of the first slot", slot.slice(0, 19), null],
      ["the first slot with a hole", Uint8Array.from(slot).fill(0, 8, 20), null],
      ["64 zero bytes", new Uint8Array(64), null],
      ["slot 0, then a piece of slot 1", concat(slot, slot.slice(0, 17)), {
        offset: 116,
        skip: 1,
        delivered: 7,
      }],
    ];
    for (const [what, bytes, expected] of cases) {
      await fs.remove(PATH);
      const fh = await fs.open(PATH, "create");
      await fh.append(bytes);
      await fh.close();
      assert.deepEqual(await loadCheckpoint(fs, PATH), expected, what);
    }
  });
});

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

// The sync mark: two slots written in turn in place; what recovery learns from it.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  knownSynced,
  loadSyncMark,
  markNames,
  SyncMarkFile,
  syncMarkOf,
} from "../../src/checkpoint/sync_mark.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";

const DIR = "/buf";
const PATH = `${DIR}/SYNCED`;
const SEG = "00000000000000000100-0000000000a.seg";

describe("sync mark", () => {
  it("reads back the newest of its two slots, and the one before when a power cut tears a write", async () => {
    const fs = new MemoryFileSystem();
    await fs.mkdirp(DIR);
    assert.equal(await loadSyncMark(fs, PATH), null);
    const { file, created } = await SyncMarkFile.open(fs, PATH);
    assert.ok(created);
    await fs.syncDir(DIR);
    await file.write(syncMarkOf(SEG, 100, 4000)); // slot 0
    await file.write(syncMarkOf(SEG, 100, 9000)); // slot 1
    await file.write(syncMarkOf(SEG, 100, 11000)); // slot 0
    assert.equal((await loadSyncMark(fs, PATH))?.synced, 11000);
    // A power cut tears the last write: part of slot 0 reads as zeros.
    const after = fs.crash();
    after.corrupt(PATH, 12, new Uint8Array(10)); // slot 0
    const mark = await loadSyncMark(after, PATH);
    assert.equal(mark?.synced, 9000);
    assert.ok(mark && markNames(mark, SEG, 100));
    assert.ok(mark && !markNames(mark, SEG.replace("a.seg", "b.seg"), 100));
    // Reopened, it writes over the slot that does not hold the newest mark.
    const again = await SyncMarkFile.open(after, PATH);
    assert.equal(again.created, false);
    await again.file.write(syncMarkOf(SEG, 100, 12000));
    assert.equal((await loadSyncMark(after, PATH))?.synced, 12000);
    await again.file.write(syncMarkOf(SEG, 100, 13000));
    assert.equal((await loadSyncMark(after, PATH))?.synced, 13000);
    // The directory emptied and a process started over at sequence number 0: its mark is the
    // one written last, not the one with the higher sequence number.
    const restarted = await SyncMarkFile.open(after, PATH);
    await restarted.file.write({ firstSeq: 0, nameCrc: 0, synced: 0 });
    assert.deepEqual(await loadSyncMark(after, PATH), { firstSeq: 0, nameCrc: 0, synced: 0 });
    const reopened = await SyncMarkFile.open(after, PATH);
    await reopened.file.write(syncMarkOf(SEG, 0, 500));
    assert.equal((await loadSyncMark(after, PATH))?.synced, 500);
  });

  it("says how far each segment was known fsynced: all before the marked one, its size, nothing after", () => {
    const mark = syncMarkOf(SEG, 100, 5000);
    const h = 16;
    assert.equal(knownSynced(mark, 3, 2, 50, h), Infinity);
    assert.equal(knownSynced(mark, 3, 3, 100, h), 5000);
    assert.equal(knownSynced(mark, 3, 4, 180, h), h);
    // The marked segment is gone (delivered): its sequence number still divides the others.
    assert.equal(knownSynced(mark, -1, 0, 50, h), Infinity);
    assert.equal(knownSynced(mark, -1, 0, 180, h), h);
    // As written at start: every segment below the first sequence number the process writes.
    const start = { firstSeq: 100, nameCrc: 0, synced: 0 };
    assert.equal(knownSynced(start, -1, 0, 99, h), Infinity);
    assert.equal(knownSynced(start, -1, 1, 100, h), h);
    // No mark: recovery judges by the bytes.
    assert.equal(knownSynced(null, -1, 0, 100, h), undefined);
  });
});

// Under fsync "interval", the periodic fsync of the active segment runs beside the writes: a
// slow disk does not hold up the frames written meanwhile, nor their answers.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { MessageBuffer } from "../../mod.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import { memoryBufferOptions, RecordingProvider, waitFor } from "../_helpers.ts";

describe("the periodic fsync", () => {
  it('under "interval", writes are stored and answered while the periodic fsync runs (a slow disk does not hold them up)', async () => {
    const fs = new MemoryFileSystem();
    const p = new RecordingProvider();
    // While `holding`, every fsync waits until the test lets it go.
    let holding = false, started = 0, ended = 0;
    const held: Array<() => void> = [];
    const slow = fs._slow.bind(fs);
    fs._slow = <T>(op: Parameters<typeof fs._slow>[0], fn: () => T): Promise<T> => {
      if (op !== "sync" || !holding) return slow(op, fn);
      started++;
      return new Promise<void>((r) => held.push(r)).then(() => slow(op, fn)).finally(() => ended++);
    };
    const b = await MessageBuffer.open(
      memoryBufferOptions(fs, p, { fsync: "interval", fsyncIntervalMs: 5, closeTimeoutMs: 2000 }),
    );
    await b.write("t", "first");
    await b.drained(5000);
    // From here, the next fsync is the periodic one of the segment (S files are not fsynced
    // under "interval"; the sync mark is written after the segment's fsync ends).
    holding = true;
    await waitFor(() => started > 0, 5000, "the periodic fsync to start");
    let answered = false;
    const second = b.write("t", "second").then(() => (answered = true));
    try {
      // (Before, the write waited behind the held fsync: never answered while it is held.)
      await waitFor(() => answered, 5000, "the write to be answered while the fsync is held");
      assert.equal(ended, 0);
    } finally {
      holding = false;
      for (const go of held.splice(0)) go();
    }
    await second;
    await b.drained(5000);
    assert.deepEqual(p.values(), ["first", "second"]);
    await b.close();
    assert.equal(ended, started);
  });
});

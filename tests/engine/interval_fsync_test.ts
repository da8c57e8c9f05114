// Under fsync "interval", the periodic fsyncs run beside the work they make durable: a slow
// disk holds up neither the frames written meanwhile (the segment's fsync) nor the deliveries
// (the fsync of the S file and the in-flight file); and no file is closed under its fsync.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { MessageBuffer } from "../../mod.ts";
import { setImmediate } from "node:timers";
import { CheckpointFile, loadCheckpoint } from "../../src/checkpoint/checkpoint.ts";
import { type InflightEntry, InflightFile, loadInflight } from "../../src/checkpoint/inflight.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import { memoryBufferOptions, RecordingProvider, waitFor } from "../_helpers.ts";

/** An in-flight file's entry. */
const ENTRY: InflightEntry = {
  segment: "00000000000000000000-00000000001.seg",
  from: { offset: 16, skip: 0 },
  next: { offset: 64, skip: 1 },
  ttlLimit: null,
  records: 1,
  at: 1_700_000_000_000,
  provider: "kafka",
  identity: null,
};

/**
 * Makes every fsync of a file `which` picks wait, while `holding`, until `release()`; counts
 * those started and ended (an fsync of a closed file fails, and is counted as failed).
 */
function holdSyncs(fs: MemoryFileSystem, which: (path: string) => boolean) {
  const held: Array<() => void> = [];
  const h = {
    holding: true,
    started: 0,
    ended: 0,
    failed: 0,
    /** Lets every held fsync go, and stops holding. */
    release: () => {
      h.holding = false;
      for (const go of held) go();
    },
    /** Lets the `i`-th fsync held (from 0, in the order they started) go. */
    releaseOne: (i: number) => held[i](),
  };
  const slow = fs._slow.bind(fs);
  fs._slow = <T>(op: Parameters<typeof fs._slow>[0], fn: () => T, path?: string): Promise<T> => {
    if (op !== "sync" || !h.holding || path === undefined || !which(path)) {
      return slow(op, fn, path);
    }
    h.started++;
    return new Promise<void>((r) => held.push(r)).then(() => slow(op, fn, path)).then(
      (v) => (h.ended++, v),
      (e) => (h.ended++, h.failed++, Promise.reject(e)),
    );
  };
  return h;
}

describe("the periodic fsync", () => {
  it('under "interval", writes are stored and answered while the periodic fsync runs (a slow disk does not hold them up)', async () => {
    const fs = new MemoryFileSystem();
    const p = new RecordingProvider();
    const h = holdSyncs(fs, (path) => path.endsWith(".seg"));
    h.holding = false;
    const b = await MessageBuffer.open(
      memoryBufferOptions(fs, p, { fsync: "interval", fsyncIntervalMs: 5, closeTimeoutMs: 2000 }),
    );
    await b.write("t", "first");
    await b.drained(5000);
    // From here, the segment's next fsync is the periodic one.
    h.holding = true;
    await waitFor(() => h.started > 0, 5000, "the periodic fsync to start");
    let answered = false;
    const second = b.write("t", "second").then(() => (answered = true));
    try {
      // (Before, the write waited behind the held fsync: never answered while it is held.)
      await waitFor(() => answered, 5000, "the write to be answered while the fsync is held");
      assert.equal(h.ended, 0);
    } finally {
      h.release();
    }
    await second;
    await b.drained(5000);
    assert.deepEqual(p.values(), ["first", "second"]);
    await b.close();
    assert.equal(h.ended, h.started);
  });

  it('under "interval", batches are delivered and their checkpoints written while the periodic fsync of the S file and the in-flight file runs', async () => {
    const fs = new MemoryFileSystem();
    const p = new RecordingProvider();
    const h = holdSyncs(fs, (path) => path.endsWith(".s") || path.endsWith("/INFLIGHT"));
    const b = await MessageBuffer.open(
      memoryBufferOptions(fs, p, { fsync: "interval", fsyncIntervalMs: 5, closeTimeoutMs: 2000 }),
    );
    try {
      await b.write("t", "first");
      // Its S file (or in-flight file) write is fsynced on the next tick: held.
      await waitFor(() => h.started > 0, 5000, "a periodic fsync of the S or in-flight file");
      // (Before, that fsync ran in the metadata queue: the next batch's in-flight write or
      // the checkpoint write after it waited behind it, and "third" was never sent.)
      for (const v of ["second", "third"]) {
        await b.write("t", v);
        await waitFor(() => p.values().includes(v), 5000, `"${v}" delivered while held`);
      }
      await b.drained(5000);
      assert.equal(h.ended, 0);
    } finally {
      h.release();
    }
    await b.close();
    assert.deepEqual(p.values(), ["first", "second", "third"]);
    assert.equal(h.ended, h.started);
    assert.equal(h.failed, 0);
    assert.equal(b.stats().counters.storageErrors, 0);
  });

  it("an S file or in-flight file is closed only once all its fsyncs have ended", async () => {
    const fs = new MemoryFileSystem();
    await fs.mkdirp("/buf");
    const h = holdSyncs(fs, () => true);
    const s = (await CheckpointFile.open(fs, "/buf/00000000000000000000-00000000001.s", false))
      .file;
    await s.commit({ offset: 16, skip: 0, delivered: 1 });
    const inflight = (await InflightFile.open(fs, "/buf/INFLIGHT")).file;
    await inflight.write(ENTRY, false, "/buf");
    // Two fsyncs of each file overlap; the later ones end first.
    const syncs = [s.sync(), inflight.sync(), s.sync(), inflight.sync()];
    await waitFor(() => h.started === 4, 5000, "the fsyncs to start");
    const closes = [s.close(), inflight.close()];
    h.releaseOne(2);
    h.releaseOne(3);
    await waitFor(() => h.ended === 2, 5000, "the later fsyncs to end");
    await new Promise((r) => setImmediate(r));
    // A close that waited only for the last fsync has closed the files by now: the earlier
    // fsyncs, let go after it, fail on closed files (EBADF).
    h.release();
    await Promise.all([...syncs, ...closes]);
    assert.equal(h.failed, 0);
  });

  it("a close syncs the S file and the in-flight file again when an fsync of theirs failed", async () => {
    const fs = new MemoryFileSystem();
    await fs.mkdirp("/buf");
    const path = "/buf/00000000000000000000-00000000001.s";
    const s = (await CheckpointFile.open(fs, path, false)).file;
    await fs.syncDir("/buf");
    await s.commit({ offset: 16, skip: 0, delivered: 1 });
    fs.failNext("sync", "EIO", path);
    await assert.rejects(s.sync(), /EIO/);
    // (The ledger's periodic sync failed; the segment's delivery moves on and its S file is
    // closed: the position written must not stay unsynced.)
    await s.close();
    assert.deepEqual(await loadCheckpoint(fs.crash(), path), {
      offset: 16,
      skip: 0,
      delivered: 1,
    });
    const inflight = (await InflightFile.open(fs, "/buf/INFLIGHT")).file;
    await fs.syncDir("/buf");
    await inflight.write(ENTRY, false, "/buf");
    fs.failNext("sync", "EIO", "/buf/INFLIGHT");
    await assert.rejects(inflight.sync(), /EIO/);
    await inflight.close();
    assert.deepEqual(await loadInflight(fs.crash(), "/buf/INFLIGHT"), ENTRY);
  });
});

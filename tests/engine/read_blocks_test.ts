// Read memory used again while draining (ReadBlocks, RecordPool, Provider.releasesRecords): a
// block or a record object must not serve a later read while a record decoded into it can
// still be read, and a provider that does not say it lets go of its records never sees them
// change.
import { afterEach, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type Provider, type ProviderRecord, type SendResult, silentLogger } from "../../mod.ts";
import { readdir, stat, writeFile } from "node:fs/promises";
import {
  type ReadBlock,
  ReadBlocks,
  readSegmentRecords,
  SegmentCursor,
} from "../../src/segment/reader.ts";
import { NodeFileSystem } from "../../src/fs/node.ts";
import { RecordPool } from "../../src/binary/ranges.ts";
import { OpenBuffers, tempDir, waitFor } from "../_helpers.ts";

describe("ReadBlocks", () => {
  it("serves a block again only once every holder has let go of it", () => {
    const blocks = new ReadBlocks();
    const a = blocks.take(1000);
    blocks.hold(a); // a batch with records in it
    blocks.release(a); // the window moves on
    assert.equal(blocks.freeCount, 0);
    assert.notEqual(blocks.take(1000), a, "a held block was handed out again");
    blocks.release(a); // the batch is delivered
    assert.equal(blocks.freeCount, 1);
    assert.equal(blocks.take(10), a);
    assert.equal(a.refs, 1);
  });

  it("hands out the smallest free block that fits, else a new one of the size asked", () => {
    const blocks = new ReadBlocks();
    const [big, small] = [blocks.take(1 << 20), blocks.take(4096)];
    blocks.release(big);
    blocks.release(small);
    assert.equal(blocks.take(100), small);
    assert.equal(blocks.take(100), big);
    const fresh = blocks.take(100);
    assert.equal(fresh.bytes.length, 100);
  });

  it(`keeps at most ${ReadBlocks.KEEP} free blocks, the largest, and none over ${ReadBlocks.MAX_BYTES} bytes`, () => {
    const blocks = new ReadBlocks();
    const taken = Array.from({ length: ReadBlocks.KEEP + 2 }, (_, i) => blocks.take(1000 + i));
    for (const b of taken) blocks.release(b);
    assert.equal(blocks.freeCount, ReadBlocks.KEEP);
    // The two smallest went to the garbage collector.
    const kept = Array.from({ length: ReadBlocks.KEEP }, () => blocks.take(1).bytes.length);
    assert.deepEqual(kept.sort((x, y) => x - y), [1002, 1003, 1004, 1005]);
    const huge = blocks.take(ReadBlocks.MAX_BYTES + 1);
    blocks.release(huge);
    assert.equal(blocks.freeCount, 0);
  });

  it("refuses a release or a hold of a block nobody holds", () => {
    const blocks = new ReadBlocks();
    const a: ReadBlock = blocks.take(10);
    blocks.release(a);
    assert.throws(() => blocks.release(a), /let go of more often than held/);
    assert.throws(() => blocks.hold(a), /held after it was let go of/);
  });
});

describe("RecordPool", () => {
  it("hands back the records given to it, set anew, and keeps no more than it was told", () => {
    const pool = new RecordPool(2);
    const bytes = new Uint8Array(8);
    const a = pool.take("t", 1, null, bytes, -1, 0, 0, 8);
    const b = pool.take("t", 2, null, bytes, 0, 2, 2, 6);
    const c = pool.take("t", 3, null, bytes, 0, 2, 2, 6);
    pool.give([a, b, c, { topic: "not ranged" }]);
    assert.equal(pool.size, 2, "a third record was kept");
    const again = pool.take("u", 9, null, bytes, 1, 3, 4, 4);
    assert.ok(again === a || again === b, "a new record while the pool held two");
    assert.deepEqual(
      [
        again.topic,
        again.timestamp,
        again.keyAt,
        again.keyLength,
        again.valueAt,
        again.valueLength,
      ],
      ["u", 9, 1, 3, 4, 4],
    );
    assert.deepEqual([...again.key!], [...bytes.subarray(1, 4)]);
  });
});

describe("RecordPool, over time", () => {
  it("holds on to no read memory, and lets go of records unused for a period", async () => {
    const pool = new RecordPool(100, 20);
    const block = new Uint8Array(1 << 20);
    const records = Array.from({ length: 10 }, (_, i) => pool.take("t", i, [], block, 0, 1, 1, 9));
    pool.give(records);
    assert.equal(pool.size, 10);
    // Given back, a record keeps nothing of the block it was read from (that block may be
    // let go of, or be larger than any kept), nor of its headers.
    assert.ok(records.every((r) => r.bytes !== block && r.headers === null));
    await waitFor(() => pool.size === 0, 5000, "the unused records let go of");
    pool.close();
  });
});

describe("a cursor reading into ReadBlocks", () => {
  it("does not give back a block that a read still runs into when it is closed", async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await writeFile(`${dir}/seg`, new Uint8Array(2 << 20));
      const blocks = new ReadBlocks();
      const cursor = new SegmentCursor(
        await new NodeFileSystem().open(`${dir}/seg`, "read"),
        1 << 20,
        blocks,
      );
      const read = cursor.frameAt(0, 2 << 20).catch(() => null);
      await cursor.close(); // while the read runs
      await read;
      assert.equal(blocks.freeCount, 0, "a block with a read running into it was handed back");
    } finally {
      await cleanup();
    }
  });
});

/**
 * Reads its records' values late: after a pause in which the sender reads the next batch
 * ahead (and so refills its read blocks). Copies them then, or, `keepViews`, keeps views.
 */
class LateReader implements Provider {
  readonly name = "late-reader";
  readonly retryWaitMs = 1;
  readonly releasesRecords: boolean;
  readonly #keepViews: boolean;
  values: Uint8Array[] = [];
  keys: Array<string | null> = [];
  /** Every record object handed to `send`, in order. */
  seen: ProviderRecord[] = [];
  down = true;

  /** Refused for good (the reason given back), read as late as the others. */
  readonly #refuse: ((value: Uint8Array) => boolean) | undefined;

  constructor(
    o: { releasesRecords: boolean; keepViews: boolean; refuse?: (value: Uint8Array) => boolean },
  ) {
    this.releasesRecords = o.releasesRecords;
    this.#keepViews = o.keepViews;
    this.#refuse = o.refuse;
  }
  open(): Promise<void> {
    return Promise.resolve();
  }
  async send(records: readonly ProviderRecord[]): Promise<SendResult | void> {
    if (this.down) throw new Error("down");
    await new Promise((r) => setTimeout(r, 20));
    const rejected: { index: number; reason: string }[] = [];
    records.forEach((r, index) => {
      this.values.push(this.#keepViews ? r.value : r.value.slice());
      this.keys.push(r.key === null ? null : new TextDecoder().decode(r.key));
      this.seen.push(r);
      if (this.#refuse?.(r.value)) rejected.push({ index, reason: "INVALID_RECORD: refused" });
    });
    return { rejected };
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

describe("a drain that uses its read memory again", () => {
  let dir = "";
  let cleanup = async () => {};
  const buffers = new OpenBuffers();
  beforeEach(async () => ({ dir, cleanup } = await tempDir()));
  afterEach(async () => {
    await buffers.closeAll();
    await cleanup();
  });

  // About 11 MB over 40,000 records of 20-520 bytes, each different, in batches of 7,919
  // records (about 2 MB: the read ahead of one refills the read window at least twice while
  // the batch before it is with the provider; batch ends fall inside frames).
  const N = 40_000;
  let largestFrame = 0;
  const enc = new TextEncoder();
  const valueOf = (i: number) =>
    enc.encode(`record ${i} `.padEnd(20 + (i * 7919) % 500, String.fromCharCode(97 + i % 26)));

  /** `whole`: every write at once, so that the writer fills its frames (over 1 MiB each). */
  async function drain(provider: LateReader, whole = false): Promise<Uint8Array[]> {
    provider.values = [];
    provider.keys = [];
    provider.seen = [];
    const b = await buffers.open({
      dir,
      provider,
      logger: silentLogger,
      fsync: "never",
      batchMaxRecords: 7919,
      batchMaxBytes: 64 << 20,
      segmentMaxBytes: 16 << 20,
      retryInitialMs: 1,
      retryMaxMs: 5,
    });
    const step = whole ? N : 1000;
    for (let i = 0; i < N; i += step) {
      await Promise.all(
        Array.from({ length: step }, (_, j) => b.write("t", valueOf(i + j), { key: `k${j}` })),
      );
    }
    largestFrame = await largestFrameIn(dir);
    provider.down = false;
    await waitFor(() => provider.values.length >= N, 60_000, `${N} records delivered`);
    await buffers.close(b);
    return provider.values;
  }

  it("delivers every record's bytes as written when the provider copies them late", async () => {
    const provider = new LateReader({ releasesRecords: true, keepViews: false });
    const got = await drain(provider);
    assert.equal(got.length, N);
    for (let i = 0; i < N; i++) {
      assert.deepEqual(got[i], valueOf(i), `record ${i}`);
      assert.equal(provider.keys[i], `k${i % 1000}`, `record ${i}'s key`);
    }
    // The record objects were used again too (RecordPool): each batch's, once delivered.
    const objects = new Set(provider.seen).size;
    assert.ok(objects < N / 2, `${objects} record objects for ${N} records: none used again`);
  });

  it("does use the memory again: views kept past the send see later records' bytes", async () => {
    // The contract's other side, and the proof that the test above ran with reuse: a provider
    // that says it lets go of its records but keeps views of them sees them change.
    const got = await drain(new LateReader({ releasesRecords: true, keepViews: true }));
    let changed = 0;
    for (let i = 0; i < N; i++) if (!sameBytes(got[i], valueOf(i))) changed++;
    assert.ok(changed > 0, "no record's bytes changed: the read memory was not used again");
  });

  it("uses the memory again when the frames are larger than a read block (the writer's full frames)", async () => {
    const got = await drain(new LateReader({ releasesRecords: true, keepViews: true }), true);
    assert.ok(largestFrame > 1 << 20, `frames of over 1 MiB written (largest ${largestFrame})`);
    let changed = 0;
    for (let i = 0; i < N; i++) if (!sameBytes(got[i], valueOf(i))) changed++;
    assert.ok(changed > 0, "no record's bytes changed: frames over 1 MiB got fresh memory");
  });

  it("stores the records the provider refuses in dead/ as written, while their objects are used again", async () => {
    // Dead letters are written from the batch's records after the send: they must still be
    // the batch's own then, not objects handed out again to the batch read ahead.
    const refused = (i: number) => i % 13 === 0;
    const indexOf = (v: Uint8Array) =>
      Number(new TextDecoder().decode(v.subarray(7, 13)).split(" ")[0]);
    const provider = new LateReader({
      releasesRecords: true,
      keepViews: false,
      refuse: (v) => refused(indexOf(v)),
    });
    await drain(provider);
    const dead: Array<[string | null, Uint8Array]> = [];
    for (const name of (await readdir(`${dir}/dead`)).filter((n) => n.endsWith(".seg")).sort()) {
      const stop = await readSegmentRecords(new NodeFileSystem(), `${dir}/dead/${name}`, (r) => {
        dead.push([r.key === null ? null : new TextDecoder().decode(r.key), r.value.slice()]);
      });
      assert.equal(stop, null, `dead/${name} reads whole`);
    }
    const expected = Array.from({ length: N }, (_, i) => i).filter(refused);
    assert.equal(dead.length, expected.length, "dead letters");
    expected.forEach((i, k) => {
      assert.deepEqual(dead[k], [`k${i % 1000}`, valueOf(i)], `dead letter of record ${i}`);
    });
    assert.ok(new Set(provider.seen).size < N / 2, "the record objects were not used again");
  });

  it("never changes a record under a provider that does not say it lets go of them", async () => {
    const provider = new LateReader({ releasesRecords: false, keepViews: true });
    const got = await drain(provider);
    for (let i = 0; i < N; i++) assert.deepEqual(got[i], valueOf(i), `record ${i}`);
    assert.equal(new Set(provider.seen).size, N, "a record object was handed out twice");
  });
});

/** The largest frame in the segments of `dir`, in bytes (from one frame offset to the next). */
async function largestFrameIn(dir: string): Promise<number> {
  const fs = new NodeFileSystem();
  let largest = 0;
  for (const name of (await readdir(dir)).filter((n) => n.endsWith(".seg"))) {
    const starts = new Set<number>();
    const stop = await readSegmentRecords(fs, `${dir}/${name}`, (_, at) => starts.add(at));
    const s = [...starts, (await stat(`${dir}/${name}`)).size];
    for (let i = 1; i < s.length; i++) largest = Math.max(largest, s[i] - s[i - 1]);
    assert.equal(stop, null, `${name} reads whole`);
  }
  return largest;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

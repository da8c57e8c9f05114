// Segment footers: what lets a buffer reopen without walking its sealed segments. Each test
// writes real segment files, changes them as a crash, a disk or an older version would, and
// checks that the next open keeps every record and reports what it found.

import { afterEach, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { MessageBuffer, type MessageBufferOptions, silentLogger } from "../../mod.ts";
import { NodeFileSystem } from "../../src/fs/node.ts";
import {
  decodeSegmentFooter,
  encodeSegmentFooter,
  SEGMENT_FOOTER_SIZE,
  SEGMENT_HEADER_SIZE,
} from "../../src/segment/format.ts";
import { inspectBuffer } from "../../src/segment/recovery.ts";
import { CheckpointFile, checkpointFileName } from "../../src/checkpoint/checkpoint.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import {
  memoryBufferOptions,
  OpenBuffers,
  RecordingProvider,
  tempDir,
  waitFor,
} from "../_helpers.ts";

let dir = "";
let cleanup = async () => {};
const buffers = new OpenBuffers();

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
});
afterEach(async () => {
  await buffers.closeAll();
  await cleanup();
});

function openBuffer(
  provider: RecordingProvider,
  extra: Partial<MessageBufferOptions> = {},
): Promise<MessageBuffer> {
  return buffers.open({
    dir,
    provider,
    logger: silentLogger,
    closeTimeoutMs: 2000,
    segmentMaxBytes: 1024,
    ...extra,
  });
}

const closeBuffer = (b: MessageBuffer) => buffers.close(b);

const segmentFiles = async () => (await readdir(dir)).filter((n) => n.endsWith(".seg")).sort();
const inspect = () => inspectBuffer(new NodeFileSystem(), dir);
const values = (n: number) => Array.from({ length: n }, (_, i) => `r${String(i).padStart(4, "0")}`);

/** Writes `n` records with the provider down, then closes: a backlog of sealed segments. */
async function backlog(n: number, extra: Partial<MessageBufferOptions> = {}): Promise<string[]> {
  const p = new RecordingProvider();
  p.down = true;
  const b = await openBuffer(p, { fsync: "always", ...extra });
  const vs = values(n);
  // Small frames, as concurrent writers under "always" make them.
  for (let i = 0; i < n; i += 8) await Promise.all(vs.slice(i, i + 8).map((v) => b.write("t", v)));
  await closeBuffer(b);
  return vs;
}

/** Opens the directory, delivers everything, and returns what arrived and the counters. */
async function deliverAll() {
  const p = new RecordingProvider();
  const b = await openBuffer(p);
  await b.drained(10_000);
  const counters = b.stats().counters;
  await closeBuffer(b);
  return { got: p.values(), counters };
}

describe("segment footers", () => {
  it("round-trip, and refuse a footer whose checksum does not match", () => {
    const f = {
      frames: 7,
      records: 300,
      firstSeq: 2 ** 40 + 5,
      dataSize: 123_456,
      oldestTimestamp: 1_790_000_000_000,
      newestTimestamp: 1_790_000_999_999,
    };
    const b = encodeSegmentFooter(f);
    assert.equal(b.length, SEGMENT_FOOTER_SIZE);
    assert.deepEqual(decodeSegmentFooter(b), f);
    const unknown = encodeSegmentFooter({ ...f, newestTimestamp: Infinity });
    assert.equal((decodeSegmentFooter(unknown) as typeof f).newestTimestamp, Infinity);
    for (const at of [4, 8, 20, 47]) {
      const bad = b.slice();
      bad[at] ^= 0x01;
      assert.equal(decodeSegmentFooter(bad), "footer checksum mismatch", `byte ${at} flipped`);
    }
    assert.equal(decodeSegmentFooter(b.subarray(0, 40)), "short footer (40 bytes)");
  });

  it("let a clean restart open every segment without walking it, and deliver all of it", async () => {
    const vs = await backlog(400);
    const segs = await segmentFiles();
    assert.ok(segs.length >= 3, `${segs.length} segments`);
    const report = await inspect();
    assert.deepEqual(report.segments.map((s) => s.footer), segs.map(() => "used"));
    assert.equal(report.segments.reduce((n, s) => n + s.records, 0), 400);
    const { got, counters } = await deliverAll();
    assert.deepEqual(got, vs);
    assert.equal(counters.footerErrors, 0);
  });

  it("open a segment without a footer (one from before footers, or cut short by a crash) by walking it, then give it one", async () => {
    const vs = await backlog(200);
    const segs = await segmentFiles();
    // Take every footer off: the files are then byte for byte segments without a footer
    // (format version 1 allows either).
    for (const s of segs) {
      const bytes = await readFile(`${dir}/${s}`);
      await writeFile(`${dir}/${s}`, bytes.subarray(0, -SEGMENT_FOOTER_SIZE));
    }
    assert.deepEqual((await inspect()).segments.map((s) => s.footer), segs.map(() => "none"));
    // Open and close without delivering: the open walks them and writes their footers.
    const p = new RecordingProvider();
    p.down = true;
    const b = await openBuffer(p);
    assert.equal(b.stats().backlog.records, 200);
    await closeBuffer(b);
    assert.deepEqual((await inspect()).segments.map((s) => s.footer), segs.map(() => "used"));
    const { got, counters } = await deliverAll();
    assert.deepEqual(got, vs);
    assert.equal(counters.tornBytes, 0);
    assert.equal(counters.quarantinedBytes, 0);
  });

  it("cut a torn footer (a crash while sealing) and lose nothing", async () => {
    const vs = await backlog(200);
    const segs = await segmentFiles();
    const first = `${dir}/${segs[0]}`;
    const bytes = await readFile(first);
    await writeFile(first, bytes.subarray(0, -20)); // 28 of the footer's 48 bytes
    const r = (await inspect()).segments[0];
    assert.equal(r.footer, "invalid");
    assert.equal(r.tail?.action, "cut");
    const { got, counters } = await deliverAll();
    assert.deepEqual(got, vs);
    assert.equal(counters.tornBytes, 28);
    assert.equal(counters.quarantinedBytes, 0);
    assert.equal(counters.footerErrors, 1);
  });

  it("cut a zero-filled footer (a power loss before its write reached the disk) off any segment, not quarantine it", async () => {
    for (const zeros of [SEGMENT_FOOTER_SIZE, 30, 10]) {
      await cleanup();
      ({ dir, cleanup } = await tempDir());
      const vs = await backlog(200);
      const segs = await segmentFiles();
      assert.ok(segs.length >= 3);
      // Not the newest segment: an older one, as an interrupted seal leaves it.
      const first = `${dir}/${segs[0]}`;
      const bytes = (await readFile(first)).subarray(0, -SEGMENT_FOOTER_SIZE);
      await writeFile(first, Buffer.concat([bytes, new Uint8Array(zeros)]));
      const { got, counters } = await deliverAll();
      assert.deepEqual(got, vs, `${zeros} zero bytes`);
      assert.equal(counters.quarantinedBytes, 0, `${zeros} zero bytes`);
      assert.equal(counters.tornBytes, zeros);
    }
  });

  it("walk a segment whose footer fails its checksum, count it, and lose nothing", async () => {
    const vs = await backlog(200);
    const segs = await segmentFiles();
    const second = `${dir}/${segs[1]}`;
    const bytes = await readFile(second);
    bytes[bytes.length - 10] ^= 0xff;
    await writeFile(second, bytes);
    const r = (await inspect()).segments[1];
    assert.equal(r.footer, "invalid");
    assert.match(r.footerProblem ?? "", /checksum mismatch/);
    const { got, counters } = await deliverAll();
    assert.deepEqual(got, vs);
    assert.equal(counters.footerErrors, 1);
    assert.equal(counters.quarantinedBytes, 0);
  });

  it("still catch a flipped bit in the frames of a segment whose footer is good: the sender quarantines it", async () => {
    const vs = await backlog(300);
    const segs = await segmentFiles();
    const first = `${dir}/${segs[0]}`;
    const bytes = await readFile(first);
    bytes[SEGMENT_HEADER_SIZE + 30] ^= 0xff; // inside the first frame
    await writeFile(first, bytes);
    // The footer is intact, so opening trusts it; the sender checks every frame as it reads.
    assert.equal((await inspect()).segments[0].footer, "used");
    const { got, counters } = await deliverAll();
    assert.ok(counters.quarantinedRecords > 0);
    const lost = new Set(vs.slice(0, counters.quarantinedRecords));
    assert.deepEqual(got, vs.filter((v) => !lost.has(v)));
    assert.deepEqual((await readdir(`${dir}/quarantine`)).length, 1);
  });

  it("trust what the sender reads over a footer that miscounts, and count the difference", async () => {
    const vs = await backlog(200);
    const segs = await segmentFiles();
    const first = `${dir}/${segs[0]}`;
    const bytes = await readFile(first);
    const footer = decodeSegmentFooter(bytes.subarray(-SEGMENT_FOOTER_SIZE));
    assert.ok(typeof footer !== "string");
    // A footer with a good checksum that says three records more than the frames hold.
    bytes.set(
      encodeSegmentFooter({ ...footer, records: footer.records + 3 }),
      bytes.length - SEGMENT_FOOTER_SIZE,
    );
    await writeFile(first, bytes);
    const p = new RecordingProvider();
    const b = await openBuffer(p);
    assert.equal(b.stats().backlog.records, 203);
    await b.drained(10_000);
    assert.deepEqual(p.values(), vs);
    assert.equal(b.stats().counters.footerErrors, 1);
    assert.equal(b.stats().backlog.records, 0);
  });

  it("resume at a checkpoint inside a segment with a footer, and start over when the S file points between frames", async () => {
    const vs = await backlog(300, { batchMaxRecords: 5 });
    const segs = await segmentFiles();
    // Deliver part of the first segment, then stop.
    const p1 = new RecordingProvider();
    p1.hangAfterSends = 3; // three batches of five are acknowledged, the fourth never is
    const b1 = await openBuffer(p1, { batchMaxRecords: 5, closeTimeoutMs: 50 });
    await waitFor(() => p1.received.length === 15, 10_000, "three batches delivered");
    await closeBuffer(b1);
    const sent = p1.values();
    const r = (await inspect()).segments[0];
    assert.equal(r.name, segs[0]);
    assert.equal(r.footer, "used");
    assert.equal(r.checkpoint.delivered, sent.length);
    const { got } = await deliverAll();
    assert.deepEqual([...sent, ...got], vs);

    // An S file whose offset is not a frame start: delivery starts at the segment's start.
    const vs2 = await backlog(100);
    const [seg] = (await segmentFiles()).filter((s) => !segs.includes(s));
    const ckpt = `${dir}/${checkpointFileName(seg)}`;
    const s = (await inspect()).segments.find((x) => x.name === seg)!;
    assert.ok(s.validSize > SEGMENT_HEADER_SIZE + 10);
    const { file } = await CheckpointFile.open(new NodeFileSystem(), ckpt, true);
    await file.commit({ offset: SEGMENT_HEADER_SIZE + 3, skip: 0, delivered: 1 });
    await file.close();
    const bad = (await inspect()).segments.find((x) => x.name === seg)!;
    assert.match(bad.checkpointProblem ?? "", /not at a frame start/);
    assert.equal(bad.checkpoint.delivered, 0);
    const again = await deliverAll();
    assert.deepEqual(again.got.filter((v) => vs2.includes(v)), vs2);
  });
});

describe("sealing, interrupted", () => {
  it("leaves a buffer that opens to exactly the acknowledged records, whichever operation of the seal a crash stops at", async () => {
    let points = 0, tornFooters = 0;
    for (const policy of ["always", "interval"] as const) {
      for (let crashAt = 1;; crashAt++) {
        const fs = new MemoryFileSystem();
        const p = new RecordingProvider();
        p.down = true;
        const b = await MessageBuffer.open(
          memoryBufferOptions(fs, p, { fsync: policy, segmentMaxBytes: 1 << 16 }),
        );
        const vs = values(50);
        for (const v of vs) await b.write("t", v);
        await b.flush();
        // Under "interval" the records are durable once an fsync covered them: close() seals
        // (footer, fsync); a crash before that fsync may take unsynced records with it, so
        // compare against what the disk holds when the seal starts.
        fs.crashAfter(crashAt);
        const closed = await b.close().then(() => true, () => false);
        for (const torn of [false, true]) {
          const after = fs.crash({ torn, random: () => 0.5 });
          const p2 = new RecordingProvider();
          const b2 = await MessageBuffer.open(memoryBufferOptions(after, p2));
          await b2.drained(10_000);
          const c = b2.stats().counters;
          await b2.close();
          if (policy === "always") {
            assert.deepEqual(p2.values(), vs, `crash at op ${crashAt} of close (torn ${torn})`);
          } else {
            // In order, no gaps, no duplicates: a prefix of what was written.
            assert.deepEqual(
              p2.values(),
              vs.slice(0, p2.values().length),
              `crash at op ${crashAt}`,
            );
          }
          assert.equal(c.quarantinedBytes, 0, `crash at op ${crashAt}: nothing quarantined`);
          if (c.footerErrors > 0 && c.tornBytes > 0) tornFooters++;
        }
        points++;
        if (closed && !fs.crashed) break;
      }
    }
    assert.ok(points >= 6, `${points} crash points`);
    assert.ok(tornFooters > 0, "no crash point left a torn footer");
  });
});

// The record batches the Kafka client sends, checked against @platformatic/kafka's own
// decoder and Kafka's murmur2 (the real broker and a Java consumer check them end to end in
// kafka_test.ts).

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { murmur2 as libraryMurmur2, Reader, readRecordsBatch } from "@platformatic/kafka";
import { crc32c } from "../../src/binary/crc32c.ts";
import { murmur2, partitionForKey } from "../../src/provider/kafka/murmur2.ts";
import { BatchMemory, encodeRecords, finishBatch } from "../../src/provider/kafka/produce.ts";
import { produceVersionFor } from "../../src/provider/kafka/platformatic.ts";
import type { ProviderRecord } from "../../src/provider/types.ts";
import { RangedRecord } from "../../src/binary/ranges.ts";
import { Partitioner } from "../../src/provider/kafka/partitioner.ts";
import {
  decodeFrame,
  FrameBuilder,
  readFrameHeader,
  type StoredRecord,
} from "../../src/segment/format.ts";

const enc = new TextEncoder();

/** A frame's records decoded both ways: left in its bytes (ranged), and as arrays. */
function decodedBoth(frame: Uint8Array): [StoredRecord[], StoredRecord[]] {
  const header = readFrameHeader(frame, 0);
  const ranged: StoredRecord[] = [];
  const plain: StoredRecord[] = [];
  decodeFrame(frame, 0, header, ranged, true);
  decodeFrame(frame, 0, header, plain);
  return [ranged, plain];
}

describe("Kafka record batches", () => {
  it("are the same bytes in reused memory as in fresh memory, and memory is reused", () => {
    const id = { producerId: 7n, producerEpoch: 0, baseSequence: 0 };
    const memory = new BatchMemory(2);
    const some = (n: number, fill: number): ProviderRecord[] =>
      Array.from({ length: n }, (_, i) => ({
        topic: "t",
        key: i % 3 === 0 ? null : enc.encode(`k${i}`),
        value: new Uint8Array(50 + (i % 7)).fill(fill),
        headers: null,
        timestamp: 1_790_000_000_000 + i,
      }));
    const all = (r: unknown[]) => r.map((_, i) => i);
    // A large batch (about 100 KB) leaves its bytes in the memory; a smaller one then goes into it.
    const big = some(1700, 0xee);
    const e1 = encodeRecords(big, all(big), memory);
    const first = finishBatch(e1, e1.bytes, 0, id);
    memory.give(first);
    const small = some(1200, 0x11);
    const idx = all(small);
    const fresh = encodeRecords(small, idx);
    const reused = encodeRecords(small, idx, memory);
    assert.equal(reused.bytes.buffer, first.buffer, "the memory given back was taken again");
    assert.deepEqual(
      [...finishBatch(reused, reused.bytes, 0, id)],
      [...finishBatch(fresh, fresh.bytes, 0, id)],
    );
    // Memory in use is never handed out twice.
    assert.notEqual(encodeRecords(small, idx, memory).bytes.buffer, reused.bytes.buffer);
    // A batch under 64 KiB (a send over many partitions makes many) has memory of its own size,
    // and a batch never takes a buffer more than twice its size.
    memory.give(reused.bytes);
    const tiny = encodeRecords(some(10, 1), all(some(10, 1)), memory);
    assert.equal(tiny.bytes.buffer.byteLength, tiny.bytes.byteOffset + tiny.bytes.length);
    assert.notEqual(tiny.bytes.buffer, first.buffer);
    const half = some(500, 2); // about 30 KB: under 64 KiB, and under half of the buffer free
    assert.notEqual(encodeRecords(half, all(half), memory).bytes.buffer, first.buffer);
    assert.equal(encodeRecords(small, idx, memory).bytes.buffer, first.buffer, "still free");
  });
  it("decode with the library's reader: keys, no keys, empty values, headers, timestamps, sequence", () => {
    const t0 = 1_790_000_000_000;
    const records: ProviderRecord[] = [
      { topic: "t", key: enc.encode("k1"), value: enc.encode("v1"), headers: null, timestamp: t0 },
      { topic: "t", key: null, value: new Uint8Array(0), headers: null, timestamp: t0 - 5 },
      {
        topic: "t",
        key: new Uint8Array([0, 255]),
        value: new Uint8Array(300).fill(7),
        headers: [["h", enc.encode("x")], ["h", enc.encode("y")], ["é", new Uint8Array(0)]],
        timestamp: t0 + 70_000,
      },
    ];
    const e = encodeRecords(records, [0, 1, 2]);
    const batch = finishBatch(e, e.bytes, 0, {
      producerId: 4242n,
      producerEpoch: 3,
      baseSequence: 17,
    });
    const got = readRecordsBatch(Reader.from(Buffer.from(batch)));
    assert.equal(got.magic, 2);
    assert.equal(got.producerId, 4242n);
    assert.equal(got.producerEpoch, 3);
    assert.equal(got.firstSequence, 17);
    assert.equal(got.firstTimestamp, BigInt(t0));
    assert.equal(got.maxTimestamp, BigInt(t0 + 70_000));
    assert.equal(got.lastOffsetDelta, 2);
    assert.equal(got.crc, crc32c(batch, 21));
    assert.equal(got.records.length, 3);
    const [a, b, c] = got.records;
    assert.equal(a.key?.toString(), "k1");
    assert.equal(a.value?.toString(), "v1");
    assert.equal(b.key, null);
    assert.equal(b.value?.length, 0);
    assert.equal(b.timestampDelta, -5n);
    assert.equal(b.offsetDelta, 1);
    assert.deepEqual([...(c.key ?? [])], [0, 255]);
    assert.equal(c.value?.length, 300);
    assert.equal(c.timestampDelta, 70_000n);
    assert.deepEqual(
      c.headers.map(([k, v]) => [k?.toString(), v?.toString()]),
      [["h", "x"], ["h", "y"], ["é", ""]],
    );
  });

  it("encode only the records asked for, in the order asked", () => {
    const records: ProviderRecord[] = ["a", "b", "c", "d"].map((v, i) => ({
      topic: "t",
      key: null,
      value: enc.encode(v),
      headers: null,
      timestamp: 1000 + i,
    }));
    const e = encodeRecords(records, [1, 3]);
    const got = readRecordsBatch(
      Reader.from(Buffer.from(finishBatch(e, e.bytes, 0, {
        producerId: 1n,
        producerEpoch: 0,
        baseSequence: 0,
      }))),
    );
    assert.deepEqual(got.records.map((r) => r.value?.toString()), ["b", "d"]);
    assert.deepEqual(got.records.map((r) => r.offsetDelta), [0, 1]);
  });

  it("encode records read from a segment frame (key and value left in its bytes) byte for byte as the same records given as arrays, on the same partitions", () => {
    const b = new FrameBuilder(1024);
    const long = "v".repeat(200); // past the byte-by-byte copy
    b.append("t", "value-1", "k1", null, 1000);
    b.append("t", "", null, null, 1001);
    b.append("t", long, "a-key-of-some-length", [["h", "x"]], 999);
    b.append("u", "é", new Uint8Array([0, 255]), null, 1002);
    const [ranged, plain] = decodedBoth(b.finish());
    assert.ok(ranged.every((r) => r instanceof RangedRecord));
    assert.ok(!plain.some((r) => r instanceof RangedRecord));
    assert.deepEqual(
      ranged.map((r) => [r.topic, r.key && [...r.key], [...r.value], r.timestamp]),
      plain.map((r) => [r.topic, r.key && [...r.key], [...r.value], r.timestamp]),
    );
    const idx = [0, 1, 2, 3];
    assert.deepEqual(encodeRecords(ranged, idx), encodeRecords(plain, idx));
    const byRange = new Partitioner(), byArray = new Partitioner();
    for (const r of ranged) {
      assert.equal(byRange.partitionOf(r.topic, r, 7), byArray.partition(r.topic, r.key, 7));
    }
  });

  it("encode records read without headers (a drain's) byte for byte as the same records given as arrays: varints of one to six bytes, any order of time, every fourth record picked", () => {
    let seed = 7;
    const rand = (n: number) => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) % n;
    const lengths = [0, 1, 16, 17, 63, 64, 200, 8_200];
    const b = new FrameBuilder(1024);
    const base = 1_790_000_000_000;
    for (let i = 0; i < 300; i++) {
      const key = rand(5) === 0 ? null : new Uint8Array(lengths[rand(7)]).fill(i & 0xff);
      const value = new Uint8Array(lengths[rand(lengths.length)]).fill(0xff - (i & 0xff));
      // Times before the first record's too, and one 2^40 ms later (a delta of six bytes).
      const t = i === 299 ? base + 2 ** 40 : base + rand(200_000) - 100_000;
      b.append(i % 2 ? "t" : "topic-two", value, key, null, t);
    }
    const [ranged, plain] = decodedBoth(b.finish());
    assert.ok(ranged.every((r) => r instanceof RangedRecord && r.headers === null));
    const all = ranged.map((_, i) => i);
    const some = all.filter((i) => i % 4 === 1);
    for (const idx of [all, some]) {
      const e = encodeRecords(ranged, idx, new BatchMemory(1));
      assert.deepEqual(e, encodeRecords(plain, idx));
      const batch = finishBatch(e, e.bytes, 0, {
        producerId: 1n,
        producerEpoch: 0,
        baseSequence: 0,
      });
      const decoded = readRecordsBatch(Reader.from(Buffer.from(batch)));
      assert.equal(decoded.records.length, idx.length);
      decoded.records.forEach((r, j) => {
        const want = plain[idx[j]];
        assert.deepEqual(r.key === null ? null : [...r.key], want.key && [...want.key]);
        assert.deepEqual([...(r.value ?? [])], [...want.value]);
        assert.equal(decoded.firstTimestamp + r.timestampDelta, BigInt(want.timestamp));
        assert.equal(r.offsetDelta, j);
      });
    }
  });

  it("pick the partition the Java client picks (murmur2, as the library computes it)", () => {
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000;
    for (let n = 0; n < 5000; n++) {
      const key = new Uint8Array(n % 41).map(() => Math.floor(random() * 256));
      assert.equal(murmur2(key), libraryMurmur2(Buffer.from(key)), `key of ${key.length} bytes`);
    }
    // Known values from Kafka's own tests (Utils.murmur2 of these strings).
    assert.equal(murmur2(enc.encode("21")), -973932308);
    assert.equal(murmur2(enc.encode("foobar")), -790332482);
    assert.equal(murmur2(enc.encode("a-little-bit-long-string")), -985981536);
    assert.equal(partitionForKey(enc.encode("k0"), 1), 0);
    // Of a range of a larger buffer, the same as of a copy of the range.
    const big = enc.encode("xx-a-little-bit-long-string-yy");
    assert.equal(murmur2(big, 3, 24), -985981536);
  });
});

describe("the Produce version", () => {
  it("is the highest both the broker and the client speak, or an error naming both ranges", () => {
    const broker = (min: number, max: number) => [
      { apiKey: 18, minVersion: 0, maxVersion: 4 },
      { apiKey: 0, minVersion: min, maxVersion: max },
    ];
    assert.equal(produceVersionFor(broker(3, 12)), 11); // Kafka 4.1
    assert.equal(produceVersionFor(broker(0, 11)), 11); // Kafka 3.9
    assert.equal(produceVersionFor(broker(0, 8)), 8); // an older broker: the non-flexible form
    assert.throws(
      () => produceVersionFor(broker(0, 2)),
      /the broker speaks Produce versions 0 to 2; this client speaks 3 to 11/,
    );
    assert.throws(() => produceVersionFor([]), /Produce versions none/);
  });
});

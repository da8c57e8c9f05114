import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import process from "node:process";
import { crc32c, crc32cPortable, nativeCrc32c } from "../../src/binary/crc32c.ts";
import {
  decodeFrame,
  encodeSegmentHeader,
  FrameBuilder,
  parseSegmentFileName,
  PayloadError,
  readFrameHeader,
  SEGMENT_HEADER_SIZE,
  segmentFileName,
  type StoredRecord,
} from "../../src/segment/format.ts";
import { scanSegment } from "../../src/segment/reader.ts";
import { RangedRecord, RecordPool } from "../../src/binary/ranges.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";

const enc = new TextEncoder();

function decodeAll(frame: Uint8Array): StoredRecord[] {
  const out: StoredRecord[] = [];
  decodeFrame(frame, 0, readFrameHeader(frame, 0), out);
  return out;
}

describe("crc32c", () => {
  it("matches the published check values", () => {
    assert.equal(crc32c(enc.encode("123456789")), 0xe3069283);
    assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
    assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  });
  it("agrees with a bit-at-a-time CRC32C over every length and alignment up to 100 bytes", () => {
    const bitwise = (d: Uint8Array, from: number, to: number): number => {
      let c = 0xffffffff;
      for (let i = from; i < to; i++) {
        c ^= d[i];
        for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
      }
      return (c ^ 0xffffffff) >>> 0;
    };
    const data = new Uint8Array(140).map((_, i) => (i * 151 + 7) & 0xff);
    for (let from = 0; from < 20; from++) {
      for (let to = from; to <= from + 100; to++) {
        assert.equal(crc32c(data, from, to), bitwise(data, from, to), `[${from}, ${to})`);
      }
    }
  });
  it("gives the same result in one call or in pieces", () => {
    const data = enc.encode("The quick brown fox jumps over the lazy dog, twice over.");
    assert.equal(crc32c(data, 10, data.length, crc32c(data, 0, 10)), crc32c(data));
  });
  it("is the same native or not, for any length, offset and starting value", () => {
    // Under Bun on Linux x64 (where this project builds and tests) the native checksum must
    // load; under Deno it loads when FFI, environment and read access were allowed at start.
    if ("Bun" in globalThis && process.platform === "linux" && process.arch === "x64") {
      assert.ok(nativeCrc32c, "the native CRC32C did not load under Bun");
    }
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 5000 }),
        fc.nat(),
        fc.nat(),
        fc.nat({ max: 0xffffffff }),
        (data, a, b, start) => {
          const from = data.length === 0 ? 0 : a % data.length;
          const to = from + (data.length === 0 ? 0 : b % (data.length - from + 1));
          assert.equal(crc32c(data, from, to, start), crc32cPortable(data, from, to, start));
        },
      ),
      { numRuns: 300 },
    );
    const big = new Uint8Array(1 << 20).map((_, i) => (i * 131 + 17) & 0xff);
    assert.equal(crc32c(big), crc32cPortable(big));
    assert.equal(crc32c(big, 3, big.length - 5), crc32cPortable(big, 3, big.length - 5));
  });
});

describe("segment names", () => {
  it("sort in write order and parse back", () => {
    const a = segmentFileName(9, 1000), b = segmentFileName(10, 999), c = segmentFileName(10, 1000);
    assert.deepEqual([c, b, a].sort(), [a, b, c]);
    assert.equal(parseSegmentFileName(b)?.firstSeq, 10);
    assert.equal(parseSegmentFileName("notes.txt"), null);
  });
});

describe("frame codec", () => {
  it("round-trips adversarial values, keys and headers unchanged", () => {
    const b = new FrameBuilder(64);
    const big = new Uint8Array(1_000_000).map((_, i) => (i * 7) & 0xff);
    const invalidUtf8 = new Uint8Array([0xff, 0xfe, 0x00, 0xc3, 0x28, 0x0a, 0x5c]);
    const cases: Array<[string | Uint8Array, string | Uint8Array | null]> = [
      ["tabs\tand\nnewlines\r\nand \\ backslashes \\n", "key\twith\ttabs"],
      ["", null],
      [new Uint8Array(0), ""],
      ["NUL\0inside", new Uint8Array([0, 0, 0])],
      [invalidUtf8, invalidUtf8],
      ["emoji 🦕 and ü", "ключ"],
      [big, "big"],
    ];
    for (const [i, [value, key]] of cases.entries()) {
      b.append(
        "topic.a-b_c",
        value,
        key,
        i === 0 ? { h1: "v1", h2: new Uint8Array([1, 2]) } : null,
        1_700_000_000_000 + i,
      );
    }
    const got = decodeAll(b.finish());
    assert.equal(got.length, cases.length);
    for (const [i, [value, key]] of cases.entries()) {
      const asBytes = (v: string | Uint8Array) => typeof v === "string" ? enc.encode(v) : v;
      assert.deepEqual(got[i].value, asBytes(value), `value ${i}`);
      assert.deepEqual(got[i].key, key === null ? null : asBytes(key), `key ${i}`);
      assert.equal(got[i].timestamp, 1_700_000_000_000 + i);
      assert.equal(got[i].topic, "topic.a-b_c");
    }
    assert.deepEqual(got[0].headers, [["h1", enc.encode("v1")], ["h2", new Uint8Array([1, 2])]]);
  });

  it("keeps timestamps that go backwards (clock steps)", () => {
    const b = new FrameBuilder();
    b.append("t", "a", null, null, 5_000);
    b.append("t", "b", null, null, 1_000);
    assert.deepEqual(decodeAll(b.finish()).map((r) => r.timestamp), [5_000, 1_000]);
  });

  it("rejects bad input with an error naming it, leaving the frame unchanged", () => {
    const b = new FrameBuilder();
    b.append("ok", "first", null, null, 1);
    const size = b.size;
    assert.throws(
      () => b.append("bad topic!", "v", null, null, 1),
      /Invalid topic name "bad topic!"/,
    );
    assert.throws(() => b.append("", "v", null, null, 1), /Invalid topic name ""/);
    assert.throws(() => b.append("x".repeat(250), "v", null, null, 1), /Invalid topic name/);
    assert.throws(
      () => b.append("ok", 42 as unknown as string, null, null, 1),
      /value must be a string or Uint8Array, got number/,
    );
    assert.throws(() => b.append("ok", "v", {} as unknown as string, null, 1), /key must be/);
    assert.throws(() => b.append("ok", "v", null, { h: 5 as unknown as string }, 1), /header "h"/);
    const small = new FrameBuilder(64, 100);
    assert.throws(
      () => small.append("ok", "x".repeat(200), null, null, 1),
      /over maxRecordBytes \(100\)/,
    );
    assert.equal(b.size, size);
    assert.equal(b.count, 1);
    assert.deepEqual(decodeAll(b.finish()).map((r) => new TextDecoder().decode(r.value)), [
      "first",
    ]);
  });

  it("round-trips any bytes (property)", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            value: fc.oneof(
              fc.uint8Array({ maxLength: 300 }),
              fc.string({ unit: "binary", maxLength: 100 }),
            ),
            key: fc.option(fc.uint8Array({ maxLength: 40 })),
            ts: fc.integer({ min: 0, max: 2 ** 45 }),
          }),
          { minLength: 1, maxLength: 30 },
        ),
        (recs) => {
          const b = new FrameBuilder(16);
          for (const r of recs) b.append("p", r.value, r.key, null, r.ts);
          const got = decodeAll(b.finish());
          assert.equal(got.length, recs.length);
          recs.forEach((r, i) => {
            assert.deepEqual(
              got[i].value,
              typeof r.value === "string" ? enc.encode(r.value) : r.value,
            );
            assert.deepEqual(got[i].key, r.key);
            assert.equal(got[i].timestamp, r.ts);
          });
        },
      ),
      { numRuns: 300 },
    );
  });
  it("decodes the same records into ranged records, pooled or not, from a frame anywhere in a buffer (property)", () => {
    // The sender's decoder (ranged, one-byte varints read in line) against the plain one:
    // topics, keys and values of every length class (0, 1 byte, 127, 128, over 16 KiB),
    // headers, and timestamps that go back and forward by up to 2^40 ms.
    const pool = new RecordPool();
    // (Strings are written with a length of the width their longest encoding needs, so a
    // short one over 42 characters has a padded, two-byte length.)
    const bytesOf = fc.oneof(
      fc.uint8Array({ maxLength: 3 }),
      fc.uint8Array({ minLength: 126, maxLength: 130 }),
      fc.constantFrom(new Uint8Array(16_400).fill(7)),
      fc.string({ maxLength: 60 }),
      fc.string({ unit: "grapheme", minLength: 40, maxLength: 50 }),
    );
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            topic: fc.oneof(
              fc.constantFrom("t", "u", "t".repeat(128)),
              fc.stringMatching(/^[a-z]{1,5}$/),
            ),
            value: bytesOf,
            key: fc.option(bytesOf),
            headers: fc.option(
              fc.array(fc.tuple(fc.string({ maxLength: 130 }), bytesOf), { maxLength: 2 }),
            ),
            ts: fc.integer({ min: 2 ** 40, max: 2 ** 41 }),
          }),
          { minLength: 1, maxLength: 20 },
        ),
        fc.nat(9),
        (recs, at) => {
          const b = new FrameBuilder(16);
          for (const r of recs) b.append(r.topic, r.value, r.key, r.headers, r.ts);
          const frame = b.finish();
          const buf = new Uint8Array(at + frame.length + 5);
          buf.set(frame, at);
          const h = readFrameHeader(buf, at);
          const plain: StoredRecord[] = [],
            ranged: StoredRecord[] = [],
            pooled: StoredRecord[] = [];
          decodeFrame(buf, at, h, plain);
          decodeFrame(buf, at, h, ranged, true);
          const held = pool.size;
          decodeFrame(buf, at, h, pooled, true, pool);
          assert.equal(pool.size, Math.max(0, held - recs.length), "records taken from the pool");
          const fields = (r: StoredRecord) => [r.topic, r.key, r.value, r.headers, r.timestamp];
          assert.equal(plain.length, recs.length);
          const bytes = (v: string | Uint8Array) => typeof v === "string" ? enc.encode(v) : v;
          recs.forEach((r, i) => {
            assert.deepEqual(fields(plain[i]), [
              r.topic,
              r.key === null ? null : bytes(r.key),
              bytes(r.value),
              r.headers?.length ? r.headers.map(([n, v]) => [n, bytes(v)]) : null,
              r.ts,
            ]);
            assert.ok(ranged[i] instanceof RangedRecord && pooled[i] instanceof RangedRecord);
            assert.deepEqual(fields(ranged[i]), fields(plain[i]));
            assert.deepEqual(fields(pooled[i]), fields(plain[i]));
          });
          pool.give(pooled);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("refuses a frame whose records run past its end, ranged or not", () => {
    const b = new FrameBuilder(64);
    b.append("t", "value", "key", null, 1000);
    const frame = b.finish();
    const h = readFrameHeader(frame, 0);
    for (const ranged of [false, true]) {
      // A count that promises one record more than the payload holds.
      assert.throws(
        () => decodeFrame(frame, 0, { ...h, count: 2 }, [], ranged),
        PayloadError,
      );
      // A varint of 9 bytes (past 2^53: its value would be inexact, then NaN).
      const long = new Uint8Array(20 + 16);
      long.set([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], 20);
      assert.throws(
        () => decodeFrame(long, 0, { ...h, payloadLength: 16, count: 1 }, [], ranged),
        /varint longer than 8 bytes/,
      );
      // A payload cut short by a byte.
      assert.throws(
        () => decodeFrame(frame, 0, { ...h, payloadLength: h.payloadLength - 1 }, [], ranged),
        PayloadError,
      );
    }
  });

  it("appendRange writes the same bytes as append with views of the same ranges", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            pad: fc.uint8Array({ maxLength: 20 }),
            key: fc.option(fc.uint8Array({ maxLength: 40 })),
            value: fc.uint8Array({ maxLength: 300 }),
            ts: fc.integer({ min: 0, max: 2 ** 45 }),
          }),
          { minLength: 1, maxLength: 30 },
        ),
        (recs) => {
          const viaViews = new FrameBuilder(16), viaRanges = new FrameBuilder(16);
          viaViews.append("t", "", null, null, 5);
          viaRanges.append("t", "", null, null, 5);
          for (const r of recs) {
            // The record's bytes somewhere inside a larger buffer: pad, key, value, pad.
            const key = r.key ?? new Uint8Array(0);
            const src = new Uint8Array([...r.pad, ...key, ...r.value, ...r.pad]);
            const keyAt = r.key === null ? -1 : r.pad.length;
            const valueAt = r.pad.length + key.length;
            viaViews.append(
              "t",
              src.subarray(valueAt, valueAt + r.value.length),
              r.key,
              null,
              r.ts,
            );
            assert.ok(
              viaRanges.appendRange("t", src, keyAt, key.length, valueAt, r.value.length, r.ts),
            );
          }
          assert.deepEqual(viaRanges.finish(), viaViews.finish());
        },
      ),
      { numRuns: 300 },
    );
  });
  it("appendRange takes only topics append has taken, and refuses a record over the limit", () => {
    const b = new FrameBuilder(16, 100);
    const src = new Uint8Array(200).fill(1);
    assert.equal(b.appendRange("t", src, -1, 0, 0, 10, 1), false, "a topic never appended");
    assert.equal(b.count, 0);
    b.append("t", "v", null, null, 1);
    const size = b.size;
    assert.throws(
      () => b.appendRange("t", src, 0, 10, 10, 150, 1),
      (e) => e instanceof RangeError && /topic "t".*over maxRecordBytes \(100\)/.test(e.message),
    );
    assert.equal(b.size, size, "the frame is unchanged");
    assert.equal(b.count, 1);
    assert.ok(b.appendRange("t", src, 0, 10, 10, 50, 1));
    assert.deepEqual(decodeAll(b.finish()).map((r) => [r.key?.length, r.value.length]), [
      [undefined, 1],
      [10, 50],
    ]);
  });

  it("grows its memory as records need it, to its usual size and not past it, unless a record needs more", () => {
    // A writer's frames start small (a lane that gets few records never needs a frame's
    // worth), and stop at the frame target plus slack rather than doubling to twice it.
    const usual = 1000;
    const b = new FrameBuilder(64, 1 << 20, new Map(), usual);
    assert.equal(b.capacity, 64);
    const value = "v".repeat(40);
    while (b.size < 300) b.append("t", value, null, null, 1);
    assert.equal(b.capacity, 512, "doubled as it filled");
    while (b.size < 600) b.append("t", value, null, null, 1);
    assert.equal(b.capacity, usual, "grew to the usual size, not past it (1024)");
    b.append("t", "w".repeat(3000), null, null, 1);
    assert.ok(b.capacity >= b.size && b.size > usual);
    const records = decodeAll(b.finish());
    assert.equal(records.at(-1)!.value.length, 3000);
    assert.ok(records.slice(0, -1).every((r) => new TextDecoder().decode(r.value) === value));
  });
});

/** A segment file with `frames` frames of `per` records each, in a memory fs. */
async function buildSegment(
  frames: number,
  per: number,
): Promise<{ fs: MemoryFileSystem; bytes: Uint8Array; ends: number[] }> {
  const fs = new MemoryFileSystem();
  await fs.mkdirp("/d");
  const fh = await fs.open("/d/s.seg", "create");
  await fh.append(encodeSegmentHeader(0));
  const ends: number[] = [SEGMENT_HEADER_SIZE];
  let size = SEGMENT_HEADER_SIZE;
  for (let f = 0; f < frames; f++) {
    const b = new FrameBuilder(64);
    for (let i = 0; i < per; i++) b.append("t", `frame ${f} record ${i}`, null, null, 1000 + f);
    const bytes = b.finish();
    await fh.append(bytes);
    size += bytes.length;
    ends.push(size);
  }
  return { fs, bytes: fs.peek("/d/s.seg")!, ends };
}

describe("segment scan", () => {
  it("truncating a segment at every offset recovers exactly a prefix of its frames", async () => {
    const { bytes, ends } = await buildSegment(4, 3);
    for (let cut = SEGMENT_HEADER_SIZE; cut <= bytes.length; cut++) {
      const fs = new MemoryFileSystem();
      await fs.mkdirp("/d");
      const fh = await fs.open("/d/s.seg", "create");
      await fh.append(bytes.subarray(0, cut));
      const r = await scanSegment(fh, { verify: true });
      assert.ok(!("badHeader" in r));
      const whole = ends.filter((e) => e <= cut);
      assert.equal(r.validSize, whole.at(-1), `cut at ${cut}`);
      assert.equal(r.records, (whole.length - 1) * 3, `cut at ${cut}`);
      assert.equal(r.stop === null, cut === r.validSize, `cut at ${cut}`);
      if (r.stop) assert.equal(r.stop.kind, "torn", `cut at ${cut}`);
    }
  });

  it("tells a flipped bit in a middle frame (corrupt) from a torn last frame", async () => {
    const { fs, ends } = await buildSegment(3, 2);
    fs.corrupt("/d/s.seg", ends[1] + 25, new Uint8Array([0x55]));
    const r = await scanSegment(await fs.open("/d/s.seg", "read"), { verify: true });
    assert.ok(!("badHeader" in r));
    assert.deepEqual(r.stop?.kind, "corrupt");
    assert.equal(r.stop?.offset, ends[1]);
    assert.equal(r.records, 2);

    const last = await buildSegment(3, 2);
    last.fs.corrupt("/d/s.seg", last.ends[2] + 25, new Uint8Array([0x55]));
    const r2 = await scanSegment(await last.fs.open("/d/s.seg", "read"), { verify: true });
    assert.ok(!("badHeader" in r2));
    assert.equal(r2.stop?.kind, "torn");
    assert.equal(r2.records, 4);
  });

  it("treats a huge corrupt length as a bad frame without allocating it", async () => {
    const { fs, ends } = await buildSegment(2, 2);
    fs.corrupt("/d/s.seg", ends[0], new Uint8Array([0xff, 0xff, 0xff, 0xf0]));
    const r = await scanSegment(await fs.open("/d/s.seg", "read"), { verify: true });
    assert.ok(!("badHeader" in r));
    assert.equal(r.records, 0);
    assert.equal(r.stop?.kind, "corrupt");
  });

  it("reports a bad magic number", async () => {
    const { fs } = await buildSegment(1, 1);
    fs.corrupt("/d/s.seg", 0, new Uint8Array([0, 0, 0, 0]));
    const r = await scanSegment(await fs.open("/d/s.seg", "read"), { verify: true });
    assert.ok("badHeader" in r);
    assert.match(r.badHeader, /bad magic 0x00000000/);
  });
});

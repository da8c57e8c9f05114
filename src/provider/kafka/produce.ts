/**
 * Kafka record batches (format v2, as Kafka's `DefaultRecordBatch` lays them out), encoded
 * straight from the records the engine reads: one buffer per partition, no object per
 * record. @platformatic/kafka builds a small buffer and several objects for every record,
 * which costs more CPU than everything else in delivery together; the client in
 * `platformatic.ts` hands it these batches whole, in a Produce request built here.
 *
 * ```
 * RecordBatch
 *   0   8  base offset (0; the broker assigns offsets)
 *   8   4  length of what follows
 *  12   4  partition leader epoch (-1 from a producer)
 *  16   1  magic (2)
 *  17   4  CRC32C of bytes [21, end)
 *  21   2  attributes (compression codec in the low 3 bits)
 *  23   4  last offset delta (records - 1)
 *  27   8  base timestamp (the first record's)
 *  35   8  max timestamp
 *  43   8  producer id
 *  51   2  producer epoch
 *  53   4  base sequence
 *  57   4  record count
 *  61      records (compressed as one block when a codec is set)
 *
 * Record (signed integers zigzag varints)
 *   length | attributes (int8, 0) | timestamp delta | offset delta | key length (-1: none), key |
 *   value length, value | header count, (name length, name, value length, value)*
 * ```
 *
 * @module
 */

import { crc32c } from "../../binary/crc32c.ts";
import { FreeList } from "../../binary/idle.ts";
import { copyKey, copyValue, keyLength, valueLength } from "../../binary/ranges.ts";
import type { ProviderRecord } from "../types.ts";

/** Bytes before the first record of a batch. */
export const BATCH_HEADER_SIZE = 61;

const textEncoder = new TextEncoder();

/** Bytes a zigzag varint of `n` takes (`n` a safe integer). */
function varintSize(n: number): number {
  let z = n >= 0 ? n * 2 : -n * 2 - 1;
  let size = 1;
  while (z >= 0x80) {
    z = Math.floor(z / 0x80);
    size++;
  }
  return size;
}

/** Writes `n` as a zigzag varint at `p`; returns the position after it. */
function writeVarint(b: Uint8Array, p: number, n: number): number {
  let z = n >= 0 ? n * 2 : -n * 2 - 1;
  while (z >= 0x80) {
    b[p++] = (z & 0x7f) | 0x80;
    z = Math.floor(z / 0x80);
  }
  b[p++] = z;
  return p;
}

/** The records of one batch, encoded; what {@link finishBatch} frames. */
export interface EncodedRecords {
  /**
   * The records, back to back (uncompressed): a view of a buffer that keeps
   * {@link BATCH_HEADER_SIZE} bytes before them, so that an uncompressed batch is finished in
   * place, without a copy.
   */
  bytes: Uint8Array;
  count: number;
  baseTimestamp: number;
  maxTimestamp: number;
}

/** Header names as UTF-8, kept across batches (names repeat). */
const nameCache = new Map<string, Uint8Array>();

function nameBytes(name: string): Uint8Array {
  let b = nameCache.get(name);
  if (b === undefined) {
    b = textEncoder.encode(name);
    if (nameCache.size > 1000) nameCache.clear();
    nameCache.set(name, b);
  }
  return b;
}

/**
 * Memory for encoded batches, used again from one send to the next. Each batch of a send is a
 * new buffer the size of its records (5000 records of 100 bytes: 0.6 MB), and a drain made
 * them faster than the collector took them back: the buffers waiting to be collected were
 * most of the agent's memory while it delivered. A send gives its batches back once every
 * request it made was answered (so the library has copied them into its requests, and no
 * request of theirs can still be waiting to be written); anything else leaves them to the
 * collector. Batches under {@link BatchMemory.MIN_BYTES} (a send over many partitions makes
 * many small ones) get memory of their own size, never pooled; a larger one gets a pooled
 * buffer that fits it, the smallest, and no more than twice its size. At most `keep` are kept
 * (when full, the larger), and those not needed for a while are let go of ({@link FreeList}).
 */
export class BatchMemory {
  /** Smaller batches are not pooled. */
  static readonly MIN_BYTES = 64 * 1024;
  readonly #free: FreeList<ArrayBuffer>;

  /**
   * @param keep buffers kept for reuse, at most (one send takes one buffer per batch)
   * @param maxBytes larger buffers are left to the collector
   * @param trimMs the period over which buffers not needed are counted, then let go of
   */
  constructor(readonly keep = 8, readonly maxBytes = 16 << 20, trimMs?: number) {
    this.#free = new FreeList((ab) => ab.byteLength, keep, trimMs);
  }

  /** A buffer of `size` bytes, whose contents are whatever was there before. */
  take(size: number): Uint8Array {
    if (size < BatchMemory.MIN_BYTES) return new Uint8Array(size);
    const ab = this.#free.take(size, 2 * size);
    if (ab !== undefined) return new Uint8Array(ab, 0, size);
    // An eighth more, so that a buffer fits the next batches, whose sizes vary a little.
    return new Uint8Array(new ArrayBuffer(size + (size >> 3)), 0, size);
  }

  /** Takes back the memory of `b` (from {@link take}), which nothing may use afterwards. */
  give(b: Uint8Array): void {
    const ab = b.buffer as ArrayBuffer;
    if (ab.byteLength < BatchMemory.MIN_BYTES || ab.byteLength > this.maxBytes) return;
    this.#free.give(ab);
  }

  /** Buffers kept for reuse now (for tests). */
  get freeCount(): number {
    return this.#free.count;
  }

  /** Lets go of the buffers kept and stops the idle timer (the client closes). */
  close(): void {
    this.#free.close();
  }
}

/**
 * Encodes `records[idx[i]]` for each i as the records of one batch, in memory from `memory`
 * when given.
 */
export function encodeRecords(
  records: readonly ProviderRecord[],
  idx: readonly number[],
  memory?: BatchMemory,
): EncodedRecords {
  const base = records[idx[0]].timestamp;
  let max = base;
  // First pass: the exact size, so that one buffer is allocated and nothing is copied twice.
  let total = 0;
  const sizes = new Array<number>(idx.length);
  for (let i = 0; i < idx.length; i++) {
    const r = records[idx[i]];
    if (r.timestamp > max) max = r.timestamp;
    let body = 1 + varintSize(r.timestamp - base) + varintSize(i);
    const kl = keyLength(r), vl = valueLength(r);
    body += kl < 0 ? 1 : varintSize(kl) + kl;
    body += varintSize(vl) + vl;
    const h = r.headers;
    body += varintSize(h === null ? 0 : h.length);
    if (h !== null) {
      for (const [name, value] of h) {
        const nb = nameBytes(name);
        body += varintSize(nb.length) + nb.length + varintSize(value.length) + value.length;
      }
    }
    sizes[i] = body;
    total += varintSize(body) + body;
  }
  const whole = memory
    ? memory.take(BATCH_HEADER_SIZE + total)
    : new Uint8Array(BATCH_HEADER_SIZE + total);
  const b = whole.subarray(BATCH_HEADER_SIZE);
  let p = 0;
  for (let i = 0; i < idx.length; i++) {
    const r = records[idx[i]];
    p = writeVarint(b, p, sizes[i]);
    b[p++] = 0; // attributes
    p = writeVarint(b, p, r.timestamp - base);
    p = writeVarint(b, p, i);
    const kl = keyLength(r);
    p = writeVarint(b, p, kl);
    if (kl >= 0) p = copyKey(r, b, p);
    p = writeVarint(b, p, valueLength(r));
    p = copyValue(r, b, p);
    const h = r.headers;
    p = writeVarint(b, p, h === null ? 0 : h.length);
    if (h !== null) {
      for (const [name, value] of h) {
        const nb = nameBytes(name);
        p = writeVarint(b, p, nb.length);
        b.set(nb, p);
        p += nb.length;
        p = writeVarint(b, p, value.length);
        b.set(value, p);
        p += value.length;
      }
    }
  }
  return { bytes: b, count: idx.length, baseTimestamp: base, maxTimestamp: max };
}

/** What makes a batch idempotent: the producer and the partition's sequence number. */
export interface BatchIdentity {
  producerId: bigint;
  producerEpoch: number;
  baseSequence: number;
}

/**
 * Frames `records` (their `bytes` already compressed when `codecBits` is not 0) as one
 * record batch. Uncompressed (`payload` is `records.bytes`), the header goes into the room
 * before them; a compressed payload is copied behind a new header.
 */
export function finishBatch(
  records: EncodedRecords,
  payload: Uint8Array,
  codecBits: number,
  id: BatchIdentity,
): Uint8Array {
  const inPlace = payload === records.bytes && payload.byteOffset === BATCH_HEADER_SIZE;
  const b = inPlace
    ? new Uint8Array(payload.buffer, 0, BATCH_HEADER_SIZE + payload.length)
    : new Uint8Array(BATCH_HEADER_SIZE + payload.length);
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  v.setBigInt64(0, 0n);
  v.setInt32(8, b.length - 12);
  v.setInt32(12, -1);
  b[16] = 2;
  v.setInt16(21, codecBits);
  v.setInt32(23, records.count - 1);
  v.setBigInt64(27, BigInt(records.baseTimestamp));
  v.setBigInt64(35, BigInt(records.maxTimestamp));
  v.setBigInt64(43, id.producerId);
  v.setInt16(51, id.producerEpoch);
  v.setInt32(53, id.baseSequence);
  v.setInt32(57, records.count);
  if (!inPlace) b.set(payload, BATCH_HEADER_SIZE);
  v.setUint32(17, crc32c(b, 21, b.length));
  return b;
}

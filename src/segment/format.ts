/**
 * The segment file format: a fixed header, then frames. A frame is one batch of records
 * written by one `write` call on the file, with one CRC32C over the whole batch.
 *
 * ```
 * Segment header (16 bytes)
 *   0   4  magic "MBSG" (4D 42 53 47)
 *   4   1  format version (1)
 *   5   3  reserved, zero
 *   8   8  sequence number of the segment's first record (u64, big-endian)
 *
 * Frame (repeated to the end of the file)
 *   0   4  payload length N (u32 BE), at most MAX_FRAME_PAYLOAD
 *   4   4  CRC32C of bytes [8, 20 + N) of this frame (count, base time, payload)
 *   8   4  record count (u32 BE), at least 1
 *  12   8  base timestamp, ms since the Unix epoch (u64 BE)
 *  20   N  payload: `count` records back to back
 *
 * Record (inside a payload; every integer is an unsigned LEB128 varint)
 *   varint  zigzag(timestamp - base timestamp)
 *   varint  topic length T, then T bytes of UTF-8
 *   varint  key length + 1 (0 means "no key"), then the key bytes
 *   varint  header count H, then H times: name length, name (UTF-8), value length, value
 *   varint  value length V, then V bytes
 *
 * Footer (48 bytes, optional: written when the segment is sealed, after its last frame)
 *   0   4  magic "MBFT" (4D 42 46 54); as a frame's payload length it is over
 *          MAX_FRAME_PAYLOAD, so no reader mistakes it for a frame
 *   4   4  CRC32C of bytes [8, 48) of the footer
 *   8   4  frame count (u32 BE)
 *  12   4  record count (u32 BE)
 *  16   8  sequence number of the first record (u64 BE), as in the header
 *  24   8  data size: the footer's own offset, where the last frame ends (u64 BE)
 *  32   8  base timestamp of the first frame (u64 BE; 0 when there is none)
 *  40   8  largest record timestamp (u64 BE; all ones when unknown)
 * ```
 *
 * A footer counts only when its CRC matches, its data size plus 48 is the file's size and
 * its sequence number is the header's; otherwise the segment is walked frame by frame.
 *
 * A varint may be written with redundant continuation bytes (`0x85 0x00` is 5): the writer
 * reserves the widest length a string could need before it knows the exact byte count.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { crc32c } from "../binary/crc32c.ts";
import {
  copyRange,
  keyLength,
  type KeyValue,
  RangedRecord,
  type RecordPool,
  valueLength,
} from "../binary/ranges.ts";
import { readU64, writeU64 } from "../binary/u64.ts";

/** "MBSG" as a big-endian u32. */
export const SEGMENT_MAGIC = 0x4d425347;
/** Bumped on any change to the layout above. */
export const FORMAT_VERSION = 1;
/** Bytes before the first frame. */
export const SEGMENT_HEADER_SIZE = 16;
/** Bytes before a frame's payload. */
export const FRAME_HEADER_SIZE = 20;
/** Largest frame payload a reader accepts: a corrupt length never allocates more than this. */
export const MAX_FRAME_PAYLOAD = 256 * 1024 * 1024;
/** "MBFT" as a big-endian u32. */
export const FOOTER_MAGIC = 0x4d424654;
/** Bytes of a segment footer. */
export const SEGMENT_FOOTER_SIZE = 48;

/** File name suffixes. */
export const SEGMENT_SUFFIX = ".seg";

/** A header as `[name, value]`; Kafka allows repeated names, so this is a list, not a map. */
export type RecordHeader = [name: string, value: Uint8Array];

/** One stored record as the reader returns it. `value` and `key` may view a shared buffer. */
export interface StoredRecord {
  topic: string;
  key: Uint8Array | null;
  value: Uint8Array;
  headers: RecordHeader[] | null;
  /** Write time, ms since the Unix epoch. */
  timestamp: number;
}

/** What is known about a segment from its name. */
export interface SegmentName {
  /** Sequence number of the first record. */
  firstSeq: number;
  /** File name, e.g. `00000000000000000042-0192ab3c4d5.seg`. */
  name: string;
}

/**
 * Segment file names sort in write order and never collide: the first record's sequence
 * number (20 digits) and the creation time in ms (11 hex digits), e.g.
 * `00000000000000000042-00192ab3c4d.seg`.
 */
export function segmentFileName(firstSeq: number, createdMs: number): string {
  return `${String(firstSeq).padStart(20, "0")}-${
    createdMs.toString(16).padStart(11, "0")
  }${SEGMENT_SUFFIX}`;
}

const NAME_RE = /^(\d{20})-([0-9a-f]{11,})\.seg$/;

/** Parses a segment file name, or returns null for any other file. */
export function parseSegmentFileName(name: string): SegmentName | null {
  const m = NAME_RE.exec(name);
  if (!m) return null;
  return { firstSeq: Number(m[1]), name };
}

/** Encodes a segment header. */
export function encodeSegmentHeader(firstSeq: number): Uint8Array {
  const b = new Uint8Array(SEGMENT_HEADER_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, SEGMENT_MAGIC);
  b[4] = FORMAT_VERSION;
  writeU64(v, 8, firstSeq);
  return b;
}

/** Decodes a segment header, or returns the reason it is not one. */
export function decodeSegmentHeader(b: Uint8Array): { firstSeq: number } | string {
  if (b.length < SEGMENT_HEADER_SIZE) return `short header (${b.length} bytes)`;
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  const magic = v.getUint32(0);
  if (magic !== SEGMENT_MAGIC) return `bad magic 0x${magic.toString(16).padStart(8, "0")}`;
  if (b[4] !== FORMAT_VERSION) return `unsupported format version ${b[4]}`;
  return { firstSeq: readU64(v, 8) };
}

/**
 * The version byte of a header that has this format's magic but a later version than
 * {@link FORMAT_VERSION} (a segment written by a newer messagebuffer), else null.
 */
export function newerFormatVersion(b: Uint8Array): number | null {
  if (b.length < 5) return null;
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  return v.getUint32(0) === SEGMENT_MAGIC && b[4] > FORMAT_VERSION ? b[4] : null;
}

/** What a segment's footer records (see the module doc). */
export interface SegmentFooter {
  frames: number;
  records: number;
  firstSeq: number;
  /** Where the last frame ends (and the footer starts). */
  dataSize: number;
  /** Base time of the first frame (0 when the segment holds none). */
  oldestTimestamp: number;
  /** Largest record timestamp; Infinity when it was not known as the footer was written. */
  newestTimestamp: number;
}

/** True when the footer's 32-bit counts can hold `f`'s (a segment of over 2^32 records cannot have one). */
export function footerFits(f: { frames: number; records: number }): boolean {
  return f.frames <= 0xffffffff && f.records <= 0xffffffff;
}

/** Encodes a footer (see {@link footerFits}). */
export function encodeSegmentFooter(f: SegmentFooter): Uint8Array {
  const b = new Uint8Array(SEGMENT_FOOTER_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, FOOTER_MAGIC);
  v.setUint32(8, f.frames);
  v.setUint32(12, f.records);
  writeU64(v, 16, f.firstSeq);
  writeU64(v, 24, f.dataSize);
  writeU64(v, 32, f.oldestTimestamp);
  if (Number.isFinite(f.newestTimestamp)) writeU64(v, 40, f.newestTimestamp);
  else {
    // Not known: all ones.
    v.setUint32(40, 0xffffffff);
    v.setUint32(44, 0xffffffff);
  }
  v.setUint32(4, crc32c(b, 8, SEGMENT_FOOTER_SIZE));
  return b;
}

/** Decodes the footer in `b` (48 bytes), or returns why it is not a valid one. */
export function decodeSegmentFooter(b: Uint8Array): SegmentFooter | string {
  if (b.length !== SEGMENT_FOOTER_SIZE) return `short footer (${b.length} bytes)`;
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  if (v.getUint32(0) !== FOOTER_MAGIC) return "no footer";
  if (crc32c(b, 8, SEGMENT_FOOTER_SIZE) !== v.getUint32(4)) return "footer checksum mismatch";
  const unknown = v.getUint32(40) === 0xffffffff && v.getUint32(44) === 0xffffffff;
  return {
    frames: v.getUint32(8),
    records: v.getUint32(12),
    firstSeq: readU64(v, 16),
    dataSize: readU64(v, 24),
    oldestTimestamp: readU64(v, 32),
    newestTimestamp: unknown ? Infinity : readU64(v, 40),
  };
}

/**
 * True when the `len` bytes at `b[at..]` could be the start of a footer (they begin with as
 * much of its magic as they hold) and are no longer than one: what a walk that reaches the
 * last bytes of a file treats as a footer rather than as a frame.
 */
export function looksLikeFooter(b: Uint8Array, at: number, len: number): boolean {
  if (len <= 0 || len > SEGMENT_FOOTER_SIZE) return false;
  for (let i = 0; i < Math.min(4, len); i++) {
    if (b[at + i] !== ((FOOTER_MAGIC >>> (24 - 8 * i)) & 0xff)) return false;
  }
  return true;
}

/** A frame header as read from a file. */
export interface FrameHeader {
  payloadLength: number;
  crc: number;
  count: number;
  baseTimestamp: number;
}

/** Reads the frame header at `at`; the caller checks there are FRAME_HEADER_SIZE bytes. */
export function readFrameHeader(b: Uint8Array, at: number): FrameHeader {
  const v = new DataView(b.buffer, b.byteOffset + at, FRAME_HEADER_SIZE);
  return {
    payloadLength: v.getUint32(0),
    crc: v.getUint32(4),
    count: v.getUint32(8),
    baseTimestamp: readU64(v, 12),
  };
}

/** True when the frame header is plausible: sane length, at least one record. */
export function frameHeaderIsSane(h: FrameHeader): boolean {
  return h.payloadLength <= MAX_FRAME_PAYLOAD && h.count >= 1 && h.count <= h.payloadLength;
}

/** True when the frame at `at` (header and payload all in `b`) has a matching CRC. */
export function frameCrcMatches(b: Uint8Array, at: number, h: FrameHeader): boolean {
  return crc32c(b, at + 8, at + FRAME_HEADER_SIZE + h.payloadLength) === h.crc;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

// Kafka's legal topic names: 1-249 characters of [a-zA-Z0-9._-].
const TOPIC_RE = /^[a-zA-Z0-9._-]{1,249}$/;

/** Throws a TypeError naming the topic when it is not a legal Kafka topic name. */
export function validateTopic(topic: unknown): asserts topic is string {
  if (typeof topic !== "string") {
    throw new TypeError(`topic must be a string, got ${typeof topic}`);
  }
  if (!TOPIC_RE.test(topic) || topic === "." || topic === "..") {
    throw new TypeError(
      `Invalid topic name ${
        JSON.stringify(topic.length > 60 ? topic.slice(0, 60) + "…" : topic)
      }: ` +
        `use 1-249 characters of a-z, A-Z, 0-9, ".", "_" and "-"`,
    );
  }
}

/**
 * Bytes or text; text is stored as UTF-8.
 *
 * @example Text or bytes
 * ```ts
 * await buffer.write("t", "text is stored as UTF-8");
 * await buffer.write("t", new Uint8Array([0, 1, 2]));
 * ```
 */
export type Bytes = string | Uint8Array;

/**
 * Headers given by a caller: a map, or a list when a name repeats.
 *
 * @example Repeated header names
 * ```ts
 * await buffer.write("t", "v", { headers: [["tag", "a"], ["tag", "b"]] });
 * ```
 */
export type HeadersInit = Record<string, Bytes> | Array<[string, Bytes]>;

/**
 * Encodes records into one frame. `append` validates and encodes synchronously, so a bad
 * record throws before anything is stored; `finish` seals the frame (CRC, header) and hands
 * back its bytes. Reused: `reset` starts the next frame in the same memory.
 */
export class FrameBuilder {
  #buf: Uint8Array;
  #pos = FRAME_HEADER_SIZE;
  #count = 0;
  #base = 0;
  #max = 0;
  readonly #usual: number;
  readonly #topics: Map<string, Uint8Array>;
  readonly maxRecordBytes: number;

  /**
   * @param initialCapacity the bytes the frame's memory starts with; it doubles as records
   *   need more
   * @param topics the topics encoded so far (validated, length-prefixed UTF-8), which the
   *   builders of one writer share, so that a topic is known to each once one has taken it
   * @param usualCapacity the memory grows to at most this while records fit in it (a frame
   *   cut at its target plus some slack), rather than doubling past it
   */
  constructor(
    initialCapacity = 1 << 20,
    maxRecordBytes = 16 * 1024 * 1024,
    topics: Map<string, Uint8Array> = new Map(),
    usualCapacity = initialCapacity,
  ) {
    this.#buf = new Uint8Array(initialCapacity);
    this.#usual = usualCapacity;
    this.maxRecordBytes = maxRecordBytes;
    this.#topics = topics;
  }

  /** Records in the open frame. */
  get count(): number {
    return this.#count;
  }

  /** Timestamp of the open frame's first record (its base time). */
  get baseTimestamp(): number {
    return this.#base;
  }

  /** Largest record timestamp in the open frame. */
  get maxTimestamp(): number {
    return this.#max;
  }

  /** Bytes the open frame would take on disk. */
  get size(): number {
    return this.#pos;
  }

  /** Bytes of memory the builder holds. */
  get capacity(): number {
    return this.#buf.length;
  }

  /**
   * Appends one record. Throws TypeError/RangeError (naming the bad field) without changing
   * the frame when the record is invalid.
   */
  append(
    topic: string,
    value: Bytes,
    key: Bytes | null | undefined,
    headers: HeadersInit | null | undefined,
    timestamp: number,
  ): void {
    let topicBytes = this.#topics.get(topic);
    if (topicBytes === undefined) {
      validateTopic(topic);
      topicBytes = encodeLengthPrefixed(textEncoder.encode(topic));
      if (this.#topics.size > 10_000) this.#topics.clear();
      this.#topics.set(topic, topicBytes);
    }
    if (typeof value !== "string" && !(value instanceof Uint8Array)) {
      throw new TypeError(`value must be a string or Uint8Array, got ${describe(value)}`);
    }
    if (key != null && typeof key !== "string" && !(key instanceof Uint8Array)) {
      throw new TypeError(
        `key must be a string, Uint8Array, null or undefined, got ${describe(key)}`,
      );
    }
    const start = this.#pos;
    // Worst case: 10 (time) + topic + 5 + key*3 + headers + 5 + value*3 bytes.
    const worst = 25 + topicBytes.length + byteBound(value) + (key == null ? 0 : byteBound(key)) +
      (headers == null ? 0 : headersBound(headers));
    let p = this.#begin(topicBytes, timestamp, worst);
    const b = this.#buf;
    if (key == null) {
      b[p++] = 0;
    } else {
      p = writeBytes(b, p, key, 1);
    }
    if (headers == null) {
      b[p++] = 0;
    } else {
      try {
        p = writeHeaders(b, p, headers);
      } catch (e) {
        this.#pos = start;
        throw e;
      }
    }
    this.#end(topic, start, writeBytes(b, p, value, 0), timestamp);
  }

  /**
   * Appends one record without headers whose key (`keyAt` -1: none) and value are ranges of
   * `src`: what {@link append} does with views of them, without making the views (the socket
   * input's path, two views a line). The topic must be one {@link append} has taken before,
   * else this returns false and appends nothing; it throws as {@link append} does for a record
   * over `maxRecordBytes`.
   */
  appendRange(
    topic: string,
    src: Uint8Array,
    keyAt: number,
    keyLength: number,
    valueAt: number,
    valueLength: number,
    timestamp: number,
  ): boolean {
    const topicBytes = this.#topics.get(topic);
    if (topicBytes === undefined) return false;
    const start = this.#pos;
    const room = 25 + topicBytes.length + (keyAt < 0 ? 0 : keyLength + 5) + valueLength + 5;
    let p = this.#begin(topicBytes, timestamp, room);
    const b = this.#buf;
    if (keyAt < 0) b[p++] = 0;
    else p = copyRange(src, keyAt, keyLength, b, writeVarint(b, p, keyLength + 1));
    b[p++] = 0; // no headers
    this.#end(
      topic,
      start,
      copyRange(src, valueAt, valueLength, b, writeVarint(b, p, valueLength)),
      timestamp,
    );
    return true;
  }

  /**
   * Starts a record at the end of the frame, with room for `room` bytes: its time (as a delta
   * from the frame's base) and its topic. Returns where its key goes.
   */
  #begin(topicBytes: Uint8Array, timestamp: number, room: number): number {
    if (this.#count === 0) this.#base = timestamp;
    this.#ensure(room);
    const b = this.#buf;
    const delta = timestamp - this.#base;
    const p = writeVarint(b, this.#pos, delta >= 0 ? delta * 2 : -delta * 2 - 1);
    return copyRange(topicBytes, 0, topicBytes.length, b, p);
  }

  /**
   * Ends the record written from `start` to `end`: it counts, unless it is over
   * `maxRecordBytes` (then it throws, and the frame is as it was).
   */
  #end(topic: string, start: number, end: number, timestamp: number): void {
    if (end - start > this.maxRecordBytes) {
      throw new RangeError(
        `Record for topic "${topic}" is ${
          end - start
        } bytes encoded, over maxRecordBytes (${this.maxRecordBytes})`,
      );
    }
    this.#pos = end;
    this.#count++;
    if (this.#count === 1 || timestamp > this.#max) this.#max = timestamp;
  }

  /** Closes the frame: writes its header and CRC and returns a view of its bytes. */
  finish(): Uint8Array {
    const b = this.#buf;
    const v = new DataView(b.buffer, b.byteOffset, FRAME_HEADER_SIZE);
    v.setUint32(0, this.#pos - FRAME_HEADER_SIZE);
    v.setUint32(8, this.#count);
    writeU64(v, 12, this.#base);
    v.setUint32(4, crc32c(b, 8, this.#pos));
    return b.subarray(0, this.#pos);
  }

  /** Empties the frame. A view returned by `finish` is invalid after this. */
  reset(): void {
    this.#pos = FRAME_HEADER_SIZE;
    this.#count = 0;
  }

  #ensure(extra: number): void {
    if (this.#pos + extra <= this.#buf.length) return;
    const need = this.#pos + extra;
    let cap = this.#buf.length * 2;
    while (cap < need) cap *= 2;
    if (need <= this.#usual && cap > this.#usual) cap = this.#usual;
    const next = new Uint8Array(cap);
    next.set(this.#buf.subarray(0, this.#pos));
    this.#buf = next;
  }
}

function describe(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
}

function byteBound(v: Bytes): number {
  return typeof v === "string" ? v.length * 3 + 5 : v.length + 5;
}

function headersBound(h: HeadersInit): number {
  let n = 5;
  const entries = Array.isArray(h) ? h : Object.entries(h);
  for (const [k, v] of entries) n += byteBound(String(k)) + byteBound(v as Bytes);
  return n;
}

function writeHeaders(b: Uint8Array, p: number, h: HeadersInit): number {
  if (typeof h !== "object") {
    throw new TypeError(`headers must be an object or a list of [name, value], got ${typeof h}`);
  }
  const entries = Array.isArray(h) ? h : Object.entries(h);
  p = writeVarint(b, p, entries.length);
  for (const entry of entries) {
    if (!Array.isArray(entry) || entry.length !== 2 || typeof entry[0] !== "string") {
      throw new TypeError(`each header must be [name: string, value: string | Uint8Array]`);
    }
    const [name, value] = entry;
    if (typeof value !== "string" && !(value instanceof Uint8Array)) {
      throw new TypeError(
        `header "${name}" must have a string or Uint8Array value, got ${describe(value)}`,
      );
    }
    p = writeBytes(b, p, name, 0);
    p = writeBytes(b, p, value, 0);
  }
  return p;
}

/**
 * Encodes `s` as UTF-8 into `b` at `p` (which has room for it); returns the bytes written.
 * Under Bun, Buffer's native `utf8Write` writes in place; `encodeInto` needs a view of `b`
 * per string, and on the ingest path (two strings per record) allocating those views cost
 * more than the encoding. Deno's `utf8Write` is slower than its `encodeInto`.
 */
const utf8WriteAt: (b: Uint8Array, s: string, p: number) => number = (() => {
  const native = (Buffer.prototype as { utf8Write?: (s: string, p: number) => number }).utf8Write;
  if ("Bun" in globalThis && typeof native === "function") {
    return (b, s, p) => native.call(b, s, p);
  }
  return (b, s, p) => textEncoder.encodeInto(s, b.subarray(p)).written;
})();

/** Writes `v` with a length prefix (length + `bias`). Strings are encoded in place. */
function writeBytes(b: Uint8Array, p: number, v: Bytes, bias: number): number {
  if (typeof v !== "string") {
    p = writeVarint(b, p, v.length + bias);
    return copyRange(v, 0, v.length, b, p);
  }
  // Reserve the width the longest possible encoding needs, encode, then fill in the length.
  const maxLen = v.length * 3 + bias;
  const width = maxLen < 0x80
    ? 1
    : maxLen < 0x4000
    ? 2
    : maxLen < 0x200000
    ? 3
    : maxLen < 0x10000000
    ? 4
    : 5;
  const written = utf8WriteAt(b, v, p + width);
  writePaddedVarint(b, p, written + bias, width);
  return p + width + written;
}

function encodeLengthPrefixed(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length + 5);
  const p = writeVarint(out, 0, bytes.length);
  out.set(bytes, p);
  return out.subarray(0, p + bytes.length);
}

/** Unsigned LEB128; `n` up to 2^53. */
export function writeVarint(b: Uint8Array, p: number, n: number): number {
  while (n >= 0x80) {
    b[p++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  b[p++] = n;
  return p;
}

function writePaddedVarint(b: Uint8Array, p: number, n: number, width: number): void {
  for (let i = 0; i < width - 1; i++) {
    b[p++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  b[p] = n & 0x7f;
}

/** Thrown by the decoder when a payload whose CRC matched does not parse (a writer bug). */
export class PayloadError extends Error {}

/**
 * Decodes the records of a frame whose CRC has been checked. Values and keys are views into
 * `b`; callers that keep them past the buffer's reuse must copy. `ranged`: each record is a
 * {@link RangedRecord}, whose key and value stay offsets into `b` until asked for (the
 * sender's form: no view per field), taken from `pool` when given.
 */
export function decodeFrame(
  b: Uint8Array,
  at: number,
  h: FrameHeader,
  out: StoredRecord[],
  ranged = false,
  pool?: RecordPool,
): void {
  if (ranged) return decodeRanged(b, at, h, out, pool);
  let p = at + FRAME_HEADER_SIZE;
  const end = p + h.payloadLength;
  const base = h.baseTimestamp;
  let lastTopicStart = -1, lastTopicLen = -1;
  let topic = "";
  const varint = (): number => {
    const n = varintAt(b, p, end);
    p = varintEnd;
    return n;
  };
  const take = (len: number): Uint8Array => {
    if (p + len > end) throw new PayloadError("record runs past the end of its frame");
    const v = b.subarray(p, p + len);
    p += len;
    return v;
  };
  for (let i = 0; i < h.count; i++) {
    const z = varint();
    const timestamp = base + (z % 2 === 0 ? z / 2 : -(z + 1) / 2);
    const tlen = varint();
    if (p + tlen > end) throw new PayloadError("record runs past the end of its frame");
    if (tlen !== lastTopicLen || !sameBytes(b, p, lastTopicStart, tlen)) {
      topic = textDecoder.decode(b.subarray(p, p + tlen));
      lastTopicStart = p;
      lastTopicLen = tlen;
    }
    p += tlen;
    const klen = varint();
    const key = klen === 0 ? null : take(klen - 1);
    const headers = headersAt(b, p, end);
    p = varintEnd;
    const value = take(varint());
    out.push({ topic, key, value, headers, timestamp });
  }
  if (p !== end) throw new PayloadError(`frame has ${end - p} bytes after its last record`);
}

/**
 * Where the last {@link varintAt} or {@link headersAt} stopped (a second return value
 * without an object per call: these run several times per record).
 */
let varintEnd = 0;

/**
 * The unsigned varint at `b[p]`, ending before `end`; sets {@link varintEnd}. At most 8 bytes
 * (56 bits, past any safe integer): a longer one would make the value inexact, then NaN.
 */
function varintAt(b: Uint8Array, p: number, end: number): number {
  let n = 0, mul = 1, byte: number;
  const last = p + 8;
  do {
    if (p >= end) throw new PayloadError("record runs past the end of its frame");
    if (p >= last) throw new PayloadError("varint longer than 8 bytes");
    byte = b[p++];
    n += (byte & 0x7f) * mul;
    mul *= 0x80;
  } while (byte & 0x80);
  varintEnd = p;
  return n;
}

/** The headers at `b[p]` (a count, then names and values), or null; sets {@link varintEnd}. */
function headersAt(b: Uint8Array, p: number, end: number): RecordHeader[] | null {
  const count = varintAt(b, p, end);
  p = varintEnd;
  if (count === 0) return null;
  const headers: RecordHeader[] = [];
  for (let j = 0; j < count; j++) {
    const nlen = varintAt(b, p, end);
    p = varintEnd;
    if (p + nlen > end) throw new PayloadError("record runs past the end of its frame");
    const name = textDecoder.decode(b.subarray(p, p + nlen));
    p += nlen;
    const vlen = varintAt(b, p, end);
    p = varintEnd;
    if (p + vlen > end) throw new PayloadError("record runs past the end of its frame");
    headers.push([name, b.subarray(p, p + vlen)]);
    p += vlen;
  }
  varintEnd = p;
  return headers;
}

/**
 * {@link decodeFrame} into ranged records: the sender's path, run for every record delivered,
 * so written as one loop whose position stays in a local (no closure over it), reading
 * one-byte varints (lengths under 128, timestamps within 64 ms of the frame's) in line.
 */
function decodeRanged(
  b: Uint8Array,
  at: number,
  h: FrameHeader,
  out: StoredRecord[],
  pool: RecordPool | undefined,
): void {
  let p = at + FRAME_HEADER_SIZE;
  const end = p + h.payloadLength;
  if (end > b.length) throw new PayloadError("frame runs past the end of its buffer");
  const base = h.baseTimestamp;
  let lastTopicStart = -1, lastTopicLen = -1;
  let topic = "";
  let v: number;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i < h.count; i++) {
    // (A byte under 0x80 is a whole varint; p < end keeps b[p] a byte, not undefined.)
    let z: number;
    if (p < end && (v = b[p]) < 0x80) {
      z = v;
      p++;
    } else {
      z = varintAt(b, p, end);
      p = varintEnd;
    }
    const timestamp = base + (z % 2 === 0 ? z / 2 : -(z + 1) / 2);
    let tlen: number;
    if (p < end && (v = b[p]) < 0x80) {
      tlen = v;
      p++;
    } else {
      tlen = varintAt(b, p, end);
      p = varintEnd;
    }
    if (p + tlen > end) throw new PayloadError("record runs past the end of its frame");
    if (tlen !== lastTopicLen || !sameWords(dv, b, p, lastTopicStart, tlen)) {
      topic = textDecoder.decode(b.subarray(p, p + tlen));
      lastTopicStart = p;
      lastTopicLen = tlen;
    }
    p += tlen;
    let klen: number;
    if (p < end && (v = b[p]) < 0x80) {
      klen = v;
      p++;
    } else {
      klen = varintAt(b, p, end);
      p = varintEnd;
    }
    const keyAt = klen === 0 ? -1 : p;
    if (klen > 0) {
      klen--;
      if (p + klen > end) throw new PayloadError("record runs past the end of its frame");
      p += klen;
    }
    let headers: RecordHeader[] | null = null;
    if (p < end && b[p] === 0) p++;
    else {
      headers = headersAt(b, p, end);
      p = varintEnd;
    }
    let vlen: number;
    if (p < end && (v = b[p]) < 0x80) {
      vlen = v;
      p++;
    } else {
      vlen = varintAt(b, p, end);
      p = varintEnd;
    }
    if (p + vlen > end) throw new PayloadError("record runs past the end of its frame");
    out.push(
      pool
        ? pool.take(topic, timestamp, headers, b, keyAt, klen, p, vlen)
        : new RangedRecord(topic, timestamp, headers, b, keyAt, klen, p, vlen),
    );
    p += vlen;
  }
  if (p !== end) throw new PayloadError(`frame has ${end - p} bytes after its last record`);
}

/** Whether `b[p, p + len)` and `b[q, q + len)` hold the same bytes, compared 4 at a time. */
function sameWords(dv: DataView, b: Uint8Array, p: number, q: number, len: number): boolean {
  if (q < 0) return false;
  let i = 0;
  for (; i + 4 <= len; i += 4) if (dv.getInt32(p + i) !== dv.getInt32(q + i)) return false;
  for (; i < len; i++) if (b[p + i] !== b[q + i]) return false;
  return true;
}

function sameBytes(b: Uint8Array, p: number, q: number, len: number): boolean {
  if (q < 0) return false;
  for (let i = 0; i < len; i++) if (b[p + i] !== b[q + i]) return false;
  return true;
}

/**
 * What a record counts for against a batch's byte limit (`batchMaxBytes`): its key and value,
 * and 64 bytes for its topic, headers and framing. An estimate, cheap and the same everywhere.
 */
export function recordBytes(r: KeyValue): number {
  return valueLength(r) + Math.max(0, keyLength(r)) + 64;
}

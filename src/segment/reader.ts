/**
 * Reading segments, the one place that walks frames: the recovery scan run at open, the
 * cursor the sender reads frames with, every record of a file for `dump` and `replay`
 * ({@link readSegmentRecords}), and the readable records of quarantined bytes
 * ({@link readQuarantined}). Each stops at the first frame that does not check out; the
 * caller decides whether that is a torn tail (truncate) or corruption (quarantine).
 *
 * @module
 */

import { FreeList } from "../binary/idle.ts";
import type { FileHandle, FileSystem } from "../fs/types.ts";
import {
  decodeFrame,
  decodeSegmentFooter,
  decodeSegmentHeader,
  FRAME_HEADER_SIZE,
  frameCrcMatches,
  type FrameHeader,
  frameHeaderIsSane,
  looksLikeFooter,
  newerFormatVersion,
  PayloadError,
  readFrameHeader,
  SEGMENT_FOOTER_SIZE,
  SEGMENT_HEADER_SIZE,
  SEGMENT_MAGIC,
  type SegmentFooter,
  type StoredRecord,
} from "./format.ts";

/** What a scan learned about a segment. */
export interface ScanResult {
  /** Sequence number of the first record (from the header). */
  firstSeq: number;
  /** End of the last good frame: the segment's usable size. */
  validSize: number;
  /** Size of the file as found. */
  fileSize: number;
  /** Good frames, and the records in them. */
  frames: number;
  records: number;
  /** Base time of the first good frame (0 when there is none). */
  oldestTimestamp: number;
  /**
   * The segment's footer, when the scan found a valid one right after the last frame (only
   * a walk to the end of the file looks there).
   */
  footer: SegmentFooter | null;
  /**
   * Why the scan stopped before the end of the file, if it did. `torn` when what follows the
   * last good frame cannot be a complete frame (the tail of an interrupted write): cut it
   * off. `corrupt` when a complete-looking frame failed its checks with data after it.
   * `footer` when the last bytes are a footer that does not check out (or a torn one): they
   * hold no records, so they are cut off too.
   */
  stop: null | { kind: "torn" | "corrupt" | "footer"; offset: number; reason: string };
  /** When `mark` was given: records before that offset, or -1 if it is not a frame start. */
  recordsBeforeMark: number;
}

/** Why a segment could not be scanned at all (bad header). */
export interface BadHeader {
  badHeader: string;
  fileSize: number;
  /** The header's format version when it is ours but newer (see `newerFormatVersion`). */
  newerVersion: number | null;
}

/** Bytes read at a time by scans and cursors. */
const BLOCK_BYTES = 1 << 20;
/** Frames below this size are walked a block at a time; larger ones a header at a time. */
const SMALL_FRAME_BYTES = 1 << 16;

/**
 * Walks a segment from its header, reading the file in blocks of 1 MiB (a frame larger than
 * that is read whole). With `verify`, every frame's CRC is checked; without, only frame
 * headers are looked at (for sealed segments, whose data was fsynced before they were
 * sealed; the sender checks every CRC as it reads anyway). With `until`, the walk stops
 * once it reaches that offset (a checkpoint's position), and learns nothing past it.
 */
export async function scanSegment(
  fh: FileHandle,
  options: { verify: boolean; mark?: number; until?: number },
): Promise<ScanResult | BadHeader> {
  const fileSize = await fh.size();
  const head = new Uint8Array(SEGMENT_HEADER_SIZE);
  const got = await readFully(fh, head, 0, SEGMENT_HEADER_SIZE, 0);
  const decoded = decodeSegmentHeader(head.subarray(0, got));
  if (typeof decoded === "string") {
    return {
      badHeader: decoded,
      fileSize,
      newerVersion: newerFormatVersion(head.subarray(0, got)),
    };
  }
  const result: ScanResult = {
    firstSeq: decoded.firstSeq,
    validSize: SEGMENT_HEADER_SIZE,
    fileSize,
    frames: 0,
    records: 0,
    oldestTimestamp: 0,
    footer: null,
    stop: null,
    recordsBeforeMark: options.mark === SEGMENT_HEADER_SIZE ? 0 : -1,
  };
  const win = new BlockWindow(fh, BLOCK_BYTES, false);
  // A walk of frame headers reads blocks while frames are small (many headers per read), and
  // only the header once they are large (reading their data would cost more than the seek).
  let headerRead = BLOCK_BYTES;
  const limit = Math.min(fileSize, options.until ?? Infinity);
  let offset = SEGMENT_HEADER_SIZE;
  while (offset < limit) {
    const left = fileSize - offset;
    if (left <= SEGMENT_FOOTER_SIZE) {
      const at = await win.ensure(offset, left, fileSize);
      if (!options.verify && isZero(win.buf, at, left)) {
        // What a power loss leaves of a sealed segment's footer whose write did not reach
        // the disk. (In the newest segment, walked with `verify`, zeros are a torn write.)
        result.stop = { kind: "footer", offset, reason: `${left} zero bytes where a footer goes` };
        break;
      }
      if (looksLikeFooter(win.buf, at, left)) {
        const footer = decodeSegmentFooter(win.buf.subarray(at, at + left));
        if (
          typeof footer !== "string" && footer.dataSize === offset &&
          footer.firstSeq === result.firstSeq
        ) {
          result.footer = footer;
        } else {
          result.stop = {
            kind: "footer",
            offset,
            reason: typeof footer === "string" ? footer : "footer does not match the segment",
          };
        }
        break;
      }
    }
    if (left < FRAME_HEADER_SIZE) {
      result.stop = { kind: "torn", offset, reason: `${left} bytes after the last frame` };
      break;
    }
    let at = await win.ensure(offset, FRAME_HEADER_SIZE, fileSize, headerRead);
    const h = readFrameHeader(win.buf, at);
    const end = offset + FRAME_HEADER_SIZE + h.payloadLength;
    if (!options.verify) {
      headerRead = h.payloadLength >= SMALL_FRAME_BYTES ? FRAME_HEADER_SIZE : BLOCK_BYTES;
    }
    if (!frameHeaderIsSane(h) || end > fileSize) {
      // A frame header that is garbage or runs past the end of the file is what an
      // interrupted append leaves; corruption inside data that was complete shows as a CRC
      // mismatch instead (below).
      const tail = await isTail(fh, offset, fileSize, h);
      result.stop = tail
        ? { kind: "torn", offset, reason: describeBad(h, end, fileSize) }
        : { kind: "corrupt", offset, reason: describeBad(h, end, fileSize) };
      break;
    }
    if (options.verify) {
      at = await win.ensure(offset, FRAME_HEADER_SIZE + h.payloadLength, fileSize);
      if (!frameCrcMatches(win.buf, at, h)) {
        result.stop = end === fileSize
          ? { kind: "torn", offset, reason: "checksum mismatch in the last frame" }
          : { kind: "corrupt", offset, reason: "checksum mismatch" };
        break;
      }
    }
    if (result.records === 0) result.oldestTimestamp = h.baseTimestamp;
    result.frames++;
    result.records += h.count;
    offset = end;
    result.validSize = end;
    if (offset === options.mark) result.recordsBeforeMark = result.records;
  }
  return result;
}

/** Reads a segment's footer, if its last 48 bytes hold a valid one; else why not. */
export async function readFooter(
  fh: FileHandle,
  fileSize: number,
): Promise<SegmentFooter | string> {
  if (fileSize < SEGMENT_HEADER_SIZE + SEGMENT_FOOTER_SIZE) return "no footer";
  const b = new Uint8Array(SEGMENT_FOOTER_SIZE);
  const n = await readFully(fh, b, 0, SEGMENT_FOOTER_SIZE, fileSize - SEGMENT_FOOTER_SIZE);
  const footer = decodeSegmentFooter(b.subarray(0, n));
  if (typeof footer === "string") return footer;
  if (footer.dataSize + SEGMENT_FOOTER_SIZE !== fileSize) {
    return `footer says the data ends at ${footer.dataSize}, the file is ${fileSize} bytes`;
  }
  return footer;
}

function isZero(b: Uint8Array, at: number, len: number): boolean {
  for (let i = 0; i < len; i++) if (b[at + i] !== 0) return false;
  return true;
}

function describeBad(h: FrameHeader, end: number, fileSize: number): string {
  if (h.payloadLength === 0 && h.count === 0) return "zero-filled frame header";
  if (!frameHeaderIsSane(h)) {
    return `implausible frame header (length ${h.payloadLength}, ${h.count} records)`;
  }
  return `frame of ${end - fileSize} more bytes than the file holds`;
}

/**
 * A bad frame is a torn tail when nothing that could be a later frame follows it: its
 * header is sane but the file ends inside its declared length, fewer bytes than two frame
 * headers follow, or only zero bytes follow (space a crash left allocated but unwritten).
 */
async function isTail(
  fh: FileHandle,
  offset: number,
  fileSize: number,
  h: FrameHeader,
): Promise<boolean> {
  if (frameHeaderIsSane(h)) return true;
  if (fileSize - offset < 2 * FRAME_HEADER_SIZE) return true;
  const chunk = new Uint8Array(Math.min(fileSize - offset, 1 << 20));
  for (let at = offset; at < fileSize; at += chunk.length) {
    const n = await readFully(fh, chunk, 0, Math.min(chunk.length, fileSize - at), at);
    for (let i = 0; i < n; i++) if (chunk[i] !== 0) return false;
  }
  return true;
}

/** Reads exactly `length` bytes unless the file ends first; returns bytes read. */
export async function readFully(
  fh: FileHandle,
  into: Uint8Array,
  offset: number,
  length: number,
  position: number,
): Promise<number> {
  let done = 0;
  while (done < length) {
    const n = await fh.read(into, offset + done, length - done, position + done);
    if (n <= 0) break;
    done += n;
  }
  return done;
}

/** A checked frame in the cursor's buffer. */
export interface FrameView {
  header: FrameHeader;
  /** The buffer holding the frame; the frame header starts at `at`. */
  buf: Uint8Array;
  /** With {@link ReadBlocks}: the block `buf` is, to hold while its records are kept. */
  block: ReadBlock | null;
  at: number;
  /** File offset just past the frame. */
  end: number;
}

/**
 * Memory a segment's bytes were read into, with a count of its holders: the window reading
 * into it, and whoever keeps records decoded from it ({@link ReadBlocks}).
 */
export class ReadBlock {
  refs = 1;
  constructor(readonly bytes: Uint8Array) {}
}

/**
 * Read memory used again: a block whose holders have all let go of it serves a later read,
 * instead of a new buffer per read left to the garbage collector (a megabyte per read while
 * draining, which the collector let pile up to tens of megabytes).
 *
 * Reuse is safe only if every holder of a record decoded from a block holds the block too,
 * and lets go only once it is done with the record's bytes: a block used again too early
 * would have its records' keys and values overwritten by later reads. A block that is not
 * let go of is merely left to the garbage collector. At most {@link ReadBlocks.KEEP} free
 * blocks of at most {@link ReadBlocks.MAX_BYTES} are kept (when full, the larger), and those not
 * needed for a while are let go of ({@link FreeList}).
 */
export class ReadBlocks {
  static readonly KEEP = 4;
  /**
   * Larger blocks are left to the collector. A frame the writer filled is larger than a block
   * (1 MiB and up to 64 KiB more), and is read into a block of its own size: with 1 MiB here,
   * none of those was used again, and a drain made a megabyte of garbage per frame (its peak
   * RSS 10-15 MiB higher).
   */
  static readonly MAX_BYTES = 2 * BLOCK_BYTES;
  /** A block over BLOCK_BYTES is made a multiple of this, so that frames of about one size share. */
  static readonly ROUND_BYTES = 64 << 10;
  readonly #free: FreeList<ReadBlock>;

  /**
   * @param trimMs the period over which free blocks not needed are counted, then let go of
   * @param keep free blocks kept at most (more when several readers share the pool)
   */
  constructor(trimMs?: number, keep: number = ReadBlocks.KEEP) {
    this.#free = new FreeList((b) => b.bytes.length, keep, trimMs);
  }

  /** A block of at least `bytes`, held once: the smallest free one that fits, or a new one. */
  take(bytes: number): ReadBlock {
    const b = this.#free.take(bytes);
    if (b === undefined) {
      const r = ReadBlocks.ROUND_BYTES;
      return new ReadBlock(new Uint8Array(bytes > BLOCK_BYTES ? Math.ceil(bytes / r) * r : bytes));
    }
    b.refs = 1;
    return b;
  }

  /** One more holder of `b`. */
  hold(b: ReadBlock): void {
    if (b.refs <= 0) throw new Error("a read block was held after it was let go of");
    b.refs++;
  }

  /** One holder fewer of `b`; once it has none, it may serve a later read. */
  release(b: ReadBlock): void {
    if (b.refs <= 0) throw new Error("a read block was let go of more often than held");
    if (--b.refs > 0 || b.bytes.length > ReadBlocks.MAX_BYTES) return;
    this.#free.give(b);
  }

  /** How many free blocks are kept (for tests). */
  get freeCount(): number {
    return this.#free.count;
  }

  /** Lets go of the free blocks and stops the idle timer (the reader is done). */
  close(): void {
    this.#free.close();
  }
}

/**
 * A window of a file in memory, refilled a block at a time (or what there is, up to a block).
 * With `fresh`, each refill gets a new buffer of the size read, so that views handed out
 * earlier keep the bytes they saw; with `blocks`, each refill takes a block from it and lets
 * go of the one before (`block` is the current one: hold it to keep what was decoded from it).
 */
class BlockWindow {
  readonly #fh: FileHandle;
  readonly #blockBytes: number;
  readonly #fresh: boolean;
  readonly #blocks: ReadBlocks | null;
  buf: Uint8Array;
  block: ReadBlock | null = null;
  #start = 0;
  #len = 0;
  /** Reads running into `block`: while one does, it is never let go of (left to the GC). */
  #reading = 0;

  constructor(
    fh: FileHandle,
    blockBytes: number,
    fresh: boolean,
    blocks: ReadBlocks | null = null,
  ) {
    this.#fh = fh;
    this.#blockBytes = blockBytes;
    this.#fresh = fresh;
    this.#blocks = blocks;
    this.buf = fresh || blocks ? new Uint8Array(0) : new Uint8Array(blockBytes);
  }

  /**
   * Makes `length` bytes at `offset` (which the caller knows lie before `limit`) present in
   * `buf`, reading `block` bytes from there when they are not, and returns where they start
   * in it. A short read throws EIO.
   */
  async ensure(
    offset: number,
    length: number,
    limit: number,
    block = this.#blockBytes,
  ): Promise<number> {
    if (offset >= this.#start && offset + length <= this.#start + this.#len) {
      return offset - this.#start;
    }
    const want = Math.max(length, Math.min(block, limit - offset));
    // A fresh buffer holds only what is read: a sender that follows the writer's tail reads a
    // few kilobytes at a time, and a whole block for each cost a megabyte of garbage per read.
    if (this.#blocks) {
      const next = this.#blocks.take(want);
      if (this.block && this.#reading === 0) this.#blocks.release(this.block);
      this.block = next;
      this.buf = next.bytes;
    } else if (this.#fresh) this.buf = new Uint8Array(want);
    else if (this.buf.length < want) this.buf = new Uint8Array(want);
    this.#start = offset;
    // Empty until the read succeeds: a read that fails must not leave the window claiming
    // bytes at `offset` that it never read.
    this.#len = 0;
    this.#reading++;
    try {
      this.#len = await readFully(this.#fh, this.buf, 0, want, offset);
    } finally {
      this.#reading--;
    }
    if (this.#len < length) {
      this.#len = 0;
      throw Object.assign(new Error(`short read at ${offset}`), { code: "EIO" });
    }
    return 0;
  }

  /**
   * Lets go of what the window holds (with blocks, its block goes back to the pool): the next
   * `ensure` reads afresh. Memory a read is running into is left to that read.
   */
  letGo(): void {
    if (this.#reading === 0 && (this.#fresh || this.#blocks)) {
      if (this.#blocks && this.block) this.#blocks.release(this.block);
      this.buf = new Uint8Array(0);
    }
    this.block = null;
    this.#len = 0;
  }
}

/**
 * Reads checked frames from one segment, keeping a window of the file in memory so that
 * consecutive frames cost one read per `chunkBytes`.
 */
export class SegmentCursor {
  readonly fh: FileHandle;
  readonly #win: BlockWindow;

  /**
   * With `blocks`, reads go into blocks taken from it (see {@link ReadBlocks} for what its
   * user must then do); without, each read gets a buffer of its own.
   */
  constructor(fh: FileHandle, chunkBytes = BLOCK_BYTES, blocks: ReadBlocks | null = null) {
    this.fh = fh;
    this.#win = new BlockWindow(fh, chunkBytes, true, blocks);
  }

  /**
   * The frame at `offset`, if a whole frame lies before `limit`; null when there is none yet;
   * a string saying what is wrong when the bytes there are not a good frame.
   */
  async frameAt(offset: number, limit: number): Promise<FrameView | null | string> {
    if (offset + FRAME_HEADER_SIZE > limit) return null;
    let at = await this.#win.ensure(offset, FRAME_HEADER_SIZE, limit);
    const h = readFrameHeader(this.#win.buf, at);
    if (!frameHeaderIsSane(h)) {
      return `implausible frame header (length ${h.payloadLength}, ${h.count} records)`;
    }
    const total = FRAME_HEADER_SIZE + h.payloadLength;
    if (offset + total > limit) {
      return `frame of ${total} bytes runs past the end of the segment (${limit})`;
    }
    at = await this.#win.ensure(offset, total, limit);
    if (!frameCrcMatches(this.#win.buf, at, h)) return "checksum mismatch";
    return { header: h, buf: this.#win.buf, block: this.#win.block, at, end: offset + total };
  }

  /**
   * Lets go of the window's block (with `blocks`), keeping the file open: the next frame is
   * read afresh. For a reader that is about to wait, so that waiting holds no read memory.
   */
  letGo(): void {
    this.#win.letGo();
  }

  /** Closes the file; the window lets go of its block. */
  close(): Promise<void> {
    this.#win.letGo();
    return this.fh.close();
  }
}

/**
 * Calls `each` with every record of a segment file, with the offset of its frame. Returns
 * null, or the reason reading stopped early (a torn or corrupt frame).
 */
export async function readSegmentRecords(
  fs: FileSystem,
  path: string,
  each: (r: StoredRecord, frameOffset: number) => void,
): Promise<string | null> {
  const fh = await fs.open(path, "read");
  const cursor = new SegmentCursor(fh);
  try {
    const scan = await scanSegment(fh, { verify: false });
    if ("badHeader" in scan) return `not a segment file: ${scan.badHeader}`;
    // Frames end where a footer starts (a sealed segment's, valid or not).
    const footerStop = scan.stop?.kind === "footer" ? scan.stop : null;
    const size = scan.footer || footerStop ? scan.validSize : scan.fileSize;
    let offset = SEGMENT_HEADER_SIZE;
    while (offset < size) {
      const view = await cursor.frameAt(offset, size);
      if (view === null) return `torn frame at offset ${offset} (${size - offset} bytes)`;
      if (typeof view === "string") return `bad frame at offset ${offset}: ${view}`;
      const records: StoredRecord[] = [];
      decodeFrame(view.buf, view.at, view.header, records);
      for (const r of records) each(r, offset);
      offset = view.end;
    }
    return footerStop ? `bad footer at offset ${footerStop.offset}: ${footerStop.reason}` : null;
  } finally {
    await cursor.close();
  }
}

/** Bytes that could not be read (corrupt or torn), with why. */
export interface UnreadableRegion {
  offset: number;
  bytes: number;
  reason: string;
}

/**
 * The records in the frames of quarantined bytes whose checksum still matches. After a bad
 * frame its length cannot be trusted, so the next good frame is searched for byte by byte:
 * a frame header that is sane, fits, and whose CRC32C matches its payload.
 */
export function readQuarantined(
  b: Uint8Array,
): { records: StoredRecord[]; unreadable: UnreadableRegion[] } {
  const records: StoredRecord[] = [];
  const unreadable: UnreadableRegion[] = [];
  const magic = b.length >= 4 && new DataView(b.buffer, b.byteOffset, 4).getUint32(0);
  let p = magic === SEGMENT_MAGIC ? SEGMENT_HEADER_SIZE : 0;
  const frameAt = (at: number): StoredRecord[] | null => {
    if (at + FRAME_HEADER_SIZE > b.length) return null;
    const h = readFrameHeader(b, at);
    if (!frameHeaderIsSane(h) || at + FRAME_HEADER_SIZE + h.payloadLength > b.length) return null;
    if (!frameCrcMatches(b, at, h)) return null;
    const out: StoredRecord[] = [];
    try {
      decodeFrame(b, at, h, out);
    } catch (e) {
      if (e instanceof PayloadError) return null;
      throw e;
    }
    return out;
  };
  while (p < b.length) {
    if (looksLikeFooter(b, p, b.length - p)) break;
    const got = frameAt(p);
    if (got) {
      for (const r of got) records.push(copyRecord(r));
      p += FRAME_HEADER_SIZE + readFrameHeader(b, p).payloadLength;
      continue;
    }
    const from = p;
    for (p++; p < b.length && frameAt(p) === null; p++);
    unreadable.push({
      offset: from,
      bytes: p - from,
      reason: p < b.length ? "corrupt frame" : "corrupt or torn end",
    });
  }
  return { records, unreadable };
}

/** A record that owns its bytes (not views of a read buffer). */
export function copyRecord(r: StoredRecord): StoredRecord {
  return {
    topic: r.topic,
    key: r.key === null ? null : r.key.slice(),
    value: r.value.slice(),
    headers: r.headers === null ? null : r.headers.map(([k, v]) => [k, v.slice()]),
    timestamp: r.timestamp,
  };
}

/**
 * Reading segments: the recovery scan run at open, and the cursor the sender reads frames
 * with. Both stop at the first frame that does not check out; the caller decides whether
 * that is a torn tail (truncate) or corruption (quarantine).
 *
 * @module
 */

import type { FileHandle } from "../fs/types.ts";
import {
  decodeSegmentHeader,
  FRAME_HEADER_SIZE,
  frameCrcMatches,
  type FrameHeader,
  frameHeaderIsSane,
  readFrameHeader,
  SEGMENT_HEADER_SIZE,
} from "./format.ts";

/** What a scan learned about a segment. */
export interface ScanResult {
  /** Sequence number of the first record (from the header). */
  firstSeq: number;
  /** End of the last good frame: the segment's usable size. */
  validSize: number;
  /** Size of the file as found. */
  fileSize: number;
  /** Records in the good frames. */
  records: number;
  /** Base time of the first good frame (0 when there is none). */
  oldestTimestamp: number;
  /**
   * Why the scan stopped before the end of the file, if it did. `torn` when what follows the
   * last good frame cannot be a complete frame (the tail of an interrupted write): cut it
   * off. `corrupt` when a complete-looking frame failed its checks with data after it.
   */
  stop: null | { kind: "torn" | "corrupt"; offset: number; reason: string };
  /** When `mark` was given: records before that offset, or -1 if it is not a frame start. */
  recordsBeforeMark: number;
}

/** Why a segment could not be scanned at all (bad header). */
export interface BadHeader {
  badHeader: string;
  fileSize: number;
}

/**
 * Scans a segment from its header to its end. With `verify`, every frame's CRC is checked
 * (reading all data); without, only frame headers are read (fast, for sealed segments whose
 * data was fsynced before they were sealed; the sender checks CRCs as it reads anyway).
 */
export async function scanSegment(
  fh: FileHandle,
  options: { verify: boolean; mark?: number },
): Promise<ScanResult | BadHeader> {
  const fileSize = await fh.size();
  const head = new Uint8Array(SEGMENT_HEADER_SIZE);
  const got = await readFully(fh, head, 0, SEGMENT_HEADER_SIZE, 0);
  const decoded = decodeSegmentHeader(head.subarray(0, got));
  if (typeof decoded === "string") return { badHeader: decoded, fileSize };
  const result: ScanResult = {
    firstSeq: decoded.firstSeq,
    validSize: SEGMENT_HEADER_SIZE,
    fileSize,
    records: 0,
    oldestTimestamp: 0,
    stop: null,
    recordsBeforeMark: options.mark === SEGMENT_HEADER_SIZE ? 0 : -1,
  };
  let buf = new Uint8Array(options.verify ? 1 << 20 : FRAME_HEADER_SIZE);
  let offset = SEGMENT_HEADER_SIZE;
  while (offset < fileSize) {
    if (fileSize - offset < FRAME_HEADER_SIZE) {
      result.stop = {
        kind: "torn",
        offset,
        reason: `${fileSize - offset} bytes after the last frame`,
      };
      break;
    }
    await readFully(fh, buf, 0, FRAME_HEADER_SIZE, offset);
    const h = readFrameHeader(buf, 0);
    const end = offset + FRAME_HEADER_SIZE + h.payloadLength;
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
      const total = FRAME_HEADER_SIZE + h.payloadLength;
      if (buf.length < total) buf = new Uint8Array(Math.max(total, buf.length * 2));
      await readFully(fh, buf, 0, total, offset);
      if (!frameCrcMatches(buf, 0, h)) {
        result.stop = end === fileSize
          ? { kind: "torn", offset, reason: "checksum mismatch in the last frame" }
          : { kind: "corrupt", offset, reason: "checksum mismatch" };
        break;
      }
    }
    if (result.records === 0) result.oldestTimestamp = h.baseTimestamp;
    result.records += h.count;
    offset = end;
    result.validSize = end;
    if (offset === options.mark) result.recordsBeforeMark = result.records;
  }
  return result;
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
  at: number;
  /** File offset just past the frame. */
  end: number;
}

/**
 * Reads checked frames from one segment, keeping a window of the file in memory so that
 * consecutive frames cost one read per `chunkBytes`.
 */
export class SegmentCursor {
  readonly fh: FileHandle;
  #buf: Uint8Array;
  #start = 0;
  #len = 0;
  readonly chunkBytes: number;

  constructor(fh: FileHandle, chunkBytes = 1 << 20) {
    this.fh = fh;
    this.chunkBytes = chunkBytes;
    this.#buf = new Uint8Array(chunkBytes);
  }

  /**
   * The frame at `offset`, if a whole frame lies before `limit`; null when there is none yet;
   * a string saying what is wrong when the bytes there are not a good frame.
   */
  async frameAt(offset: number, limit: number): Promise<FrameView | null | string> {
    if (offset + FRAME_HEADER_SIZE > limit) return null;
    await this.#ensure(offset, FRAME_HEADER_SIZE, limit);
    const h = readFrameHeader(this.#buf, offset - this.#start);
    if (!frameHeaderIsSane(h)) {
      return `implausible frame header (length ${h.payloadLength}, ${h.count} records)`;
    }
    const total = FRAME_HEADER_SIZE + h.payloadLength;
    if (offset + total > limit) {
      return `frame of ${total} bytes runs past the end of the segment (${limit})`;
    }
    await this.#ensure(offset, total, limit);
    const at = offset - this.#start;
    if (!frameCrcMatches(this.#buf, at, h)) return "checksum mismatch";
    return { header: h, buf: this.#buf, at, end: offset + total };
  }

  async #ensure(offset: number, length: number, limit: number): Promise<void> {
    if (offset >= this.#start && offset + length <= this.#start + this.#len) return;
    const want = Math.max(length, Math.min(this.chunkBytes, limit - offset));
    if (this.#buf.length < want) this.#buf = new Uint8Array(want);
    // A fresh buffer each refill: records handed out earlier keep viewing the old one.
    else this.#buf = new Uint8Array(this.#buf.length);
    this.#start = offset;
    this.#len = await readFully(this.fh, this.#buf, 0, want, offset);
    if (this.#len < length) {
      throw Object.assign(new Error(`short read at ${offset}`), { code: "EIO" });
    }
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

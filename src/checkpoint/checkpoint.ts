/**
 * Checkpoint ("S") files: how far the provider has acknowledged a segment. One per segment
 * in delivery, named after it (`<segment base name>.s`). An S file holds two slots, written
 * in turn in place: one write (and, where the policy asks, one fdatasync) per commit, no
 * rename and no directory fsync except when the file is created. A write torn by a power
 * loss spoils only the slot it went to; the other slot still holds the position before it,
 * so the reader falls back one commit, never to the segment's start. The reader takes the
 * valid slot with the most records acknowledged. A file of one slot (32 bytes, as written
 * before this layout) reads the same way.
 *
 * ```
 * S file: slot 0 at offset 0, slot 1 at offset 32 (64 bytes; 32 with one slot)
 *
 * Slot (32 bytes)
 *   0   4  magic "MBCK" (4D 42 43 4B)
 *   4   1  format version (1)
 *   5   3  reserved, zero
 *   8   8  offset of the frame delivery resumes at (u64 BE)
 *  16   4  records of that frame already acknowledged (u32 BE)
 *  20   8  records of the segment acknowledged so far (u64 BE)
 *  28   4  CRC32C of bytes [0, 28)
 * ```
 *
 * @module
 */

import { crc32c } from "../binary/crc32c.ts";
import { readU64, writeU64 } from "../binary/u64.ts";
import type { FileHandle, FileSystem } from "../fs/types.ts";
import { OverlappingSyncs } from "../fs/syncs.ts";

const MAGIC = 0x4d42434b;
const VERSION = 1;
/** Size of one slot of an S file. */
export const SLOT_SIZE = 32;
/** S file name suffix. */
export const CHECKPOINT_SUFFIX = ".s";

/** A delivery position inside a segment. */
export interface Checkpoint {
  /** Byte offset of the frame delivery resumes at. */
  offset: number;
  /** Records at the start of that frame that were already acknowledged. */
  skip: number;
  /** Records of the whole segment acknowledged so far. */
  delivered: number;
}

/** The S file name for a segment file name. */
export function checkpointFileName(segmentName: string): string {
  return segmentName.replace(/\.seg$/, CHECKPOINT_SUFFIX);
}

/** Encodes one slot. */
export function encodeSlot(c: Checkpoint): Uint8Array {
  const b = new Uint8Array(SLOT_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, MAGIC);
  b[4] = VERSION;
  writeU64(v, 8, c.offset);
  v.setUint32(16, c.skip);
  writeU64(v, 20, c.delivered);
  v.setUint32(28, crc32c(b, 0, 28));
  return b;
}

function decodeSlot(b: Uint8Array): Checkpoint | string {
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  if (v.getUint32(0) !== MAGIC) {
    return `bad magic 0x${v.getUint32(0).toString(16).padStart(8, "0")}`;
  }
  if (b[4] !== VERSION) return `unsupported version ${b[4]}`;
  if (crc32c(b, 0, 28) !== v.getUint32(28)) return "checksum mismatch";
  return { offset: readU64(v, 8), skip: v.getUint32(16), delivered: readU64(v, 20) };
}

/**
 * Decodes an S file: the newest valid slot and its index, or the reason none can be used.
 * A piece of a slot after the first (a file of 33 to 63 bytes) is the first write of slot 1,
 * torn by a power loss: it is not a slot, and slot 0 is read as in a file of one slot.
 */
export function decodeCheckpoint(b: Uint8Array): { checkpoint: Checkpoint; slot: number } | string {
  if (b.length < SLOT_SIZE || b.length > 2 * SLOT_SIZE) {
    return `size ${b.length}, expected ${SLOT_SIZE} or ${2 * SLOT_SIZE}`;
  }
  let best: { checkpoint: Checkpoint; slot: number } | null = null;
  let why = "";
  for (let slot = 0; (slot + 1) * SLOT_SIZE <= b.length; slot++) {
    const c = decodeSlot(b.subarray(slot * SLOT_SIZE, (slot + 1) * SLOT_SIZE));
    if (typeof c === "string") {
      why ||= c;
      continue;
    }
    if (!best || c.delivered > best.checkpoint.delivered) best = { checkpoint: c, slot };
  }
  return best ?? why;
}

/** Reads an S file: the checkpoint, null when absent or empty, or the reason it is unusable. */
export async function loadCheckpoint(
  fs: FileSystem,
  path: string,
): Promise<Checkpoint | null | string> {
  const b = await fs.readFile(path);
  if (b === null) return null;
  const d = decodeCheckpoint(b);
  // No valid slot in at most one slot's bytes (empty, zeros, a piece of a slot): what a
  // power cut leaves of an S file whose first write did not reach the disk. It never held
  // a position (a committed one is a whole slot, never overwritten by the next), so there
  // is none, and nothing is damaged.
  if (typeof d === "string" && (b.length <= SLOT_SIZE || b.every((x) => x === 0))) return null;
  return typeof d === "string" ? d : d.checkpoint;
}

/** An open S file, committed to in place, slot after slot (see the module doc). */
export class CheckpointFile {
  readonly #fh: FileHandle;
  #slot: number;
  readonly #sync: boolean;

  private constructor(fh: FileHandle, nextSlot: number, sync: boolean) {
    this.#fh = fh;
    this.#slot = nextSlot;
    this.#sync = sync;
  }

  /**
   * Opens the S file at `path`, creating it when missing. The caller makes the directory
   * entry of a new file durable (an fsync of its directory) after its first commit.
   */
  static async open(
    fs: FileSystem,
    path: string,
    sync: boolean,
  ): Promise<{ file: CheckpointFile; created: boolean }> {
    const found = await fs.readFile(path);
    if (found !== null) {
      const d = decodeCheckpoint(found);
      // Write over the slot that does not hold the newest position.
      const next = typeof d === "string" ? 0 : 1 - d.slot;
      const fh = await fs.open(path, "append");
      // An unusable file (garbage, or of another size) starts over empty: written over in
      // place, it would keep its size and stay unreadable after every commit.
      if (typeof d === "string") {
        try {
          await fh.truncate(0);
        } catch (e) {
          await fh.close().catch(() => {});
          throw e;
        }
      }
      return { file: new CheckpointFile(fh, next, sync), created: false };
    }
    const fh = await fs.open(path, "create");
    return { file: new CheckpointFile(fh, 0, sync), created: true };
  }

  /**
   * Writes `c` to the next slot (and fdatasyncs it with `sync`). Only a commit that
   * succeeded moves on to the other slot: after a failure the same slot is written again, so
   * the last good slot is never written over.
   */
  async commit(c: Checkpoint): Promise<void> {
    await this.#fh.writeAt(encodeSlot(c), this.#slot * SLOT_SIZE);
    if (this.#sync) await this.#fh.sync();
    this.#slot = 1 - this.#slot;
  }

  readonly #syncs = new OverlappingSyncs();

  /**
   * fdatasyncs what was committed. It may run beside later commits (the ledger's periodic
   * sync does); each is then synced by this call or the next.
   */
  sync(): Promise<void> {
    return this.#syncs.sync(this.#fh);
  }

  /** Closes the file once every sync has ended (syncing again if one failed). */
  async close(): Promise<void> {
    await this.#syncs.ended(this.#fh, true);
    return this.#fh.close();
  }
}

/**
 * The sync mark (`SYNCED` in the buffer directory): how far the engine knew its segments to
 * be on stable storage. It names the segment being written (its first sequence number and a
 * checksum of its name) and the size its last fsync covered; or, as written when a process
 * starts (before its first write), the first sequence number it will write, with checksum 0:
 * every segment below it is on stable storage, nothing of a later one is known to be. The
 * ledger writes it in place after data fsyncs (at most every {@link SYNC_MARK_INTERVAL_MS}, fdatasynced), two slots in
 * turn like an S file, so that a torn write spoils only the slot it went to. Each slot carries
 * a write count: the valid slot with the higher count is the mark (sequence numbers start
 * over at 0 when a process opens an empty directory, so they cannot tell which is newer).
 *
 * Recovery tells a torn tail from corruption by it, from what the fsync policy promised
 * rather than from what the bytes look like: nothing past the last fsync the engine knew of
 * was promised to survive a power cut (under `always` it was never acknowledged; under
 * `interval` it was acknowledged as the policy allows to lose), so damage there is a torn
 * tail, cut off and counted, whatever it looks like (zeros, a hole followed by a later piece
 * of the write). Damage before it was on stable storage: corruption, quarantined. The mark
 * may lag the real fsyncs by the interval; that only affects how a frame corrupted in that
 * window is classified.
 *
 * ```
 * Slot (40 bytes): 0 magic "MBSY" | 4 version (1) | 5 reserved (3) | 8 write count (u64 BE) |
 * 16 first sequence number of the segment (u64 BE) | 24 synced size (u64 BE) | 32 CRC32C of
 * the segment's file name | 36 CRC32C of bytes [0, 36)
 * ```
 *
 * @module
 */

import { crc32c } from "../binary/crc32c.ts";
import { readU64, writeU64 } from "../binary/u64.ts";
import type { FileHandle, FileSystem } from "../fs/types.ts";

const MAGIC = 0x4d425359;
const VERSION = 1;
const SLOT_SIZE = 40;
const textEncoder = new TextEncoder();

/** At most one sync mark write in this period (it follows the data's fsyncs). */
export const SYNC_MARK_INTERVAL_MS = 200;

/** How far a segment was known to be on stable storage. */
export interface SyncMark {
  firstSeq: number;
  nameCrc: number;
  synced: number;
}

/** The mark of segment `name` (first sequence number `firstSeq`) fsynced up to `synced`. */
export function syncMarkOf(name: string, firstSeq: number, synced: number): SyncMark {
  const b = textEncoder.encode(name);
  return { firstSeq, nameCrc: crc32c(b, 0, b.length), synced };
}

function encodeSlot(m: SyncMark, count: number): Uint8Array {
  const b = new Uint8Array(SLOT_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, MAGIC);
  b[4] = VERSION;
  writeU64(v, 8, count);
  writeU64(v, 16, m.firstSeq);
  writeU64(v, 24, m.synced);
  v.setUint32(32, m.nameCrc);
  v.setUint32(36, crc32c(b, 0, 36));
  return b;
}

function decodeSlot(b: Uint8Array): { mark: SyncMark; count: number } | null {
  if (b.length < SLOT_SIZE) return null;
  const v = new DataView(b.buffer, b.byteOffset, SLOT_SIZE);
  if (v.getUint32(0) !== MAGIC || b[4] !== VERSION) return null;
  if (crc32c(b, 0, 36) !== v.getUint32(36)) return null;
  return {
    count: readU64(v, 8),
    mark: { firstSeq: readU64(v, 16), synced: readU64(v, 24), nameCrc: v.getUint32(32) },
  };
}

/** The valid slot written last, with its index and write count; null when none is valid. */
function decodeSyncMark(b: Uint8Array): { mark: SyncMark; slot: number; count: number } | null {
  let best: { mark: SyncMark; slot: number; count: number } | null = null;
  for (let slot = 0; (slot + 1) * SLOT_SIZE <= b.length && slot < 2; slot++) {
    const d = decodeSlot(b.subarray(slot * SLOT_SIZE, (slot + 1) * SLOT_SIZE));
    if (d && (!best || d.count > best.count)) best = { ...d, slot };
  }
  return best;
}

/** True when `mark` names the segment file `name` (first sequence number `firstSeq`). */
export function markNames(mark: SyncMark, name: string, firstSeq: number): boolean {
  return mark.firstSeq === firstSeq && syncMarkOf(name, firstSeq, 0).nameCrc === mark.nameCrc;
}

/** Reads the sync mark at `path`: null when there is none, or none of its slots is valid. */
export async function loadSyncMark(fs: FileSystem, path: string): Promise<SyncMark | null> {
  const b = await fs.readFile(path);
  return b === null ? null : decodeSyncMark(b)?.mark ?? null;
}

/**
 * How far segment `name` (first sequence number `firstSeq`, `index` in the directory's write
 * order) is known to be on stable storage, by `mark` and the index of the segment it names
 * (-1 when that one is gone): all of it for a segment before the marked one (sealed, and
 * fsynced, before the marked one was made), the marked size for the marked one, nothing past
 * its header for a later one; undefined without a mark (recovery then judges by the bytes).
 */
export function knownSynced(
  mark: SyncMark | null,
  markIndex: number,
  index: number,
  firstSeq: number,
  headerSize: number,
): number | undefined {
  if (mark === null) return undefined;
  if (markIndex >= 0) {
    return index < markIndex ? Infinity : index === markIndex ? mark.synced : headerSize;
  }
  return firstSeq < mark.firstSeq ? Infinity : headerSize;
}

/** The open sync mark file, written slot after slot. */
export class SyncMarkFile {
  readonly #fh: FileHandle;
  #slot: number;
  #count: number;

  private constructor(fh: FileHandle, slot: number, count: number) {
    this.#fh = fh;
    this.#slot = slot;
    this.#count = count;
  }

  /** Opens (creating when missing) the sync mark at `path`; `created` says which. */
  static async open(
    fs: FileSystem,
    path: string,
  ): Promise<{ file: SyncMarkFile; created: boolean }> {
    const found = await fs.readFile(path);
    if (found !== null) {
      // Write over the slot that does not hold the mark, with a higher count.
      const d = decodeSyncMark(found);
      const fh = await fs.open(path, "append");
      return {
        file: new SyncMarkFile(fh, d === null ? 0 : 1 - d.slot, (d?.count ?? 0) + 1),
        created: false,
      };
    }
    return { file: new SyncMarkFile(await fs.open(path, "create"), 0, 1), created: true };
  }

  /** Writes `m` to the next slot and fdatasyncs it. */
  async write(m: SyncMark): Promise<void> {
    await this.#fh.writeAt(encodeSlot(m, this.#count), this.#slot * SLOT_SIZE);
    await this.#fh.sync();
    this.#slot = 1 - this.#slot;
    this.#count++;
  }

  close(): Promise<void> {
    return this.#fh.close();
  }
}

/**
 * Checkpoint ("S") files: how far the provider has acknowledged a segment. One per segment
 * in delivery, named after it (`<segment base name>.s`), replaced atomically: write a temp
 * file, fsync it, rename it over the old one, fsync the directory.
 *
 * ```
 * S file (32 bytes)
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
import type { FileSystem } from "../fs/types.ts";

const MAGIC = 0x4d42434b;
const VERSION = 1;
/** Size of an S file. */
export const CHECKPOINT_SIZE = 32;
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

/** Encodes an S file. */
export function encodeCheckpoint(c: Checkpoint): Uint8Array {
  const b = new Uint8Array(CHECKPOINT_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, MAGIC);
  b[4] = VERSION;
  writeU64(v, 8, c.offset);
  v.setUint32(16, c.skip);
  writeU64(v, 20, c.delivered);
  v.setUint32(28, crc32c(b, 0, 28));
  return b;
}

/** Decodes an S file, or returns why it cannot be used. */
export function decodeCheckpoint(b: Uint8Array): Checkpoint | string {
  if (b.length !== CHECKPOINT_SIZE) return `size ${b.length}, expected ${CHECKPOINT_SIZE}`;
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  if (v.getUint32(0) !== MAGIC) {
    return `bad magic 0x${v.getUint32(0).toString(16).padStart(8, "0")}`;
  }
  if (b[4] !== VERSION) return `unsupported version ${b[4]}`;
  if (crc32c(b, 0, 28) !== v.getUint32(28)) return "checksum mismatch";
  return {
    offset: readU64(v, 8),
    skip: v.getUint32(16),
    delivered: readU64(v, 20),
  };
}

/**
 * Atomically replaces the S file at `path` (in `dir`). With `sync` false the fsyncs are
 * skipped (the `fsync: "never"` policy); the rename is still atomic.
 */
export async function commitCheckpoint(
  fs: FileSystem,
  dir: string,
  path: string,
  c: Checkpoint,
  sync: boolean,
): Promise<void> {
  const tmp = `${path}.tmp`;
  await fs.remove(tmp);
  const fh = await fs.open(tmp, "create");
  try {
    await fh.append(encodeCheckpoint(c));
    if (sync) await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, path);
  if (sync) await fs.syncDir(dir);
}

/** Reads an S file: the checkpoint, null when absent, or the reason it is unusable. */
export async function loadCheckpoint(
  fs: FileSystem,
  path: string,
): Promise<Checkpoint | null | string> {
  const b = await fs.readFile(path);
  if (b === null) return null;
  return decodeCheckpoint(b);
}

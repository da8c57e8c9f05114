/**
 * Unsigned 64-bit big-endian integers in a JavaScript number, for the on-disk formats
 * (segment headers, frame base times, S files). Exact below 2^53, which every offset,
 * count and millisecond timestamp here stays under.
 *
 * @module
 */

/** Writes `n` (an integer below 2^53) at `at` as a u64, big-endian. */
export function writeU64(v: DataView, at: number, n: number): void {
  v.setUint32(at, Math.floor(n / 0x100000000));
  v.setUint32(at + 4, n >>> 0);
}

/** Reads the u64 at `at`, big-endian, into a number (exact below 2^53). */
export function readU64(v: DataView, at: number): number {
  return v.getUint32(at) * 0x100000000 + v.getUint32(at + 4);
}

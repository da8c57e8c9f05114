/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), slicing-by-8 in plain TypeScript so
 * it runs unchanged on Deno, Bun and Node and inside a compiled executable. One checksum
 * covers a whole frame (a batch of records), so its cost per record is small.
 *
 * @module
 */

const POLY = 0x82f63b78;

/**
 * 8 tables of 256 entries: T[k][b] is the CRC of byte b followed by k zero bytes. Signed, and
 * the arithmetic below stays in int32: JavaScriptCore (Bun) turns a Uint32Array element over
 * 2^31, or `x >>> 0`, into a double, which made this 20 times slower there.
 */
const TABLES: Int32Array = (() => {
  const t = new Int32Array(8 * 256);
  for (let b = 0; b < 256; b++) {
    let c = b;
    for (let i = 0; i < 8; i++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[b] = c | 0;
  }
  for (let b = 0; b < 256; b++) {
    let c = t[b];
    for (let k = 1; k < 8; k++) {
      c = t[c & 0xff] ^ (c >>> 8);
      t[k * 256 + b] = c | 0;
    }
  }
  return t;
})();

/**
 * CRC32C of `data[start, end)`, continuing from `crc` (0 for a fresh checksum).
 *
 * @example Checksum of a string
 * ```ts
 * import { crc32c } from "./crc32c.ts";
 * crc32c(new TextEncoder().encode("123456789")); // 0xe3069283
 * ```
 */
export function crc32c(data: Uint8Array, start = 0, end = data.length, crc = 0): number {
  const t = TABLES;
  let c = ~crc | 0;
  let i = start;
  const end8 = end - ((end - start) & 7);
  while (i < end8) {
    const lo = c ^ (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24));
    c = t[1792 + (lo & 0xff)] ^ t[1536 + ((lo >>> 8) & 0xff)] ^
      t[1280 + ((lo >>> 16) & 0xff)] ^ t[1024 + (lo >>> 24)] ^
      t[768 + data[i + 4]] ^ t[512 + data[i + 5]] ^ t[256 + data[i + 6]] ^ t[data[i + 7]];
    i += 8;
  }
  while (i < end) c = t[(c ^ data[i++]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), slicing-by-16 in plain TypeScript so
 * it runs unchanged on Deno, Bun and Node and inside a compiled executable. One checksum
 * covers a whole frame (a batch of records), so its cost per record is small; still, every
 * byte delivered is checksummed three times (the frame written, the frame read back, the
 * Kafka batch), and slicing by 16 rather than 8 bytes made that 1.2-1.3 times as fast (1 MiB
 * buffers, Bun and Deno, warmed up).
 *
 * @module
 */

const POLY = 0x82f63b78;

/**
 * 16 tables of 256 entries: T[k][b] is the CRC of byte b followed by k zero bytes. Signed, and
 * the arithmetic below stays in int32: JavaScriptCore (Bun) turns a Uint32Array element over
 * 2^31, or `x >>> 0`, into a double, which made this 20 times slower there.
 */
const TABLES: Int32Array = (() => {
  const t = new Int32Array(16 * 256);
  for (let b = 0; b < 256; b++) {
    let c = b;
    for (let i = 0; i < 8; i++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[b] = c | 0;
  }
  for (let b = 0; b < 256; b++) {
    let c = t[b];
    for (let k = 1; k < 16; k++) {
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
  const end16 = end - ((end - start) & 15);
  while (i < end16) {
    const a = c ^ (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24));
    c = t[3840 + (a & 0xff)] ^ t[3584 + ((a >>> 8) & 0xff)] ^
      t[3328 + ((a >>> 16) & 0xff)] ^ t[3072 + (a >>> 24)] ^
      t[2816 + data[i + 4]] ^ t[2560 + data[i + 5]] ^ t[2304 + data[i + 6]] ^
      t[2048 + data[i + 7]] ^ t[1792 + data[i + 8]] ^ t[1536 + data[i + 9]] ^
      t[1280 + data[i + 10]] ^ t[1024 + data[i + 11]] ^ t[768 + data[i + 12]] ^
      t[512 + data[i + 13]] ^ t[256 + data[i + 14]] ^ t[data[i + 15]];
    i += 16;
  }
  while (i < end) c = t[(c ^ data[i++]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

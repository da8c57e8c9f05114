/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78). Every byte delivered is checksummed
 * three times (the frame written, the frame read back, the Kafka batch), and in profiles of the
 * agent the checksum was the costliest function, 10-12% of its CPU. So a long input goes to
 * the native code of `@node-rs/crc32` (the processor's CRC32C instruction) where it loads:
 * under Bun, from source and inside the compiled executable (which embeds it), and under Deno
 * when FFI, environment and read access are already allowed (they are never asked for).
 * Everywhere else, and for inputs too short to repay a native call, a slicing-by-16 table in
 * plain TypeScript runs instead.
 *
 * @module
 */

import { createRequire } from "node:module";

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

type NativeCrc32c = (input: Uint8Array, initialState?: number) => number;

/**
 * The native checksum, or null where it does not load: a platform without a build of it, a
 * temporary directory the executable cannot unpack it to, Deno without those permissions.
 */
function loadNative(): NativeCrc32c | null {
  try {
    const g = globalThis as {
      Bun?: unknown;
      Deno?: { permissions?: { querySync?(p: { name: string }): { state: string } } };
    };
    // Under Deno only with what loading it takes already allowed: it must never prompt.
    const allowed = (name: string) =>
      g.Deno?.permissions?.querySync?.({ name }).state === "granted";
    let f: unknown;
    // Written out as `require` for Bun, so that its bundler embeds the library in the
    // executable.
    if (g.Bun !== undefined) f = require("@node-rs/crc32").crc32c;
    else if (allowed("ffi") && allowed("env") && allowed("read")) {
      f = createRequire(import.meta.url)("@node-rs/crc32").crc32c;
    }
    if (typeof f !== "function") return null;
    const check = f as NativeCrc32c;
    // The check value of the standard ("123456789"), and a continued checksum.
    const nine = new Uint8Array([49, 50, 51, 52, 53, 54, 55, 56, 57]);
    if (
      check(nine) !== 0xe3069283 ||
      check(nine.subarray(4), check(nine.subarray(0, 4))) !== 0xe3069283
    ) {
      return null;
    }
    return check;
  } catch {
    return null;
  }
}

const native = loadNative();

/** True when long inputs go to the native checksum (for `--version` and the benchmarks). */
export const nativeCrc32c: boolean = native !== null;

/**
 * Inputs shorter than this stay in TypeScript: a native call costs about as much as the table
 * takes for 300-500 bytes (2 x EPYC, Bun 1.4.5 and Deno 2.9.6, 2026-12-05).
 */
const NATIVE_MIN_BYTES = 512;

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
  if (native !== null && end - start >= NATIVE_MIN_BYTES) {
    return native(start === 0 && end === data.length ? data : data.subarray(start, end), crc);
  }
  return crc32cPortable(data, start, end, crc);
}

/** {@link crc32c} in plain TypeScript, whatever the runtime (exported for tests). */
export function crc32cPortable(data: Uint8Array, start = 0, end = data.length, crc = 0): number {
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

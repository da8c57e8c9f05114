// The executable's @platformatic/wasm-utils for @platformatic/kafka (scripts/_lazy_wasm_utils.ts):
// the module is loaded on the first call, and its functions answer through it. Bun only: the
// copy reaches the module through Bun's `require`, as the executable does. (That the
// executable then holds less memory is a benchmark's figure: docs/benchmarks.md.)
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as lazy from "../../scripts/_lazy_wasm_utils.ts";
import { crc32c } from "../../src/binary/crc32c.ts";

describe("the executable's lazy WASM codecs", () => {
  it("loads the module on the first call, then checksums, compresses and decompresses through it", {
    skip: !("Bun" in globalThis) && "Bun only (the executable's bundler resolves its require)",
  }, () => {
    assert.equal(lazy.wasmLoaded(), false);
    const data = Buffer.from("messagebuffer ".repeat(200) + "the end");
    assert.equal(lazy.crc32c(data), crc32c(data, 0, data.length));
    assert.equal(lazy.wasmLoaded(), true);
    for (
      const [compress, decompress] of [
        [lazy.snappyCompress, lazy.snappyDecompress],
        [lazy.lz4Compress, lazy.lz4Decompress],
      ] as const
    ) {
      const packed = compress(data);
      assert.ok(packed.length < data.length / 4, `compressed to ${packed.length} bytes`);
      assert.deepEqual(decompress(packed), data);
    }
  });
});

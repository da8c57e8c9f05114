// The executable's @platformatic/wasm-utils for @platformatic/kafka (scripts/_lazy_wasm_utils.ts):
// the WebAssembly is instantiated on the first call, and every function answers as the module's
// own. Bun only: the copy reaches the module through Bun's `require`, as the executable does.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as eager from "wasm-utils-inlined/bundled";
import * as lazy from "../../scripts/_lazy_wasm_utils.ts";

const bun = "Bun" in globalThis;

describe("the executable's lazy WASM codecs", () => {
  it("loads the module on the first call, then compresses, decompresses and checksums as it does", {
    skip: !bun && "Bun only (the executable's bundler resolves its require)",
  }, () => {
    assert.equal(lazy.wasmLoaded(), false);
    const data = Buffer.from("messagebuffer ".repeat(200) + "the end");
    assert.equal(lazy.crc32c(data), eager.crc32c(data));
    assert.equal(lazy.wasmLoaded(), true);
    for (
      const [compress, decompress, theirs] of [
        [lazy.snappyCompress, lazy.snappyDecompress, eager.snappyCompress],
        [lazy.lz4Compress, lazy.lz4Decompress, eager.lz4Compress],
      ] as const
    ) {
      const packed = compress(data);
      assert.ok(packed.length < data.length);
      assert.deepEqual(packed, theirs(data));
      assert.deepEqual(decompress(packed), data);
    }
  });
});

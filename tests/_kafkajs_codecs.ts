// kafkajs has gzip only. The tests' and benchmarks' own kafkajs clients (an independent
// consumer, the kafkajs-alone benchmark) read and write snappy, lz4 and zstd with the codecs
// @platformatic/kafka carries, registered as any kafkajs application adds codecs.
// messagebuffer itself never touches kafkajs's codec registry.

import type { Buffer } from "node:buffer";
import { compressionsAlgorithms } from "@platformatic/kafka";
import { CompressionCodecs, CompressionTypes } from "kafkajs";

/** Registers snappy, lz4 and zstd in this process's kafkajs. */
export function addKafkajsCodecs(): void {
  for (
    const [name, type] of [
      ["snappy", CompressionTypes.Snappy],
      ["lz4", CompressionTypes.LZ4],
      ["zstd", CompressionTypes.ZSTD],
    ] as const
  ) {
    const algo = compressionsAlgorithms[name];
    const codec = {
      compress: (encoder: { buffer: Buffer }) => Promise.resolve(algo.compressSync(encoder.buffer)),
      decompress: (buffer: Buffer) => Promise.resolve(algo.decompressSync(buffer)),
    };
    CompressionCodecs[type] = () => codec;
  }
}

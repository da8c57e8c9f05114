/**
 * messagebuffer: a local store-and-forward buffer for Kafka. Records are written at once
 * to segment files on local disk and delivered in order by a background sender; the
 * checkpoint moves only after Kafka acknowledges, so a crash, a restart or a long outage
 * loses nothing that was acknowledged to the writer.
 *
 * @example Quick start
 * ```ts
 * import { KafkaProvider, MessageBuffer } from "./mod.ts";
 *
 * const buffer = await MessageBuffer.open({
 *   dir: "./buffer",
 *   provider: new KafkaProvider({ brokers: ["127.0.0.1:9092"] }),
 *   fsync: "always", // resolve writes only once they are on stable storage
 * });
 * await buffer.write("events", "hello", { key: "user-1", headers: { source: "app" } });
 * console.log(buffer.stats().backlog);
 * await buffer.close();
 * ```
 *
 * @module
 */

export {
  type BufferStats,
  MessageBuffer,
  type ProviderState,
  type WriteOptions,
} from "./src/engine/buffer.ts";
export type { Counters } from "./src/engine/backlog.ts";
export {
  DEFAULTS,
  type FsyncPolicy,
  type MessageBufferOptions,
  type WhenFull,
} from "./src/engine/options.ts";
export type {
  Provider,
  ProviderRecord,
  RecordRejection,
  SendResult,
} from "./src/provider/types.ts";
export { KafkaProvider, type KafkaProviderOptions } from "./src/provider/kafka/kafka.ts";
export {
  BufferClosedError,
  BufferFullError,
  type ErrorCode,
  ErrorCodes,
  FormatError,
  LockedError,
  MessageBufferError,
  StorageError,
} from "./src/errors.ts";
export type { Bytes, HeadersInit, RecordHeader, StoredRecord } from "./src/segment/format.ts";
export type { DirLock, FileHandle, FileSystem } from "./src/fs/types.ts";
export { NodeFileSystem } from "./src/fs/node.ts";
export {
  createLogger,
  type Logger,
  type LoggerOptions,
  type LogLevel,
  silentLogger,
} from "./src/log.ts";

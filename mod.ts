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

import { MessageBuffer as Engine } from "./src/engine/buffer.ts";
import type { MessageBufferOptions } from "./src/engine/options.ts";
import { defaultFileSystem } from "./src/fs/default.ts";
import { createLogger } from "./src/log.ts";

/**
 * A durable, size-capped, ordered buffer in front of a {@link Provider}: the engine with
 * this runtime's defaults for the options `fs` (node:fs, which Deno, Bun and Node share)
 * and `logger` (warnings and errors as text on stderr).
 *
 * @example Buffer records for Kafka
 * ```ts
 * import { KafkaProvider, MessageBuffer } from "./mod.ts";
 * const buffer = await MessageBuffer.open({
 *   dir: "/var/lib/messagebuffer",
 *   provider: new KafkaProvider({ brokers: ["127.0.0.1:9092"] }),
 * });
 * await buffer.write("events", JSON.stringify({ hello: "world" }), { key: "user-1" });
 * await buffer.close();
 * ```
 */
export class MessageBuffer extends Engine {
  /**
   * Opens (creating if needed) a buffer directory: takes its lock, recovers what a previous
   * run left, and starts delivering in the background.
   *
   * @throws {TypeError | RangeError} an option is invalid (the message names it)
   * @throws {LockedError} another live process has the directory open
   */
  static override open(options: MessageBufferOptions): Promise<MessageBuffer> {
    if (options === null || typeof options !== "object") return super.open(options);
    return super.open({
      ...options,
      fs: options.fs ?? defaultFileSystem(),
      logger: options.logger ?? createLogger({ level: "warn" }),
    });
  }
}

export type {
  BufferStats,
  LaneStats,
  ProviderState,
  StorageHealth,
  WriteOptions,
} from "./src/engine/buffer.ts";
export type { LatencyStats } from "./src/engine/latency.ts";
/**
 * The engine without this runtime's defaults: {@link MessageBuffer.open} with `fs` and
 * `logger` required, for another filesystem adapter (a test's in-memory one, say).
 */
export { MessageBuffer as MessageBufferCore } from "./src/engine/buffer.ts";
export type { Counters } from "./src/engine/ledger.ts";
export {
  DEFAULTS,
  type EngineDefaults,
  type FsyncPolicy,
  type MessageBufferOptions,
  type Mode,
  type WhenFull,
} from "./src/engine/options.ts";
export type {
  DuplicateReason,
  Provider,
  ProviderCounters,
  ProviderHeader,
  ProviderRecord,
  RecordRejection,
  SendContext,
  SendResult,
} from "./src/provider/types.ts";
export {
  type KafkaClientName,
  type KafkaCompression,
  KafkaProvider,
  type KafkaProviderOptions,
  type KafkaSaslMechanism,
  type KafkaSaslOptions,
  type KafkaTlsOptions,
} from "./src/provider/kafka/kafka.ts";
export {
  BufferClosedError,
  BufferFullError,
  DeliveryError,
  DeliveryTimeoutError,
  type ErrorCode,
  ErrorCodes,
  LockedError,
  MessageBufferError,
  RecordRejectedError,
  StorageError,
} from "./src/errors.ts";
export type { Bytes, HeadersInit } from "./src/segment/format.ts";
export type { DirLock, FileHandle, FileSystem } from "./src/fs/types.ts";
export { NodeFileSystem } from "./src/fs/node.ts";
export {
  createLogger,
  type LogFields,
  type Logger,
  type LoggerOptions,
  type LogLevel,
  silentLogger,
} from "./src/log.ts";

/**
 * The buffer: the facade that wires the engine's parts and owns its lifecycle.
 *
 * ```
 *   write() ──► admission (cap: drop-oldest / block / reject)
 *                  │
 *                  ▼
 *             SegmentWriter ──frames──► active segment file
 *                  │ appended, sealed            ▲ roll
 *                  ▼                             │
 *               Ledger ◄── delete / quarantine ──┤
 *   (segments, counters, bytes, metadata queue:  │
 *    S files, deletions, quarantine, in order)   │
 *                  ▲                             │
 *      Retention ──┘ (cap, age)        Sender ───┘ (read, send, retry, dead letters,
 *                                                   checkpoint)
 * ```
 *
 * The parts talk through the ledger's and each other's named methods, never through shared
 * fields. Recovery (`src/segment/recovery.ts`) runs before any of them, under the lock.
 *
 * @module
 */

import { BufferClosedError, BufferFullError } from "../errors.ts";
import type { FileSystem } from "../fs/types.ts";
import type { Logger } from "../log.ts";
import type { Bytes } from "../segment/format.ts";
import { DEAD_DIR, QUARANTINE_DIR, recover } from "../segment/recovery.ts";
import { type Durability, durabilityOf } from "./durability.ts";
import { type Counters, Ledger, newCounters, type Segment } from "./ledger.ts";
import { type MessageBufferOptions, type ResolvedOptions, resolveOptions } from "./options.ts";
import { Retention } from "./retention.ts";
import { type LatencyStats, type ProviderState, Sender } from "./sender.ts";
import { SegmentWriter, type StorageHealth, timestampOf, type WriteOptions } from "./writer.ts";

export type { ProviderState, StorageHealth, WriteOptions };

/** Options of the engine: {@link MessageBufferOptions} with the runtime adapters chosen. */
export type EngineOptions = MessageBufferOptions & { fs: FileSystem; logger: Logger };

/** A snapshot of the buffer's state, from {@link MessageBuffer.stats}. */
export interface BufferStats {
  /** Counters since open. */
  counters: Counters;
  /** Records and bytes stored but not yet acknowledged, and segment files on disk. */
  backlog: { records: number; bytes: number; segments: number };
  /** Age of the oldest unacknowledged record's frame, ms; null when nothing is waiting. */
  oldestRecordAgeMs: number | null;
  /** Bytes counted against `maxBufferBytes` (segments plus records not yet written). */
  usedBytes: number;
  /** Writes waiting for room under `whenFull: "block"`. */
  blockedWrites: number;
  /** Provider name and state. */
  provider: { name: string; state: ProviderState; lastError: string | null };
  /** Whether writes are being made durable (`failed` after an fsync failed; see README). */
  storage: StorageHealth;
  /**
   * Time from a record's timestamp to the provider's acknowledgement, over the last 8192
   * records delivered: quantiles in ms, plus the sum and count since open.
   */
  deliveryLatencyMs: LatencyStats;
}

interface BlockedWrite {
  topic: string;
  value: Bytes;
  options: WriteOptions;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * A durable, size-capped, ordered buffer in front of a {@link Provider}.
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
export class MessageBuffer {
  readonly #o: ResolvedOptions;
  readonly #durability: Durability;
  readonly #releaseLock: () => Promise<void>;
  readonly #ledger: Ledger;
  readonly #writer: SegmentWriter;
  readonly #retention: Retention;
  readonly #sender: Sender;
  #blocked: BlockedWrite[] = [];
  #closing = false;
  #closed: Promise<void> | null = null;
  #timers: Array<ReturnType<typeof setInterval>> = [];

  protected constructor(
    o: ResolvedOptions,
    releaseLock: () => Promise<void>,
    recovered: { segments: Segment[]; nextSeq: number; counters: Counters },
  ) {
    this.#o = o;
    this.#releaseLock = releaseLock;
    const d = this.#durability = durabilityOf(o.fsync, o.fsyncIntervalMs);
    const ledger = this.#ledger = new Ledger(
      o.fs,
      o.dir,
      d,
      o.logger,
      recovered.segments,
      recovered.counters,
    );
    const usedBytes = () => this.#usedBytes();
    this.#retention = new Retention({
      ledger,
      logger: o.logger,
      whenFull: o.whenFull,
      maxBufferBytes: o.maxBufferBytes,
      maxRecordAgeMs: o.maxRecordAgeMs,
      usedBytes,
    });
    this.#writer = new SegmentWriter({
      fs: o.fs,
      dir: o.dir,
      logger: o.logger,
      durability: d,
      ledger,
      segmentMaxBytes: o.segmentMaxBytes,
      segmentMaxAgeMs: o.segmentMaxAgeMs,
      maxRecordBytes: o.maxRecordBytes,
      nextSeq: recovered.nextSeq,
      onStored: () => this.#sender.wake(),
      afterWrite: () => this.#retention.pruneIfOverCap(),
    });
    this.#sender = new Sender({
      fs: o.fs,
      dir: o.dir,
      logger: o.logger,
      ledger,
      provider: o.provider,
      batchMaxRecords: o.batchMaxRecords,
      batchMaxBytes: o.batchMaxBytes,
      maxRecordAgeMs: o.maxRecordAgeMs,
      retryInitialMs: o.retryInitialMs,
      retryMaxMs: o.retryMaxMs,
      requestRoll: () => this.#writer.requestRoll(),
      writesWaiting: () => this.#blocked.length > 0,
    });
    ledger.onRoom(() => {
      this.#admitBlocked();
      this.#sender.wake();
    });
  }

  /**
   * Opens (creating if needed) a buffer directory: takes its lock, recovers what a previous
   * run left, and starts delivering in the background.
   *
   * @throws {TypeError | RangeError} an option is invalid (the message names it)
   * @throws {LockedError} another live process has the directory open
   */
  static async open(options: EngineOptions): Promise<MessageBuffer> {
    if (options && (!options.fs || !options.logger)) {
      throw new TypeError(
        'Options "fs" and "logger" are required when opening the engine directly; MessageBuffer from mod.ts fills in the defaults',
      );
    }
    const o = resolveOptions(options, options?.fs, options?.logger);
    const fs = o.fs;
    await fs.mkdirp(o.dir);
    await fs.mkdirp(`${o.dir}/${DEAD_DIR}`);
    await fs.mkdirp(`${o.dir}/${QUARANTINE_DIR}`);
    const lock = await fs.lock(o.dir);
    try {
      const r = await recover(fs, o.dir, o.logger);
      const counters = newCounters();
      counters.tornBytes = r.tornBytes;
      counters.quarantinedBytes = r.quarantinedBytes;
      counters.footerErrors = r.footerErrors;
      const segments = r.segments.map((s): Segment => ({
        name: s.name,
        firstSeq: s.firstSeq,
        size: s.validSize,
        records: s.records,
        sealed: true,
        oldestTimestamp: s.oldestTimestamp,
        newestTimestamp: s.newestTimestamp,
        checkpoint: s.checkpoint,
        checkpointDirty: false,
        gone: false,
      }));
      const buffer = new this(o, () => lock.release(), {
        segments,
        nextSeq: r.nextSeq,
        counters,
      });
      buffer.#start();
      return buffer;
    } catch (e) {
      await lock.release();
      throw e;
    }
  }

  /** The buffer directory. */
  get dir(): string {
    return this.#o.dir;
  }

  /** True when a write now would be refused (`"reject"`) or would wait (`"block"`). */
  get full(): boolean {
    return this.#o.whenFull !== "drop-oldest" &&
      (this.#blocked.length > 0 || this.#usedBytes() >= this.#o.maxBufferBytes);
  }

  /** True when a write now would wait for room (`whenFull: "block"`): time to stop reading input. */
  get wouldBlock(): boolean {
    return this.#o.whenFull === "block" && this.full;
  }

  #usedBytes(): number {
    return this.#ledger.bytes + this.#writer.pendingBytes;
  }

  #start(): void {
    const d = this.#durability;
    if (d.syncIntervalMs > 0) {
      this.#every(d.syncIntervalMs, () => {
        this.#writer.requestSync();
        void this.#ledger.syncMetadata();
      });
    }
    this.#every(this.#o.pruneIntervalMs, () => void this.#retention.prune("interval"));
    this.#sender.start();
  }

  #every(ms: number, fn: () => void): void {
    const t = setInterval(fn, ms);
    (t as { unref?: () => void }).unref?.();
    this.#timers.push(t);
  }

  /**
   * Stores one record. Resolves when the record is durable under the `fsync` policy; it will
   * be delivered in write order. Concurrent writes share one file write (and one fsync).
   *
   * @throws {TypeError | RangeError} (as a rejection) the topic, value, key or headers are invalid
   * @throws {BufferClosedError} the buffer is closing or closed
   * @throws {BufferFullError} at the cap with `whenFull: "reject"`
   * @throws {StorageError} the filesystem refused the write (ENOSPC, EIO), or fsync has
   *   failed and the write could not be made durable; nothing was stored
   */
  write(topic: string, value: Bytes, options?: WriteOptions): Promise<void> {
    if (this.#closing) return Promise.reject(new BufferClosedError(this.#o.dir));
    try {
      if (!this.full) return this.#writer.append(topic, value, options);
      if (this.#o.whenFull === "reject") {
        return Promise.reject(
          new BufferFullError(this.#o.dir, this.#usedBytes(), this.#o.maxBufferBytes),
        );
      }
      // Encode once into a scratch frame so that bad input fails now, not when room appears.
      this.#writer.validate(topic, value, options);
      const stamped = { ...options, timestamp: timestampOf(options) };
      // The sender may be idle on a fully delivered active segment: wake it so that it
      // seals that segment and deletes it to make room.
      if (this.#blocked.length === 0) this.#sender.wake();
      return new Promise((resolve, reject) =>
        this.#blocked.push({ topic, value, options: stamped, resolve, reject })
      );
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Moves writes that waited for room into frames while there is room. */
  #admitBlocked(): void {
    while (this.#blocked.length > 0 && this.#usedBytes() < this.#o.maxBufferBytes) {
      const w = this.#blocked.shift()!;
      try {
        this.#writer.append(w.topic, w.value, w.options).then(w.resolve, w.reject);
      } catch (e) {
        w.reject(e);
      }
    }
  }

  /** Resolves when every write made so far is durable under the `fsync` policy (or failed). */
  flush(): Promise<void> {
    return this.#writer.flush();
  }

  /**
   * Resolves once everything written so far has been acknowledged, dead-lettered, expired
   * or dropped; rejects with a TimeoutError-named Error after `timeoutMs`.
   */
  async drained(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    await this.flush();
    while (this.#backlogRecords() > 0) {
      const left = deadline - Date.now();
      if (left <= 0) {
        const e = new Error(
          `Buffer "${this.#o.dir}" still holds ${this.#backlogRecords()} undelivered records after ${timeoutMs} ms`,
        );
        e.name = "TimeoutError";
        throw e;
      }
      await this.#sender.progress(Math.min(left, 200));
    }
  }

  /** Records stored or waiting to be stored, not yet acknowledged (or dropped). */
  #backlogRecords(): number {
    return this.#writer.pendingRecords + this.#blocked.length + this.#ledger.backlogRecords();
  }

  /** Counters, backlog, provider and storage state. */
  stats(): BufferStats {
    const { bytes, oldestTimestamp } = this.#ledger.backlog();
    return {
      counters: { ...this.#ledger.counters },
      backlog: {
        records: this.#backlogRecords(),
        bytes: bytes + this.#writer.pendingBytes,
        segments: this.#ledger.segments.length,
      },
      oldestRecordAgeMs: oldestTimestamp === null
        ? null
        : Math.max(0, Date.now() - oldestTimestamp),
      usedBytes: this.#usedBytes(),
      blockedWrites: this.#blocked.length,
      provider: this.#sender.provider,
      storage: this.#writer.health,
      deliveryLatencyMs: this.#sender.latency(),
    };
  }

  /**
   * Stops accepting writes, writes and fsyncs what was accepted, lets the sender finish the
   * batch in flight (up to `closeTimeoutMs`), writes the checkpoint, closes the provider and
   * releases the directory. Safe to call twice.
   *
   * @throws {StorageError} (after closing all the same) the fsync that sealed the last
   *   segment failed, so what it held is not known to be on stable storage
   */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    this.#closing = true;
    for (const w of this.#blocked.splice(0)) w.reject(new BufferClosedError(this.#o.dir));
    for (const t of this.#timers) clearInterval(t);
    // A failed fsync of the last seal is reported once everything else is closed.
    const sealed = await this.#writer.close().then(() => null, (e: unknown) => e);
    if (!(await this.#sender.stop(this.#o.closeTimeoutMs))) {
      this.#o.logger.warn(
        "close: the batch in flight was not acknowledged in time; it will be sent again on the next open",
        { closeTimeoutMs: this.#o.closeTimeoutMs },
      );
    }
    // A fully delivered segment need not wait for the next open to be deleted.
    for (const seg of [...this.#ledger.segments]) {
      if (seg.sealed && seg.checkpoint.delivered >= seg.records) await this.#ledger.delete(seg);
    }
    await this.#ledger.retryLeftovers();
    // An S file write that failed is tried once more, so that a clean restart resends nothing.
    await this.#ledger.commitPending();
    if (this.#durability.syncIntervalMs > 0) await this.#ledger.syncMetadata();
    await this.#ledger.closeFiles().catch(() => {});
    await this.#sender.close(this.#o.closeTimeoutMs);
    await this.#releaseLock();
    if (sealed) throw sealed;
  }
}

/**
 * The write path: records are encoded into an open frame; a flush loop hands frames to the
 * active segment one at a time (group commit: every write in a frame shares one file write
 * and, under `fsync: "always"`, one fsync), rolls the segment by size and by age, and fsyncs
 * it under `interval`.
 *
 * A failed fsync is a lasting state, as Kafka's `LogDirFailureChannel` and NATS's sticky
 * write error are: after it, what the file holds past its last good fsync is not known to
 * be durable. The file is retired (sealed; its records stay deliverable), the writer reports
 * `storage: "failed"`, and every later frame first needs a fresh segment whose header and
 * directory entry fsync cleanly, and then its own fsync, before its writes resolve. Writes
 * that cannot be made durable so reject with {@link StorageError}. The first frame that
 * passes ends the state.
 *
 * @module
 */

import { IdleTrim } from "../binary/idle.ts";
import { StorageError } from "../errors.ts";
import type { FileSystem } from "../fs/types.ts";
import type { Logger } from "../log.ts";
import {
  type Bytes,
  encodeSegmentFooter,
  footerFits,
  FrameBuilder,
  type HeadersInit,
  SEGMENT_HEADER_SIZE,
} from "../segment/format.ts";
import { SegmentFile } from "../segment/writer.ts";
import type { Durability } from "./durability.ts";
import type { Ledger, SegmentView } from "./ledger.ts";

/**
 * Per-record options of a write.
 *
 * @example A keyed record with headers and an event time
 * ```ts
 * await buffer.write("orders", JSON.stringify(order), {
 *   key: order.customerId,
 *   headers: { source: "web" },
 *   timestamp: order.createdAt,
 * });
 * ```
 */
export interface WriteOptions {
  /** Kafka record key; records with the same key go to the same partition. */
  key?: Bytes | null;
  /** Kafka record headers. */
  headers?: HeadersInit | null;
  /** Event time in ms since the epoch; becomes the Kafka timestamp. @default Date.now() */
  timestamp?: number;
}

/**
 * Whether the buffer directory takes writes durably (see the module doc).
 *
 * @example Report a failing disk
 * ```ts
 * const { storage } = buffer.stats();
 * if (storage.state === "failed") console.error(`buffer storage failed: ${storage.lastError}`);
 * ```
 */
export interface StorageHealth {
  /** `failed` after an fsync failed, until a fresh segment and a write fsync cleanly again. */
  state: "ok" | "failed";
  /** The error that put the writer in the failed state, while it lasts. */
  lastError: string | null;
}

/** What the writer needs from the buffer that owns it. */
export interface WriterOptions {
  fs: FileSystem;
  dir: string;
  logger: Logger;
  durability: Durability;
  ledger: Ledger;
  segmentMaxBytes: number;
  segmentMaxAgeMs: number;
  maxRecordBytes: number;
  /** Sequence number of the next record. */
  nextSeq: number;
  /** Called when records become readable or a segment is sealed (wakes the sender). */
  onStored: () => void;
  /** Called after every frame and every roll (pruning at the cap). */
  afterWrite: () => Promise<void>;
}

/** The open frame's shared outcome: every write in a frame resolves or fails together. */
export interface PendingFrame {
  builder: FrameBuilder;
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
  /** Filled elsewhere and handed over ({@link SegmentWriter.adopt}): not kept as a spare. */
  adopted?: boolean;
}

/** A frame to fill, and the promise its writes share (settled once it is written, or fails). */
export function pendingFrame(builder: FrameBuilder): PendingFrame {
  let resolve!: () => void, reject!: (e: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Writers that await get the rejection; nobody awaiting is not an error here.
  promise.catch(() => {});
  return { builder, promise, resolve, reject };
}

/** A frame is handed to the file once it reaches this size, even while a write is in flight. */
const FRAME_TARGET_BYTES = 1 << 20;
/**
 * A frame's memory holds this much past its target, for the record that takes it over: with
 * none, nearly every frame of small records doubled its memory (to 2 MiB) for its last one. (A
 * record that may need more, a value over about 64 KiB, still doubles it.)
 */
const FRAME_SLACK_BYTES = 64 << 10;

/**
 * A frame's memory starts at this and grows as records fill it (to the frame target and its
 * slack): with lanes, each lane's writer fills frames of its own, and a lane that gets a
 * share of the records never needs a whole frame's memory.
 */
const FRAME_START_BYTES = 64 << 10;

/**
 * A gathering frame's memory starts at this (and grows as records fill it): a flood of lines
 * that each name a new topic makes a frame per topic.
 */
const GATHERING_START_BYTES = 512;

/** See the module doc. */
export class SegmentWriter {
  readonly #o: WriterOptions;
  readonly #log: Logger;
  readonly #ledger: Ledger;
  /** Frames are cut at this size so that one frame never dwarfs a segment. */
  readonly #frameTarget: number;
  #nextSeq: number;
  #open: PendingFrame;
  #queue: PendingFrame[] = [];
  /** Builders of frames written, for the next frames; let go of once unused for a while. */
  #spare: FrameBuilder[] = [];
  readonly #spareTrim = new IdleTrim(() => this.#spare.length, (n) => this.#trimSpare(n));
  /** The topics the frames have encoded, shared by every builder (see `appendRange`). */
  readonly #topics = new Map<string, Uint8Array>();
  #pendingBytes = 0;
  #pendingRecords = 0;
  #flushing = false;
  #idle: Promise<void> = Promise.resolve();
  #idleResolve: (() => void) | null = null;
  #rollRequested = false;
  #rollWaiters: Array<() => void> = [];
  /** A roll is sealing a segment (requestRoll() then waits for it). */
  #rolling = false;
  #syncRequested = false;
  /**
   * The periodic fsync (`interval`), running beside the writes: frames go on being written
   * while it runs (an fsync can take tens of ms, and frames queued behind it were what the
   * slowest deliveries waited for). Null when none runs; a roll waits for it.
   */
  #syncing: Promise<void> | null = null;
  /** A periodic fsync that failed, for the flush loop to act on. */
  #syncFailed: { file: SegmentFile; error: unknown } | null = null;
  #file: SegmentFile | null = null;
  #seg: SegmentView | null = null;
  #ageTimer: ReturnType<typeof setTimeout> | null = null;
  #failure: StorageError | null = null;
  #scratch: FrameBuilder | null = null;

  constructor(o: WriterOptions) {
    this.#o = o;
    this.#log = o.logger;
    this.#ledger = o.ledger;
    this.#nextSeq = o.nextSeq;
    this.#frameTarget = Math.min(
      FRAME_TARGET_BYTES,
      Math.max(256, Math.floor(o.segmentMaxBytes / 4)),
    );
    this.#open = pendingFrame(this.#newBuilder());
  }

  /** Bytes accepted but not yet in a segment file (queued frames and the open one). */
  get pendingBytes(): number {
    const open = this.#open.builder;
    return this.#pendingBytes + (open.count > 0 ? open.size : 0);
  }

  /** Records accepted but not yet in a segment file. */
  get pendingRecords(): number {
    return this.#pendingRecords + this.#open.builder.count;
  }

  /** Whether writes are being made durable. */
  get health(): StorageHealth {
    return { state: this.#failure ? "failed" : "ok", lastError: this.#failure?.message ?? null };
  }

  /**
   * Encodes a record into the open frame and schedules the flush. Throws TypeError or
   * RangeError (naming the bad field) for bad input, storing nothing.
   */
  append(topic: string, value: Bytes, options: WriteOptions | undefined): Promise<void> {
    const open = this.#open;
    open.builder.append(topic, value, options?.key, options?.headers, timestampOf(options));
    if (open.builder.size >= this.#frameTarget) this.#seal();
    if (!this.#flushing) this.#kick();
    return open.promise;
  }

  /**
   * {@link append} of a record without headers, with time `timestamp` (checked by the caller),
   * whose key (`keyAt` -1: none) and value are ranges of `src` (see `FrameBuilder.appendRange`);
   * null when this writer has not stored the topic before, having stored nothing (then
   * {@link append} it).
   */
  appendRange(
    topic: string,
    src: Uint8Array,
    keyAt: number,
    keyLength: number,
    valueAt: number,
    valueLength: number,
    timestamp: number,
  ): Promise<void> | null {
    const open = this.#open;
    if (!open.builder.appendRange(topic, src, keyAt, keyLength, valueAt, valueLength, timestamp)) {
      return null;
    }
    if (open.builder.size >= this.#frameTarget) this.#seal();
    if (!this.#flushing) this.#kick();
    return open.promise;
  }

  /** Throws what {@link append} would throw for this record, storing nothing. */
  validate(topic: string, value: Bytes, options: WriteOptions | undefined): void {
    this.#scratch ??= new FrameBuilder(1 << 16, this.#o.maxRecordBytes, this.#topics);
    this.#scratch.reset();
    this.#scratch.append(topic, value, options?.key, options?.headers, timestampOf(options));
  }

  /** Resolves when every write accepted so far has settled (stored or failed). */
  async flush(): Promise<void> {
    const frames = this.#queue.map((f) => f.promise);
    if (this.#open.builder.count > 0) frames.push(this.#open.promise);
    if (frames.length > 0) this.#kick();
    await Promise.allSettled(frames);
  }

  /** Asks for an fsync of the active segment (the `interval` policy's timer). */
  requestSync(): void {
    if (this.#file && this.#file.syncedSize < this.#file.size) {
      this.#syncRequested = true;
      this.#kick();
    }
  }

  /** Seals the active segment once the frames before this call are written. */
  requestRoll(): Promise<void> {
    if (!this.#file && !this.#rolling) return Promise.resolve();
    return new Promise((resolve) => {
      this.#rollWaiters.push(resolve);
      this.#rollRequested = true;
      this.#kick();
    });
  }

  /**
   * Writes every accepted frame and seals the active segment. Rejects with the
   * {@link StorageError} when the seal's fsync failed: what was sealed is then not known to
   * be on stable storage (it stays in the segment, and is delivered after the next open).
   */
  async close(): Promise<void> {
    if (this.#ageTimer) clearTimeout(this.#ageTimer);
    this.#spareTrim.stop();
    while (this.#flushing || this.#queue.length > 0 || this.#open.builder.count > 0) {
      this.#kick();
      await this.#idle;
    }
    if (this.#file) {
      const before = this.#failure;
      this.#rollRequested = true;
      this.#kick();
      await this.#idle;
      if (this.#failure && this.#failure !== before) throw this.#failure;
    }
  }

  /**
   * A frame builder as this writer sizes them: from `startBytes`, growing to the frame target
   * and its slack; `topics` its encoded topics (this writer's, shared by its builders).
   */
  #newBuilder(startBytes = FRAME_START_BYTES, topics = this.#topics): FrameBuilder {
    const full = this.#frameTarget + FRAME_SLACK_BYTES;
    return new FrameBuilder(Math.min(full, startBytes), this.#o.maxRecordBytes, topics, full);
  }

  /**
   * Lets go of `n` spare builders that went unused for a period. Once none is left, an empty
   * open frame whose memory grew past the start size starts again from it: a writer idle
   * after a burst (a lane whose topics went quiet) keeps no frame's worth of memory.
   */
  #trimSpare(n: number): void {
    this.#spare.splice(0, n);
    const open = this.#open.builder;
    if (this.#spare.length === 0 && open.count === 0 && open.capacity > FRAME_START_BYTES) {
      this.#open.builder = this.#newBuilder();
    }
  }

  /**
   * A frame to fill elsewhere and hand over with {@link adopt}, as this writer's own are
   * sized; it takes topics as it meets them (validating them), apart from this writer's.
   */
  gatheringFrame(): PendingFrame {
    const frame = pendingFrame(this.#newBuilder(GATHERING_START_BYTES, new Map()));
    frame.adopted = true;
    return frame;
  }

  /** The size at which a frame is cut: a gathering frame is handed over no larger. */
  get frameTarget(): number {
    return this.#frameTarget;
  }

  /**
   * Queues a frame filled elsewhere ({@link gatheringFrame}): it is written after the frames
   * queued now and before the open one, and its promise settles as the writer's own do.
   */
  adopt(frame: PendingFrame): void {
    if (frame.builder.count === 0) return frame.resolve();
    this.#queue.push(frame);
    this.#pendingBytes += frame.builder.size;
    this.#pendingRecords += frame.builder.count;
    this.#kick();
  }

  /** Moves the open frame to the write queue and opens a new one. */
  #seal(): void {
    const open = this.#open;
    if (open.builder.count === 0) return;
    this.#queue.push(open);
    this.#pendingBytes += open.builder.size;
    this.#pendingRecords += open.builder.count;
    const builder = this.#spare.pop() ?? this.#newBuilder();
    this.#spareTrim.took();
    builder.reset();
    this.#open = pendingFrame(builder);
  }

  /** Starts the flush loop if it is not running. */
  #kick(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    this.#idle = new Promise((r) => (this.#idleResolve = r));
    queueMicrotask(() => this.#flushLoop());
  }

  async #flushLoop(): Promise<void> {
    try {
      for (;;) {
        const failed = this.#takeSyncFailure();
        if (failed) {
          if (failed === this.#file) await this.#roll();
          continue;
        }
        if (this.#rollRequested) await this.#roll();
        // The open frame goes once nothing is queued before it: while frames wait, it fills
        // (to its target), rather than being cut at each write into many small frames, each
        // holding a frame's memory until written.
        if (this.#queue.length === 0) this.#seal();
        const next = this.#queue.shift();
        if (next) {
          await this.#writeFrame(next);
          if (!next.adopted) {
            this.#spare.push(next.builder);
            this.#spareTrim.gave();
          }
          continue;
        }
        if (this.#syncRequested && this.#syncing === null && this.#file) {
          this.#syncRequested = false;
          const sync: Promise<void> = this.#syncActive().finally(() => {
            if (this.#syncing === sync) this.#syncing = null;
            // A request that came while it ran (the next period) gets its turn.
            if (this.#syncRequested) this.#kick();
          });
          this.#syncing = sync;
          continue;
        }
        break;
      }
    } finally {
      this.#flushing = false;
      this.#idleResolve?.();
      // Work that arrived after the last check (between the awaits above) gets a new loop.
      if (
        this.#queue.length > 0 || this.#open.builder.count > 0 || this.#rollRequested ||
        this.#syncFailed
      ) {
        this.#kick();
      }
    }
  }

  async #writeFrame(frame: PendingFrame): Promise<void> {
    const b = frame.builder;
    const bytes = b.finish();
    const count = b.count;
    // Pending until the ledger has the frame (or it failed): a frame being written is still
    // part of the backlog, and its bytes count against the cap exactly once.
    const settle = () => {
      this.#pendingBytes -= b.size;
      this.#pendingRecords -= count;
    };
    let file: SegmentFile | null = null;
    try {
      const full = this.#file !== null && this.#file.size > SEGMENT_HEADER_SIZE &&
        this.#file.size + bytes.length > this.#o.segmentMaxBytes;
      if (full || this.#file?.broken) await this.#roll();
      if (!this.#file) await this.#createActive();
      file = this.#file!;
      const seg = this.#seg!;
      // After a failed fsync, a frame counts only once an fsync of its own succeeds.
      const probing = this.#failure !== null;
      const before = file.size;
      await file.append(bytes, this.#o.durability.ackAfterSync || probing);
      if (file.syncedSize === file.size) this.#ledger.synced(seg, file.size);
      if (probing) {
        this.#log.warn("storage works again: a fresh segment and a frame were fsynced", {
          segment: seg.name,
          after: this.#failure!.message,
        });
        this.#failure = null;
      }
      // Visible to the sender only now that it is durable under the policy.
      settle();
      this.#ledger.appended(seg, file.size - before, count, b.baseTimestamp, b.maxTimestamp);
      frame.resolve();
      this.#o.onStored();
    } catch (e) {
      settle();
      if (file?.broken) this.#fail("fsync of a frame", file.name, e);
      this.#ledger.writeFailed(count);
      const err = new StorageError(`write ${count} record(s) to`, file?.path ?? this.#o.dir, e);
      this.#log.error("write failed; the records were not stored", {
        records: count,
        error: err.message,
      });
      frame.reject(err);
    }
    await this.#o.afterWrite();
  }

  async #createActive(): Promise<void> {
    const o = this.#o;
    // While failed, the new segment must prove that fsync works again.
    const sync = o.durability.syncFiles || this.#failure !== null;
    const file = await SegmentFile.create(o.fs, o.dir, this.#nextSeq, sync);
    const seg = this.#ledger.created(file.name, file.firstSeq);
    this.#file = file;
    this.#seg = seg;
    if (this.#ageTimer) clearTimeout(this.#ageTimer);
    this.#ageTimer = setTimeout(() => {
      if (this.#seg === seg) {
        this.#rollRequested = true;
        this.#kick();
      }
    }, o.segmentMaxAgeMs);
    (this.#ageTimer as { unref?: () => void }).unref?.();
  }

  /** Seals the active segment (fsynced unless the policy is `never`). */
  async #roll(): Promise<void> {
    // The segment's periodic fsync ends before it is sealed (and its handle closed).
    if (this.#syncing) await this.#syncing;
    this.#takeSyncFailure();
    this.#rollRequested = false;
    this.#rolling = true;
    const file = this.#file;
    const seg = this.#seg;
    this.#file = null;
    this.#seg = null;
    if (file && seg) {
      this.#nextSeq = seg.firstSeq + seg.records;
      const broken = file.broken;
      const footer = {
        frames: file.frames,
        records: seg.records,
        firstSeq: seg.firstSeq,
        dataSize: file.size,
        oldestTimestamp: seg.oldestTimestamp,
        newestTimestamp: seg.newestTimestamp,
      };
      if (!broken && footerFits(footer)) {
        // The footer lets the next open learn what the segment holds without walking it.
        // Without one (a failed append, a broken file) that open walks it instead.
        await file.appendFooter(encodeSegmentFooter(footer)).catch((e) => {
          this.#log.warn("could not write the footer of a sealed segment; the next open walks it", {
            segment: file.name,
            error: e,
          });
        });
      }
      // A footer that could not be written (or cut off again) does not spare the records
      // their seal fsync.
      if (this.#o.durability.syncFiles && !broken) {
        try {
          await file.sync();
          this.#ledger.synced(seg, file.size);
        } catch (e) {
          this.#fail("fsync while sealing", file.name, e);
        }
      }
      await file.close().catch(() => {});
      this.#ledger.sealed(seg);
      this.#o.onStored();
    }
    this.#rolling = false;
    for (const w of this.#rollWaiters.splice(0)) w();
    await this.#o.afterWrite();
  }

  /**
   * fsyncs the active segment beside the flush loop (see `#syncing`); a failure is handed to
   * the loop, which enters the failed state and seals the segment.
   */
  async #syncActive(): Promise<void> {
    const file = this.#file;
    const seg = this.#seg;
    try {
      if (!file || !seg) return;
      await file.sync();
      this.#ledger.synced(seg, file.syncedSize);
    } catch (e) {
      this.#syncFailed = { file: file!, error: e };
      this.#kick();
    }
  }

  /** Enters the failed state if a periodic fsync failed; returns its file, else null. */
  #takeSyncFailure(): SegmentFile | null {
    const failed = this.#syncFailed;
    if (!failed) return null;
    this.#syncFailed = null;
    this.#fail("fsync of the active segment", failed.file.name, failed.error);
    return failed.file;
  }

  /** Enters the failed state (see the module doc). */
  #fail(what: string, segment: string, cause: unknown): void {
    this.#ledger.storageFailed();
    this.#failure = new StorageError(`fsync`, `${this.#o.dir}/${segment}`, cause);
    this.#log.error(
      `${what} failed; the segment is retired, and writes are refused until a fresh segment can be fsynced`,
      { segment, error: cause },
    );
  }
}

/** The write's timestamp: the one given, or now. Throws TypeError for a bad one. */
export function timestampOf(options: WriteOptions | undefined): number {
  return timestampOrNow(options?.timestamp);
}

/**
 * `t` when it is a timestamp (ms since the epoch, a non-negative integer), now when it is
 * undefined; TypeError for anything else.
 */
export function timestampOrNow(t: unknown): number {
  if (t === undefined) return Date.now();
  if (typeof t !== "number" || !Number.isSafeInteger(t) || t < 0) {
    throw new TypeError(
      `timestamp must be a non-negative integer of ms since the epoch, got ${String(t)}`,
    );
  }
  return t;
}

/**
 * The buffer: durable append to segment files, rolling, pruning at the size cap, and the
 * sender that delivers segments in order through a {@link Provider} and moves the
 * checkpoint only after the provider acknowledges.
 *
 * @module
 */

import { checkpointFileName, commitCheckpoint } from "../checkpoint/checkpoint.ts";
import { BufferClosedError, BufferFullError, StorageError } from "../errors.ts";
import type { FileSystem } from "../fs/types.ts";
import { defaultFileSystem } from "../fs/default.ts";
import { createLogger, type Logger } from "../log.ts";
import type { ProviderRecord } from "../provider/types.ts";
import {
  type Bytes,
  decodeFrame,
  FrameBuilder,
  type HeadersInit,
  PayloadError,
  SEGMENT_HEADER_SIZE,
  type StoredRecord,
} from "../segment/format.ts";
import { SegmentCursor } from "../segment/reader.ts";
import { SegmentFile } from "../segment/writer.ts";
import { type Counters, newCounters, type Segment } from "./backlog.ts";
import { type MessageBufferOptions, type ResolvedOptions, resolveOptions } from "./options.ts";
import { DEAD_DIR, QUARANTINE_DIR, quarantineTail, recover } from "./recovery.ts";

/** Per-record options of {@link MessageBuffer.write}. */
export interface WriteOptions {
  /** Kafka record key; records with the same key go to the same partition. */
  key?: Bytes | null;
  /** Kafka record headers. */
  headers?: HeadersInit | null;
  /** Event time in ms since the epoch; becomes the Kafka timestamp. @default Date.now() */
  timestamp?: number;
}

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
  /**
   * Time from a record's timestamp to the provider's acknowledgement, over the last 8192
   * records delivered: quantiles in ms, plus the sum and count since open.
   */
  deliveryLatencyMs: {
    p50: number | null;
    p99: number | null;
    max: number | null;
    sum: number;
    count: number;
  };
}

/** `connecting` until `open()` succeeds; `retrying` while sends fail; `closed` after close. */
export type ProviderState = "connecting" | "ready" | "retrying" | "closed";

/** The open frame's shared outcome: every write in a frame resolves or fails together. */
interface Batch {
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

function newBatch(): Batch {
  let resolve!: () => void, reject!: (e: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Callers of write() that await get the rejection; nobody awaiting is not an error here.
  promise.catch(() => {});
  return { promise, resolve, reject };
}

interface PendingFrame {
  builder: FrameBuilder;
  batch: Batch;
}

interface BlockedWrite {
  topic: string;
  value: Bytes;
  options: WriteOptions | undefined;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** A frame is handed to the file once it reaches this size, even while a write is in flight. */
const FRAME_TARGET_BYTES = 1 << 20;

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
  readonly #fs: FileSystem;
  readonly #log: Logger;
  readonly #dir: string;
  readonly #lockRelease: () => Promise<void>;
  readonly #counters: Counters;
  readonly #segments: Segment[];
  #nextSeq: number;

  // Writer state. Only #flushLoop touches #active's file.
  #active: SegmentFile | null = null;
  #activeSeg: Segment | null = null;
  #open: PendingFrame;
  #queue: PendingFrame[] = [];
  #spare: FrameBuilder[] = [];
  #flushing = false;
  #flushIdle: Promise<void> = Promise.resolve();
  #flushIdleResolve: (() => void) | null = null;
  #rollRequested = false;
  #rollWaiters: Array<() => void> = [];
  #syncRequested = false;
  #pendingBytes = 0;
  #segmentBytes = 0;
  #blocked: BlockedWrite[] = [];
  /** Frames are cut at this size so that one frame never dwarfs a segment. */
  readonly #frameTarget: number;
  #closing = false;
  #closed: Promise<void> | null = null;
  #timers: Array<ReturnType<typeof setInterval>> = [];
  #ageTimer: ReturnType<typeof setTimeout> | null = null;

  // Sender state.
  #providerState: ProviderState = "connecting";
  #lastError: string | null = null;
  #stopping = false;
  #stop: () => void = () => {};
  #stopSignal: Promise<void> = new Promise((r) => (this.#stop = r));
  #wake: () => void = () => {};
  #wakeSignal: Promise<void> = Promise.resolve();
  #senderDone: Promise<void> = Promise.resolve();
  #progressWaiters: Array<() => void> = [];
  #cursor: { seg: Segment; cursor: SegmentCursor } | null = null;
  /** The last frame decoded, kept while a batch boundary falls inside it. */
  #frameCache: { seg: Segment; offset: number; end: number; records: StoredRecord[] } | null = null;
  #meta: Promise<void> = Promise.resolve();
  #checkpointQueued = false;
  #dead: SegmentFile | null = null;
  #latency = new Float64Array(8192);
  #latencyCount = 0;
  #latencySum = 0;
  #deadBuilder = new FrameBuilder(1 << 16);

  private constructor(
    o: ResolvedOptions,
    lockRelease: () => Promise<void>,
    counters: Counters,
    segments: Segment[],
    nextSeq: number,
  ) {
    this.#o = o;
    this.#fs = o.fs;
    this.#log = o.logger;
    this.#dir = o.dir;
    this.#lockRelease = lockRelease;
    this.#counters = counters;
    this.#segments = segments;
    this.#nextSeq = nextSeq;
    this.#frameTarget = Math.min(
      FRAME_TARGET_BYTES,
      Math.max(256, Math.floor(o.segmentMaxBytes / 4)),
    );
    this.#open = { builder: new FrameBuilder(1 << 20, o.maxRecordBytes), batch: newBatch() };
    for (const s of segments) this.#segmentBytes += s.size;
    this.#resetWake();
  }

  /**
   * Opens (creating if needed) a buffer directory: takes its lock, recovers what a previous
   * run left, and starts delivering in the background.
   *
   * @throws {TypeError | RangeError} an option is invalid (the message names it)
   * @throws {LockedError} another live process has the directory open
   */
  static async open(options: MessageBufferOptions): Promise<MessageBuffer> {
    const fs = options?.fs ?? defaultFileSystem();
    const logger = options?.logger ?? createLogger({ level: "warn" });
    const o = resolveOptions(options, fs, logger);
    await fs.mkdirp(o.dir);
    await fs.mkdirp(`${o.dir}/${DEAD_DIR}`);
    await fs.mkdirp(`${o.dir}/${QUARANTINE_DIR}`);
    const lock = await fs.lock(o.dir);
    try {
      const counters = newCounters();
      const { segments, nextSeq } = await recover(fs, o.dir, logger, counters);
      const buffer = new MessageBuffer(o, () => lock.release(), counters, segments, nextSeq);
      buffer.#start();
      return buffer;
    } catch (e) {
      await lock.release();
      throw e;
    }
  }

  /** The buffer directory. */
  get dir(): string {
    return this.#dir;
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
    return this.#segmentBytes + this.#pendingBytes + this.#open.builder.size;
  }

  #start(): void {
    const o = this.#o;
    if (o.fsync === "interval") {
      this.#timers.push(unref(setInterval(() => {
        if (this.#active && this.#active.syncedSize < this.#active.size) {
          this.#syncRequested = true;
          this.#kick();
        }
      }, o.fsyncIntervalMs)));
    }
    this.#timers.push(unref(setInterval(() => this.#prune("interval"), o.pruneIntervalMs)));
    this.#senderDone = this.#sendLoop().catch((e) => {
      this.#log.error("sender stopped on an unexpected error", { error: e });
    });
  }

  /**
   * Stores one record. Resolves when the record is durable under the `fsync` policy; it will
   * be delivered in write order. Concurrent writes share one file write (and one fsync).
   *
   * @throws {TypeError | RangeError} (as a rejection) the topic, value, key or headers are invalid
   * @throws {BufferClosedError} the buffer is closing or closed
   * @throws {BufferFullError} at the cap with `whenFull: "reject"`
   * @throws {StorageError} the filesystem refused the write (ENOSPC, EIO); nothing was stored
   */
  write(topic: string, value: Bytes, options?: WriteOptions): Promise<void> {
    if (this.#closing) return Promise.reject(new BufferClosedError(this.#dir));
    if (this.full) {
      if (this.#o.whenFull === "reject") {
        return Promise.reject(
          new BufferFullError(this.#dir, this.#usedBytes(), this.#o.maxBufferBytes),
        );
      }
      // Encode once into a scratch frame so that bad input fails now, not when room appears.
      try {
        this.#validate(topic, value, options);
      } catch (e) {
        return Promise.reject(e);
      }
      const stamped = { ...options, timestamp: timestampOf(options) };
      // The sender may be idle on a fully delivered active segment: wake it so that it
      // seals that segment and deletes it to make room.
      if (this.#blocked.length === 0) this.#signal();
      return new Promise((resolve, reject) =>
        this.#blocked.push({ topic, value, options: stamped, resolve, reject })
      );
    }
    try {
      return this.#append(topic, value, options);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  #scratch: FrameBuilder | null = null;
  #validate(topic: string, value: Bytes, options: WriteOptions | undefined): void {
    this.#scratch ??= new FrameBuilder(1 << 16, this.#o.maxRecordBytes);
    this.#scratch.reset();
    this.#scratch.append(topic, value, options?.key, options?.headers, timestampOf(options));
  }

  /** Encodes into the open frame (throws on bad input) and schedules the flush. */
  #append(topic: string, value: Bytes, options: WriteOptions | undefined): Promise<void> {
    const open = this.#open;
    open.builder.append(topic, value, options?.key, options?.headers, timestampOf(options));
    const batch = open.batch;
    if (open.builder.size >= this.#frameTarget) this.#seal();
    if (!this.#flushing) this.#kick();
    return batch.promise;
  }

  /** Moves the open frame to the write queue and opens a new one. */
  #seal(): void {
    const open = this.#open;
    if (open.builder.count === 0) return;
    this.#queue.push(open);
    this.#pendingBytes += open.builder.size;
    const builder = this.#spare.pop() ?? new FrameBuilder(1 << 20, this.#o.maxRecordBytes);
    builder.reset();
    this.#open = { builder, batch: newBatch() };
  }

  /** Starts the flush loop if it is not running. */
  #kick(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    this.#flushIdle = new Promise((r) => (this.#flushIdleResolve = r));
    queueMicrotask(() => this.#flushLoop());
  }

  async #flushLoop(): Promise<void> {
    try {
      for (;;) {
        if (this.#rollRequested) await this.#roll();
        this.#seal();
        const next = this.#queue.shift();
        if (next) {
          this.#pendingBytes -= next.builder.size;
          await this.#writeFrame(next);
          this.#spare.push(next.builder);
          continue;
        }
        if (this.#syncRequested) {
          this.#syncRequested = false;
          await this.#syncActive();
          continue;
        }
        break;
      }
    } finally {
      this.#flushing = false;
      this.#flushIdleResolve?.();
      // Work that arrived after the last check (between the awaits above) gets a new loop.
      if (this.#queue.length > 0 || this.#open.builder.count > 0 || this.#rollRequested) {
        this.#kick();
      }
    }
  }

  async #syncActive(): Promise<void> {
    if (!this.#active) return;
    try {
      await this.#active.sync();
    } catch (e) {
      this.#log.error("fsync of the active segment failed", {
        segment: this.#active.name,
        error: e,
      });
    }
  }

  async #writeFrame(frame: PendingFrame): Promise<void> {
    const b = frame.builder;
    const bytes = b.finish();
    const count = b.count;
    try {
      if (
        this.#active && this.#active.size > SEGMENT_HEADER_SIZE &&
        this.#active.size + bytes.length > this.#o.segmentMaxBytes
      ) {
        await this.#roll();
      }
      if (this.#active?.broken) await this.#roll();
      if (!this.#active) await this.#createActive();
      const active = this.#active!;
      const seg = this.#activeSeg!;
      await active.append(bytes, this.#o.fsync === "always");
      // Visible to the sender only now that it is durable under the policy.
      if (seg.records === 0) seg.oldestTimestamp = b.baseTimestamp;
      seg.newestTimestamp = Math.max(seg.newestTimestamp, b.maxTimestamp);
      seg.records += count;
      this.#segmentBytes += active.size - seg.size;
      seg.size = active.size;
      this.#counters.written += count;
      frame.batch.resolve();
      this.#signal();
    } catch (e) {
      const path = this.#active?.path ?? this.#dir;
      this.#counters.writeErrors += count;
      const err = new StorageError(`write ${count} record(s) to`, path, e);
      this.#log.error("write failed; the records were not stored", {
        records: count,
        error: err.message,
      });
      frame.batch.reject(err);
    }
    await this.#pruneIfOverCap();
  }

  /** Under drop-oldest, deletes the oldest sealed segments while the buffer is over its cap. */
  async #pruneIfOverCap(): Promise<void> {
    if (this.#o.whenFull === "drop-oldest" && this.#usedBytes() > this.#o.maxBufferBytes) {
      await this.#prune("cap");
    }
  }

  async #createActive(): Promise<void> {
    const sync = this.#o.fsync !== "never";
    const file = await SegmentFile.create(this.#fs, this.#dir, this.#nextSeq, sync);
    this.#active = file;
    const seg: Segment = {
      name: file.name,
      firstSeq: file.firstSeq,
      size: file.size,
      records: 0,
      sealed: false,
      oldestTimestamp: 0,
      newestTimestamp: 0,
      checkpoint: { offset: SEGMENT_HEADER_SIZE, skip: 0, delivered: 0 },
      checkpointDirty: false,
      checkpointOnDisk: false,
      gone: false,
    };
    this.#segmentBytes += seg.size;
    this.#activeSeg = seg;
    this.#segments.push(seg);
    if (this.#ageTimer) clearTimeout(this.#ageTimer);
    this.#ageTimer = unref(setTimeout(() => {
      if (this.#activeSeg === seg) {
        this.#rollRequested = true;
        this.#kick();
      }
    }, this.#o.segmentMaxAgeMs));
  }

  /** Seals the active segment (fsync unless `never`); the next frame starts a new one. */
  async #roll(): Promise<void> {
    this.#rollRequested = false;
    const file = this.#active;
    const seg = this.#activeSeg;
    this.#active = null;
    this.#activeSeg = null;
    if (file && seg) {
      this.#nextSeq = seg.firstSeq + seg.records;
      try {
        if (this.#o.fsync !== "never") await file.sync();
      } catch (e) {
        this.#log.error("fsync while sealing a segment failed", { segment: seg.name, error: e });
      }
      await file.close().catch(() => {});
      seg.sealed = true;
      this.#signal();
    }
    for (const w of this.#rollWaiters.splice(0)) w();
    await this.#pruneIfOverCap();
  }

  /** Asks the flush loop to seal the active segment; resolves once it has. */
  #requestRoll(): Promise<void> {
    if (!this.#active) return Promise.resolve();
    return new Promise((resolve) => {
      this.#rollWaiters.push(resolve);
      this.#rollRequested = true;
      this.#kick();
    });
  }

  /**
   * Deletes sealed segments: the oldest while over the cap (drop-oldest), and any whose
   * newest record is past `maxRecordAgeMs`. Every deleted record is counted and logged.
   */
  async #prune(why: "cap" | "interval"): Promise<void> {
    const o = this.#o;
    if (o.maxRecordAgeMs > 0) {
      const limit = Date.now() - o.maxRecordAgeMs;
      for (const seg of [...this.#segments]) {
        if (!seg.sealed || seg.gone || seg.newestTimestamp >= limit) continue;
        const lost = seg.records - seg.checkpoint.delivered;
        this.#counters.expired += lost;
        this.#log.warn("deleted a segment whose records are all past maxRecordAgeMs", {
          segment: seg.name,
          records: lost,
        });
        await this.#deleteSegment(seg);
      }
    }
    if (o.whenFull !== "drop-oldest") return;
    while (this.#usedBytes() > o.maxBufferBytes) {
      const seg = this.#segments.find((s) => s.sealed && !s.gone);
      if (!seg) break;
      const lost = seg.records - seg.checkpoint.delivered;
      const lostBytes = seg.size - seg.checkpoint.offset;
      this.#counters.dropped += lost;
      this.#counters.droppedBytes += lostBytes;
      this.#log.warn("buffer over maxBufferBytes; dropped the oldest segment", {
        segment: seg.name,
        records: lost,
        bytes: lostBytes,
        usedBytes: this.#usedBytes(),
        maxBufferBytes: o.maxBufferBytes,
        check: why,
      });
      await this.#deleteSegment(seg);
    }
  }

  /** Removes a segment and its S file (in that order), in the metadata queue. */
  #deleteSegment(seg: Segment): Promise<void> {
    if (seg.gone) return this.#meta;
    seg.gone = true;
    const i = this.#segments.indexOf(seg);
    if (i >= 0) this.#segments.splice(i, 1);
    this.#segmentBytes -= seg.size;
    if (this.#frameCache?.seg === seg) this.#frameCache = null;
    const task = this.#runMeta(async () => {
      await this.#fs.remove(`${this.#dir}/${seg.name}`);
      await this.#fs.remove(`${this.#dir}/${checkpointFileName(seg.name)}`);
      if (this.#o.fsync !== "never") await this.#fs.syncDir(this.#dir);
    });
    this.#admitBlocked();
    this.#signal();
    return task;
  }

  /** Runs metadata changes (S files, deletions) one at a time, in order. */
  #runMeta(task: () => Promise<void>): Promise<void> {
    const run = this.#meta.then(task).catch((e) => {
      this.#log.error("checkpoint or segment deletion failed", { error: e });
    });
    this.#meta = run;
    return run;
  }

  /** Moves writes that waited for room into frames while there is room. */
  #admitBlocked(): void {
    while (this.#blocked.length > 0 && this.#usedBytes() < this.#o.maxBufferBytes) {
      const w = this.#blocked.shift()!;
      try {
        this.#append(w.topic, w.value, w.options).then(w.resolve, w.reject);
      } catch (e) {
        w.reject(e);
      }
    }
  }

  // ---------------------------------------------------------------- sender

  #resetWake(): void {
    this.#wakeSignal = new Promise((r) => (this.#wake = r));
  }

  /** Wakes the sender (new data, a seal, a deletion, close). */
  #signal(): void {
    this.#wake();
  }

  async #sendLoop(): Promise<void> {
    if ((await this.#retrying("open", () => this.#o.provider.open())) === false) return;
    this.#providerState = "ready";
    let failures = 0;
    while (!this.#stopping) {
      try {
        await this.#sendOne();
        failures = 0;
      } catch (e) {
        // A storage error while reading or deleting: log, back off, try again. The
        // checkpoint has not moved, so nothing is skipped.
        failures++;
        this.#log.error("sender: cannot read the backlog; retrying", {
          error: e,
          attempt: failures,
        });
        await this.#sleep(
          Math.min(this.#o.retryMaxMs, this.#o.retryInitialMs * 2 ** Math.min(failures, 16)),
        );
      }
    }
  }

  /** One step of the sender: deliver one batch, delete one finished segment, or wait. */
  async #sendOne(): Promise<void> {
    const seg = this.#segments[0];
    if (!seg) {
      await this.#idleWait();
      return;
    }
    const batch = await this.#readBatch(seg);
    if (batch === null) return; // segment changed under us (quarantined, dropped)
    if (batch.records.length === 0 && batch.expired === 0) {
      if (seg.sealed && batch.next.offset >= seg.size) {
        await this.#deleteSegment(seg);
        this.#notifyProgress();
      } else if (
        !seg.sealed && this.#blocked.length > 0 && seg.checkpoint.delivered >= seg.records
      ) {
        // Writes wait for room and all of it is in the delivered active segment: seal it so
        // that it can be deleted.
        await this.#requestRoll();
      } else {
        await this.#idleWait();
      }
      return;
    }
    let rejected: { index: number; reason: string }[] = [];
    if (batch.records.length > 0) {
      const outcome = await this.#retrying(
        "send",
        () => this.#o.provider.send(batch.records),
        batch.records.length,
        () => seg.gone, // pruned during an outage: its records are counted as dropped
      );
      // Stopping (the batch is sent again after the next open) or the segment is gone.
      if (outcome === false) return;
      rejected = validRejections(outcome, batch.records.length);
    }
    if (seg.gone) return; // pruned while in flight: counted as dropped there
    this.#recordLatency(batch.records);
    if (rejected.length > 0) await this.#deadLetter(seg, batch.records, rejected);
    this.#counters.delivered += batch.records.length - rejected.length;
    this.#counters.expired += batch.expired;
    seg.checkpoint = {
      offset: batch.next.offset,
      skip: batch.next.skip,
      delivered: seg.checkpoint.delivered + batch.records.length + batch.expired,
    };
    this.#scheduleCheckpoint(seg);
    this.#notifyProgress();
  }

  async #idleWait(): Promise<void> {
    const signal = this.#wakeSignal;
    await signal;
    if (signal === this.#wakeSignal) this.#resetWake();
  }

  /**
   * Reads up to one batch from `seg` at its checkpoint. Returns null when the segment was
   * quarantined or went away while reading.
   */
  async #readBatch(seg: Segment): Promise<
    { records: ProviderRecord[]; expired: number; next: { offset: number; skip: number } } | null
  > {
    const o = this.#o;
    const records: ProviderRecord[] = [];
    let bytes = 0;
    let expired = 0;
    let { offset, skip } = seg.checkpoint;
    const ttlLimit = o.maxRecordAgeMs > 0 ? Date.now() - o.maxRecordAgeMs : -Infinity;
    if (this.#cursor?.seg !== seg) {
      await this.#cursor?.cursor.close().catch(() => {});
      this.#cursor = null;
      try {
        this.#cursor = {
          seg,
          cursor: new SegmentCursor(await this.#fs.open(`${this.#dir}/${seg.name}`, "read")),
        };
      } catch (e) {
        if (seg.gone) return null;
        throw e;
      }
    }
    const cursor = this.#cursor.cursor;
    while (records.length < o.batchMaxRecords && bytes < o.batchMaxBytes) {
      let frameRecords: StoredRecord[];
      let frameEnd: number;
      const cached = this.#frameCache;
      if (cached && cached.seg === seg && cached.offset === offset) {
        frameRecords = cached.records;
        frameEnd = cached.end;
      } else {
        const view = await cursor.frameAt(offset, seg.size);
        if (seg.gone) return null;
        if (view === null) break;
        if (typeof view === "string") {
          if (records.length > 0 || expired > 0) break; // deliver what is good first
          await this.#quarantine(seg, offset, view);
          return null;
        }
        frameRecords = [];
        try {
          decodeFrame(view.buf, view.at, view.header, frameRecords);
        } catch (e) {
          // The checksum matched but the records do not parse: treat it as corruption
          // rather than retrying it forever.
          if (!(e instanceof PayloadError)) throw e;
          if (records.length > 0 || expired > 0) break;
          await this.#quarantine(seg, offset, `undecodable frame: ${e.message}`);
          return null;
        }
        frameEnd = view.end;
        this.#frameCache = { seg, offset, end: frameEnd, records: frameRecords };
      }
      let i = skip;
      for (; i < frameRecords.length; i++) {
        if (
          records.length >= o.batchMaxRecords || (bytes >= o.batchMaxBytes && records.length > 0)
        ) break;
        const r = frameRecords[i];
        if (r.timestamp < ttlLimit) {
          expired++;
          continue;
        }
        records.push(r);
        bytes += r.value.length + (r.key?.length ?? 0) + 64;
      }
      if (i < frameRecords.length) {
        skip = i;
        break;
      }
      offset = frameEnd;
      skip = 0;
    }
    return { records, expired, next: { offset, skip } };
  }

  /** Moves `seg[offset..]` to quarantine (sealing it first if it is active) and counts it. */
  async #quarantine(seg: Segment, offset: number, reason: string): Promise<void> {
    if (!seg.sealed) await this.#requestRoll();
    await this.#cursor?.cursor.close().catch(() => {});
    this.#cursor = null;
    this.#frameCache = null;
    const lostRecords = seg.records - seg.checkpoint.delivered;
    let moved = 0;
    await this.#runMeta(async () => {
      moved = await quarantineTail(this.#fs, this.#dir, seg.name, offset);
    });
    this.#counters.quarantinedBytes += moved;
    this.#counters.quarantinedRecords += lostRecords;
    this.#log.error("corrupt frame in segment; moved the rest of it to quarantine", {
      segment: seg.name,
      offset,
      bytes: moved,
      records: lostRecords,
      reason,
    });
    this.#segmentBytes -= seg.size - offset;
    seg.size = offset;
    seg.records = seg.checkpoint.delivered;
    this.#admitBlocked();
  }

  /** Appends rejected records, with the reason in a header, to a segment in `dead/`. */
  async #deadLetter(
    seg: Segment,
    batch: readonly ProviderRecord[],
    rejected: { index: number; reason: string }[],
  ) {
    const b = this.#deadBuilder;
    b.reset();
    for (const { index, reason } of rejected) {
      const r = batch[index];
      if (!r) continue;
      const headers: Array<[string, Bytes]> = [...(r.headers ?? []), [
        "messagebuffer-error",
        reason,
      ], [
        "messagebuffer-segment",
        seg.name,
      ]];
      b.append(r.topic, r.value, r.key, headers, r.timestamp);
      this.#log.warn("provider rejected a record for good; moved to dead letters", {
        topic: r.topic,
        segment: seg.name,
        reason,
      });
    }
    if (b.count === 0) return;
    const count = b.count;
    await this.#retrying("dead-letter", async () => {
      this.#dead ??= await SegmentFile.create(this.#fs, `${this.#dir}/${DEAD_DIR}`, 0, true);
      await this.#dead.append(b.finish());
      await this.#dead.sync();
    });
    this.#counters.deadLettered += count;
  }

  #scheduleCheckpoint(seg: Segment): void {
    seg.checkpointDirty = true;
    if (this.#checkpointQueued) return;
    this.#checkpointQueued = true;
    this.#runMeta(() => this.#writeCheckpoints());
  }

  async #writeCheckpoints(): Promise<void> {
    this.#checkpointQueued = false;
    for (const seg of [...this.#segments]) {
      if (!seg.checkpointDirty || seg.gone) continue;
      seg.checkpointDirty = false;
      const c = { ...seg.checkpoint };
      try {
        await commitCheckpoint(
          this.#fs,
          this.#dir,
          `${this.#dir}/${checkpointFileName(seg.name)}`,
          c,
          this.#o.fsync !== "never",
        );
        seg.checkpointOnDisk = true;
      } catch (e) {
        seg.checkpointDirty = true;
        this.#log.error("cannot write S file; will retry with the next batch", {
          segment: seg.name,
          error: e,
        });
      }
    }
  }

  /**
   * Runs `fn` until it succeeds, waiting between failures: the first wait is
   * `retryInitialMs`, doubling up to `retryMaxMs`, each drawn from [wait/2, wait]. Returns
   * false if the buffer started closing instead.
   */
  async #retrying<T>(
    what: string,
    fn: () => Promise<T>,
    records = 0,
    abandon: () => boolean = () => false,
  ): Promise<T | false> {
    let wait = this.#o.retryInitialMs;
    for (let attempt = 0;; attempt++) {
      if (this.#stopping || abandon()) return false;
      try {
        const out = await fn();
        if (attempt > 0) {
          this.#log.info(`${what} succeeded after ${attempt} retries`, {
            provider: this.#o.provider.name,
          });
        }
        if (this.#providerState === "retrying") this.#providerState = "ready";
        return out;
      } catch (e) {
        this.#lastError = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
        if (this.#providerState !== "connecting") this.#providerState = "retrying";
        this.#counters.sendRetries++;
        this.#counters.resentRecords += records;
        const ms = Math.round(wait / 2 + Math.random() * wait / 2);
        const log = attempt === 0 || attempt % 10 === 0 ? this.#log.warn : this.#log.debug;
        log(`${what} failed; retrying`, {
          provider: this.#o.provider.name,
          attempt: attempt + 1,
          retryInMs: ms,
          error: this.#lastError,
        });
        await this.#sleep(ms);
        wait = Math.min(this.#o.retryMaxMs, wait * 2);
      }
    }
  }

  /** Sleeps `ms`, or less if the buffer starts closing. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.#stopSignal.then(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  #recordLatency(records: readonly ProviderRecord[]): void {
    const now = Date.now();
    const ring = this.#latency;
    for (const r of records) {
      const ms = Math.max(0, now - r.timestamp);
      ring[this.#latencyCount % ring.length] = ms;
      this.#latencyCount++;
      this.#latencySum += ms;
    }
  }

  #latencyQuantiles(): BufferStats["deliveryLatencyMs"] {
    const n = Math.min(this.#latencyCount, this.#latency.length);
    if (n === 0) return { p50: null, p99: null, max: null, sum: 0, count: 0 };
    const sorted = this.#latency.slice(0, n).sort();
    const q = (p: number) => sorted[Math.min(n - 1, Math.floor(p * n))];
    return {
      p50: q(0.5),
      p99: q(0.99),
      max: sorted[n - 1],
      sum: this.#latencySum,
      count: this.#latencyCount,
    };
  }

  #notifyProgress(): void {
    for (const w of this.#progressWaiters.splice(0)) w();
  }

  /** Records stored or waiting to be stored, not yet acknowledged (or dropped). */
  #backlogRecords(): number {
    let n = this.#open.builder.count + this.#blocked.length;
    for (const f of this.#queue) n += f.builder.count;
    for (const s of this.#segments) n += s.records - s.checkpoint.delivered;
    return n;
  }

  // ---------------------------------------------------------------- public

  /** Resolves when every write made so far is durable under the `fsync` policy. */
  async flush(): Promise<void> {
    const batches = this.#queue.map((f) => f.batch);
    if (this.#open.builder.count > 0) batches.push(this.#open.batch);
    if (this.#open.builder.count > 0 || this.#queue.length > 0) this.#kick();
    await Promise.allSettled(batches.map((b) => b.promise));
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
          `Buffer "${this.#dir}" still holds ${this.#backlogRecords()} undelivered records after ${timeoutMs} ms`,
        );
        e.name = "TimeoutError";
        throw e;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.#progressWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Counters, backlog and provider state. */
  stats(): BufferStats {
    let bytes = this.#pendingBytes + (this.#open.builder.count > 0 ? this.#open.builder.size : 0);
    let oldest = Infinity;
    for (const s of this.#segments) {
      if (s.records > s.checkpoint.delivered) {
        bytes += s.size - s.checkpoint.offset;
        if (s.oldestTimestamp > 0) oldest = Math.min(oldest, s.oldestTimestamp);
      }
    }
    return {
      counters: { ...this.#counters },
      backlog: { records: this.#backlogRecords(), bytes, segments: this.#segments.length },
      oldestRecordAgeMs: oldest === Infinity ? null : Math.max(0, Date.now() - oldest),
      usedBytes: this.#usedBytes(),
      blockedWrites: this.#blocked.length,
      provider: {
        name: this.#o.provider.name,
        state: this.#providerState,
        lastError: this.#lastError,
      },
      deliveryLatencyMs: this.#latencyQuantiles(),
    };
  }

  /**
   * Stops accepting writes, writes and fsyncs what was accepted, lets the sender finish the
   * batch in flight (up to `closeTimeoutMs`), writes the checkpoint, closes the provider and
   * releases the directory. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    this.#closing = true;
    for (const w of this.#blocked.splice(0)) w.reject(new BufferClosedError(this.#dir));
    for (const t of this.#timers) clearInterval(t);
    if (this.#ageTimer) clearTimeout(this.#ageTimer);
    // Drain the write queue, then seal the active segment.
    while (this.#flushing || this.#queue.length > 0 || this.#open.builder.count > 0) {
      this.#kick();
      await this.#flushIdle;
    }
    if (this.#active) {
      this.#rollRequested = true;
      this.#kick();
      await this.#flushIdle;
    }
    this.#stopping = true;
    this.#stop();
    this.#signal();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((
      r,
    ) => (timer = setTimeout(() => r("timeout"), this.#o.closeTimeoutMs)));
    const outcome = await Promise.race([this.#senderDone, timeout]);
    clearTimeout(timer);
    if (outcome === "timeout") {
      this.#log.warn(
        "close: the batch in flight was not acknowledged in time; it will be sent again on the next open",
        {
          closeTimeoutMs: this.#o.closeTimeoutMs,
        },
      );
    }
    await this.#meta;
    // A fully delivered segment need not wait for the next open to be deleted.
    for (const seg of [...this.#segments]) {
      if (seg.sealed && seg.checkpoint.delivered >= seg.records) await this.#deleteSegment(seg);
    }
    await this.#meta;
    await this.#cursor?.cursor.close().catch(() => {});
    await this.#dead?.close().catch(() => {});
    const providerClosed = this.#o.provider.close().catch((e) => {
      this.#log.warn("provider close failed", { provider: this.#o.provider.name, error: e });
    });
    await Promise.race([
      providerClosed,
      new Promise((r) => (timer = setTimeout(r, this.#o.closeTimeoutMs))),
    ]);
    clearTimeout(timer);
    this.#providerState = "closed";
    await this.#lockRelease();
  }
}

/** The provider's rejections with an index inside the batch, each index once. */
function validRejections(outcome: unknown, size: number): { index: number; reason: string }[] {
  const list = (outcome as { rejected?: unknown } | undefined)?.rejected;
  if (!Array.isArray(list)) return [];
  const seen = new Set<number>();
  const out: { index: number; reason: string }[] = [];
  for (const r of list) {
    const i = (r as { index?: unknown })?.index;
    if (typeof i !== "number" || !Number.isInteger(i) || i < 0 || i >= size || seen.has(i)) {
      continue;
    }
    seen.add(i);
    out.push({ index: i, reason: String((r as { reason?: unknown }).reason) });
  }
  return out;
}

function timestampOf(options: WriteOptions | undefined): number {
  const t = options?.timestamp;
  if (t === undefined) return Date.now();
  if (typeof t !== "number" || !Number.isSafeInteger(t) || t < 0) {
    throw new TypeError(
      `timestamp must be a non-negative integer of ms since the epoch, got ${String(t)}`,
    );
  }
  return t;
}

function unref<T>(t: T): T {
  (t as { unref?: () => void }).unref?.();
  return t;
}

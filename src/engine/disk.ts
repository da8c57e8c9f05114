/**
 * The disk path: every record goes through the segment files (mode `buffer`, and
 * `direct-until-error` while it buffers). It wires the engine's parts and owns their lifecycle.
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
import type { Provider } from "../provider/types.ts";
import type { Bytes } from "../segment/format.ts";
import { recover, type RecoveryOutcome } from "../segment/recovery.ts";
import { type Durability, durabilityOf } from "./durability.ts";
import { type Counters, Ledger } from "./ledger.ts";
import type { ResolvedOptions } from "./options.ts";
import { Retention } from "./retention.ts";
import type { LatencyStats } from "./latency.ts";
import { ProgressSignal } from "./progress.ts";
import { type ProviderState, Sender, type SendersShared } from "./sender.ts";
import {
  type PendingFrame,
  SegmentWriter,
  type StorageHealth,
  timestampOf,
  type WriteOptions,
} from "./writer.ts";
import { DEAD_DIR, INFLIGHT_FILE, QUARANTINE_DIR } from "../layout.ts";
import { type InflightEntry, loadInflight } from "../checkpoint/inflight.ts";

/** A write that waits for room: one record, or a frame gathered elsewhere (see `adopt`). */
type BlockedWrite =
  | {
    topic: string;
    value: Bytes;
    options: WriteOptions;
    resolve: () => void;
    reject: (e: unknown) => void;
    frame?: undefined;
  }
  | { frame: PendingFrame; reject: (e: unknown) => void };

/** What the disk path reports for {@link MessageBuffer.stats}. */
export interface DiskStats {
  backlog: { records: number; bytes: number; segments: number };
  oldestTimestamp: number | null;
  usedBytes: number;
  blockedWrites: number;
  provider: { name: string; state: ProviderState; lastError: string | null };
  storage: StorageHealth;
  deliveryLatencyMs: LatencyStats;
}

/** See the module doc. */
export class DiskPath {
  readonly #o: ResolvedOptions;
  readonly #durability: Durability;
  readonly #releaseLock: () => Promise<void>;
  readonly #ledger: Ledger;
  readonly #writer: SegmentWriter;
  readonly #retention: Retention;
  readonly #sender: Sender;
  readonly #room = new ProgressSignal();
  #blocked: BlockedWrite[] = [];
  /** Records in `#blocked` (a frame holds many). */
  #blockedRecords = 0;
  #closing = false;
  #timers: Array<ReturnType<typeof setInterval>> = [];
  /** Sequence number of the first record written by this process (recovered ones are below). */
  readonly #firstNewSeq: number;

  private constructor(
    o: ResolvedOptions,
    provider: Provider,
    releaseLock: () => Promise<void>,
    recovered: RecoveryOutcome,
    shared: SendersShared,
    restored: InflightEntry | null,
  ) {
    this.#o = o;
    this.#releaseLock = releaseLock;
    this.#firstNewSeq = recovered.nextSeq;
    const d = this.#durability = durabilityOf(o.fsync, o.fsyncIntervalMs);
    const ledger = this.#ledger = new Ledger(o.fs, o.dir, d, o.logger, recovered);
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
      provider,
      batchMaxRecords: o.batchMaxRecords,
      batchMaxBytes: o.batchMaxBytes,
      maxRecordAgeMs: o.maxRecordAgeMs,
      retryInitialMs: o.retryInitialMs,
      retryMaxMs: o.retryMaxMs,
      requestRoll: () => this.#writer.requestRoll(),
      writesWaiting: () => this.#blocked.length > 0,
      shared,
      restored,
    });
    ledger.onRoom(() => {
      this.#admitBlocked();
      this.#sender.wake();
      this.#room.notify();
    });
  }

  /**
   * Opens (creating if needed) the buffer directory: takes its lock, recovers what a previous
   * run left, and starts delivering through `provider` in the background. Its sender shares
   * with the other lanes' what `shared` holds (the latency window, read memory).
   *
   * @throws {LockedError} another live process has the directory open
   */
  static async open(
    o: ResolvedOptions,
    provider: Provider,
    shared: SendersShared,
  ): Promise<DiskPath> {
    const fs = o.fs;
    await fs.mkdirp(o.dir);
    await fs.mkdirp(`${o.dir}/${DEAD_DIR}`);
    await fs.mkdirp(`${o.dir}/${QUARANTINE_DIR}`);
    const lock = await fs.lock(o.dir);
    try {
      const r = await recover(fs, o.dir, o.logger, {
        sync: durabilityOf(o.fsync, o.fsyncIntervalMs).syncFiles,
      });
      // The batch in flight when the last run stopped (an unreadable file: none known).
      const inflight = await loadInflight(fs, `${o.dir}/${INFLIGHT_FILE}`).catch(() => null);
      const disk = new DiskPath(o, provider, () => lock.release(), r, shared, inflight);
      // Before the first write: what this process writes is not known fsynced until it says.
      if (disk.#durability.syncFiles) await disk.#ledger.syncedBefore(r.nextSeq);
      else await disk.#ledger.forgetSyncMark();
      disk.#start();
      return disk;
    } catch (e) {
      await lock.release();
      throw e;
    }
  }

  /** The counters the parts share (the facade adds the direct path's to them). */
  get counters(): Readonly<Counters> {
    return this.#ledger.counters;
  }

  /** True when a write now would be refused (`"reject"`) or would wait (`"block"`). */
  get full(): boolean {
    return this.#o.whenFull !== "drop-oldest" &&
      (this.#blocked.length > 0 || this.#usedBytes() >= this.#o.maxBufferBytes);
  }

  /** True while a segment recovered at open is still on disk (not yet delivered). */
  get holdsRecoveredSegments(): boolean {
    const first = this.#ledger.segments[0];
    return first !== undefined && first.firstSeq < this.#firstNewSeq;
  }

  /** Sequence number of the first record written by this process. */
  get firstNewSeq(): number {
    return this.#firstNewSeq;
  }

  /** First sequence number of the oldest segment on disk, or null when there is none. */
  get oldestSegmentSeq(): number | null {
    return this.#ledger.segments[0]?.firstSeq ?? null;
  }

  /** The provider as the sender sees it. */
  get provider(): { name: string; state: ProviderState; lastError: string | null } {
    return this.#sender.provider;
  }

  /** The writer's storage state. */
  get storage(): StorageHealth {
    return this.#writer.health;
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

  /** Stores one record (see {@link MessageBuffer.write}). */
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
      return new Promise((resolve, reject) => {
        this.#blocked.push({ topic, value, options: stamped, resolve, reject });
        this.#blockedRecords++;
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * {@link write} of a record whose key and value are ranges of `src` (see
   * `SegmentWriter.appendRange`), when it can be stored at once; null, storing nothing, when
   * not (closing, full, a topic this lane has not stored): then {@link write} it.
   */
  writeRange(
    topic: string,
    src: Uint8Array,
    keyAt: number,
    keyLength: number,
    valueAt: number,
    valueLength: number,
    timestamp: number,
  ): Promise<void> | null {
    if (this.#closing || this.full) return null;
    return this.#writer.appendRange(topic, src, keyAt, keyLength, valueAt, valueLength, timestamp);
  }

  /** A frame to gather records in elsewhere, as this path's writer sizes them (see `adopt`). */
  gatheringFrame(): PendingFrame {
    return this.#writer.gatheringFrame();
  }

  /** The size at which a gathering frame is to be handed over. */
  get frameTarget(): number {
    return this.#writer.frameTarget;
  }

  /**
   * Stores a frame gathered elsewhere ({@link gatheringFrame}) as {@link write} stores a
   * record: its records go to the writer when there is room, after the writes that wait for
   * room; at the cap they wait too (`"block"`) or are refused, all of them (`"reject"`). Its
   * promise settles with the outcome.
   */
  adopt(frame: PendingFrame): void {
    if (this.#closing) return frame.reject(new BufferClosedError(this.#o.dir));
    if (!this.full) return this.#writer.adopt(frame);
    if (this.#o.whenFull === "reject") {
      return frame.reject(
        new BufferFullError(this.#o.dir, this.#usedBytes(), this.#o.maxBufferBytes),
      );
    }
    if (this.#blocked.length === 0) this.#sender.wake();
    this.#blocked.push({ frame, reject: frame.reject });
    this.#blockedRecords += frame.builder.count;
  }

  /** Checks a record as `write` would, storing nothing; throws TypeError/RangeError. */
  validate(topic: string, value: Bytes, options?: WriteOptions): void {
    this.#writer.validate(topic, value, options);
  }

  /** Moves writes that waited for room into frames while there is room. */
  #admitBlocked(): void {
    while (this.#blocked.length > 0 && this.#usedBytes() < this.#o.maxBufferBytes) {
      const w = this.#blocked.shift()!;
      if (w.frame !== undefined) {
        this.#blockedRecords -= w.frame.builder.count;
        this.#writer.adopt(w.frame);
        continue;
      }
      this.#blockedRecords--;
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

  /** Resolves when room is made (delivered or pruned segments removed), or after `ms`. */
  room(ms: number): Promise<void> {
    return this.#room.wait(ms);
  }

  /** Resolves at the next delivery progress, or after `ms`. */
  progress(ms: number): Promise<void> {
    return this.#sender.progress(ms);
  }

  /** Records stored or waiting to be stored, not yet acknowledged (or dropped). */
  backlogRecords(): number {
    return this.#writer.pendingRecords + this.#blockedRecords + this.#ledger.backlogRecords();
  }

  /** Backlog, room, provider and storage state. */
  stats(): DiskStats {
    const { bytes, oldestTimestamp } = this.#ledger.backlog();
    return {
      backlog: {
        records: this.backlogRecords(),
        bytes: bytes + this.#writer.pendingBytes,
        segments: this.#ledger.segments.length,
      },
      oldestTimestamp,
      usedBytes: this.#usedBytes(),
      blockedWrites: this.#blockedRecords,
      provider: this.#sender.provider,
      storage: this.#writer.health,
      deliveryLatencyMs: this.#sender.latency(),
    };
  }

  /**
   * Writes and fsyncs what was accepted, lets the sender finish the batch in flight (up to
   * `closeTimeoutMs`), writes the checkpoint and releases the directory. The provider is the
   * facade's to close, once every lane has stopped.
   *
   * @throws {StorageError} (after closing all the same) the fsync that sealed the last
   *   segment failed, so what it held is not known to be on stable storage
   */
  async close(): Promise<void> {
    this.#closing = true;
    for (const w of this.#blocked.splice(0)) w.reject(new BufferClosedError(this.#o.dir));
    this.#blockedRecords = 0;
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

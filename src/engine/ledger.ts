/**
 * The ledger: the state the writer, the sender and retention share, after Vector's disk
 * buffer (`ledger.rs`). It holds the ordered list of segments with how far each is written
 * and acknowledged, the counters, the bytes on disk, and the metadata queue: the one place
 * that changes files other than the active segment (S files, deletions, quarantine), one
 * change at a time, in order. It also keeps the sync mark (`SYNCED`,
 * `src/checkpoint/sync_mark.ts`): how far the writer's fsyncs got, which recovery uses to
 * tell a torn tail from corruption.
 *
 * It is the only owner of that state. The writer, the sender and retention tell it what
 * happened, through methods named for it (`appended`, `sealed`, `delivered`, `pruned`,
 * `expired`, `writeFailed`, `sendFailed`, `storageFailed`...), and read it through read-only
 * views ({@link SegmentView}, `Readonly<Counters>`): the type checker refuses an assignment
 * anywhere else, and `tests/architecture_test.ts` greps for one. So the invariant that
 * the counters and the backlog add up (the model test's) lives in this file: each record is
 * counted once, here.
 *
 * @module
 */

import { type Checkpoint, CheckpointFile, checkpointFileName } from "../checkpoint/checkpoint.ts";
import {
  SYNC_MARK_INTERVAL_MS,
  type SyncMark,
  SyncMarkFile,
  syncMarkOf,
} from "../checkpoint/sync_mark.ts";
import { INFLIGHT_FILE, SYNC_MARK_FILE } from "../layout.ts";
import type { FileSystem } from "../fs/types.ts";
import type { Logger } from "../log.ts";
import { SEGMENT_HEADER_SIZE } from "../segment/format.ts";
import { quarantineTail, type RecoveryOutcome } from "../segment/recovery.ts";
import type { Durability } from "./durability.ts";
import type { DuplicateReason } from "../provider/types.ts";
import { type InflightEntry, InflightFile } from "../checkpoint/inflight.ts";

/** One segment file as the ledger tracks it (its own, mutable, state). */
interface Segment {
  /** File name in the buffer directory. */
  readonly name: string;
  readonly firstSeq: number;
  /** Bytes of whole frames the sender may read (grows while the segment is active). */
  size: number;
  /** Records in those frames. */
  records: number;
  /** No more frames will be appended. */
  sealed: boolean;
  /** Timestamp of its first record (0 while empty). */
  oldestTimestamp: number;
  /**
   * Largest record timestamp: exact for segments written by this process or found at open
   * with their footer; Infinity where it is not known (a segment walked at open sees frame
   * base times only), which keeps them from being expired whole; the sender still skips
   * their expired records one by one.
   */
  newestTimestamp: number;
  /** Acknowledged position (what the S file says, or will say once written). */
  checkpoint: Checkpoint;
  /** The S file is behind `checkpoint` (its last write failed). */
  checkpointDirty: boolean;
  /** Deleted (delivered, pruned or expired); the sender drops any work on it. */
  gone: boolean;
  /** The counter retention counted its unsent records in when it deleted it, if it did. */
  removedAs?: "dropped" | "expired";
}

/** A segment as the parts other than the ledger see it: they read it, and never assign to it. */
export type SegmentView = Readonly<Omit<Segment, "checkpoint">> & {
  readonly checkpoint: Readonly<Checkpoint>;
};

/**
 * Counters since the buffer was opened (see docs/agent.md, "Metrics and health").
 *
 * @example Count what was lost on purpose
 * ```ts
 * const c = buffer.stats().counters;
 * console.log(`dropped ${c.dropped}, expired ${c.expired}, dead-lettered ${c.deadLettered}`);
 * ```
 */
export interface Counters {
  /** Records stored (their write resolved). */
  written: number;
  /** Records the provider acknowledged. */
  delivered: number;
  /** Records the provider rejected for good, now in `dead/`. */
  deadLettered: number;
  /** Records deleted unsent by pruning at the size cap. */
  dropped: number;
  /** Bytes deleted unsent by pruning at the size cap. */
  droppedBytes: number;
  /** Records not sent because they were older than `maxRecordAgeMs`. */
  expired: number;
  /** Records (as counted by frame headers) moved to `quarantine/` as corrupt. */
  quarantinedRecords: number;
  /** Bytes moved to `quarantine/`. */
  quarantinedBytes: number;
  /** Bytes of torn tails (and interrupted segment creations) removed at open. */
  tornBytes: number;
  /**
   * Segment footers that failed their checks at open (the segment was walked instead), or
   * disagreed with what the sender then read (the sender's reading wins). Each is logged.
   */
  footerErrors: number;
  /**
   * S files found unusable at open (unreadable, or pointing past the end of their segment's
   * frames or inside a frame); each of those segments is delivered from its start. Logged
   * with the S file's name.
   */
  checkpointErrors: number;
  /**
   * Segment files found at open and left in place undelivered: of a newer format version
   * (a newer messagebuffer delivers them), or unreadable (the next open tries again). Each is
   * logged with its name and why.
   */
  skippedSegments: number;
  /** Entries of the buffer directory this version does not know, found at open and left alone. */
  unknownFiles: number;
  /** Records whose write failed on a storage error (they were not stored). */
  writeErrors: number;
  /** Failed provider sends (each is retried). */
  sendRetries: number;
  /**
   * Records sent again after a failed send. With a provider that keeps an identity (the
   * default Kafka client) they go under the same one, and the broker drops what it has.
   */
  resentRecords: number;
  /** Records that may have reached Kafka twice, by reason (see {@link DuplicateReason}). */
  maybeDuplicatedProducerStateLost: number;
  /** See {@link DuplicateReason} `producer-expired`. */
  maybeDuplicatedProducerExpired: number;
  /** See {@link DuplicateReason} `partitions-changed`. */
  maybeDuplicatedPartitionsChanged: number;
  /** See {@link DuplicateReason} `at-least-once-client`. */
  maybeDuplicatedAtLeastOnce: number;
  /** See {@link DuplicateReason} `direct`. */
  maybeDuplicatedDirect: number;
  /** See {@link DuplicateReason} `refused-record`. */
  maybeDuplicatedRefusedRecord: number;
  /** See {@link DuplicateReason} `identity-not-stored`. */
  maybeDuplicatedIdentityNotStored: number;
  /**
   * Filesystem operations that failed outside a write: fsyncs, S file writes, deletions,
   * quarantine, dead-letter writes, segment reads, and repairs at open. Each is logged with
   * the file it concerns.
   */
  storageErrors: number;
  /** Records acknowledged without going through the disk (the direct modes); in `delivered` too. */
  sentDirect: number;
  /**
   * Writes that failed because Kafka did not take their record (`block-on-error`,
   * `error-on-error`: refused, failed or timed out); the writer was told, nothing was kept.
   */
  failedWrites: number;
  /** Records `direct-until-error` moved from the direct path to the segment files. */
  spilledRecords: number;
  /** `direct-until-error`: switches from sending directly to buffering on disk. */
  switchesToBuffer: number;
  /** `direct-until-error`: switches back, once the disk backlog was delivered. */
  switchesToDirect: number;
}

/** The in-flight file is closed (the buffer is closing): the batch is not to be sent now. */
export class InflightClosedError extends Error {
  constructor() {
    super("the buffer is closing; the batch is sent after the next open");
    this.name = "InflightClosedError";
  }
}

/** The counter of each {@link DuplicateReason}. */
export const DUPLICATE_COUNTERS: Readonly<Record<DuplicateReason, keyof Counters>> = {
  "producer-state-lost": "maybeDuplicatedProducerStateLost",
  "producer-expired": "maybeDuplicatedProducerExpired",
  "partitions-changed": "maybeDuplicatedPartitionsChanged",
  "at-least-once-client": "maybeDuplicatedAtLeastOnce",
  "direct": "maybeDuplicatedDirect",
  "refused-record": "maybeDuplicatedRefusedRecord",
  "identity-not-stored": "maybeDuplicatedIdentityNotStored",
};

/** Counters, all zero. */
export function newCounters(): Counters {
  return {
    written: 0,
    delivered: 0,
    deadLettered: 0,
    dropped: 0,
    droppedBytes: 0,
    expired: 0,
    quarantinedRecords: 0,
    quarantinedBytes: 0,
    tornBytes: 0,
    footerErrors: 0,
    checkpointErrors: 0,
    skippedSegments: 0,
    unknownFiles: 0,
    writeErrors: 0,
    sendRetries: 0,
    resentRecords: 0,
    maybeDuplicatedProducerStateLost: 0,
    maybeDuplicatedProducerExpired: 0,
    maybeDuplicatedPartitionsChanged: 0,
    maybeDuplicatedAtLeastOnce: 0,
    maybeDuplicatedDirect: 0,
    maybeDuplicatedRefusedRecord: 0,
    maybeDuplicatedIdentityNotStored: 0,
    storageErrors: 0,
    sentDirect: 0,
    failedWrites: 0,
    spilledRecords: 0,
    switchesToBuffer: 0,
    switchesToDirect: 0,
  };
}

/** A new, empty segment's entry. */
function newSegment(name: string, firstSeq: number): Segment {
  return {
    name,
    firstSeq,
    size: SEGMENT_HEADER_SIZE,
    records: 0,
    sealed: false,
    oldestTimestamp: 0,
    newestTimestamp: 0,
    checkpoint: { offset: SEGMENT_HEADER_SIZE, skip: 0, delivered: 0 },
    checkpointDirty: false,
    gone: false,
  };
}

/** What a delivered batch was: what the sender sent, what Kafka refused, what had expired. */
export interface DeliveredBatch {
  /** Records sent and acknowledged, including the refused ones. */
  sent: number;
  /** Of those, records Kafka refused for good (now in `dead/`). */
  rejected: number;
  /** Records skipped as older than `maxRecordAgeMs`. */
  expired: number;
  /** Where the segment's checkpoint moves to. */
  next: { offset: number; skip: number };
}

/** See the module doc. */
export class Ledger {
  readonly #counters: Counters;
  readonly #fs: FileSystem;
  readonly #dir: string;
  readonly #durability: Durability;
  readonly #log: Logger;
  readonly #segments: Segment[];
  /** Segments deleted from the list whose files could not be removed yet. */
  readonly #leftovers: Segment[] = [];
  #bytes = 0;
  #meta: Promise<unknown> = Promise.resolve();
  /** The last {@link syncMetadata}, settled or not. */
  #metaSync: Promise<void> = Promise.resolve();
  /** Directory entries changed (creations, removals) since the directory was last fsynced. */
  #dirDirty = false;
  /** The S file of the segment in delivery, kept open between commits. */
  #ckpt: { seg: Segment; file: CheckpointFile; entrySynced: boolean } | null = null;
  /** Set by closeFiles(). */
  #closed = false;
  /** The open S file was written since its last fdatasync (under `interval`). */
  #ckptUnsynced = false;
  /** The in-flight file, opened on first use, and whether it was written since its fdatasync. */
  readonly #inflight: { file: InflightFile | null; unsynced: boolean } = {
    file: null,
    unsynced: false,
  };
  readonly #onRoom: Array<() => void> = [];
  /** The sync mark: its open file, the mark waiting to be written, and the timer that will. */
  #mark: {
    file: SyncMarkFile | null;
    next: SyncMark | { view: SegmentView; size: number } | null;
    timer: ReturnType<typeof setTimeout> | null;
    writing: Promise<unknown> | null;
    lastAt: number;
  } = { file: null, next: null, timer: null, writing: null, lastAt: 0 };

  /**
   * The ledger of a directory just recovered: its segments (all sealed: a segment is
   * appended to only by the process that created it) and the counters of what recovery
   * found.
   */
  constructor(
    fs: FileSystem,
    dir: string,
    durability: Durability,
    log: Logger,
    recovered: RecoveryOutcome,
  ) {
    this.#fs = fs;
    this.#dir = dir;
    this.#durability = durability;
    this.#log = log;
    this.#segments = recovered.segments.map((r): Segment => ({
      name: r.name,
      firstSeq: r.firstSeq,
      size: r.validSize,
      records: r.records,
      sealed: true,
      oldestTimestamp: r.oldestTimestamp,
      newestTimestamp: r.newestTimestamp,
      checkpoint: r.checkpoint,
      checkpointDirty: false,
      gone: false,
    }));
    const c = this.#counters = newCounters();
    c.tornBytes = recovered.tornBytes;
    c.quarantinedBytes = recovered.quarantinedBytes;
    c.footerErrors = recovered.footerErrors;
    c.checkpointErrors = recovered.checkpointErrors;
    c.skippedSegments = recovered.skippedSegments;
    c.unknownFiles = recovered.unknownFiles;
    c.storageErrors = recovered.storageErrors;
    for (const s of this.#segments) this.#bytes += s.size;
  }

  /** The counters since open, read-only. */
  get counters(): Readonly<Counters> {
    return this.#counters;
  }

  /** Segments in delivery order; the last may be the active one. */
  get segments(): readonly SegmentView[] {
    return this.#segments;
  }

  /** The ledger's own entry of a segment it handed out as a view. */
  #own(seg: SegmentView): Segment {
    return seg as Segment;
  }

  /** Bytes of segment files on disk (including files whose removal failed). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Calls `fn` whenever bytes are freed (a deletion or a quarantine). */
  onRoom(fn: () => void): void {
    this.#onRoom.push(fn);
  }

  #roomMade(): void {
    for (const fn of this.#onRoom) fn();
  }

  /** Adds the entry of a segment file just created, the active one. */
  created(name: string, firstSeq: number): SegmentView {
    const seg = newSegment(name, firstSeq);
    this.#segments.push(seg);
    this.#bytes += seg.size;
    return seg;
  }

  /** A frame was appended to `view` (its records now readable by the sender). */
  appended(
    view: SegmentView,
    frameBytes: number,
    records: number,
    base: number,
    max: number,
  ): void {
    const seg = this.#own(view);
    if (seg.records === 0) seg.oldestTimestamp = base;
    seg.newestTimestamp = Math.max(seg.newestTimestamp, max);
    seg.records += records;
    seg.size += frameBytes;
    this.#bytes += frameBytes;
    this.#counters.written += records;
  }

  /** No more frames will be appended to `view` (its footer is written). */
  sealed(view: SegmentView): void {
    this.#own(view).sealed = true;
  }

  /**
   * `view`'s first `size` bytes are on stable storage (an fsync of it succeeded). The sync
   * mark says so, at most every {@link SYNC_MARK_INTERVAL_MS}, off the path of writes; a
   * failed mark write only leaves the mark behind (it is logged at debug, not counted: the
   * mark informs recovery, it holds no records).
   */
  synced(view: SegmentView, size: number): void {
    // Only noted here (once per frame under "always"); encoded when written.
    this.#mark.next = { view, size };
    this.#scheduleMark();
  }

  /**
   * Every segment below sequence number `nextSeq` (all the recovered ones) is on stable
   * storage, and nothing of a later one is yet: the sync mark says so before this resolves
   * (the start of a process that fsyncs), so that a power cut before the first data fsync
   * is judged by it too.
   */
  async syncedBefore(nextSeq: number): Promise<void> {
    this.#mark.next = { firstSeq: nextSeq, nameCrc: 0, synced: 0 };
    if (!(await this.#writeMark())) await this.forgetSyncMark();
  }

  /**
   * Removes the sync mark (best effort): at the start of a process that does not fsync
   * (`never`), or after its first mark failed. A mark from before (sequence numbers may start
   * over at 0) must not judge this process's segments: without one, recovery judges by the
   * bytes.
   */
  async forgetSyncMark(): Promise<void> {
    const m = this.#mark;
    await m.file?.close().catch(() => {});
    m.file = null;
    await this.#fs.remove(`${this.#dir}/${SYNC_MARK_FILE}`).catch(() => {});
  }

  #scheduleMark(): void {
    const m = this.#mark;
    if (m.next === null || m.timer !== null || m.writing !== null || this.#closed) return;
    const wait = Math.max(0, m.lastAt + SYNC_MARK_INTERVAL_MS - Date.now());
    m.timer = setTimeout(() => {
      m.timer = null;
      m.writing = this.#writeMark().finally(() => {
        m.writing = null;
        this.#scheduleMark();
      });
    }, wait);
    (m.timer as { unref?: () => void }).unref?.();
  }

  /** Writes the waiting mark; false when that failed (logged at debug). */
  async #writeMark(): Promise<boolean> {
    const m = this.#mark;
    const next = m.next;
    if (next === null) return true;
    const mark = "view" in next ? syncMarkOf(next.view.name, next.view.firstSeq, next.size) : next;
    m.next = null;
    m.lastAt = Date.now();
    try {
      if (m.file === null) {
        const opened = await SyncMarkFile.open(this.#fs, `${this.#dir}/${SYNC_MARK_FILE}`);
        m.file = opened.file;
        await m.file.write(mark);
        if (opened.created) await this.#fs.syncDir(this.#dir);
      } else await m.file.write(mark);
      return true;
    } catch (e) {
      this.#log.debug("sync mark write failed; the mark on disk stays behind", {
        dir: this.#dir,
        error: e,
      });
      return false;
    }
  }

  /** A write of `records` records failed on a storage error: they were not stored. */
  writeFailed(records: number): void {
    this.#counters.writeErrors += records;
  }

  /** A send of `records` records failed; they will be sent again. */
  sendFailed(records: number): void {
    this.#counters.sendRetries++;
    this.#counters.resentRecords += records;
  }

  /** `records` records may have reached the destination twice, for `reason` (logged by the caller). */
  maybeDuplicated(records: number, reason: DuplicateReason): void {
    this.#counters[DUPLICATE_COUNTERS[reason]] += records;
  }

  /**
   * Writes `entry` (the batch about to be sent, and its identity) to the in-flight file, in
   * the metadata queue: fdatasynced before this resolves under `syncMetadata`, else synced
   * with the S files. Throws when it cannot be written (logged and counted), and
   * {@link InflightClosedError} once the files are closed.
   */
  inflight(entry: InflightEntry): Promise<void> {
    if (this.#closed) return Promise.reject(new InflightClosedError());
    return this.serial("write of the in-flight file", async () => {
      if (this.#closed) throw new InflightClosedError();
      const sync = this.#durability.syncMetadata;
      const f = this.#inflight;
      if (f.file === null) {
        const opened = await InflightFile.open(this.#fs, `${this.#dir}/${INFLIGHT_FILE}`);
        f.file = opened.file;
        if (opened.created) {
          if (sync) await this.#fs.syncDir(this.#dir);
          else this.#dirDirty = true;
        }
      }
      try {
        if (await f.file.write(entry, sync, this.#dir) && !sync) this.#dirDirty = true;
      } catch (e) {
        // The file may be half written or gone: open it afresh next time.
        await f.file.close().catch(() => {});
        f.file = null;
        throw e;
      }
      if (!sync) f.unsynced = true;
    });
  }

  /** A filesystem operation outside a write failed (it is logged where it happened). */
  storageFailed(): void {
    this.#counters.storageErrors++;
  }

  /**
   * A sealed segment read to its end held another number of records than its footer or the
   * walk at open said; what was read was delivered.
   */
  footerDisagreed(): void {
    this.#counters.footerErrors++;
  }

  /**
   * A batch of `view` was delivered: counts its records once (delivered, dead-lettered,
   * expired) and moves the checkpoint. When retention deleted the segment while the batch
   * was in flight, it had counted those records as dropped or expired; they reached Kafka
   * (or dead/, or expired), so they move to what they became, and no checkpoint is written.
   */
  async delivered(view: SegmentView, b: DeliveredBatch): Promise<void> {
    const seg = this.#own(view);
    const c = this.#counters;
    if (seg.gone && seg.removedAs) c[seg.removedAs] -= b.sent + b.expired;
    c.delivered += b.sent - b.rejected;
    c.deadLettered += b.rejected;
    c.expired += b.expired;
    if (seg.gone) return;
    const at = seg.checkpoint;
    await this.commit(seg, {
      offset: b.next.offset,
      skip: b.next.skip,
      delivered: at.delivered + b.sent + b.expired,
    });
  }

  /**
   * Retention deletes `view`, over the cap: its records not yet acknowledged count as
   * dropped, with their bytes. Resolves with what was lost, once the deletion is queued.
   */
  async pruned(view: SegmentView): Promise<{ records: number; bytes: number }> {
    const seg = this.#own(view);
    const lost = { records: seg.records - seg.checkpoint.delivered, bytes: 0 };
    lost.bytes = seg.size - seg.checkpoint.offset;
    this.#counters.dropped += lost.records;
    this.#counters.droppedBytes += lost.bytes;
    seg.removedAs = "dropped";
    await this.delete(seg);
    return lost;
  }

  /**
   * Retention deletes `view`, whose every record is past `maxRecordAgeMs`: its records not
   * yet acknowledged count as expired. Resolves with how many.
   */
  async expired(view: SegmentView): Promise<number> {
    const seg = this.#own(view);
    const lost = seg.records - seg.checkpoint.delivered;
    this.#counters.expired += lost;
    seg.removedAs = "expired";
    await this.delete(seg);
    return lost;
  }

  /** Records not yet acknowledged (or dropped) in segment files. */
  backlogRecords(): number {
    let n = 0;
    for (const s of this.#segments) n += s.records - s.checkpoint.delivered;
    return n;
  }

  /** Bytes not yet acknowledged, and the timestamp of the oldest frame holding some. */
  backlog(): { bytes: number; oldestTimestamp: number | null } {
    let bytes = 0;
    let oldest = Infinity;
    for (const s of this.#segments) {
      if (s.records > s.checkpoint.delivered) {
        bytes += s.size - s.checkpoint.offset;
        if (s.oldestTimestamp > 0) oldest = Math.min(oldest, s.oldestTimestamp);
      }
    }
    return { bytes, oldestTimestamp: oldest === Infinity ? null : oldest };
  }

  /**
   * Runs `task` in the metadata queue: after every change queued before it, before any
   * queued after. Failures are counted as storage errors and come back to the caller.
   */
  serial<T>(what: string, task: () => Promise<T>): Promise<T> {
    const run = this.#meta.then(task).catch((e) => {
      this.#counters.storageErrors++;
      this.#log.error(`${what} failed`, { dir: this.#dir, error: e });
      throw e;
    });
    this.#meta = run.catch(() => {});
    return run;
  }

  /** Resolves once every queued metadata change has settled. */
  settled(): Promise<void> {
    return this.#meta.then(() => {});
  }

  /**
   * Moves `seg`'s acknowledged position to `c` and writes it to the S file, in place (see
   * `checkpoint.ts`). With `durability.syncMetadata` it is fdatasynced (and a new S file's
   * directory entry fsynced) before this resolves. A failed write is logged and counted;
   * the next commit writes the newer position. Resolves true once the position is written.
   */
  async commit(view: SegmentView, c: Checkpoint): Promise<boolean> {
    const seg = this.#own(view);
    seg.checkpoint = c;
    seg.checkpointDirty = true;
    try {
      await this.serial(`write of S file for ${seg.name}`, () => this.#writeCheckpoint(seg));
      return true;
    } catch {
      return false;
    }
  }

  async #writeCheckpoint(seg: Segment): Promise<void> {
    if (seg.gone || !seg.checkpointDirty) return;
    if (this.#closed) return; // closed: the batch is sent again after the next open
    const c = seg.checkpoint;
    const sync = this.#durability.syncMetadata;
    if (this.#ckpt?.seg !== seg) {
      await this.#closeCheckpointFile();
      const path = `${this.#dir}/${checkpointFileName(seg.name)}`;
      const opened = await CheckpointFile.open(this.#fs, path, sync);
      this.#ckpt = { seg, file: opened.file, entrySynced: false };
    }
    const open = this.#ckpt;
    // On failure the file stays open and its next commit goes to the same slot again: the
    // other slot, the last one known good, is never written over after a failed write.
    await open.file.commit(c);
    // The first good commit on an S file makes its directory entry durable too (it may
    // have been created by this commit, or by one that failed after creating it).
    if (!open.entrySynced) {
      if (sync) await this.#fs.syncDir(this.#dir);
      else this.#dirDirty = true;
      open.entrySynced = true;
    }
    if (!sync) this.#ckptUnsynced = true;
    if (seg.checkpoint === c) seg.checkpointDirty = false;
  }

  async #closeCheckpointFile(): Promise<void> {
    const open = this.#ckpt;
    this.#ckpt = null;
    if (open && this.#ckptUnsynced) {
      // Under interval: what was written goes to disk before the file is left behind.
      this.#ckptUnsynced = false;
      await open.file.sync().catch(() => {});
    }
    await open?.file.close().catch(() => {});
  }

  /**
   * Takes `seg` out of the list (the sender drops any work on it) and removes its file and
   * then its S file. A removal that fails is logged and counted, its bytes count again, and
   * {@link retryLeftovers} tries it again.
   */
  delete(view: SegmentView): Promise<void> {
    const seg = this.#own(view);
    if (seg.gone) return this.settled();
    seg.gone = true;
    const i = this.#segments.indexOf(seg);
    if (i >= 0) this.#segments.splice(i, 1);
    this.#bytes -= seg.size;
    const task = this.#remove(seg).then((ok) => {
      if (ok) return;
      this.#leftovers.push(seg);
      this.#bytes += seg.size;
    });
    this.#roomMade();
    return task;
  }

  /** Tries again to remove segment files whose removal failed. */
  async retryLeftovers(): Promise<void> {
    for (const seg of [...this.#leftovers]) {
      if (!(await this.#remove(seg))) continue;
      this.#leftovers.splice(this.#leftovers.indexOf(seg), 1);
      this.#bytes -= seg.size;
      this.#roomMade();
    }
  }

  async #remove(seg: Segment): Promise<boolean> {
    try {
      await this.serial(`removal of segment ${seg.name}`, async () => {
        if (this.#ckpt?.seg === seg) await this.#closeCheckpointFile();
        await this.#fs.remove(`${this.#dir}/${seg.name}`);
        await this.#fs.remove(`${this.#dir}/${checkpointFileName(seg.name)}`);
        if (this.#durability.syncMetadata) await this.#fs.syncDir(this.#dir);
        else this.#dirDirty = true;
      });
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Moves `seg[offset..]` to `quarantine/` and cuts `seg` there; its records past the
   * checkpoint are counted as quarantined. Throws (leaving `seg` as it was) when the move
   * fails, so that the caller tries again.
   */
  async quarantine(view: SegmentView, offset: number, reason: string): Promise<void> {
    const seg = this.#own(view);
    const moved = await this.serial(
      `quarantine of ${seg.name} from offset ${offset}`,
      // Pruned or expired meanwhile: its records were counted there, and its file is going.
      () => seg.gone ? Promise.resolve(-1) : quarantineTail(this.#fs, this.#dir, seg.name, offset),
    );
    if (moved < 0) return;
    const lostRecords = seg.records - seg.checkpoint.delivered;
    this.#counters.quarantinedBytes += moved;
    this.#counters.quarantinedRecords += lostRecords;
    this.#log.error("corrupt frame in segment; moved the rest of it to quarantine", {
      segment: seg.name,
      offset,
      bytes: moved,
      records: lostRecords,
      reason,
    });
    this.#bytes -= seg.size - offset;
    seg.size = offset;
    seg.records = seg.checkpoint.delivered;
    this.#roomMade();
  }

  /** Writes again every position whose S file write failed. */
  async commitPending(): Promise<void> {
    for (const seg of this.#segments) {
      if (seg.checkpointDirty && !seg.gone) await this.commit(seg, seg.checkpoint);
    }
  }

  /** Closes the open S file (at close); no S file is written after this. */
  closeFiles(): Promise<void> {
    return this.serial("close of the S file", async () => {
      this.#closed = true;
      const m = this.#mark;
      if (m.timer !== null) clearTimeout(m.timer);
      m.timer = null;
      await m.writing;
      await this.#writeMark();
      await m.file?.close().catch(() => {});
      m.file = null;
      const f = this.#inflight;
      if (f.file && f.unsynced) await f.file.sync().catch(() => {});
      await f.file?.close().catch(() => {});
      f.file = null;
      return this.#closeCheckpointFile();
    });
  }

  /**
   * Under `interval`, makes S file writes, in-flight file writes, creations and removals
   * before the call durable (one call at a time; a call made during another runs after it).
   *
   * What to sync is taken in the metadata queue, after the changes queued before the call;
   * the fsyncs then run beside the queue, so that the checkpoint and in-flight writes of the
   * next batches do not wait for them (they took a few ms, once per interval, off every
   * delivery then in progress). A file is closed or replaced only once its syncs have ended,
   * and synced again at its close if one failed (`OverlappingSyncs`); a write made during a
   * sync is synced by the next call. A failed fsync is logged and counted, and the next call
   * tries again.
   */
  syncMetadata(): Promise<void> {
    const run = this.#metaSync.then(() => this.#syncMetadataNow());
    this.#metaSync = run.catch(() => {});
    return run;
  }

  async #syncMetadataNow(): Promise<void> {
    const f = this.#inflight;
    const syncs: Promise<void>[] = [];
    await this.serial("choice of the files to fsync", () => {
      if (this.#ckptUnsynced && this.#ckpt) syncs.push(this.#ckpt.file.sync());
      if (f.unsynced && f.file) syncs.push(f.file.sync());
      if (this.#dirDirty) syncs.push(this.#fs.syncDir(this.#dir));
      this.#ckptUnsynced = f.unsynced = this.#dirDirty = false;
      return Promise.resolve();
    }).catch(() => {}); // (counted and logged by serial)
    const failed = (await Promise.allSettled(syncs)).find((o) => o.status === "rejected");
    if (failed === undefined) return;
    this.#counters.storageErrors++;
    this.#log.error("fsync of S files and the buffer directory failed", {
      dir: this.#dir,
      error: (failed as PromiseRejectedResult).reason,
    });
    this.#dirDirty = true;
    this.#ckptUnsynced = true;
    if (f.file) f.unsynced = true;
  }
}

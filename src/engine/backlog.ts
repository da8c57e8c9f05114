/**
 * The in-memory picture of the buffer directory that the writer and the sender share: the
 * ordered list of segments, how far each is written and delivered, and the counters.
 *
 * @module
 */

import type { Checkpoint } from "../checkpoint/checkpoint.ts";

/** One segment file as the engine tracks it. */
export interface Segment {
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
   * Largest record timestamp, exact for segments written by this process; Infinity for
   * segments found at open (only frame base times are known there), which keeps them from
   * being expired whole; the sender still skips their expired records one by one.
   */
  newestTimestamp: number;
  /** Acknowledged position (what the S file says, or will say once written). */
  checkpoint: Checkpoint;
  /** The checkpoint changed since the S file was last written. */
  checkpointDirty: boolean;
  /** An S file exists on disk for it. */
  checkpointOnDisk: boolean;
  /** Deleted (delivered, pruned or expired); the sender drops any work on it. */
  gone: boolean;
}

/** Counters since the buffer was opened (see README, "Metrics"). */
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
  /** Bytes of torn tails cut off at open. */
  tornBytes: number;
  /** Writes that failed on a storage error. */
  writeErrors: number;
  /** Failed sends that were retried. */
  sendRetries: number;
  /** Records sent again because a batch failed after some of it may have arrived. */
  resentRecords: number;
}

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
    writeErrors: 0,
    sendRetries: 0,
    resentRecords: 0,
  };
}

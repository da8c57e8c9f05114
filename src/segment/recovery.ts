/**
 * Recovery of a buffer directory, in two steps that `status` and `MessageBuffer.open` share:
 *
 * - {@link inspectBuffer} reads the directory and decides, without changing anything, what
 *   each segment holds and what opening it would do: cut a torn tail off the newest segment,
 *   move corrupt data to `quarantine/`, remove a segment whose creation was interrupted, fall
 *   back to a segment's start when its S file is unusable, remove what was delivered.
 * - {@link recover} carries those decisions out (the buffer holds the directory's lock).
 *
 * @module
 */

import { type Checkpoint, checkpointFileName, loadCheckpoint } from "../checkpoint/checkpoint.ts";
import { knownSynced, loadSyncMark, markNames } from "../checkpoint/sync_mark.ts";
import type { FileHandle, FileSystem } from "../fs/types.ts";
import type { Logger } from "../log.ts";
import {
  encodeSegmentFooter,
  footerFits,
  FORMAT_VERSION,
  parseSegmentFileName,
  SEGMENT_FOOTER_SIZE,
  SEGMENT_HEADER_SIZE,
  type SegmentFooter,
} from "./format.ts";
import { type BadHeader, readFooter, readFully, type ScanResult, scanSegment } from "./reader.ts";
import {
  DEAD_DIR,
  INFLIGHT_FILE,
  LANES_DIR,
  LOCK_FILE,
  QUARANTINE_DIR,
  SYNC_MARK_FILE,
} from "../layout.ts";

/** What opening the buffer does with a segment file. */
export type SegmentAction =
  /** Deliver it from its checkpoint. */
  | "keep"
  /** Every record was acknowledged (or it holds none): remove it and its S file. */
  | "remove-delivered"
  /** The newest segment has no complete header: its creation was interrupted. Remove it. */
  | "remove-torn-creation"
  /** A segment before the newest has a bad header: move the whole file to quarantine. */
  | "quarantine-file"
  /**
   * Its header is ours with a later format version (a newer messagebuffer wrote it): leave
   * it in place, untouched, and deliver the other segments; a newer version delivers it.
   */
  | "skip-newer-version"
  /** It (or its S file) could not be read: leave it in place; the next open tries again. */
  | "skip-unreadable";

/** One segment file as recovery sees it. */
export interface SegmentReport {
  /** File name in the buffer directory. */
  name: string;
  /** Sequence number of its first record. */
  firstSeq: number;
  /** Size of the file as found. */
  fileSize: number;
  /** End of its last good frame: what stays after recovery. */
  validSize: number;
  /** Its good frames, and the records in them. */
  frames: number;
  records: number;
  /**
   * The sync mark does not know all of it on stable storage: there is none, or it gives a
   * smaller size. Opening then fsyncs what it keeps of it (see {@link recover}).
   */
  unsynced: boolean;
  /** Base time of its first frame (0 when it has none). */
  oldestTimestamp: number;
  /** Largest record timestamp, from its footer; Infinity when that is not known. */
  newestTimestamp: number;
  /**
   * How its summary was learned: `used` (from its footer, without walking it), `none`
   * (walked; it has no footer: the segment being written when the process stopped, or one
   * from before footers existed), `checked` (walked checking every CRC although its footer
   * is good, because it may hold bytes past its last fsync: see `summarize`), `invalid`
   * (walked, because its footer failed its checks: `footerProblem` says why). Opening the
   * buffer gives a walked segment a footer (fsynced with it); under a policy that fsyncs, it
   * fsyncs a kept segment the mark did not know fsynced (`unsynced`).
   */
  footer: "used" | "none" | "checked" | "invalid";
  footerProblem: string | null;
  /** Where delivery resumes after recovery. */
  checkpoint: Checkpoint;
  /** The S file as found (null when there is none or it is unreadable). */
  checkpointFile: Checkpoint | null;
  /** Why the S file is not used, so that delivery starts at the segment's start. */
  checkpointProblem: string | null;
  /** A bad header, when the file has one. */
  badHeader: string | null;
  /** The format version of a segment written by a newer messagebuffer (else null). */
  newerVersion: number | null;
  /** Why the file could not be read (action `skip-unreadable`), else null. */
  readError: string | null;
  /**
   * What follows the last good frame: `cut` (a torn tail of the newest segment, what an
   * interrupted write leaves) or `quarantine` (corrupt data).
   */
  tail: null | { action: "cut" | "quarantine"; offset: number; bytes: number; reason: string };
  action: SegmentAction;
}

/** Everything {@link inspectBuffer} found. */
export interface BufferReport {
  /** Segment files in write order. */
  segments: SegmentReport[];
  /** Temp files of interrupted S file writes (removed at open). */
  tempFiles: string[];
  /** S files whose segment is gone (removed at open). */
  orphanCheckpoints: string[];
  /** Entries this version does not know (left alone; logged at open). */
  unknownFiles: string[];
  /** Sequence number the next record gets. */
  nextSeq: number;
}

/** An S file's name (`<segment base name>.s`), and the temp file of one (an older layout's). */
const CHECKPOINT_NAME_RE = /^\d{20}-[0-9a-f]{11,}\.s$/;
const TEMP_NAME_RE = /^\d{20}-[0-9a-f]{11,}\.s\.tmp$/;

/**
 * Entries of a buffer directory that are not segments, S files or temp files but belong
 * there: the lock, dead letters, quarantine, the lanes' folder (`src/engine/lanes.ts`).
 */
const KNOWN_NAMES = new Set([
  LOCK_FILE,
  DEAD_DIR,
  QUARANTINE_DIR,
  LANES_DIR,
  SYNC_MARK_FILE,
  INFLIGHT_FILE,
  `${INFLIGHT_FILE}.new`,
]);

/** True for the ingest socket (`*.sock`) and its staging folder while it binds (`.mb-*`). */
function isSocketEntry(name: string): boolean {
  return name.endsWith(".sock") || name.startsWith(".mb-");
}

/** Reads `dir` and decides what opening it does; changes nothing (see the module doc). */
export async function inspectBuffer(fs: FileSystem, dir: string): Promise<BufferReport> {
  const names = await fs.list(dir);
  const segNames = names.map(parseSegmentFileName).filter((s) => s !== null)
    .sort((a, b) => (a.name < b.name ? -1 : 1));
  const checkpoints = new Set(names.filter((n) => CHECKPOINT_NAME_RE.test(n)));
  const report: BufferReport = {
    segments: [],
    tempFiles: names.filter((n) => TEMP_NAME_RE.test(n)),
    orphanCheckpoints: [],
    // Anything else is not this version's to remove: it is reported and left alone.
    unknownFiles: names.filter((n) =>
      parseSegmentFileName(n) === null && !checkpoints.has(n) && !TEMP_NAME_RE.test(n) &&
      !KNOWN_NAMES.has(n) && !isSocketEntry(n)
    ).sort(),
    nextSeq: 0,
  };
  // How far the engine knew the segments to be fsynced. A mark that cannot be read leaves
  // recovery to judge damage by the bytes alone, as without one.
  const mark = await loadSyncMark(fs, `${dir}/${SYNC_MARK_FILE}`).catch(() => null);
  const markIndex = mark === null
    ? -1
    : segNames.findIndex((s) => markNames(mark, s.name, s.firstSeq));
  // Segments are independent: inspect several at once, so that on a cold cache the disk
  // serves their reads in parallel. The report keeps write order.
  const CONCURRENCY = 16;
  for (let from = 0; from < segNames.length; from += CONCURRENCY) {
    const part = segNames.slice(from, from + CONCURRENCY);
    const found = await Promise.all(part.map(({ name, firstSeq }, j) =>
      inspectSegment(
        fs,
        dir,
        name,
        firstSeq,
        from + j === segNames.length - 1,
        checkpoints.has(checkpointFileName(name)),
        knownSynced(mark, markIndex, from + j, firstSeq, SEGMENT_HEADER_SIZE),
      ).catch(async (e): Promise<SegmentReport> => ({
        ...unusable(name, firstSeq, (await fs.stat(`${dir}/${name}`).catch(() => null))?.size ?? 0),
        readError: describeError(e),
        action: "skip-unreadable",
      }))
    ));
    for (const s of found) {
      report.segments.push(s);
      report.nextSeq = Math.max(report.nextSeq, s.firstSeq + s.records);
    }
  }
  for (const s of report.segments) checkpoints.delete(checkpointFileName(s.name));
  report.orphanCheckpoints = [...checkpoints];
  return report;
}

/** A report for a segment none of whose frames are used. */
function unusable(name: string, firstSeq: number, fileSize: number): SegmentReport {
  return {
    name,
    firstSeq,
    fileSize,
    validSize: 0,
    records: 0,
    oldestTimestamp: 0,
    newestTimestamp: Infinity,
    frames: 0,
    unsynced: false,
    footer: "none",
    footerProblem: null,
    checkpoint: { offset: SEGMENT_HEADER_SIZE, skip: 0, delivered: 0 },
    checkpointFile: null,
    checkpointProblem: null,
    badHeader: null,
    newerVersion: null,
    readError: null,
    tail: null,
    action: "keep",
  };
}

function describeError(e: unknown): string {
  const code = (e as { code?: unknown })?.code;
  const message = e instanceof Error ? e.message : String(e);
  return typeof code === "string" && !message.includes(code) ? `${code}: ${message}` : message;
}

async function inspectSegment(
  fs: FileSystem,
  dir: string,
  name: string,
  nameSeq: number,
  newest: boolean,
  hasCheckpoint: boolean,
  synced: number | undefined,
): Promise<SegmentReport> {
  const found = hasCheckpoint
    ? await loadCheckpoint(fs, `${dir}/${checkpointFileName(name)}`)
    : null;
  const mark = found !== null && typeof found !== "string" ? found.offset : undefined;
  const fh = await fs.open(`${dir}/${name}`, "read");
  let scan: ScanResult | BadHeader;
  let footerProblem: string | null = null;
  try {
    scan = await summarize(fh, nameSeq, newest, synced, mark, (why) => (footerProblem = why));
  } finally {
    await fh.close();
  }
  if ("badHeader" in scan) {
    // A segment is created, then its header written and fsynced: a crash in between leaves
    // the newest file shorter than a header. That is an interrupted creation, not damage.
    // A segment of a later format version is left for the version that wrote it.
    const tornCreation = newest && scan.fileSize < SEGMENT_HEADER_SIZE;
    return {
      ...unusable(name, nameSeq, scan.fileSize),
      badHeader: scan.badHeader,
      newerVersion: scan.newerVersion,
      action: scan.newerVersion !== null
        ? "skip-newer-version"
        : tornCreation
        ? "remove-torn-creation"
        : "quarantine-file",
    };
  }
  if (scan.footer !== null && scan.frames >= 0 && footerProblem === null) {
    // A walk that ended at a valid footer (the footer alone was not trusted): it must agree
    // with the file name and with what the walk counted, or it is written again.
    footerProblem = footerMismatch(scan.footer, nameSeq, scan);
    if (footerProblem !== null) scan.footer = null;
  }
  const tail = tailOf(scan, newest, synced);
  const { checkpoint, checkpointFile, checkpointProblem } = checkpointOf(found, scan);
  return {
    name,
    firstSeq: scan.firstSeq,
    fileSize: scan.fileSize,
    validSize: scan.validSize,
    records: scan.records,
    unsynced: synced === undefined || synced < scan.fileSize,
    oldestTimestamp: scan.oldestTimestamp,
    newestTimestamp: scan.footer?.newestTimestamp ?? Infinity,
    frames: scan.footer?.frames ?? scan.frames,
    footer: footerProblem !== null || scan.stop?.kind === "footer"
      ? "invalid"
      : scan.frames === -1
      ? "used"
      : scan.footer !== null
      ? "checked"
      : "none",
    footerProblem: footerProblem ?? (scan.stop?.kind === "footer" ? scan.stop.reason : null),
    checkpoint,
    checkpointFile,
    checkpointProblem,
    badHeader: null,
    newerVersion: null,
    readError: null,
    tail,
    action: checkpoint.delivered >= scan.records ? "remove-delivered" : "keep",
  };
}

/**
 * What follows a segment's last good frame: nothing, a torn tail (cut), or corrupt data
 * (quarantined). What lies past the last fsync the engine knew of (`synced`, from the sync
 * mark) was never promised to survive a power cut, so damage there is a torn tail whatever
 * it looks like: zeros, or a hole followed by a later piece of the write, as pages reach
 * the disk out of order. The writer records in the mark only sizes it reached by whole
 * appends, so a frame still being written at the last fsync starts at or past the mark's
 * size. A frame that starts before it was fsynced whole: damage there is corruption (a disk
 * that lost fsynced writes, or a bit flipped in a frame's length so that it seems to run past
 * the file's end), whatever it looks like. Without a mark that names the segment, damage in
 * the newest segment that looks torn (nothing that could be a later frame follows it: the
 * scan decides) is a torn tail. Everything else is corrupt.
 */
function tailOf(
  scan: ScanResult,
  newest: boolean,
  synced: number | undefined,
): SegmentReport["tail"] {
  if (!scan.stop) return null;
  const { kind, offset, reason } = scan.stop;
  const unsynced = synced !== undefined && offset >= synced;
  // Only the writer's own report, a mark that names this segment, says which frames it fsynced
  // whole. A segment before the mark's was declared fsynced by an open (Infinity), which also
  // covers a torn tail that open could not cut: that stays a torn tail.
  const named = synced !== undefined && synced !== Infinity;
  const lostSynced = kind === "torn" && newest && named && !unsynced;
  const torn = unsynced || kind === "footer" || (kind === "torn" && newest && !named);
  return {
    action: torn ? "cut" : "quarantine",
    offset,
    bytes: scan.fileSize - offset,
    reason: unsynced && kind === "corrupt"
      ? `${reason}, past the last fsync (at ${synced} bytes)`
      : lostSynced
      ? `${reason}, in a frame fsynced whole (the sync mark has ${synced} bytes)`
      : reason,
  };
}

/**
 * Where delivery of a segment resumes: at its S file's position when that points at a frame
 * of the segment, else at its start, saying why the S file is not used.
 */
function checkpointOf(
  found: Checkpoint | string | null,
  scan: ScanResult,
): Pick<SegmentReport, "checkpoint" | "checkpointFile" | "checkpointProblem"> {
  const start: Checkpoint = { offset: SEGMENT_HEADER_SIZE, skip: 0, delivered: 0 };
  if (found === null) return { checkpoint: start, checkpointFile: null, checkpointProblem: null };
  if (typeof found === "string") {
    return {
      checkpoint: start,
      checkpointFile: null,
      checkpointProblem: `unreadable S file: ${found}`,
    };
  }
  if (found.offset > scan.validSize && scan.frames >= 0) {
    // In a walked segment (the one being written when the process stopped), frames past the
    // end were delivered and then lost from the disk: a power cut took writes not fsynced
    // yet, under `interval`. Every frame left was delivered. (A sealed segment's footer says
    // where its frames end; an S file past that is not used.)
    return {
      checkpoint: { offset: scan.validSize, skip: 0, delivered: scan.records },
      checkpointFile: found,
      checkpointProblem: null,
    };
  }
  if (scan.recordsBeforeMark < 0) {
    return {
      checkpoint: start,
      checkpointFile: found,
      checkpointProblem: found.offset > scan.validSize
        ? `S file points at offset ${found.offset}, past the end of this segment's frames (${scan.validSize} bytes)`
        : `S file points at offset ${found.offset}, not at a frame start of this segment (${scan.validSize} bytes)`,
    };
  }
  return {
    checkpoint: {
      offset: found.offset,
      skip: found.skip,
      delivered: scan.recordsBeforeMark + found.skip,
    },
    checkpointFile: found,
    checkpointProblem: null,
  };
}

/**
 * Why a valid `footer` does not belong to segment `nameSeq` (the number in its file name), or
 * to what a walk of it counted (`walked`); null when it does.
 */
function footerMismatch(
  footer: SegmentFooter,
  nameSeq: number,
  walked?: { records: number; frames: number },
): string | null {
  if (footer.firstSeq !== nameSeq) {
    return `footer names sequence number ${footer.firstSeq}, the file name ${nameSeq}`;
  }
  if (walked && (footer.records !== walked.records || footer.frames !== walked.frames)) {
    return `footer counts ${footer.records} records in ${footer.frames} frames, the walk ${walked.records} in ${walked.frames}`;
  }
  return null;
}

/**
 * What recovery needs of a segment. A segment that may hold bytes past its last fsync (the
 * newest one without a sync mark; with one, any whose file is longer than the size the mark
 * knew fsynced) is walked checking every CRC, footer or not: a power cut during its seal can
 * leave the footer on the disk and a page before it not (pages reach the disk in any order).
 * Otherwise a valid footer answers with two small reads (and, when an S file points inside
 * the segment, a walk of the frame headers before that point). A segment without one is
 * walked: the newest one, and any the sync mark does not know fsynced whole, checking every
 * CRC, older ones by their frame headers only. `frames` is -1 when the footer was used
 * without a walk.
 */
async function summarize(
  fh: FileHandle,
  nameSeq: number,
  newest: boolean,
  synced: number | undefined,
  mark: number | undefined,
  footerFailed: (why: string) => void,
): Promise<ScanResult | BadHeader> {
  const fileSize = await fh.size();
  // The newest segment, and any the sync mark does not know fsynced whole, when walked.
  const verify = newest || (synced !== undefined && synced !== Infinity);
  if (synced === undefined ? newest : synced < fileSize) {
    return await scanSegment(fh, { verify, mark });
  }
  const footer = await readFooter(fh, fileSize);
  if (typeof footer !== "string") {
    // The file name carries the first sequence number too: when the footer agrees with it,
    // the header (magic, version, that same number) need not be read. A later format
    // version gets a new footer magic.
    const problem = footerMismatch(footer, nameSeq);
    if (problem === null) {
      const result: ScanResult = {
        firstSeq: footer.firstSeq,
        validSize: footer.dataSize,
        fileSize,
        frames: -1,
        records: footer.records,
        oldestTimestamp: footer.oldestTimestamp,
        footer,
        stop: null,
        recordsBeforeMark: -1,
      };
      if (mark === SEGMENT_HEADER_SIZE) result.recordsBeforeMark = 0;
      else if (mark === footer.dataSize) result.recordsBeforeMark = footer.records;
      else if (mark !== undefined && mark < footer.dataSize) {
        const walk = await scanSegment(fh, { verify: false, mark, until: mark });
        if (!("badHeader" in walk)) result.recordsBeforeMark = walk.recordsBeforeMark;
      }
      return result;
    }
    footerFailed(problem);
  } else if (footer !== "no footer") {
    footerFailed(footer);
  }
  return await scanSegment(fh, { verify, mark });
}

/** What {@link recover} changed, for the counters. */
export interface RecoveryOutcome {
  /** The segments to deliver, in order (action `keep`). */
  segments: SegmentReport[];
  nextSeq: number;
  /** Bytes of torn tails and interrupted creations removed. */
  tornBytes: number;
  /** Bytes moved to `quarantine/`. */
  quarantinedBytes: number;
  /** Segments whose footer failed its checks (each was walked instead). */
  footerErrors: number;
  /** S files that could not be used (their segments are delivered from their start). */
  checkpointErrors: number;
  /** Segments left in place and not delivered: a newer format version, or unreadable. */
  skippedSegments: number;
  /** Entries of the directory this version does not know (left alone). */
  unknownFiles: number;
  /** Filesystem operations that failed (each left its file as it was; the next open tries again). */
  storageErrors: number;
}

/**
 * Repairs `dir` as {@link inspectBuffer} decides; the caller holds the directory's lock.
 * With `sync` (a policy that fsyncs), every segment kept is on stable storage when this
 * resolves: what the sync mark did not know fsynced is fsynced (see {@link syncFound}).
 */
export async function recover(
  fs: FileSystem,
  dir: string,
  logger: Logger,
  options: { sync: boolean },
): Promise<RecoveryOutcome> {
  const started = Date.now();
  const report = await inspectBuffer(fs, dir);
  const out: RecoveryOutcome = {
    segments: [],
    nextSeq: report.nextSeq,
    tornBytes: 0,
    quarantinedBytes: 0,
    footerErrors: 0,
    checkpointErrors: 0,
    skippedSegments: 0,
    unknownFiles: report.unknownFiles.length,
    storageErrors: 0,
  };
  for (const n of report.unknownFiles) {
    logger.warn("unknown file in the buffer directory; left alone", { dir, file: n });
  }
  let dirty = false;
  for (const n of [...report.tempFiles, ...report.orphanCheckpoints]) {
    try {
      await fs.remove(`${dir}/${n}`);
      dirty = true;
    } catch (e) {
      // Left for the next open: a leftover file is harmless, a failed open is not.
      out.storageErrors++;
      logger.error("cannot remove a leftover file; the next open tries again", {
        file: n,
        error: e,
      });
    }
  }
  for (const s of report.segments) {
    try {
      dirty = await recoverSegment(fs, dir, s, logger, out, options.sync) || dirty;
    } catch (e) {
      // A failure here must not stop the buffer from opening (a restart would fail the same
      // way): the segment stays as it was and the next open tries again. One that was to be
      // delivered is left out of delivery until then (its tail could not be dealt with).
      out.storageErrors++;
      if (s.action === "keep") out.skippedSegments++;
      logger.error("recovery of a segment failed; left it as it is; the next open tries again", {
        segment: s.name,
        step: s.tail ? `${s.tail.action} its tail at ${s.tail.offset}` : s.action,
        delivered: s.action === "keep" ? "not before the next open" : "nothing to deliver",
        error: e,
      });
    }
  }
  if (dirty) {
    // Not fatal: what the removals and moves above did may be undone by a power loss, which
    // can only bring back files to deal with again (and records to send again).
    await fs.syncDir(dir).catch((e) => {
      out.storageErrors++;
      logger.error("fsync of the buffer directory failed after recovery", { dir, error: e });
    });
  }
  if (report.segments.length > 0) {
    logger.info("recovered buffer", {
      dir,
      segments: out.segments.length,
      walked: out.segments.filter((s) => s.footer !== "used").length,
      backlogRecords: out.segments.reduce((n, s) => n + s.records - s.checkpoint.delivered, 0),
      ms: Date.now() - started,
    });
  }
  return out;
}

/**
 * Carries out what {@link inspectBuffer} decided for one segment, adding it to
 * `out.segments` when it is to be delivered. Returns true when it changed a directory entry.
 */
async function recoverSegment(
  fs: FileSystem,
  dir: string,
  s: SegmentReport,
  logger: Logger,
  out: RecoveryOutcome,
  sync: boolean,
): Promise<boolean> {
  const path = `${dir}/${s.name}`;
  const ckptPath = `${dir}/${checkpointFileName(s.name)}`;
  if (s.action === "skip-newer-version") {
    logger.error(
      "segment of a newer format version; left in place, not delivered (a newer messagebuffer delivers it)",
      { segment: s.name, version: s.newerVersion, supported: FORMAT_VERSION },
    );
    out.skippedSegments++;
    return false;
  }
  if (s.action === "skip-unreadable") {
    logger.error("cannot read segment; left in place, not delivered; the next open tries again", {
      segment: s.name,
      error: s.readError,
    });
    out.storageErrors++;
    out.skippedSegments++;
    return false;
  }
  if (s.action === "remove-torn-creation") {
    logger.info("removed the newest segment, whose creation was interrupted", {
      segment: s.name,
      bytes: s.fileSize,
    });
    await fs.remove(path);
    await fs.remove(ckptPath);
    out.tornBytes += s.fileSize;
    return true;
  }
  // Each change is logged once it is done (a failure is logged by the caller instead).
  if (s.action === "quarantine-file") {
    out.quarantinedBytes += await quarantineTail(fs, dir, s.name, 0);
    logger.error("segment has a bad header; moved to quarantine", {
      segment: s.name,
      reason: s.badHeader,
    });
    await fs.remove(ckptPath);
    return true;
  }
  if (s.tail) await repairTail(fs, dir, s, s.tail, logger, out);
  if (s.footerProblem !== null) {
    logger.warn("segment footer failed its checks; walked the segment instead", {
      segment: s.name,
      reason: s.footerProblem,
    });
    out.footerErrors++;
  }
  if (s.checkpointProblem !== null) {
    logger.warn(
      `${s.checkpointProblem}; delivering the segment from its start (records may repeat)`,
      { segment: s.name, checkpoint: checkpointFileName(s.name) },
    );
    out.checkpointErrors++;
  }
  if (
    s.checkpointProblem === null && s.checkpointFile !== null &&
    s.checkpointFile.offset > s.validSize
  ) {
    logger.warn(
      "S file points past the segment's frames: frames delivered before a power cut did not reach the disk; nothing of the segment is sent again",
      { segment: s.name, checkpoint: s.checkpointFile.offset, frames: s.validSize },
    );
  }
  if (s.action === "remove-delivered") {
    // The segment goes first, then its S file, so that a crash in between leaves an S file
    // without a segment, which the next open removes.
    await fs.remove(path);
    await fs.remove(ckptPath);
    return true;
  }
  // A segment found whole is fsynced if the mark did not know it fsynced; any other is given a
  // footer, fsynced with it, or fsynced alone when no footer goes on (the disk full, say).
  const whole = s.footer === "used" || s.footer === "checked";
  if ((whole || !(await addFooter(fs, path, s, logger, out))) && sync && s.unsynced) {
    await syncFound(fs, dir, s.name, logger, out);
  }
  out.segments.push(s);
  return false;
}

/**
 * fsyncs a segment kept whole that the sync mark did not know to be on stable storage: one
 * whose seal a process wrote but was stopped (without a power cut) before fsyncing, or any
 * segment when there was no mark (a directory last opened under `never`, or by a version
 * without marks). The open then says every segment it found is on stable storage, and now it
 * is. A failure does not keep the segment from delivery (its records are readable): it is
 * logged and counted, and a power cut before the segment is delivered may then have it
 * quarantined rather than cut.
 */
async function syncFound(
  fs: FileSystem,
  dir: string,
  name: string,
  logger: Logger,
  out: RecoveryOutcome,
): Promise<void> {
  try {
    const fh = await fs.open(`${dir}/${name}`, "append");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (e) {
    foundSyncFailed(name, e, logger, out);
  }
}

/** An fsync of segment `name`, found at open, failed: counted and logged; it is delivered. */
function foundSyncFailed(name: string, e: unknown, logger: Logger, out: RecoveryOutcome): void {
  out.storageErrors++;
  logger.error("fsync of a segment found at open failed; delivering it anyway", {
    segment: name,
    error: e,
  });
}

/** Cuts a torn tail off a segment, or moves corrupt data to quarantine; logged and counted. */
async function repairTail(
  fs: FileSystem,
  dir: string,
  s: SegmentReport,
  tail: NonNullable<SegmentReport["tail"]>,
  logger: Logger,
  out: RecoveryOutcome,
): Promise<void> {
  const what = { segment: s.name, offset: tail.offset, bytes: tail.bytes, reason: tail.reason };
  if (tail.action === "quarantine") {
    out.quarantinedBytes += await quarantineTail(fs, dir, s.name, tail.offset);
    logger.error("corrupt data in segment; moved the rest of the segment to quarantine", what);
    return;
  }
  const w = await fs.open(`${dir}/${s.name}`, "append");
  try {
    await w.truncate(tail.offset);
    await w.sync();
  } finally {
    await w.close();
  }
  logger.warn("cut a torn tail off a segment (an interrupted write or footer)", what);
  out.tornBytes += tail.bytes;
}

/**
 * Appends a footer to a segment recovery walked (what remains of it after a cut or a
 * quarantine: its good frames), so that the next open need not walk it again. The writer
 * never appends to a segment found at open. Its newest timestamp is written as unknown (a
 * walk reads frame base times only). A failure only costs the next open a walk: it is
 * logged, and what was appended is cut off again. True when the footer was added and fsynced
 * (with the segment), or when that fsync failed (logged at `error` and counted, as
 * {@link syncFound} does: a second fsync would report success for pages the kernel may have
 * dropped); false when no footer went on (the caller then fsyncs the segment if it must).
 */
async function addFooter(
  fs: FileSystem,
  path: string,
  s: SegmentReport,
  logger: Logger,
  out: RecoveryOutcome,
): Promise<boolean> {
  if (!footerFits(s)) return false;
  const footer = encodeSegmentFooter({
    frames: s.frames,
    records: s.records,
    firstSeq: s.firstSeq,
    dataSize: s.validSize,
    oldestTimestamp: s.oldestTimestamp,
    newestTimestamp: Infinity,
  });
  let fh: FileHandle | null = null;
  try {
    try {
      fh = await fs.open(path, "append");
      const size = await fh.size();
      // A valid footer that the walk accepted but the file name contradicts: replace it.
      if (size === s.validSize + SEGMENT_FOOTER_SIZE) await fh.truncate(s.validSize);
      else if (size !== s.validSize) return false;
      await fh.append(footer);
    } catch (e) {
      logger.warn("could not add a footer to a segment; the next open walks it again", {
        segment: s.name,
        error: e,
      });
      await fh?.truncate(s.validSize).catch(() => {});
      return false;
    }
    try {
      await fh.sync();
    } catch (e) {
      foundSyncFailed(s.name, e, logger, out);
      await fh.truncate(s.validSize).catch(() => {}); // (the next open walks it again)
    }
    return true;
  } finally {
    await fh?.close().catch(() => {});
  }
}

/**
 * Copies `dir/name[offset..]` to `quarantine/<name>@<offset>`, fsyncs it, and cuts the
 * segment at `offset` (or moves the whole file when `offset` is 0). Returns the bytes moved.
 */
export async function quarantineTail(
  fs: FileSystem,
  dir: string,
  name: string,
  offset: number,
): Promise<number> {
  const path = `${dir}/${name}`;
  const qdir = `${dir}/${QUARANTINE_DIR}`;
  const target = `${qdir}/${name}@${offset}`;
  if (offset === 0) {
    const size = (await fs.stat(path))?.size ?? 0;
    await fs.rename(path, target);
    await fs.syncDir(qdir);
    await fs.syncDir(dir);
    return size;
  }
  const src = await fs.open(path, "append");
  try {
    const size = await src.size();
    await fs.remove(target);
    const out = await fs.open(target, "create");
    try {
      const buf = new Uint8Array(1 << 20);
      for (let at = offset; at < size;) {
        const n = await readFully(src, buf, 0, Math.min(buf.length, size - at), at);
        if (n <= 0) break;
        await out.append(buf.subarray(0, n));
        at += n;
      }
      await out.sync();
    } finally {
      await out.close();
    }
    await fs.syncDir(qdir);
    await src.truncate(offset);
    await src.sync();
    return size - offset;
  } finally {
    await src.close();
  }
}

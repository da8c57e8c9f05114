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

import {
  type Checkpoint,
  CHECKPOINT_SUFFIX,
  checkpointFileName,
  loadCheckpoint,
} from "../checkpoint/checkpoint.ts";
import type { FileHandle, FileSystem } from "../fs/types.ts";
import type { Logger } from "../log.ts";
import {
  encodeSegmentFooter,
  footerFits,
  parseSegmentFileName,
  SEGMENT_FOOTER_SIZE,
  SEGMENT_HEADER_SIZE,
} from "./format.ts";
import { type BadHeader, readFooter, readFully, type ScanResult, scanSegment } from "./reader.ts";

/** Sub-directory of the buffer directory for records the provider refused for good. */
export const DEAD_DIR = "dead";
/** Sub-directory of the buffer directory for corrupt data moved out of segments. */
export const QUARANTINE_DIR = "quarantine";

/** What opening the buffer does with a segment file. */
export type SegmentAction =
  /** Deliver it from its checkpoint. */
  | "keep"
  /** Every record was acknowledged (or it holds none): remove it and its S file. */
  | "remove-delivered"
  /** The newest segment has no complete header: its creation was interrupted. Remove it. */
  | "remove-torn-creation"
  /** A segment before the newest has a bad header: move the whole file to quarantine. */
  | "quarantine-file";

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
  /** Base time of its first frame (0 when it has none). */
  oldestTimestamp: number;
  /** Largest record timestamp, from its footer; Infinity when that is not known. */
  newestTimestamp: number;
  /**
   * How its summary was learned: `used` (from its footer, without walking it), `none`
   * (walked; it has no footer: the segment being written when the process stopped, or one
   * from before footers existed), `invalid` (walked, because its footer failed its checks:
   * `footerProblem` says why). Opening the buffer gives a walked segment a footer.
   */
  footer: "used" | "none" | "invalid";
  footerProblem: string | null;
  /** Where delivery resumes after recovery. */
  checkpoint: Checkpoint;
  /** The S file as found (null when there is none or it is unreadable). */
  checkpointFile: Checkpoint | null;
  /** Why the S file is not used, so that delivery starts at the segment's start. */
  checkpointProblem: string | null;
  /** A bad header, when the file has one. */
  badHeader: string | null;
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
  /** Sequence number the next record gets. */
  nextSeq: number;
}

/** Reads `dir` and decides what opening it does; changes nothing (see the module doc). */
export async function inspectBuffer(fs: FileSystem, dir: string): Promise<BufferReport> {
  const names = await fs.list(dir);
  const segNames = names.map(parseSegmentFileName).filter((s) => s !== null)
    .sort((a, b) => (a.name < b.name ? -1 : 1));
  const checkpoints = new Set(names.filter((n) => n.endsWith(CHECKPOINT_SUFFIX)));
  const report: BufferReport = {
    segments: [],
    tempFiles: names.filter((n) => n.endsWith(".tmp")),
    orphanCheckpoints: [],
    nextSeq: 0,
  };
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
      )
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

async function inspectSegment(
  fs: FileSystem,
  dir: string,
  name: string,
  nameSeq: number,
  newest: boolean,
  hasCheckpoint: boolean,
): Promise<SegmentReport> {
  const found = hasCheckpoint
    ? await loadCheckpoint(fs, `${dir}/${checkpointFileName(name)}`)
    : null;
  const mark = found !== null && typeof found !== "string" ? found.offset : undefined;
  const fh = await fs.open(`${dir}/${name}`, "read");
  let scan: ScanResult | BadHeader;
  let footerProblem: string | null = null;
  try {
    scan = await summarize(fh, nameSeq, newest, mark, (why) => (footerProblem = why));
  } finally {
    await fh.close();
  }
  const start: Checkpoint = { offset: SEGMENT_HEADER_SIZE, skip: 0, delivered: 0 };
  if ("badHeader" in scan) {
    // A segment is created, then its header written and fsynced: a crash in between leaves
    // the newest file shorter than a header. That is an interrupted creation, not damage.
    const tornCreation = newest && scan.fileSize < SEGMENT_HEADER_SIZE;
    return {
      name,
      firstSeq: nameSeq,
      fileSize: scan.fileSize,
      validSize: 0,
      records: 0,
      oldestTimestamp: 0,
      newestTimestamp: Infinity,
      frames: 0,
      footer: "none",
      footerProblem: null,
      checkpoint: start,
      checkpointFile: null,
      checkpointProblem: null,
      badHeader: scan.badHeader,
      tail: null,
      action: tornCreation ? "remove-torn-creation" : "quarantine-file",
    };
  }
  let tail: SegmentReport["tail"] = null;
  if (scan.stop) {
    tail = {
      action: scan.stop.kind === "corrupt" || (scan.stop.kind === "torn" && !newest)
        ? "quarantine"
        : "cut",
      offset: scan.stop.offset,
      bytes: scan.fileSize - scan.stop.offset,
      reason: scan.stop.reason,
    };
  }
  let checkpoint = start;
  let checkpointFile: Checkpoint | null = null;
  let checkpointProblem: string | null = null;
  if (typeof found === "string") {
    checkpointProblem = `unreadable S file: ${found}`;
  } else if (found !== null) {
    checkpointFile = found;
    if (scan.recordsBeforeMark < 0) {
      checkpointProblem =
        `S file points at offset ${found.offset}, not at a frame start of this segment (${scan.validSize} bytes)`;
    } else {
      checkpoint = {
        offset: found.offset,
        skip: found.skip,
        delivered: scan.recordsBeforeMark + found.skip,
      };
    }
  }
  return {
    name,
    firstSeq: scan.firstSeq,
    fileSize: scan.fileSize,
    validSize: scan.validSize,
    records: scan.records,
    oldestTimestamp: scan.oldestTimestamp,
    newestTimestamp: scan.footer?.newestTimestamp ?? Infinity,
    frames: scan.footer?.frames ?? scan.frames,
    footer: footerProblem !== null || scan.stop?.kind === "footer"
      ? "invalid"
      : scan.frames === -1
      ? "used"
      : "none",
    footerProblem: footerProblem ?? (scan.stop?.kind === "footer" ? scan.stop.reason : null),
    checkpoint,
    checkpointFile,
    checkpointProblem,
    badHeader: null,
    tail,
    action: checkpoint.delivered >= scan.records ? "remove-delivered" : "keep",
  };
}

/**
 * What recovery needs of a segment. A valid footer answers it with two small reads (and,
 * when an S file points inside the segment, a walk of the frame headers before that point);
 * otherwise the segment is walked: the newest one checking every CRC, sealed ones their frame
 * headers only. `frames` is -1 when the footer was used without a walk.
 */
async function summarize(
  fh: FileHandle,
  nameSeq: number,
  newest: boolean,
  mark: number | undefined,
  footerFailed: (why: string) => void,
): Promise<ScanResult | BadHeader> {
  const fileSize = await fh.size();
  const footer = await readFooter(fh, fileSize);
  if (typeof footer !== "string") {
    // The file name carries the first sequence number too: when the footer agrees with it,
    // the header (magic, version, that same number) need not be read. A later format
    // version gets a new footer magic.
    if (footer.firstSeq === nameSeq) {
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
    footerFailed(`footer names sequence number ${footer.firstSeq}, the file name ${nameSeq}`);
  } else if (footer !== "no footer") {
    footerFailed(footer);
  }
  return await scanSegment(fh, { verify: newest, mark });
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
}

/** Repairs `dir` as {@link inspectBuffer} decides; the caller holds the directory's lock. */
export async function recover(
  fs: FileSystem,
  dir: string,
  logger: Logger,
): Promise<RecoveryOutcome> {
  const started = Date.now();
  const report = await inspectBuffer(fs, dir);
  const out: RecoveryOutcome = {
    segments: [],
    nextSeq: report.nextSeq,
    tornBytes: 0,
    quarantinedBytes: 0,
    footerErrors: 0,
  };
  let dirty = false;
  for (const n of [...report.tempFiles, ...report.orphanCheckpoints]) {
    await fs.remove(`${dir}/${n}`);
    dirty = true;
  }
  for (const s of report.segments) {
    const path = `${dir}/${s.name}`;
    const ckptPath = `${dir}/${checkpointFileName(s.name)}`;
    if (s.action === "remove-torn-creation") {
      logger.info("removed the newest segment, whose creation was interrupted", {
        segment: s.name,
        bytes: s.fileSize,
      });
      await fs.remove(path);
      await fs.remove(ckptPath);
      out.tornBytes += s.fileSize;
      dirty = true;
      continue;
    }
    if (s.action === "quarantine-file") {
      logger.error("segment has a bad header; moved to quarantine", {
        segment: s.name,
        reason: s.badHeader,
      });
      out.quarantinedBytes += await quarantineTail(fs, dir, s.name, 0);
      await fs.remove(ckptPath);
      dirty = true;
      continue;
    }
    if (s.tail?.action === "cut") {
      logger.warn("cut a torn tail off a segment (an interrupted write or footer)", {
        segment: s.name,
        offset: s.tail.offset,
        bytes: s.tail.bytes,
        reason: s.tail.reason,
      });
      const w = await fs.open(path, "append");
      try {
        await w.truncate(s.tail.offset);
        await w.sync();
      } finally {
        await w.close();
      }
      out.tornBytes += s.tail.bytes;
    } else if (s.tail) {
      logger.error("corrupt data in segment; moved the rest of the segment to quarantine", {
        segment: s.name,
        offset: s.tail.offset,
        bytes: s.tail.bytes,
        reason: s.tail.reason,
      });
      out.quarantinedBytes += await quarantineTail(fs, dir, s.name, s.tail.offset);
    }
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
        {
          segment: s.name,
        },
      );
    }
    if (s.action === "remove-delivered") {
      // The segment goes first, then its S file, so that a crash in between leaves an S file
      // without a segment, which the next open removes.
      await fs.remove(path);
      await fs.remove(ckptPath);
      dirty = true;
      continue;
    }
    if (s.footer !== "used") await addFooter(fs, path, s, logger);
    out.segments.push(s);
  }
  if (dirty) await fs.syncDir(dir);
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
 * Appends a footer to a segment recovery walked (what remains of it after a cut or a
 * quarantine: its good frames), so that the next open need not walk it again. The writer
 * never appends to a segment found at open. Its newest timestamp is written as unknown (a
 * walk reads frame base times only). A failure only costs the next open a walk: it is
 * logged, and what was appended is cut off again.
 */
async function addFooter(
  fs: FileSystem,
  path: string,
  s: SegmentReport,
  logger: Logger,
): Promise<void> {
  if (!footerFits(s)) return;
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
    fh = await fs.open(path, "append");
    const size = await fh.size();
    // A valid footer that the walk accepted but the file name contradicts: replace it.
    if (size === s.validSize + SEGMENT_FOOTER_SIZE) await fh.truncate(s.validSize);
    else if (size !== s.validSize) return;
    await fh.append(footer);
    await fh.sync();
  } catch (e) {
    logger.warn("could not add a footer to a segment; the next open walks it again", {
      segment: s.name,
      error: e,
    });
    await fh?.truncate(s.validSize).catch(() => {});
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

/**
 * What `MessageBuffer.open` does to a directory before any write: find the segments, cut a
 * torn tail off the newest, move corrupt data to `quarantine/`, load the S files (falling
 * back to the segment's start when one is missing or unreadable), and delete segments that
 * were already delivered.
 *
 * @module
 */

import { CHECKPOINT_SUFFIX, checkpointFileName, loadCheckpoint } from "../checkpoint/checkpoint.ts";
import type { FileSystem } from "../fs/types.ts";
import type { Logger } from "../log.ts";
import { parseSegmentFileName, SEGMENT_HEADER_SIZE } from "../segment/format.ts";
import { readFully, scanSegment } from "../segment/reader.ts";
import type { Counters, Segment } from "./backlog.ts";

/** Sub-directories of the buffer directory. */
export const DEAD_DIR = "dead";
export const QUARANTINE_DIR = "quarantine";

/** What recovery found. */
export interface Recovered {
  segments: Segment[];
  /** Sequence number for the next record. */
  nextSeq: number;
}

/**
 * Copies `path[offset..]` to `quarantine/<name>@<offset>`, fsyncs it, and cuts `path` at
 * `offset` (or removes it when `offset` is 0). Returns the bytes moved.
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

/** Scans and repairs `dir`; see the module doc. */
export async function recover(
  fs: FileSystem,
  dir: string,
  logger: Logger,
  counters: Counters,
): Promise<Recovered> {
  const names = await fs.list(dir);
  const segNames = names.map(parseSegmentFileName).filter((s) => s !== null).sort((a, b) =>
    a!.name < b!.name ? -1 : 1
  );
  const checkpoints = new Set(names.filter((n) => n.endsWith(CHECKPOINT_SUFFIX)));
  let dirty = false;
  for (const n of names) {
    if (n.endsWith(".tmp")) {
      await fs.remove(`${dir}/${n}`);
      dirty = true;
    }
  }
  const segments: Segment[] = [];
  let nextSeq = 0;
  const started = Date.now();
  let lastProgress = started;
  for (let i = 0; i < segNames.length; i++) {
    const { name, firstSeq } = segNames[i]!;
    const path = `${dir}/${name}`;
    const ckptName = checkpointFileName(name);
    const ckptPath = `${dir}/${ckptName}`;
    checkpoints.delete(ckptName);
    const newest = i === segNames.length - 1;
    let ckpt = await loadCheckpoint(fs, ckptPath);
    const fh = await fs.open(path, "read");
    let scan;
    try {
      scan = await scanSegment(fh, {
        verify: newest,
        mark: ckpt !== null && typeof ckpt !== "string" ? ckpt.offset : undefined,
      });
    } finally {
      await fh.close();
    }
    if ("badHeader" in scan) {
      logger.error("segment has a bad header; moved to quarantine", {
        segment: name,
        reason: scan.badHeader,
      });
      counters.quarantinedBytes += await quarantineTail(fs, dir, name, 0);
      await fs.remove(ckptPath);
      dirty = true;
      continue;
    }
    if (scan.firstSeq !== firstSeq) {
      logger.warn(
        "segment header and name disagree on the first sequence number; using the header",
        {
          segment: name,
          header: scan.firstSeq,
        },
      );
    }
    if (scan.stop) {
      const cut = scan.fileSize - scan.stop.offset;
      if (scan.stop.kind === "torn" && newest) {
        logger.warn("cut a torn tail off the newest segment (an interrupted write)", {
          segment: name,
          offset: scan.stop.offset,
          bytes: cut,
          reason: scan.stop.reason,
        });
        const w = await fs.open(path, "append");
        try {
          await w.truncate(scan.stop.offset);
          await w.sync();
        } finally {
          await w.close();
        }
        counters.tornBytes += cut;
      } else {
        logger.error("corrupt data in segment; moved the rest of the segment to quarantine", {
          segment: name,
          offset: scan.stop.offset,
          bytes: cut,
          reason: scan.stop.reason,
        });
        counters.quarantinedBytes += await quarantineTail(fs, dir, name, scan.stop.offset);
      }
    }
    if (typeof ckpt === "string") {
      logger.warn("unreadable S file; delivering the segment from its start (records may repeat)", {
        segment: name,
        checkpoint: ckptName,
        reason: ckpt,
      });
      ckpt = null;
    } else if (ckpt !== null && scan.recordsBeforeMark < 0) {
      logger.warn(
        "S file points inside a frame or past the segment; delivering it from its start",
        {
          segment: name,
          offset: ckpt.offset,
          size: scan.validSize,
        },
      );
      ckpt = null;
    }
    const checkpoint = ckpt === null
      ? { offset: SEGMENT_HEADER_SIZE, skip: 0, delivered: 0 }
      : { offset: ckpt.offset, skip: ckpt.skip, delivered: scan.recordsBeforeMark + ckpt.skip };
    nextSeq = scan.firstSeq + scan.records;
    const done = checkpoint.delivered >= scan.records;
    if (done) {
      // Delivered (or empty): the segment goes first, then its S file, so that a crash in
      // between leaves an S file without a segment, which the next open removes.
      await fs.remove(path);
      await fs.remove(ckptPath);
      dirty = true;
      continue;
    }
    segments.push({
      name,
      firstSeq: scan.firstSeq,
      size: scan.validSize,
      records: scan.records,
      sealed: true,
      oldestTimestamp: scan.oldestTimestamp,
      newestTimestamp: Infinity,
      checkpoint,
      checkpointDirty: false,
      checkpointOnDisk: ckpt !== null,
      gone: false,
    });
    if (Date.now() - lastProgress > 2000) {
      lastProgress = Date.now();
      logger.info("recovering buffer", { dir, segmentsScanned: i + 1, of: segNames.length });
    }
  }
  for (const orphan of checkpoints) {
    await fs.remove(`${dir}/${orphan}`);
    dirty = true;
  }
  if (dirty) await fs.syncDir(dir);
  if (segNames.length > 0) {
    const backlog = segments.reduce((n, s) => n + s.records - s.checkpoint.delivered, 0);
    logger.info("recovered buffer", {
      dir,
      segments: segments.length,
      backlogRecords: backlog,
      ms: Date.now() - started,
    });
  }
  return { segments, nextSeq };
}

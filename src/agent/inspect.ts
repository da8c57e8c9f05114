/**
 * Reading a buffer directory without opening it (`status`, `dump`): works while the agent
 * runs (read-only, no lock) or is stopped.
 *
 * @module
 */

import { checkpointFileName, loadCheckpoint } from "../checkpoint/checkpoint.ts";
import type { FileSystem } from "../fs/types.ts";
import {
  decodeFrame,
  parseSegmentFileName,
  SEGMENT_HEADER_SIZE,
  type StoredRecord,
} from "../segment/format.ts";
import { scanSegment, SegmentCursor } from "../segment/reader.ts";
import { DEAD_DIR, QUARANTINE_DIR } from "../engine/recovery.ts";

/** One segment as `status` shows it. */
export interface SegmentStatus {
  name: string;
  bytes: number;
  records: number;
  delivered: number;
  checkpoint: { offset: number; skip: number } | null;
  checkpointProblem?: string;
  oldestTimestamp: number | null;
  problem?: string;
}

/** What `status` reports. */
export interface DirStatus {
  dir: string;
  agent: { pid: number; running: boolean } | null;
  segments: SegmentStatus[];
  backlog: { records: number; bytes: number; segments: number; oldestRecordAgeMs: number | null };
  deadLetters: { files: number; records: number; bytes: number };
  quarantine: Array<{ name: string; bytes: number }>;
}

/** Reads the state of a buffer directory. */
export async function dirStatus(
  fs: FileSystem,
  dir: string,
  pidAlive: (pid: number) => boolean,
): Promise<DirStatus> {
  const names = await fs.list(dir).catch((e) => {
    throw new Error(`Cannot read buffer directory "${dir}": ${(e as { code?: string }).code ?? e}`);
  });
  const lock = await fs.readFile(`${dir}/LOCK`);
  const pid = lock ? Number.parseInt(new TextDecoder().decode(lock), 10) : NaN;
  const status: DirStatus = {
    dir,
    agent: Number.isInteger(pid) ? { pid, running: pidAlive(pid) } : null,
    segments: [],
    backlog: { records: 0, bytes: 0, segments: 0, oldestRecordAgeMs: null },
    deadLetters: { files: 0, records: 0, bytes: 0 },
    quarantine: [],
  };
  let oldest = Infinity;
  for (const name of names.filter((n) => parseSegmentFileName(n)).sort()) {
    const ckpt = names.includes(checkpointFileName(name))
      ? await loadCheckpoint(fs, `${dir}/${checkpointFileName(name)}`)
      : null;
    const fh = await fs.open(`${dir}/${name}`, "read");
    let scan;
    try {
      scan = await scanSegment(fh, {
        verify: false,
        mark: ckpt && typeof ckpt !== "string" ? ckpt.offset : undefined,
      });
    } finally {
      await fh.close();
    }
    if ("badHeader" in scan) {
      status.segments.push({
        name,
        bytes: scan.fileSize,
        records: 0,
        delivered: 0,
        checkpoint: null,
        oldestTimestamp: null,
        problem: scan.badHeader,
      });
      continue;
    }
    const s: SegmentStatus = {
      name,
      bytes: scan.fileSize,
      records: scan.records,
      delivered: 0,
      checkpoint: null,
      oldestTimestamp: scan.records > 0 ? scan.oldestTimestamp : null,
    };
    if (typeof ckpt === "string") s.checkpointProblem = ckpt;
    else if (ckpt) {
      s.checkpoint = { offset: ckpt.offset, skip: ckpt.skip };
      s.delivered = scan.recordsBeforeMark >= 0
        ? scan.recordsBeforeMark + ckpt.skip
        : ckpt.delivered;
    }
    if (scan.stop) s.problem = `${scan.stop.kind} at ${scan.stop.offset}: ${scan.stop.reason}`;
    status.segments.push(s);
    const waiting = s.records - s.delivered;
    if (waiting > 0) {
      status.backlog.records += waiting;
      status.backlog.bytes += scan.validSize - (s.checkpoint?.offset ?? SEGMENT_HEADER_SIZE);
      if (s.oldestTimestamp) oldest = Math.min(oldest, s.oldestTimestamp);
    }
  }
  status.backlog.segments = status.segments.length;
  status.backlog.oldestRecordAgeMs = oldest === Infinity ? null : Math.max(0, Date.now() - oldest);
  const dead = await fs.list(`${dir}/${DEAD_DIR}`).catch(() => [] as string[]);
  for (const name of dead.filter((n) => n.endsWith(".seg"))) {
    const fh = await fs.open(`${dir}/${DEAD_DIR}/${name}`, "read");
    try {
      const scan = await scanSegment(fh, { verify: false });
      status.deadLetters.files++;
      status.deadLetters.bytes += scan.fileSize;
      if (!("badHeader" in scan)) status.deadLetters.records += scan.records;
    } finally {
      await fh.close();
    }
  }
  for (
    const name of (await fs.list(`${dir}/${QUARANTINE_DIR}`).catch(() => [] as string[])).sort()
  ) {
    status.quarantine.push({
      name,
      bytes: (await fs.stat(`${dir}/${QUARANTINE_DIR}/${name}`))?.size ?? 0,
    });
  }
  return status;
}

/** Human-readable `status` output. */
export function formatStatus(s: DirStatus): string {
  const lines: string[] = [];
  lines.push(`buffer directory: ${s.dir}`);
  lines.push(
    `agent: ${
      s.agent
        ? `pid ${s.agent.pid} (${s.agent.running ? "running" : "not running: stale lock"})`
        : "not running"
    }`,
  );
  const age = s.backlog.oldestRecordAgeMs;
  lines.push(
    `backlog: ${s.backlog.records} records, ${s.backlog.bytes} bytes in ${s.backlog.segments} segment(s)` +
      (age === null ? "" : `; oldest record ${(age / 1000).toFixed(1)} s old`),
  );
  for (const seg of s.segments) {
    const cp = seg.checkpoint
      ? ` checkpoint offset ${seg.checkpoint.offset}+${seg.checkpoint.skip}`
      : " no S file";
    lines.push(
      `  ${seg.name}  ${seg.bytes} bytes  ${seg.records} records  ${seg.delivered} delivered ${cp}` +
        (seg.problem ? `  [${seg.problem}]` : "") +
        (seg.checkpointProblem ? `  [S file: ${seg.checkpointProblem}]` : ""),
    );
  }
  lines.push(
    `dead letters: ${s.deadLetters.records} records in ${s.deadLetters.files} file(s) (${s.deadLetters.bytes} bytes)`,
  );
  lines.push(`quarantine: ${s.quarantine.length} file(s)`);
  for (const q of s.quarantine) lines.push(`  ${q.name}  ${q.bytes} bytes`);
  return lines.join("\n");
}

/**
 * Calls `each` with every record of a segment file, with the offset of its frame. Returns
 * null, or the reason reading stopped early (a torn or corrupt frame).
 */
export async function readSegmentRecords(
  fs: FileSystem,
  path: string,
  each: (r: StoredRecord, frameOffset: number) => void,
): Promise<string | null> {
  const fh = await fs.open(path, "read");
  const cursor = new SegmentCursor(fh);
  try {
    const scan = await scanSegment(fh, { verify: false });
    if ("badHeader" in scan) return `not a segment file: ${scan.badHeader}`;
    const size = scan.fileSize;
    let offset = SEGMENT_HEADER_SIZE;
    while (offset < size) {
      const view = await cursor.frameAt(offset, size);
      if (view === null) return `torn frame at offset ${offset} (${size - offset} bytes)`;
      if (typeof view === "string") return `bad frame at offset ${offset}: ${view}`;
      const records: StoredRecord[] = [];
      decodeFrame(view.buf, view.at, view.header, records);
      for (const r of records) each(r, offset);
      offset = view.end;
    }
    return null;
  } finally {
    await cursor.close();
  }
}

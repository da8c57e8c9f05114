/**
 * Reading a buffer directory without opening it (`status`, `dump`): works while the agent
 * runs (read-only, no lock) or is stopped.
 *
 * @module
 */

import type { FileSystem } from "../fs/types.ts";
import { scanSegment } from "../segment/reader.ts";
import { inspectBuffer } from "../segment/recovery.ts";
import { readJournal } from "./journal.ts";
import { laneNumbers } from "../engine/lanes.ts";
import { DEAD_DIR, INFLIGHT_FILE, LANES_DIR, LOCK_FILE, QUARANTINE_DIR } from "../layout.ts";
import { loadInflight } from "../checkpoint/inflight.ts";
import { lockHolderRuns, parseLock } from "../process.ts";

/** One segment as `status` shows it: what opening the buffer would resume from. */
export interface SegmentStatus {
  name: string;
  bytes: number;
  records: number;
  /** Records acknowledged, as delivery would resume (0 when the S file is not used). */
  delivered: number;
  /** The S file as found, null when there is none or it is unreadable. */
  checkpoint: { offset: number; skip: number } | null;
  /** Why the S file is not used: delivery would start over at the segment's start. */
  checkpointProblem?: string;
  oldestTimestamp: number | null;
  /**
   * `used`: its footer says what it holds, so opening does not walk it; `none`: opening walks
   * it (the segment being written when the agent stopped, or one from before footers), then
   * gives it a footer; `checked`: its footer is good, but it may hold bytes written after
   * the last fsync the agent knew of, so opening checks every frame (and, unless the policy
   * is `never`, fsyncs it); `invalid`: its footer failed its checks (see `problem`).
   */
  footer: "used" | "none" | "checked" | "invalid";
  /** What is wrong with the file, and what the next open does about it. */
  problem?: string;
}

/** What `status` reports. */
export interface DirStatus {
  dir: string;
  /** Delivery lanes found (lane 0 is the directory itself; lane i is `lanes/<i>/`). */
  lanes: number;
  agent: { pid: number; running: boolean } | null;
  segments: SegmentStatus[];
  backlog: { records: number; bytes: number; segments: number; oldestRecordAgeMs: number | null };
  /** Dead-letter files and records; `replayed`: records the replay journal says were replayed. */
  deadLetters: { files: number; records: number; bytes: number; replayed: number };
  quarantine: Array<{ name: string; bytes: number }>;
  /** Entries of the directory this version does not know: opening leaves them alone. */
  unknownFiles: string[];
  /**
   * Batches not acknowledged that were handed to Kafka (the in-flight file of each lane):
   * the next start sends each first, the same records under the same identity (`identity`),
   * or, without one, as records that may arrive twice.
   */
  inFlight: Array<{ segment: string; records: number; identity: boolean }>;
}

/**
 * Reads the state of a buffer directory with the code that opening it recovers it with
 * (`inspectBuffer`), changing nothing.
 */
export async function dirStatus(
  fs: FileSystem,
  dir: string,
  pidAlive: (pid: number) => boolean,
): Promise<DirStatus> {
  const journal = await readJournal(fs, dir);
  const status = await laneStatus(fs, dir, "", pidAlive, journal);
  // Lanes 1 and up, each a buffer directory of its own under lanes/: their segments,
  // dead letters and quarantine are listed with the lane's path.
  const lanes = await laneNumbers(fs, dir);
  const oldest: number[] = [];
  if (status.backlog.oldestRecordAgeMs !== null) oldest.push(status.backlog.oldestRecordAgeMs);
  for (const i of lanes) {
    const prefix = `${LANES_DIR}/${i}/`;
    const l = await laneStatus(fs, `${dir}/${prefix.slice(0, -1)}`, prefix, pidAlive, journal);
    status.segments.push(...l.segments);
    status.backlog.records += l.backlog.records;
    status.backlog.bytes += l.backlog.bytes;
    status.backlog.segments += l.backlog.segments;
    if (l.backlog.oldestRecordAgeMs !== null) oldest.push(l.backlog.oldestRecordAgeMs);
    status.deadLetters.files += l.deadLetters.files;
    status.deadLetters.records += l.deadLetters.records;
    status.deadLetters.bytes += l.deadLetters.bytes;
    status.deadLetters.replayed += l.deadLetters.replayed;
    status.quarantine.push(...l.quarantine);
    status.unknownFiles.push(...l.unknownFiles);
    status.inFlight.push(...l.inFlight);
  }
  status.backlog.oldestRecordAgeMs = oldest.length ? Math.max(...oldest) : null;
  status.lanes = 1 + lanes.length;
  return status;
}

/** The process named in the directory's LOCK, and whether it is alive; null without one. */
export async function lockHolder(
  fs: FileSystem,
  dir: string,
  pidAlive: (pid: number) => boolean,
): Promise<{ pid: number; running: boolean } | null> {
  const lock = await fs.readFile(`${dir}/${LOCK_FILE}`).catch(() => null);
  const found = lock ? parseLock(new TextDecoder().decode(lock)) : null;
  return found?.complete ? { pid: found.pid, running: lockHolderRuns(found, pidAlive) } : null;
}

async function laneStatus(
  fs: FileSystem,
  dir: string,
  prefix: string,
  pidAlive: (pid: number) => boolean,
  journal: Map<string, Set<number>>,
): Promise<DirStatus> {
  let report;
  try {
    report = await inspectBuffer(fs, dir);
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new Error(
      code === "ENOENT"
        ? `no buffer directory "${dir}": the agent makes it at its first start; give the agent's directory with --buffer-dir or --config`
        : code === "EACCES"
        ? `cannot read buffer directory "${dir}": permission denied (EACCES); run status as its owner or as root`
        : `cannot read buffer directory "${dir}": ${code ?? e}`,
    );
  }
  const agent = await lockHolder(fs, dir, pidAlive);
  const status: DirStatus = {
    dir,
    lanes: 1,
    agent,
    segments: [],
    backlog: { records: 0, bytes: 0, segments: 0, oldestRecordAgeMs: null },
    deadLetters: { files: 0, records: 0, bytes: 0, replayed: 0 },
    quarantine: [],
    unknownFiles: report.unknownFiles.map((n) => prefix + n),
    inFlight: [],
  };
  const flight = await loadInflight(fs, `${dir}/${INFLIGHT_FILE}`).catch(() => null);
  const sent = flight && report.segments.find((r) => r.name === flight.segment);
  if (
    flight && sent && sent.checkpoint.offset === flight.from.offset &&
    sent.checkpoint.skip === flight.from.skip
  ) {
    status.inFlight.push({
      segment: prefix + flight.segment,
      records: flight.records,
      identity: flight.identity !== null,
    });
  }
  let oldest = Infinity;
  for (const r of report.segments) {
    const s: SegmentStatus = {
      name: prefix + r.name,
      bytes: r.fileSize,
      records: r.records,
      delivered: r.checkpoint.delivered,
      checkpoint: r.checkpointFile &&
        { offset: r.checkpointFile.offset, skip: r.checkpointFile.skip },
      oldestTimestamp: r.records > 0 ? r.oldestTimestamp : null,
      footer: r.footer,
    };
    if (r.checkpointProblem) s.checkpointProblem = r.checkpointProblem;
    if (r.action === "remove-torn-creation") {
      s.problem = `interrupted creation (${r.badHeader}); removed at the next open`;
    } else if (r.action === "skip-newer-version") {
      s.problem =
        `format version ${r.newerVersion}, newer than this version reads; left in place, not delivered`;
    } else if (r.action === "skip-unreadable") {
      s.problem =
        `cannot read: ${r.readError}; left in place, not delivered; the next open tries again`;
    } else if (r.action === "quarantine-file") {
      s.problem = `${r.badHeader}; moved to quarantine at the next open`;
    } else if (r.tail) {
      s.problem = r.tail.action === "cut"
        ? `torn tail at ${r.tail.offset}: ${r.tail.reason} (${r.tail.bytes} bytes cut at the next open)`
        : `corrupt at ${r.tail.offset}: ${r.tail.reason} (${r.tail.bytes} bytes quarantined at the next open)`;
    } else if (r.footerProblem) {
      s.problem =
        `footer: ${r.footerProblem}; the next open walks the segment and writes a new one`;
    }
    status.segments.push(s);
    const waiting = s.records - s.delivered;
    if (waiting > 0) {
      status.backlog.segments++;
      status.backlog.records += waiting;
      status.backlog.bytes += r.validSize - r.checkpoint.offset;
      if (s.oldestTimestamp) oldest = Math.min(oldest, s.oldestTimestamp);
    }
  }
  status.backlog.oldestRecordAgeMs = oldest === Infinity ? null : Math.max(0, Date.now() - oldest);
  const dead = await fs.list(`${dir}/${DEAD_DIR}`).catch(() => [] as string[]);
  for (const name of dead.filter((n) => n.endsWith(".seg"))) {
    const fh = await fs.open(`${dir}/${DEAD_DIR}/${name}`, "read");
    try {
      const scan = await scanSegment(fh, { verify: false });
      status.deadLetters.files++;
      status.deadLetters.bytes += scan.fileSize;
      if (!("badHeader" in scan)) {
        status.deadLetters.records += scan.records;
        const replayed = journal.get(`${prefix}${DEAD_DIR}/${name}`)?.size ?? 0;
        status.deadLetters.replayed += Math.min(replayed, scan.records);
      }
    } finally {
      await fh.close();
    }
  }
  for (
    const name of (await fs.list(`${dir}/${QUARANTINE_DIR}`).catch(() => [] as string[])).sort()
  ) {
    status.quarantine.push({
      name: prefix + name,
      bytes: (await fs.stat(`${dir}/${QUARANTINE_DIR}/${name}`))?.size ?? 0,
    });
  }
  return status;
}

/** Human-readable `status` output. */
export function formatStatus(s: DirStatus): string {
  const lines: string[] = [];
  lines.push(`buffer directory: ${s.dir}` + (s.lanes > 1 ? ` (${s.lanes} lanes)` : ""));
  lines.push(
    `agent: ${
      s.agent
        ? `pid ${s.agent.pid} (${s.agent.running ? "running" : "not running: stale lock"})`
        : "not running"
    }`,
  );
  const age = s.backlog.oldestRecordAgeMs;
  lines.push(
    (s.backlog.records === 0
      ? "backlog: 0 records (everything stored was delivered)"
      : `backlog: ${s.backlog.records} records (${s.backlog.bytes} bytes) wait for Kafka in ${s.backlog.segments} segment(s)`) +
      (age === null ? "" : `; oldest record ${(age / 1000).toFixed(1)} s old`) +
      `; ${s.segments.length} segment file(s) on disk`,
  );
  for (const seg of s.segments) {
    const cp = seg.checkpoint
      ? ` checkpoint offset ${seg.checkpoint.offset}+${seg.checkpoint.skip}`
      : " no S file";
    lines.push(
      `  ${seg.name}  ${seg.bytes} bytes  ${seg.records} records  ${seg.delivered} delivered ${cp}` +
        (seg.footer === "none"
          ? "  (no footer: walked at the next open)"
          : seg.footer === "checked"
          ? "  (written after the last known fsync: every frame checked at the next open)"
          : "") +
        (seg.problem ? `  [${seg.problem}]` : "") +
        (seg.checkpointProblem ? `  [S file: ${seg.checkpointProblem}]` : ""),
    );
  }
  const d = s.deadLetters;
  lines.push(
    `dead letters: ${d.records} records in ${d.files} file(s) (${d.bytes} bytes)` +
      (d.records === 0
        ? ""
        : `: ${
          d.records - d.replayed
        } wait to be replayed (messagebuffer replay), ${d.replayed} replayed (messagebuffer dead-letters purge removes them)`),
  );
  for (const f of s.inFlight) {
    lines.push(
      `in flight: ${f.records} records of ${f.segment}, sent and not yet acknowledged; ` +
        (f.identity
          ? "sent again first at the next start, under the same identity (Kafka keeps one copy)"
          : "sent again first at the next start (without an identity: they may arrive twice)"),
    );
  }
  lines.push(`quarantine: ${s.quarantine.length} file(s)`);
  for (const q of s.quarantine) lines.push(`  ${q.name}  ${q.bytes} bytes`);
  if (s.unknownFiles.length > 0) {
    lines.push(`unknown files (left alone): ${s.unknownFiles.join(", ")}`);
  }
  return lines.join("\n");
}

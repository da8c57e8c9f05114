/**
 * `messagebuffer dead-letters`: the life of a dead letter after Kafka refused it. The sender
 * stores it in `dead/`; `replay` sends it again and notes it in the journal
 * (`dead/replay.log`); this lists the dead-letter files with what each holds and how much of
 * it was replayed, and purges the files whose every record was replayed (or, asked to, all
 * of them), taking their lines out of the journal. A file the running agent may still be
 * appending to (the newest of its lane) is never purged while the agent runs.
 *
 * @module
 */

import type { FileSystem } from "../fs/types.ts";
import { rewriteJournal } from "./journal.ts";
import { type ReplaySource, replaySources } from "./replay.ts";

/** One dead-letter file. */
export interface DeadLetterFile {
  /** Path relative to the buffer directory (`dead/<name>.seg`, `lanes/<i>/dead/<name>.seg`). */
  file: string;
  records: number;
  /** Records the journal says were replayed (accepted by the agent). */
  replayed: number;
  /** Records per topic. */
  topics: Map<string, number>;
  /** Records per reason Kafka gave. */
  reasons: Map<string, number>;
  /** The newest file of its lane while an agent runs: it may still grow. */
  inUse: boolean;
}

/** The dead-letter files of `dir` (every lane), oldest first per lane. */
export async function deadLetterFiles(
  fs: FileSystem,
  dir: string,
  agentRunning: boolean,
): Promise<DeadLetterFile[]> {
  const sources = await replaySources(fs, dir, { quarantine: false });
  const newestOfLane = new Map<string, string>();
  for (const s of sources) newestOfLane.set(s.file.slice(0, s.file.lastIndexOf("/")), s.file);
  return sources.map((s) => ({
    file: s.file,
    records: s.records.length,
    replayed: [...s.replayed].filter((i) => i < s.records.length).length,
    topics: count(s.records.map((r) => r.topic)),
    reasons: count(s.reasons.map((r) => shortReason(r))),
    inUse: agentRunning && newestOfLane.get(s.file.slice(0, s.file.lastIndexOf("/"))) === s.file,
  }));
}

/** "MESSAGE_TOO_LARGE: ..." as "MESSAGE_TOO_LARGE"; a reason without a code as it is. */
function shortReason(r: ReplaySource["reasons"][number]): string {
  if (r === null) return "unknown";
  const m = /^([A-Z][A-Z_]+):/.exec(r);
  return m ? m[1] : r;
}

function count(xs: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const x of xs) m.set(x, (m.get(x) ?? 0) + 1);
  return m;
}

function listed(m: Map<string, number>): string {
  return [...m].map(([k, n]) => `${k} (${n})`).join(", ");
}

/** The state of a file in words. */
function stateOf(f: DeadLetterFile): string {
  if (f.records > 0 && f.replayed >= f.records) return "replayed";
  if (f.replayed > 0) return `${f.records - f.replayed} waiting, ${f.replayed} replayed`;
  return "waiting";
}

/** What `dead-letters list` prints. */
export function formatDeadLetters(files: DeadLetterFile[]): string {
  if (files.length === 0) return "no dead letters";
  const lines: string[] = [];
  for (const f of files) {
    lines.push(
      `${f.file}: ${f.records} records, ${stateOf(f)}${
        f.inUse ? " (the running agent may still add to it)" : ""
      }`,
    );
    lines.push(`  topics: ${listed(f.topics)}`);
    lines.push(`  refused by Kafka for: ${listed(f.reasons)}`);
  }
  const waiting = files.reduce((n, f) => n + f.records - Math.min(f.replayed, f.records), 0);
  const replayed = files.filter((f) => f.records > 0 && f.replayed >= f.records && !f.inUse);
  lines.push(`${waiting} records wait to be replayed (messagebuffer replay)`);
  if (replayed.length > 0) {
    lines.push(
      `${replayed.length} file(s) fully replayed: messagebuffer dead-letters purge removes them`,
    );
  }
  return lines.join("\n");
}

/** What a purge removed and what it kept, with why. */
export interface PurgeOutcome {
  removed: DeadLetterFile[];
  kept: Array<{ file: DeadLetterFile; why: string }>;
}

/**
 * Removes the files whose every record was replayed (with `all`, every file), except one the
 * running agent may still add to; then takes the removed files' lines out of the journal
 * (rewritten whole: temp file, fsync, rename, directory fsync). With `dryRun`, says what it
 * would do and changes nothing. The caller holds the replay lock.
 */
export async function purgeDeadLetters(
  fs: FileSystem,
  dir: string,
  files: DeadLetterFile[],
  options: { all: boolean; dryRun: boolean },
): Promise<PurgeOutcome> {
  const out: PurgeOutcome = { removed: [], kept: [] };
  for (const f of files) {
    if (f.inUse) out.kept.push({ file: f, why: "the running agent may still add to it" });
    else if (!options.all && f.replayed < f.records) {
      out.kept.push({ file: f, why: `${f.records - f.replayed} records not replayed` });
    } else out.removed.push(f);
  }
  if (options.dryRun || out.removed.length === 0) return out;
  const gone = new Set(out.removed.map((f) => f.file));
  await rewriteJournal(fs, dir, gone);
  const dirs = new Set<string>();
  for (const f of out.removed) {
    await fs.remove(`${dir}/${f.file}`);
    dirs.add(`${dir}/${f.file.slice(0, f.file.lastIndexOf("/"))}`);
  }
  for (const d of dirs) await fs.syncDir(d);
  return out;
}

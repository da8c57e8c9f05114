/**
 * `messagebuffer replay`: sends dead-lettered records (and, on request, the readable records
 * of quarantined data) again, through the running agent's socket, so that they take the
 * path of any other write: stored, delivered in order, counted, dead-lettered again if
 * Kafka still refuses them.
 *
 * Nothing is replayed twice by accident: every record has a place, its file and its index
 * in that file (dead-letter files only grow; quarantined files never change), and the
 * journal `dead/replay.log` records, per file, which indexes the agent accepted. A replay
 * skips what the journal holds. The journal is written once the agent has acknowledged a
 * file's records; a replay killed before that sends them again the next time (at least
 * once, as everywhere else). A lock (`dead/LOCK`) keeps two replays from running at once.
 *
 * @module
 */

import { Readable } from "node:stream";
import type { FileSystem } from "../fs/types.ts";
import { sendLines } from "../ingest/client.ts";
import { recordToJson } from "../ingest/protocol.ts";
import type { StoredRecord } from "../segment/format.ts";
import {
  copyRecord,
  readQuarantined,
  readSegmentRecords,
  type UnreadableRegion,
} from "../segment/reader.ts";
import { laneNumbers } from "../engine/lanes.ts";
import { appendJournal, readJournal } from "./journal.ts";
import { DEAD_DIR, LANES_DIR, QUARANTINE_DIR } from "../layout.ts";

/** Headers the sender adds to a dead letter; a replay takes them off again. */
const DEAD_LETTER_HEADERS = new Set(["messagebuffer-error", "messagebuffer-segment"]);

/** A file whose records may be replayed. */
export interface ReplaySource {
  /** Path relative to the buffer directory: `dead/<name>.seg` or `quarantine/<name>@<offset>`. */
  file: string;
  kind: "dead" | "quarantine";
  /** Every readable record, by index. */
  records: StoredRecord[];
  /** Dead letters: why Kafka refused each record (its `messagebuffer-error` header). */
  reasons: (string | null)[];
  /** Indexes the journal says were replayed already. */
  replayed: Set<number>;
  /** Regions that could not be read (corrupt or torn), with why. */
  unreadable: UnreadableRegion[];
}

/** What a replay did to one file. */
export interface ReplayOutcome {
  file: string;
  sent: number;
  accepted: number;
  refused: Array<{ index: number; reason: string }>;
}

/** Reads the dead-letter files and, with `quarantine`, the quarantined data of `dir`. */
export async function replaySources(
  fs: FileSystem,
  dir: string,
  options: { quarantine: boolean },
): Promise<ReplaySource[]> {
  const journal = await readJournal(fs, dir);
  const out: ReplaySource[] = [];
  // Lane 0 is the directory itself; lane i is lanes/<i>/, each with its dead/ and quarantine/.
  const lanes = ["", ...(await laneNumbers(fs, dir)).map((i) => `${LANES_DIR}/${i}/`)];
  for (const lane of lanes) {
    out.push(...await laneSources(fs, dir, lane, journal, options));
  }
  return out;
}

async function laneSources(
  fs: FileSystem,
  dir: string,
  lane: string,
  journal: Map<string, Set<number>>,
  options: { quarantine: boolean },
): Promise<ReplaySource[]> {
  const out: ReplaySource[] = [];
  const dead = (await fs.list(`${dir}/${lane}${DEAD_DIR}`).catch(() => [] as string[]))
    .filter((n) => n.endsWith(".seg")).sort();
  for (const name of dead) {
    const file = `${lane}${DEAD_DIR}/${name}`;
    const records: StoredRecord[] = [];
    const offsets: number[] = [];
    const problem = await readSegmentRecords(fs, `${dir}/${file}`, (r, offset) => {
      records.push(copyRecord(r));
      offsets.push(offset);
    });
    const unreadable = problem === null ? [] : [{ offset: -1, bytes: 0, reason: problem }];
    out.push({
      file,
      kind: "dead",
      records: records.map(stripDeadLetterHeaders),
      reasons: records.map((r) => headerText(r, "messagebuffer-error")),
      replayed: journal.get(file) ?? new Set(),
      unreadable,
    });
  }
  if (options.quarantine) {
    const names = (await fs.list(`${dir}/${lane}${QUARANTINE_DIR}`).catch(() => [] as string[]))
      .sort();
    for (const name of names) {
      const file = `${lane}${QUARANTINE_DIR}/${name}`;
      const bytes = await fs.readFile(`${dir}/${file}`);
      if (bytes === null) continue;
      const { records, unreadable } = readQuarantined(bytes);
      out.push({
        file,
        kind: "quarantine",
        records,
        reasons: records.map(() => null),
        replayed: journal.get(file) ?? new Set(),
        unreadable,
      });
    }
  }
  return out;
}

/** Sends every record not replayed before to the agent at `socket`, file by file. */
export async function replay(
  fs: FileSystem,
  dir: string,
  socket: string,
  sources: ReplaySource[],
  options: { restamp: boolean },
  onFile: (o: ReplayOutcome) => void,
): Promise<ReplayOutcome[]> {
  const outcomes: ReplayOutcome[] = [];
  for (const s of sources) {
    const indexes = s.records.map((_, i) => i).filter((i) => !s.replayed.has(i));
    if (indexes.length === 0) continue;
    const text = indexes.map((i) =>
      JSON.stringify(recordToJson(s.records[i], { timestamp: !options.restamp })) + "\n"
    ).join("");
    const refusedLines = new Map<number, string>();
    const summary = await sendLines(socket, Readable.from([text]), (e) => {
      const m = /^line (\d+): (.*)$/s.exec(e);
      if (m) refusedLines.set(Number(m[1]), m[2]);
    });
    const refused = [...refusedLines].map(([line, reason]) => ({
      index: indexes[line - 1],
      reason,
    }));
    const accepted = indexes.filter((_, k) => !refusedLines.has(k + 1));
    await appendJournal(fs, dir, {
      time: new Date().toISOString(),
      file: s.file,
      accepted: ranges(accepted),
      refused,
    });
    const o = { file: s.file, sent: summary.lines, accepted: accepted.length, refused };
    outcomes.push(o);
    onFile(o);
  }
  return outcomes;
}

/** `[from, to]` runs of consecutive indexes. */
function ranges(xs: number[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const x of xs) {
    const last = out.at(-1);
    if (last && last[1] === x - 1) last[1] = x;
    else out.push([x, x]);
  }
  return out;
}

function stripDeadLetterHeaders(r: StoredRecord): StoredRecord {
  if (!r.headers) return r;
  const kept = r.headers.filter(([k]) => !DEAD_LETTER_HEADERS.has(k));
  return { ...r, headers: kept.length > 0 ? kept : null };
}

function headerText(r: StoredRecord, name: string): string | null {
  const h = r.headers?.find(([k]) => k === name);
  return h ? new TextDecoder().decode(h[1]) : null;
}

/** The dry run's (and the summary's) description of the sources. */
export function formatSources(sources: ReplaySource[]): string {
  const lines: string[] = [];
  let total = 0;
  for (const s of sources) {
    const todo = s.records.filter((_, i) => !s.replayed.has(i));
    total += todo.length;
    lines.push(
      `${s.file}: ${s.records.length} records, ${s.replayed.size} replayed before, ${todo.length} to replay`,
    );
    const count = (xs: string[]) => {
      const m = new Map<string, number>();
      for (const x of xs) m.set(x, (m.get(x) ?? 0) + 1);
      return [...m].map(([k, n]) => `${k} (${n})`).join(", ");
    };
    if (todo.length > 0) lines.push(`  topics: ${count(todo.map((r) => r.topic))}`);
    const reasons = s.records.map((_, i) => i).filter((i) => !s.replayed.has(i))
      .map((i) => s.reasons[i]).filter((r): r is string => r !== null);
    if (reasons.length > 0) lines.push(`  refused by Kafka for: ${count(reasons)}`);
    for (const u of s.unreadable) {
      lines.push(
        u.offset < 0
          ? `  stopped early: ${u.reason}`
          : `  unreadable: ${u.bytes} bytes at offset ${u.offset} (${u.reason}), not replayed`,
      );
    }
  }
  lines.push(`${total} records to replay from ${sources.length} file(s)`);
  if (sources.some((s) => s.kind === "quarantine" && s.records.length > s.replayed.size)) {
    lines.push(
      "note: quarantined data can hold records delivered before the damage was found; those reach Kafka again",
    );
  }
  return lines.join("\n");
}

/**
 * Lanes: the disk path split by topic, so that one slow or failing topic does not hold up
 * the others. Each lane is a whole {@link DiskPath} (its own segments, S files, sender,
 * dead letters and quarantine) in its own directory: lane 0 is the buffer directory itself
 * (so a directory written before lanes is lane 0), lane `i` is `lanes/<i>/`. The lanes'
 * senders deliver side by side through one {@link ProviderGate}, which bounds the sends in
 * flight across lanes (`maxSendsInFlight`).
 *
 * A topic belongs to one lane for good: the first record of a topic assigns it to the lane
 * with the fewest topics, and the assignment is appended to `lanes/topics` and fsynced
 * before that record is stored. A topic's records therefore stay in one lane, in write
 * order, across restarts and across changes of `lanes` (a lane that still has topics stays
 * open when `lanes` shrinks; new topics go to the first `lanes` lanes).
 *
 * On the first open with more than one lane of a directory that holds a backlog, the topics
 * of that backlog are not known without reading it: until it is delivered, new topics are
 * assigned to lane 0, where it is, so that their order holds. The file's first line then
 * records the sequence number below which lane 0's segments are that backlog
 * (`{"legacyBelow": n}`), so that a restart before it is delivered keeps the rule.
 *
 * Every line is appended with a newline before it, so that a line torn by a crash or a full
 * disk stays alone on its line (it does not parse, and its topic's record was never stored)
 * and never swallows the next one.
 *
 * @module
 */

import { StorageError } from "../errors.ts";
import type { Bytes, FrameBuilder } from "../segment/format.ts";
import { DiskPath, type DiskStats } from "./disk.ts";
import type { ProviderGate } from "./gate.ts";
import { type Counters, newCounters } from "./ledger.ts";
import type { ResolvedOptions } from "./options.ts";
import { LatencyWindow } from "./latency.ts";
import type { ProviderState, SendersShared } from "./sender.ts";
import { ReadBlocks } from "../segment/reader.ts";
import { type PendingFrame, timestampOf, type WriteOptions } from "./writer.ts";
import { laneDir, LANES_DIR, TOPICS_FILE } from "../layout.ts";

/**
 * One lane as {@link MessageBuffer.stats} reports it.
 *
 * @example Find the lane that is stuck
 * ```ts
 * const stuck = buffer.stats().lanes.filter((l) => l.provider.state !== "ready");
 * for (const l of stuck) console.warn(`lane ${l.lane} (${l.topics.join(", ")}): ${l.provider.lastError}`);
 * ```
 */
export interface LaneStats {
  /** The lane's number. */
  lane: number;
  /** The lane's directory, relative to the buffer directory (`""` for lane 0). */
  dir: string;
  /** Topics assigned to it (all of them with one lane: reported as `["*"]`). */
  topics: string[];
  /** Records and bytes not yet acknowledged, and the lane's segment files. */
  backlog: { records: number; bytes: number; segments: number };
  /** Age of the lane's oldest unacknowledged record's frame, ms; null when none waits. */
  oldestRecordAgeMs: number | null;
  /** The provider as the lane's sender sees it, with its last send error. */
  provider: { state: ProviderState; lastError: string | null };
  /** Records the lane delivered since open. */
  delivered: number;
}

/** The highest lane number a directory may have. */
export const MAX_LANE = 9999;

/** What `lanes/topics` holds. */
export interface TopicLanes {
  topics: Map<string, number>;
  /** Lane 0's segments below this sequence number are the backlog from before lanes. */
  legacyBelow: number | null;
  /** Lines that could not be used, with why (logged at open). */
  skipped: string[];
}

/** Reads `lanes/topics` (null when there is none). A torn or foreign line is skipped. */
export async function readTopicLanes(
  fs: ResolvedOptions["fs"],
  dir: string,
): Promise<TopicLanes | null> {
  const bytes = await fs.readFile(`${dir}/${TOPICS_FILE}`);
  if (bytes === null) return null;
  const out: TopicLanes = { topics: new Map(), legacyBelow: null, skipped: [] };
  const lines = new TextDecoder().decode(bytes).split("\n");
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    let e: { topic?: unknown; lane?: unknown; legacyBelow?: unknown };
    try {
      e = JSON.parse(line);
    } catch {
      // torn by a crash or a full disk while appended: its topic's record was never stored
      out.skipped.push(`line ${i + 1}: unreadable (torn?)`);
      return;
    }
    if (Number.isSafeInteger(e.legacyBelow) && (e.legacyBelow as number) >= 0) {
      out.legacyBelow = e.legacyBelow as number;
    } else if (
      typeof e.topic === "string" && Number.isSafeInteger(e.lane) &&
      (e.lane as number) >= 0 && (e.lane as number) <= MAX_LANE
    ) {
      out.topics.set(e.topic, e.lane as number);
    } else {
      out.skipped.push(`line ${i + 1}: not a topic assignment (lanes 0 to ${MAX_LANE})`);
    }
  });
  return out;
}

/** The numbers of the lane directories under `lanes/`. */
export async function laneNumbers(fs: ResolvedOptions["fs"], dir: string): Promise<number[]> {
  const names = await fs.list(`${dir}/${LANES_DIR}`).catch(() => [] as string[]);
  return names.filter((n) => /^[1-9][0-9]{0,3}$/.test(n)).map(Number).sort((a, b) => a - b);
}

/**
 * The records of a topic whose lane is being chosen, gathered into frames as they come (a
 * copy of each record, no object per record): a flood of lines for a new topic would else
 * wait as a write each until the choice is durable.
 */
interface Gathering {
  frames: PendingFrame[];
  records: number;
}

/** See the module doc. */
export class Lanes {
  readonly #o: ResolvedOptions;
  readonly #lanes: DiskPath[];
  /** Topic to lane; null with a single lane and no assignments on disk (all go to lane 0). */
  readonly #topics: Map<string, number> | null;
  /** Topics per lane, to pick the least used. */
  readonly #load: number[];
  /**
   * Topics whose assignment is being made durable, with their records in order: all of them
   * go to the lane at once when it is durable (so that no later write overtakes them).
   */
  readonly #assigning = new Map<string, Gathering>();
  /** Records waiting for their topic's assignment (part of the backlog). */
  #waiting = 0;
  /** Appends to the topics file, one at a time. */
  #appending: Promise<void> = Promise.resolve();
  /** Lane 0's segments below this seq are the backlog from before lanes (see the module doc). */
  #legacyBelow: number | null;
  /** The marker of `#legacyBelow` is not in the topics file yet. */
  #legacyUnwritten: boolean;
  /** Failures of the topics file (their writes failed): counted as storage errors. */
  readonly #own = newCounters();
  /** What the lanes' senders share: the latency window, read memory. */
  readonly #shared: SendersShared;

  private constructor(
    o: ResolvedOptions,
    lanes: DiskPath[],
    topics: Map<string, number> | null,
    legacy: { below: number | null; unwritten: boolean },
    shared: SendersShared,
  ) {
    this.#o = o;
    this.#lanes = lanes;
    this.#topics = topics;
    this.#legacyBelow = legacy.below;
    this.#legacyUnwritten = legacy.unwritten;
    this.#shared = shared;
    this.#load = lanes.map(() => 0);
    for (const lane of topics?.values() ?? []) this.#load[lane]++;
  }

  /** Opens every lane (recovering each), and starts their senders. */
  static async open(o: ResolvedOptions, gate: ProviderGate): Promise<Lanes> {
    const fs = o.fs;
    await fs.mkdirp(o.dir);
    const found = await readTopicLanes(fs, o.dir);
    for (const why of found?.skipped ?? []) {
      o.logger.error(`${o.dir}/${TOPICS_FILE}: skipped ${why}`, {});
    }
    const dirs = await laneNumbers(fs, o.dir);
    let count = Math.max(o.lanes, (dirs.at(-1) ?? 0) + 1);
    for (const lane of found?.topics.values() ?? []) count = Math.max(count, lane + 1);
    const perLane = Math.max(
      Math.floor(o.maxBufferBytes / count),
      2 * o.segmentMaxBytes,
    );
    const provider = gate.shared();
    const shared: SendersShared = {
      latency: new LatencyWindow(),
      // Free blocks kept: as one sender keeps, and with lanes one more for each send in
      // flight (each lets go of a batch's blocks at once when it is delivered).
      blocks: provider.releasesRecords === true
        ? new ReadBlocks(undefined, ReadBlocks.KEEP + (count > 1 ? o.maxSendsInFlight : 0))
        : null,
      contended: () => gate.contended,
      turn: () => gate.turn(),
      turnUsed: () => gate.turnUsed(),
      passTurn: () => gate.passTurn(),
    };
    const opened = await Promise.allSettled(
      Array.from({ length: count }, (_, i) =>
        DiskPath.open(
          {
            ...o,
            dir: laneDir(o.dir, i),
            maxBufferBytes: count === 1 ? o.maxBufferBytes : perLane,
          },
          provider,
          shared,
        )),
    );
    const failed = opened.find((r) => r.status === "rejected") as PromiseRejectedResult | undefined;
    if (failed) {
      for (const r of opened) if (r.status === "fulfilled") await r.value.close().catch(() => {});
      shared.blocks?.close();
      throw failed.reason;
    }
    const lanes = opened.map((r) => (r as PromiseFulfilledResult<DiskPath>).value);
    const topics = found?.topics ?? (count > 1 ? new Map<string, number>() : null);
    // The first open with lanes of a directory with a backlog: its topics are unknown.
    let legacy = { below: found?.legacyBelow ?? null, unwritten: false };
    if (found === null && count > 1 && lanes[0].holdsRecoveredSegments) {
      legacy = { below: lanes[0].firstNewSeq, unwritten: true };
    }
    if (legacy.below !== null && (lanes[0].oldestSegmentSeq ?? Infinity) < legacy.below) {
      o.logger.info(
        "lanes: the backlog from before lanes is in lane 0; topics first seen until it is delivered stay in lane 0",
        { lanes: count },
      );
    }
    return new Lanes(o, lanes, topics, legacy, shared);
  }

  /** True when a write to some lane now would be refused or would wait. */
  get full(): boolean {
    return this.#lanes.some((l) => l.full);
  }

  /** The lanes' counters, added up. */
  counters(): Counters {
    const sum = { ...this.#own };
    for (const l of this.#lanes) {
      const c = l.counters;
      for (const k of Object.keys(sum) as Array<keyof Counters>) sum[k] += c[k];
    }
    return sum;
  }

  /** `ready` when every lane's sends succeed; else the first lane that is not, with its error. */
  get provider(): { name: string; state: ProviderState; lastError: string | null } {
    return this.#lanes.map((l) => l.provider).find((p) => p.state !== "ready") ??
      this.#lanes[0].provider;
  }

  /** `failed` when any lane's storage failed. */
  get storage(): DiskStats["storage"] {
    return this.#lanes.map((l) => l.storage).find((s) => s.state !== "ok") ??
      this.#lanes[0].storage;
  }

  /**
   * `DiskPath.writeRange` in the topic's lane (null, storing nothing, when that lane cannot
   * store it at once); for a topic whose lane is not chosen yet, the record is gathered with
   * the topic's others until it is (see `#gather`).
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
    const topics = this.#topics;
    let lane = 0;
    if (topics !== null) {
      const l = topics.get(topic);
      if (l === undefined || this.#assigning.has(topic)) {
        return this.#gather(topic, (b) => {
          if (b.appendRange(topic, src, keyAt, keyLength, valueAt, valueLength, timestamp)) return;
          const key = keyAt < 0 ? null : src.subarray(keyAt, keyAt + keyLength);
          b.append(topic, src.subarray(valueAt, valueAt + valueLength), key, null, timestamp);
        });
      }
      lane = l;
    }
    return this.#lanes[lane].writeRange(
      topic,
      src,
      keyAt,
      keyLength,
      valueAt,
      valueLength,
      timestamp,
    );
  }

  /** Stores one record in its topic's lane (see {@link MessageBuffer.write}). */
  write(topic: string, value: Bytes, options?: WriteOptions): Promise<void> {
    const topics = this.#topics;
    if (topics === null) return this.#lanes[0].write(topic, value, options);
    const lane = topics.get(topic);
    if (lane !== undefined && !this.#assigning.has(topic)) {
      return this.#lanes[lane].write(topic, value, options);
    }
    try {
      // Bad input fails now, not after the assignment; the time is taken now.
      return this.#gather(
        topic,
        (b) => b.append(topic, value, options?.key, options?.headers, timestampOf(options)),
      );
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Adds a record (`add` appends it to a frame, or throws for bad input, adding nothing) to
   * what waits for `topic`'s lane, and starts choosing one if the topic has none; returns the
   * promise of the frame it went into.
   */
  #gather(topic: string, add: (b: FrameBuilder) => void): Promise<void> {
    const g = this.#assigning.get(topic);
    const last = g?.frames.at(-1);
    const frame = last !== undefined && last.builder.size < this.#lanes[0].frameTarget
      ? last
      : this.#lanes[0].gatheringFrame();
    add(frame.builder);
    if (g === undefined) this.#assign(topic, { frames: [frame], records: 1 });
    else {
      if (frame !== last) g.frames.push(frame);
      g.records++;
    }
    this.#waiting++;
    return frame.promise;
  }

  /**
   * Picks a lane for a new topic and makes the choice durable; then hands the topic's
   * waiting writes to the lane, all at once and in order, or fails them.
   */
  #assign(topic: string, waiting: Gathering): void {
    const pinned = this.#legacyBelow !== null &&
      (this.#lanes[0].oldestSegmentSeq ?? Infinity) < this.#legacyBelow;
    let lane = 0;
    if (!pinned) {
      for (let i = 1; i < Math.min(this.#o.lanes, this.#lanes.length); i++) {
        if (this.#load[i] < this.#load[lane]) lane = i;
      }
    }
    this.#assigning.set(topic, waiting);
    this.#load[lane]++; // now, so that topics assigned meanwhile spread
    let text = "";
    if (this.#legacyUnwritten) text += "\n" + JSON.stringify({ legacyBelow: this.#legacyBelow });
    text += "\n" + JSON.stringify({ topic, lane });
    const done = this.#appending.then(() => this.#appendTopics(new TextEncoder().encode(text)));
    this.#appending = done.catch(() => {});
    done.then(
      () => {
        this.#legacyUnwritten = false;
        this.#topics!.set(topic, lane);
        this.#assigning.delete(topic);
        this.#waiting -= waiting.records;
        for (const f of waiting.frames) this.#lanes[lane].adopt(f);
      },
      (e) => {
        // Not durable: nothing of the topic was stored; its next write tries again.
        this.#assigning.delete(topic);
        this.#load[lane]--;
        this.#waiting -= waiting.records;
        this.#own.storageErrors++;
        this.#own.writeErrors += waiting.records;
        const err = new StorageError("append to", `${this.#o.dir}/${TOPICS_FILE}`, e);
        this.#o.logger.error("cannot record a new topic's lane; its records were not stored", {
          topic,
          records: waiting.records,
          error: err.message,
        });
        for (const f of waiting.frames) f.reject(err);
      },
    );
  }

  async #appendTopics(line: Uint8Array): Promise<void> {
    const fs = this.#o.fs;
    const path = `${this.#o.dir}/${TOPICS_FILE}`;
    const created = (await fs.stat(path)) === null;
    if (created) await fs.mkdirp(`${this.#o.dir}/${LANES_DIR}`);
    const fh = await fs.open(path, created ? "create" : "append");
    try {
      await fh.append(line);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (created) await fs.syncDir(`${this.#o.dir}/${LANES_DIR}`);
  }

  /** Resolves when every write made so far is durable (or failed), in every lane. */
  async flush(): Promise<void> {
    await this.#appending; // the assignments made so far, and their writes handed on
    await Promise.all(this.#lanes.map((l) => l.flush()));
  }

  /** Resolves when any lane has made room, or after `ms`. */
  room(ms: number): Promise<void> {
    return Promise.race(this.#lanes.map((l) => l.room(ms)));
  }

  /** Resolves at the next delivery progress of any lane, or after `ms`. */
  progress(ms: number): Promise<void> {
    return Promise.race(this.#lanes.map((l) => l.progress(ms)));
  }

  /** Records stored or waiting to be stored, not yet acknowledged, in every lane. */
  backlogRecords(): number {
    let n = this.#waiting;
    for (const l of this.#lanes) n += l.backlogRecords();
    return n;
  }

  /** The lanes' state added up, and each lane's. */
  stats(): DiskStats & { lanes: LaneStats[] } {
    const per = this.#lanes.map((l) => l.stats());
    let oldest: number | null = null;
    for (const s of per) {
      if (s.oldestTimestamp !== null) oldest = Math.min(oldest ?? Infinity, s.oldestTimestamp);
    }
    const byLane: string[][] = this.#lanes.map(() => []);
    for (const [topic, lane] of this.#topics ?? []) byLane[lane]?.push(topic);
    const now = Date.now();
    return {
      backlog: {
        records: per.reduce((n, s) => n + s.backlog.records, 0),
        bytes: per.reduce((n, s) => n + s.backlog.bytes, 0),
        segments: per.reduce((n, s) => n + s.backlog.segments, 0),
      },
      oldestTimestamp: oldest,
      usedBytes: per.reduce((n, s) => n + s.usedBytes, 0),
      blockedWrites: per.reduce((n, s) => n + s.blockedWrites, 0),
      provider: this.provider,
      storage: this.storage,
      deliveryLatencyMs: this.#shared.latency.stats(),
      lanes: per.map((s, i) => ({
        lane: i,
        dir: i === 0 ? "" : `${LANES_DIR}/${i}`,
        topics: this.#topics === null ? ["*"] : byLane[i].sort(),
        backlog: s.backlog,
        oldestRecordAgeMs: s.oldestTimestamp === null ? null : Math.max(0, now - s.oldestTimestamp),
        provider: { state: s.provider.state, lastError: s.provider.lastError },
        delivered: this.#lanes[i].counters.delivered,
      })),
    };
  }

  /**
   * Closes every lane (each stores, fsyncs, lets its batch in flight finish, writes its
   * checkpoint); throws the first lane's error after closing all.
   */
  async close(): Promise<void> {
    // Writes waiting for an assignment reach their lane (or fail) before the lanes close.
    await this.#appending;
    const results = await Promise.allSettled(this.#lanes.map((l) => l.close()));
    this.#shared.blocks?.close();
    const failed = results.find((r) => r.status === "rejected") as
      | PromiseRejectedResult
      | undefined;
    if (failed) throw failed.reason;
  }
}

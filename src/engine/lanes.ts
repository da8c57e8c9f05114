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
 * assigned to lane 0, where it is, so that their order holds.
 *
 * @module
 */

import { StorageError } from "../errors.ts";
import type { Bytes } from "../segment/format.ts";
import { DiskPath, type DiskStats } from "./disk.ts";
import type { ProviderGate } from "./gate.ts";
import { type Counters, newCounters } from "./ledger.ts";
import type { ResolvedOptions } from "./options.ts";
import { LatencyWindow, type ProviderState } from "./sender.ts";
import { timestampOf, type WriteOptions } from "./writer.ts";

/** The folder of lanes 1 and up, and of the topic assignments. */
export const LANES_DIR = "lanes";
/** The topic assignments, one JSON object per line: `{"topic": "t", "lane": 2}`. */
export const TOPICS_FILE = `${LANES_DIR}/topics`;

/** One lane as {@link MessageBuffer.stats} reports it. */
export interface LaneStats {
  lane: number;
  /** The lane's directory, relative to the buffer directory (`""` for lane 0). */
  dir: string;
  /** Topics assigned to it (all of them with one lane: reported as `["*"]`). */
  topics: string[];
  backlog: { records: number; bytes: number; segments: number };
  oldestRecordAgeMs: number | null;
  provider: { state: ProviderState; lastError: string | null };
  delivered: number;
}

/** The directory of lane `i`. */
export function laneDir(dir: string, i: number): string {
  return i === 0 ? dir : `${dir}/${LANES_DIR}/${i}`;
}

/** Reads `lanes/topics`: topic to lane (a torn last line, from a crash, is skipped). */
export async function readTopicLanes(
  fs: ResolvedOptions["fs"],
  dir: string,
): Promise<Map<string, number> | null> {
  const bytes = await fs.readFile(`${dir}/${TOPICS_FILE}`);
  if (bytes === null) return null;
  const map = new Map<string, number>();
  for (const line of new TextDecoder().decode(bytes).split("\n")) {
    if (!line.trim()) continue;
    try {
      const e = JSON.parse(line) as { topic?: unknown; lane?: unknown };
      if (typeof e.topic === "string" && Number.isSafeInteger(e.lane) && (e.lane as number) >= 0) {
        map.set(e.topic, e.lane as number);
      }
    } catch {
      // a line torn by a crash while it was appended: its record was never stored
    }
  }
  return map;
}

/** The numbers of the lane directories under `lanes/`. */
export async function laneNumbers(fs: ResolvedOptions["fs"], dir: string): Promise<number[]> {
  const names = await fs.list(`${dir}/${LANES_DIR}`).catch(() => [] as string[]);
  return names.filter((n) => /^[1-9][0-9]{0,3}$/.test(n)).map(Number).sort((a, b) => a - b);
}

/** See the module doc. */
export class Lanes {
  readonly #o: ResolvedOptions;
  readonly #lanes: DiskPath[];
  /** Topic to lane; null with a single lane and no assignments on disk (all go to lane 0). */
  readonly #topics: Map<string, number> | null;
  /** Topics per lane, to pick the least used. */
  readonly #load: number[];
  /** Topics whose assignment is being made durable: their writes wait for it, in order. */
  readonly #assigning = new Map<string, Promise<number>>();
  /** Writes waiting for their topic's assignment (part of the backlog). */
  #waiting = 0;
  /** Appends to the topics file, one at a time. */
  #appending: Promise<void> = Promise.resolve();
  /** New topics go to lane 0 while lane 0 holds a backlog from before the first lanes. */
  #pinned: boolean;
  readonly #latency: LatencyWindow;

  private constructor(
    o: ResolvedOptions,
    lanes: DiskPath[],
    topics: Map<string, number> | null,
    pinned: boolean,
    latency: LatencyWindow,
  ) {
    this.#o = o;
    this.#lanes = lanes;
    this.#topics = topics;
    this.#pinned = pinned;
    this.#latency = latency;
    this.#load = lanes.map(() => 0);
    for (const lane of topics?.values() ?? []) this.#load[lane]++;
  }

  /** Opens every lane (recovering each), and starts their senders. */
  static async open(o: ResolvedOptions, gate: ProviderGate): Promise<Lanes> {
    const fs = o.fs;
    await fs.mkdirp(o.dir);
    const found = await readTopicLanes(fs, o.dir);
    const dirs = await laneNumbers(fs, o.dir);
    let count = Math.max(o.lanes, (dirs.at(-1) ?? 0) + 1);
    for (const lane of found?.values() ?? []) count = Math.max(count, lane + 1);
    const perLane = Math.max(
      Math.floor(o.maxBufferBytes / count),
      2 * o.segmentMaxBytes,
    );
    const latency = new LatencyWindow();
    const opened = await Promise.allSettled(
      Array.from({ length: count }, (_, i) =>
        DiskPath.open(
          {
            ...o,
            dir: laneDir(o.dir, i),
            maxBufferBytes: count === 1 ? o.maxBufferBytes : perLane,
          },
          gate.shared(),
          latency,
        )),
    );
    const failed = opened.find((r) => r.status === "rejected") as PromiseRejectedResult | undefined;
    if (failed) {
      for (const r of opened) if (r.status === "fulfilled") await r.value.close().catch(() => {});
      throw failed.reason;
    }
    const lanes = opened.map((r) => (r as PromiseFulfilledResult<DiskPath>).value);
    const topics = found ?? (count > 1 ? new Map<string, number>() : null);
    // The first open with lanes of a directory with a backlog: its topics are unknown.
    const pinned = found === null && count > 1 && lanes[0].holdsRecoveredSegments;
    if (pinned) {
      o.logger.info(
        "lanes: the backlog from before lanes is in lane 0; topics first seen until it is delivered stay in lane 0",
        { lanes: count },
      );
    }
    return new Lanes(o, lanes, topics, pinned, latency);
  }

  /** The number of lanes open. */
  get count(): number {
    return this.#lanes.length;
  }

  /** True when a write to some lane now would be refused or would wait. */
  get full(): boolean {
    return this.#lanes.some((l) => l.full);
  }

  /** The lanes' counters, added up. */
  counters(): Counters {
    const sum = newCounters();
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

  /** Stores one record in its topic's lane (see {@link MessageBuffer.write}). */
  write(topic: string, value: Bytes, options?: WriteOptions): Promise<void> {
    const topics = this.#topics;
    if (topics === null) return this.#lanes[0].write(topic, value, options);
    const lane = topics.get(topic);
    const assigning = this.#assigning.get(topic);
    if (lane !== undefined && assigning === undefined) {
      return this.#lanes[lane].write(topic, value, options);
    }
    try {
      // Bad input fails now, not after the assignment; the time is taken now.
      this.#lanes[0].validate(topic, value, options);
      const stamped = { ...options, timestamp: timestampOf(options) };
      const p = assigning ?? this.#assign(topic);
      this.#waiting++;
      return p.then(
        (l) => {
          this.#waiting--;
          return this.#lanes[l].write(topic, value, stamped);
        },
        (e) => {
          this.#waiting--;
          throw e;
        },
      );
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Picks a lane for a new topic and makes the choice durable. */
  #assign(topic: string): Promise<number> {
    if (this.#pinned && !this.#lanes[0].holdsRecoveredSegments) this.#pinned = false;
    let lane = 0;
    if (!this.#pinned) {
      for (let i = 1; i < Math.min(this.#o.lanes, this.#lanes.length); i++) {
        if (this.#load[i] < this.#load[lane]) lane = i;
      }
    }
    this.#topics!.set(topic, lane);
    this.#load[lane]++;
    const line = new TextEncoder().encode(JSON.stringify({ topic, lane }) + "\n");
    const done = this.#appending.then(() => this.#appendTopics(line));
    this.#appending = done.catch(() => {});
    const p = done.then(
      () => {
        this.#assigning.delete(topic);
        return lane;
      },
      (e) => {
        // Not durable: forget it, so that the next write of the topic tries again.
        this.#assigning.delete(topic);
        this.#topics!.delete(topic);
        this.#load[lane]--;
        throw new StorageError("append to", `${this.#o.dir}/${TOPICS_FILE}`, e);
      },
    );
    this.#assigning.set(topic, p);
    return p;
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

  /** Checks a record as `write` would; throws TypeError/RangeError. */
  validate(topic: string, value: Bytes, options?: WriteOptions): void {
    this.#lanes[0].validate(topic, value, options);
  }

  /** Resolves when every write made so far is durable (or failed), in every lane. */
  async flush(): Promise<void> {
    await Promise.all([...this.#assigning.values()].map((p) => p.catch(() => {})));
    await Promise.all(this.#lanes.map((l) => l.flush()));
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
      deliveryLatencyMs: this.#latency.stats(),
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
    await this.#appending;
    const results = await Promise.allSettled(this.#lanes.map((l) => l.close()));
    const failed = results.find((r) => r.status === "rejected") as
      | PromiseRejectedResult
      | undefined;
    if (failed) throw failed.reason;
  }
}

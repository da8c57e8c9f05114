/**
 * The buffer: the public facade. It chooses the path a record takes by the `mode` option
 * and keeps the counters, the state and the lifecycle in one place:
 *
 * ```
 *   mode buffer                write() ──► DiskPath (segments, sender) ──► provider
 *   mode direct-until-error    write() ──► DirectPath ─────────────────► provider
 *                                            │ error, slow, too many        ▲
 *                                            ▼ (spill, in order)            │ one send
 *                                          DiskPath ── delivered all ───────┘ at a time
 *                                            └──► back to DirectPath
 *   modes block-on-error,      write() ──► DirectPath ─────────────────► provider
 *         error-on-error
 * ```
 *
 * @module
 */

import { BufferClosedError, BufferFullError } from "../errors.ts";
import type { FileSystem } from "../fs/types.ts";
import type { Logger } from "../log.ts";
import type { Provider, ProviderCounters } from "../provider/types.ts";
import { type Bytes, parseSegmentFileName } from "../segment/format.ts";
import { DirectPath, type DirectWrite } from "./direct.ts";
import { ProviderGate } from "./gate.ts";
import { Lanes, type LaneStats } from "./lanes.ts";
import { type Counters, newCounters } from "./ledger.ts";
import {
  type MessageBufferOptions,
  type Mode,
  type ResolvedOptions,
  resolveOptions,
} from "./options.ts";
import type { LatencyStats } from "./latency.ts";
import { closeWithin } from "./retry.ts";
import type { ProviderState } from "./sender.ts";
import { type StorageHealth, timestampOrNow, type WriteOptions } from "./writer.ts";

export type { LaneStats, ProviderState, StorageHealth, WriteOptions };

/** Options of the engine: {@link MessageBufferOptions} with the runtime adapters chosen. */
export type EngineOptions = MessageBufferOptions & { fs: FileSystem; logger: Logger };

/**
 * A snapshot of the buffer's state, from {@link MessageBuffer.stats}.
 *
 * @example Watch the backlog
 * ```ts
 * const s = buffer.stats();
 * if (s.backlog.records > 100_000) console.warn(`${s.backlog.records} records wait for Kafka`);
 * ```
 */
export interface BufferStats {
  /** The `mode` option. */
  mode: Mode;
  /**
   * Where writes go now: `"disk"` (mode `buffer`, or `direct-until-error` while it
   * buffers) or `"direct"`.
   */
  path: "disk" | "direct";
  /** Counters since open. */
  counters: Counters;
  /**
   * Records and bytes stored or waiting for Kafka, not yet acknowledged, and segment files
   * on disk. Records waiting on the direct path count in `records`, not in `bytes`.
   */
  backlog: { records: number; bytes: number; segments: number };
  /** Age of the oldest unacknowledged record's frame, ms; null when nothing is waiting. */
  oldestRecordAgeMs: number | null;
  /** Bytes counted against `maxBufferBytes` (segments plus records not yet written). */
  usedBytes: number;
  /** Writes waiting for room under `whenFull: "block"`. */
  blockedWrites: number;
  /**
   * Provider name and state, and what it counted inside its sends (null when the provider
   * counts nothing).
   */
  provider: {
    name: string;
    state: ProviderState;
    lastError: string | null;
    counters: ProviderCounters | null;
  };
  /** Whether writes are being made durable (`failed` after an fsync failed; see README). */
  storage: StorageHealth;
  /**
   * Time from a record's timestamp to the provider's acknowledgement, over the last 8192
   * records delivered (by the path writes take now): quantiles in ms, plus the sum and
   * count since open.
   */
  deliveryLatencyMs: LatencyStats;
  /** Each delivery lane: its topics, backlog and provider state (one entry without lanes). */
  lanes: LaneStats[];
}

/**
 * A durable, size-capped, ordered buffer in front of a {@link Provider}.
 *
 * @example Buffer records for Kafka
 * ```ts
 * import { KafkaProvider, MessageBuffer } from "./mod.ts";
 * const buffer = await MessageBuffer.open({
 *   dir: "/var/lib/messagebuffer",
 *   provider: new KafkaProvider({ brokers: ["127.0.0.1:9092"] }),
 * });
 * await buffer.write("events", JSON.stringify({ hello: "world" }), { key: "user-1" });
 * await buffer.close();
 * ```
 */
export class MessageBuffer {
  readonly #o: ResolvedOptions;
  readonly #disk: Lanes | null;
  readonly #direct: DirectPath | null;
  /** Closes the provider once every sender has stopped (null without disk). */
  readonly #gate: ProviderGate | null;
  /** `direct-until-error`: writes go to the direct path (else to the disk). */
  #directOn = false;
  /** `direct-until-error`: writes handed from the direct path to the disk, not yet stored. */
  #spilling = 0;
  #lastBacklogCheck = 0;
  #closing = false;
  #closed: Promise<void> | null = null;

  /** Use {@link MessageBuffer.open}, which recovers the directory first. */
  protected constructor(
    o: ResolvedOptions,
    disk: Lanes | null,
    direct: DirectPath | null,
    gate: ProviderGate | null,
  ) {
    this.#o = o;
    this.#disk = disk;
    this.#direct = direct;
    this.#gate = gate;
  }

  /**
   * Opens (creating if needed) a buffer directory: takes its lock, recovers what a previous
   * run left, and starts delivering in the background. In the modes without disk, only
   * checks the options: the provider connects with the first write.
   *
   * @throws {TypeError | RangeError} an option is invalid (the message names it)
   * @throws {LockedError} another live process has the directory open
   * @throws the provider's `prepare()` error (a Kafka client library that cannot load)
   */
  static async open(options: EngineOptions): Promise<MessageBuffer> {
    if (options && (!options.fs || !options.logger)) {
      throw new TypeError(
        'Options "fs" and "logger" are required when opening the engine directly; MessageBuffer from mod.ts fills in the defaults',
      );
    }
    const o = resolveOptions(options, options?.fs, options?.logger);
    // A provider that can never send (its client library does not load) fails the open.
    await o.provider.prepare?.();
    if (o.mode === "block-on-error" || o.mode === "error-on-error") {
      if (options.dir !== undefined) await warnOfBacklog(o);
      const policy = o.mode === "block-on-error" ? "block" : "error";
      return new this(o, null, newDirect(o, o.provider, policy), null);
    }
    const gate = new ProviderGate(o.provider, o.maxSendsInFlight);
    let lanes: Lanes;
    try {
      lanes = await Lanes.open(o, gate);
    } catch (e) {
      // A lane that did open may have opened the provider already.
      await closeGate(gate, o);
      throw e;
    }
    if (o.mode === "buffer") return new this(o, lanes, null, gate);
    // direct-until-error: the direct path's sends run alone, so that none overtakes it.
    const late: { buffer: MessageBuffer | null } = { buffer: null };
    const direct = newDirect(o, gate.exclusive(), "spill", (reason, error) => {
      if (late.buffer) late.buffer.#toDisk(reason, error);
    });
    return late.buffer = new this(o, lanes, direct, gate);
  }

  /** The buffer directory (`"(no disk)"` in the modes without disk, unless one was given). */
  get dir(): string {
    return this.#o.dir;
  }

  /** The `mode` option. */
  get mode(): Mode {
    return this.#o.mode;
  }

  /** True when a write now would be refused (`"reject"`, modes without disk) or would wait (`"block"`). */
  get full(): boolean {
    if (this.#disk === null) return this.#direct!.pending >= this.#o.directMaxRecords;
    return this.#disk.full;
  }

  /** True when a write now would wait for room (`whenFull: "block"`): time to stop reading input. */
  get wouldBlock(): boolean {
    if (this.#disk === null) return this.full;
    return this.#o.whenFull === "block" && this.#disk.full;
  }

  /**
   * Resolves once a write would no longer wait for room ({@link wouldBlock} is false), or the
   * buffer is closing: what a reader that stopped taking input waits for before reading on.
   */
  async whenWritable(): Promise<void> {
    while (this.wouldBlock && !this.#closing) {
      await Promise.race([
        this.#disk?.room(1000) ?? new Promise(() => {}),
        this.#direct?.progress(1000) ?? new Promise(() => {}),
      ]);
    }
  }

  /**
   * Accepts one record; it will be delivered in write order. When the promise resolves
   * depends on the mode: once stored under the `fsync` policy (`buffer`, and
   * `direct-until-error` while it buffers), or once Kafka acknowledged it (the direct paths).
   *
   * @throws {TypeError | RangeError} (as a rejection) the topic, value, key or headers are invalid
   * @throws {BufferClosedError} the buffer is closing or closed
   * @throws {BufferFullError} at the cap with `whenFull: "reject"`, or, without disk, with
   *   `directMaxRecords` records waiting
   * @throws {StorageError} the filesystem refused the write (ENOSPC, EIO), or fsync has
   *   failed and the write could not be made durable; nothing was stored
   * @throws {DeliveryError | DeliveryTimeoutError | RecordRejectedError} modes without disk:
   *   Kafka did not take the record
   */
  write(topic: string, value: Bytes, options?: WriteOptions): Promise<void> {
    if (this.#closing) return Promise.reject(new BufferClosedError(this.#o.dir));
    const direct = this.#direct;
    if (direct === null) return this.#disk!.write(topic, value, options);
    try {
      if (this.#disk === null) {
        if (direct.pending >= this.#o.directMaxRecords) {
          throw new BufferFullError(
            this.#o.dir,
            direct.pending,
            this.#o.directMaxRecords,
            "records waiting for Kafka",
          );
        }
        return direct.write(topic, value, options);
      }
      if (!this.#directOn && this.#canGoDirect()) this.#toDirect();
      if (this.#directOn) {
        if (direct.pending < this.#o.directMaxRecords) return direct.write(topic, value, options);
        this.#toDisk(`${direct.pending} records wait for Kafka (directMaxRecords)`);
      }
      return this.#disk.write(topic, value, options);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * {@link write} of a record without headers, whose key (`keyAt` -1: none) and value are the
   * bytes `src[keyAt, keyAt + keyLength)` and `src[valueAt, valueAt + valueLength)`, copied
   * before this returns; the record gets `timestamp` (ms since the epoch), by default the time
   * of the call. For a caller that holds records in a larger buffer (the socket input reads
   * lines out of chunks, and gives each line the time of its read), it saves making a view of
   * each key and value. Returns null, storing nothing, when the record cannot be taken this way
   * (a mode without disk or going direct, the cap reached, closing, with one lane a topic never
   * given to `write`): then `write` it. With lanes, the records of a topic whose lane is still
   * being chosen are taken too, gathered until it is.
   *
   * @throws {TypeError} `src` is not a Uint8Array, the timestamp is not a non-negative integer,
   *   or (with lanes) the topic is not valid
   * @throws {RangeError} a range is not inside `src`, or the record is over `maxRecordBytes`;
   *   nothing was stored
   */
  writeRange(
    topic: string,
    src: Uint8Array,
    keyAt: number,
    keyLength: number,
    valueAt: number,
    valueLength: number,
    timestamp?: number,
  ): Promise<void> | null {
    if (!(src instanceof Uint8Array)) {
      throw new TypeError(`src must be a Uint8Array, got ${src === null ? "null" : typeof src}`);
    }
    if (keyAt !== -1) checkRange("key", keyAt, keyLength, src.length);
    checkRange("value", valueAt, valueLength, src.length);
    const time = timestampOrNow(timestamp);
    if (this.#closing || this.#direct !== null) return null;
    return this.#disk!.writeRange(topic, src, keyAt, keyLength, valueAt, valueLength, time);
  }

  /**
   * `direct-until-error`: the disk holds nothing undelivered and the senders' sends succeed.
   * Adding up the backlog walks every lane's segments, so while buffering it is done at most
   * once a millisecond (a switch back comes at most that much later).
   */
  #canGoDirect(): boolean {
    const disk = this.#disk!;
    if (
      this.#spilling > 0 || this.#direct!.pending > 0 || disk.provider.state !== "ready" ||
      disk.storage.state !== "ok"
    ) return false;
    const now = Date.now();
    if (now === this.#lastBacklogCheck) return false;
    this.#lastBacklogCheck = now;
    return disk.backlogRecords() === 0;
  }

  #toDirect(): void {
    this.#directOn = true;
    this.#direct!.resume();
    this.#o.logger.info("direct-until-error: the disk backlog is delivered; sending directly");
  }

  /**
   * `direct-until-error`: from now on writes go to the disk, and the direct path's waiting
   * writes go there first, in order. Each such write resolves once stored.
   */
  #toDisk(reason: string, error?: unknown): void {
    const direct = this.#direct!;
    const disk = this.#disk!;
    const taken: DirectWrite[] = direct.spill(this.#directOn);
    if (this.#directOn) {
      this.#directOn = false;
      this.#o.logger.warn("direct-until-error: buffering on disk", {
        reason,
        error: error === undefined ? undefined : error,
        records: taken.length,
      });
    }
    for (const w of taken) {
      const r = w.record;
      this.#spilling++;
      disk.write(r.topic, r.value, { key: r.key, headers: r.headers, timestamp: r.timestamp })
        .finally(() => this.#spilling--)
        .then(w.resolve, w.reject);
    }
  }

  /** Resolves when every write made so far is durable under the `fsync` policy (or failed). */
  flush(): Promise<void> {
    return this.#disk?.flush() ?? Promise.resolve();
  }

  /**
   * Resolves once everything written so far has been acknowledged, dead-lettered, expired
   * or dropped; rejects with a TimeoutError-named Error after `timeoutMs`.
   */
  async drained(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    await this.flush();
    while (this.#backlogRecords() > 0) {
      const left = deadline - Date.now();
      if (left <= 0) {
        const e = new Error(
          `Buffer "${this.#o.dir}" still holds ${this.#backlogRecords()} undelivered records after ${timeoutMs} ms`,
        );
        e.name = "TimeoutError";
        throw e;
      }
      const wait = Math.min(left, 200);
      await Promise.race([
        this.#disk?.progress(wait) ?? new Promise(() => {}),
        this.#direct?.progress(wait) ?? new Promise(() => {}),
      ]);
    }
  }

  /** Records stored or waiting, not yet acknowledged (or dropped, or failed). */
  #backlogRecords(): number {
    return (this.#disk?.backlogRecords() ?? 0) + (this.#direct?.pending ?? 0);
  }

  /** Counters, backlog, provider and storage state. */
  stats(): BufferStats {
    const direct = this.#direct;
    const path = this.#disk === null || this.#directOn ? "direct" : "disk";
    const d = this.#disk?.stats();
    const oldest = [d?.oldestTimestamp, direct?.oldestTimestamp()].filter((t) =>
      typeof t === "number"
    ) as number[];
    return {
      mode: this.#o.mode,
      path,
      counters: this.#allCounters(),
      backlog: {
        records: this.#backlogRecords(),
        bytes: d?.backlog.bytes ?? 0,
        segments: d?.backlog.segments ?? 0,
      },
      oldestRecordAgeMs: oldest.length === 0 ? null : Math.max(0, Date.now() - Math.min(...oldest)),
      usedBytes: d?.usedBytes ?? 0,
      blockedWrites: d?.blockedWrites ?? 0,
      provider: {
        ...(d?.provider ?? direct!.provider),
        counters: this.#o.provider.counters?.() ?? null,
      },
      storage: d?.storage ?? { state: "ok", lastError: null },
      deliveryLatencyMs: path === "direct" ? direct!.latency() : d!.deliveryLatencyMs,
      lanes: d?.lanes ?? [],
    };
  }

  /** The lanes' counters and the direct path's, added up. */
  #allCounters(): Counters {
    const sum = this.#disk?.counters() ?? newCounters();
    const direct = this.#direct?.counters;
    if (direct) { for (const k of Object.keys(sum) as Array<keyof Counters>) sum[k] += direct[k]; }
    return sum;
  }

  /**
   * Stops accepting writes, writes and fsyncs what was accepted, lets the sender finish the
   * batch in flight (up to `closeTimeoutMs`), writes the checkpoint, closes the provider and
   * releases the directory. In `direct-until-error`, records still waiting on the direct
   * path after `closeTimeoutMs` are stored on disk first; without disk, they fail with
   * {@link BufferClosedError}. Safe to call twice.
   *
   * @throws {StorageError} (after closing all the same) the fsync that sealed the last
   *   segment failed, so what it held is not known to be on stable storage
   */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    this.#closing = true;
    const direct = this.#direct;
    if (direct) {
      await direct.close(this.#o.closeTimeoutMs, this.#disk === null);
      this.#directOn = false;
      if (this.#disk) this.#toDisk("closing");
    }
    if (!this.#disk) return;
    try {
      await this.#disk.close();
    } finally {
      await closeGate(this.#gate!, this.#o);
    }
  }
}

/** Closes the provider, waiting at most `closeTimeoutMs`; a failure is logged. */
function closeGate(gate: ProviderGate, o: ResolvedOptions): Promise<void> {
  return closeWithin(
    { name: o.provider.name, close: () => gate.close() },
    o.closeTimeoutMs,
    o.logger,
  );
}

function newDirect(
  o: ResolvedOptions,
  provider: Provider,
  policy: "spill" | "block" | "error",
  onTrouble?: (reason: string, error?: unknown) => void,
): DirectPath {
  return new DirectPath({
    provider,
    logger: o.logger,
    policy,
    maxRecordBytes: o.maxRecordBytes,
    batchMaxRecords: o.batchMaxRecords,
    batchMaxBytes: o.batchMaxBytes,
    timeoutMs: o.directTimeoutMs,
    retryInitialMs: o.retryInitialMs,
    retryMaxMs: o.retryMaxMs,
    ownsProvider: policy !== "spill",
    onTrouble,
  });
}

/** Modes without disk: a directory given that still holds segments is worth a warning. */
async function warnOfBacklog(o: ResolvedOptions): Promise<void> {
  const names = await o.fs.list(o.dir).catch(() => [] as string[]);
  const segments = names.filter((n) => parseSegmentFileName(n) !== null).length;
  if (segments > 0) {
    o.logger.warn(
      `mode ${o.mode} does not use the disk, but "${o.dir}" holds ${segments} segment files; open it in mode buffer or direct-until-error to deliver them`,
      { dir: o.dir, segments },
    );
  }
}

/** Throws a RangeError naming `what` unless `[at, at + length)` lies inside `size` bytes. */
function checkRange(what: string, at: number, length: number, size: number): void {
  if (
    !Number.isSafeInteger(at) || !Number.isSafeInteger(length) || at < 0 || length < 0 ||
    at + length > size
  ) {
    throw new RangeError(
      `the ${what}'s range (at ${at}, ${length} bytes) is not inside src (${size} bytes)`,
    );
  }
}

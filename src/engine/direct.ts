/**
 * The direct path: records that go to the provider without touching the disk. It serves
 * three modes, each with its own answer to a failure (the `policy`):
 *
 * - `direct-until-error` ("spill"): at the first error, refusal or slow send, or when too
 *   many records wait, it calls `onTrouble`; the buffer then takes every write still waiting
 *   ({@link DirectPath.takeAll}) and stores it in the segment files, in order.
 * - `block-on-error` ("block"): a failed send is retried with backoff until the write's
 *   deadline (`directTimeoutMs` after the write), then the write fails with
 *   {@link DeliveryTimeoutError}.
 * - `error-on-error` ("error"): a failed send fails its writes with {@link DeliveryError};
 *   a send still unanswered at the deadline fails them with {@link DeliveryTimeoutError}.
 *
 * Writes are validated and encoded at once into a frame, exactly as for the disk, so that a
 * bad record fails the same way in every mode. One send at a time takes what is waiting (up
 * to `batchMaxRecords` / `batchMaxBytes`), in write order. A write resolves when the provider
 * has acknowledged its record.
 *
 * @module
 */

import {
  BufferClosedError,
  DeliveryError,
  DeliveryTimeoutError,
  RecordRejectedError,
} from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Provider, ProviderRecord } from "../provider/types.ts";
import {
  type Bytes,
  decodeFrame,
  FrameBuilder,
  readFrameHeader,
  recordBytes,
  type StoredRecord,
} from "../segment/format.ts";
import { type Counters, newCounters } from "./ledger.ts";
import { validRejections } from "../provider/outcome.ts";
import { type LatencyStats, LatencyWindow } from "./latency.ts";
import { ProgressSignal } from "./progress.ts";
import { backoffMs, closeWithin, FailureLog } from "./retry.ts";
import type { ProviderState } from "./sender.ts";
import { timestampOf, type WriteOptions } from "./writer.ts";

/** What the direct path does when a send fails: see the module doc. */
export type DirectPolicy = "spill" | "block" | "error";

/** A write on the direct path. */
export interface DirectWrite {
  /** The record, decoded from its frame (set once the frame is taken). */
  record: StoredRecord;
  resolve: () => void;
  reject: (e: unknown) => void;
  /** ms since the epoch: the write fails (block, error) or spills (spill) after this. */
  deadline: number;
  settled: boolean;
}

/** Settings and hooks of {@link DirectPath}. */
export interface DirectOptions {
  provider: Provider;
  logger: Logger;
  policy: DirectPolicy;
  maxRecordBytes: number;
  batchMaxRecords: number;
  batchMaxBytes: number;
  timeoutMs: number;
  retryInitialMs: number;
  retryMaxMs: number;
  /** Whether this path opens (and closes) the provider, or another part does. */
  ownsProvider: boolean;
  /** spill: the path cannot deliver now; the owner takes the writes with takeAll(). */
  onTrouble?: (reason: string, error?: unknown) => void;
}

interface Pending {
  resolve: () => void;
  reject: (e: unknown) => void;
  deadline: number;
}

/** See the module doc. */
export class DirectPath {
  readonly #o: DirectOptions;
  readonly #builder: FrameBuilder;
  #building: Pending[] = [];
  /** Decoded, not yet sent, in write order. */
  #ready: DirectWrite[] = [];
  #inFlight: { writes: DirectWrite[]; abandoned: boolean } | null = null;
  #pending = 0;
  #pumping = false;
  #opened = false;
  #closed = false;
  #state: ProviderState = "connecting";
  #lastError: string | null = null;
  #lastCause: unknown = undefined;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #timerAt = Infinity;
  readonly #progress = new ProgressSignal();
  readonly #latency = new LatencyWindow();
  /** Failed sends under `block`, retried until the writes' deadline, logged once and on change. */
  readonly #failures: FailureLog;
  /**
   * This path's counters (delivered, sentDirect, failedWrites, sendRetries, resentRecords,
   * and `direct-until-error`'s spills and switches), its own: the facade reads them.
   */
  readonly #counters = newCounters();

  constructor(o: DirectOptions) {
    this.#o = o;
    this.#failures = new FailureLog(o.logger, "direct send (until the writes' deadline)");
    this.#builder = new FrameBuilder(1 << 16, o.maxRecordBytes);
    if (!o.ownsProvider) this.#opened = true;
  }

  /** What this path counted, read-only. */
  get counters(): Readonly<Counters> {
    return this.#counters;
  }

  /** Writes accepted and not yet settled (acknowledged, failed or taken). */
  get pending(): number {
    return this.#pending;
  }

  /** The provider's state as this path saw it, and its last error. */
  get provider(): { name: string; state: ProviderState; lastError: string | null } {
    return { name: this.#o.provider.name, state: this.#state, lastError: this.#lastError };
  }

  /** Delivery latency of the records this path delivered. */
  latency(): LatencyStats {
    return this.#latency.stats();
  }

  /** The timestamp of the oldest record waiting, or null. */
  oldestTimestamp(): number | null {
    const first = this.#inFlight?.writes.find((w) => !w.settled) ??
      this.#ready.find((w) => !w.settled);
    if (first) return first.record.timestamp;
    return this.#builder.count > 0 ? this.#builder.baseTimestamp : null;
  }

  /**
   * Accepts one record. Throws TypeError/RangeError at once for a bad record; the promise
   * settles as the module doc says.
   */
  write(topic: string, value: Bytes, options?: WriteOptions): Promise<void> {
    if (this.#closed) return Promise.reject(new BufferClosedError("direct"));
    this.#builder.append(topic, value, options?.key, options?.headers, timestampOf(options));
    this.#pending++;
    const deadline = Date.now() + this.#o.timeoutMs;
    const p = new Promise<void>((resolve, reject) =>
      this.#building.push({ resolve, reject, deadline })
    );
    this.#armTimer(deadline);
    if (!this.#pumping) {
      // Started after the caller's synchronous work, so that the writes made together (the
      // lines of one socket read) go out in one send: started at once, the first would go
      // alone and the rest wait for its answer.
      this.#pumping = true;
      queueMicrotask(() => void this.#pump());
    }
    return p;
  }

  /**
   * Takes every write not yet acknowledged, in write order: the batch in flight first (its
   * outcome is then ignored, save that a success counts its records as resent, because the
   * owner stores and sends them again), then those waiting. Their promises are the caller's
   * to settle.
   */
  takeAll(): DirectWrite[] {
    this.#takeBuilding();
    const out: DirectWrite[] = [];
    if (this.#inFlight) {
      this.#inFlight.abandoned = true;
      for (const w of this.#inFlight.writes) if (!w.settled) out.push(w);
      this.#inFlight = null;
    }
    for (const w of this.#ready) if (!w.settled) out.push(w);
    this.#ready = [];
    for (const w of out) w.settled = true;
    this.#pending -= out.length;
    this.#notifyProgress();
    return out;
  }

  /**
   * `direct-until-error`: the owner takes every write not yet acknowledged to store it on disk
   * ({@link takeAll}); counted as spilled, and as a switch to buffering when `switching`.
   */
  spill(switching: boolean): DirectWrite[] {
    const taken = this.takeAll();
    if (switching) this.#counters.switchesToBuffer++;
    this.#counters.spilledRecords += taken.length;
    return taken;
  }

  /** spill: the owner has delivered what it took; sends go out again (a switch to direct). */
  resume(): void {
    this.#counters.switchesToDirect++;
    this.#state = "ready";
    this.#lastError = null;
    this.#lastCause = undefined;
  }

  /** Resolves at the next settled batch, or after `ms`. */
  progress(ms: number): Promise<void> {
    return this.#progress.wait(ms);
  }

  /**
   * Stops taking writes and waits up to `timeoutMs` for those accepted to settle. With
   * `rejectRest`, what is still waiting then fails with {@link BufferClosedError} (the spill
   * policy's owner takes it instead). Closes the provider if this path owns it.
   */
  async close(timeoutMs: number, rejectRest: boolean): Promise<void> {
    this.#closed = true;
    const deadline = Date.now() + timeoutMs;
    while (this.#pending > 0 && Date.now() < deadline) {
      await this.progress(Math.min(200, deadline - Date.now()));
    }
    if (rejectRest) {
      for (const w of this.takeAll()) {
        this.#counters.failedWrites++;
        w.reject(new BufferClosedError("direct"));
      }
    }
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#o.ownsProvider) {
      await closeWithin(this.#o.provider, timeoutMs, this.#o.logger);
      this.#state = "closed";
    }
  }

  /** Decodes the frame being built into writes ready to send. */
  #takeBuilding(): void {
    const b = this.#builder;
    if (b.count === 0) return;
    const frame = b.finish().slice();
    b.reset();
    const records: StoredRecord[] = [];
    decodeFrame(frame, 0, readFrameHeader(frame, 0), records);
    const pending = this.#building;
    this.#building = [];
    for (let i = 0; i < records.length; i++) {
      const p = pending[i];
      this.#ready.push({
        record: records[i],
        resolve: p.resolve,
        reject: p.reject,
        deadline: p.deadline,
        settled: false,
      });
    }
  }

  /** The next batch from the front of the ready writes. */
  #nextBatch(): DirectWrite[] {
    const o = this.#o;
    let n = 0, bytes = 0;
    const ready = this.#ready;
    while (n < ready.length && n < o.batchMaxRecords && (n === 0 || bytes < o.batchMaxBytes)) {
      const r = ready[n].record;
      bytes += recordBytes(r);
      n++;
    }
    return ready.splice(0, n);
  }

  async #pump(): Promise<void> {
    try {
      for (;;) {
        this.#takeBuilding();
        this.#ready = this.#ready.filter((w) => !w.settled);
        if (this.#ready.length === 0) break;
        const flight = { writes: this.#nextBatch(), abandoned: false };
        this.#inFlight = flight;
        await this.#deliver(flight);
        if (this.#inFlight === flight) this.#inFlight = null;
        this.#notifyProgress();
        // spill: after trouble, the owner takes what waits; nothing more is sent here.
        if (this.#o.policy === "spill" && this.#state === "retrying") break;
      }
    } finally {
      this.#pumping = false;
    }
  }

  /** Sends one batch and settles its writes as the policy says. */
  async #deliver(flight: { writes: DirectWrite[]; abandoned: boolean }): Promise<void> {
    const o = this.#o;
    for (let attempt = 1;; attempt++) {
      const writes = flight.writes.filter((w) => !w.settled);
      if (writes.length === 0) return;
      const records: ProviderRecord[] = writes.map((w) => w.record);
      let outcome: unknown;
      let error: unknown = null;
      try {
        if (!this.#opened) {
          await o.provider.open();
          this.#opened = true;
        }
        outcome = await o.provider.send(records);
      } catch (e) {
        error = e ?? new Error("send failed");
      }
      if (flight.abandoned) {
        // Taken by the owner while in flight: under spill, it stores and sends them again,
        // whatever became of this send (a failed one may have reached Kafka in part).
        if (o.policy === "spill") {
          if (error === null) this.#counters.resentRecords += records.length;
          this.#counters.maybeDuplicatedDirect += records.length;
        }
        return;
      }
      if (error === null) return this.#delivered(writes, outcome);
      if (!(await this.#sendFailed(writes, error, attempt))) return;
      this.#expire();
      const left = flight.writes.filter((w) => !w.settled).length;
      // Sent again in a send of other records, so under another identity: a failed send may
      // have reached Kafka in part.
      if (left > 0) {
        this.#counters.resentRecords += left;
        this.#counters.maybeDuplicatedDirect += left;
      }
      this.#topUp(flight);
    }
  }

  /**
   * The provider acknowledged `writes`: each resolves, but those it refused for good, which
   * go to the disk path (spill, whose sender dead-letters them) or fail with
   * {@link RecordRejectedError}.
   */
  #delivered(writes: DirectWrite[], outcome: unknown): void {
    const o = this.#o;
    const c = this.#counters;
    this.#state = "ready";
    this.#failures.succeeded({ provider: o.provider.name });
    const rejected = validRejections(outcome, writes.length);
    const reasons = new Map(rejected.map((r) => [r.index, r.reason]));
    this.#latency.add(writes.map((w) => w.record));
    let delivered = 0;
    for (let i = 0; i < writes.length; i++) {
      if (reasons.has(i)) continue;
      // Its writer was told it failed (timed out) while the send ran: it is in Kafka now,
      // and a writer that writes it again makes a copy.
      if (writes[i].settled) {
        c.maybeDuplicatedDirect++;
        continue;
      }
      writes[i].settled = true;
      this.#pending--;
      delivered++;
      writes[i].resolve();
    }
    c.delivered += delivered;
    c.sentDirect += delivered;
    if (reasons.size === 0) return;
    if (o.policy === "spill") {
      this.#inFlight = null;
      this.#ready.unshift(...writes.filter((_, i) => reasons.has(i)));
      this.#trouble("Kafka refused a record", reasons.values().next().value);
      return;
    }
    for (const [i, reason] of reasons) {
      this.#fail(writes[i], new RecordRejectedError(writes[i].record.topic, reason));
    }
  }

  /**
   * A send of `writes` failed, as the policy says: spill hands them back to the owner, error
   * fails them with {@link DeliveryError}, block waits out a backoff (never past the first
   * write's deadline, so that a provider back before it is not missed). Resolves true when
   * the send is to be tried again.
   */
  async #sendFailed(writes: DirectWrite[], error: unknown, attempt: number): Promise<boolean> {
    const o = this.#o;
    this.#lastError = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    this.#lastCause = error;
    this.#counters.sendRetries++;
    if (o.policy === "spill") {
      this.#inFlight = null;
      this.#ready.unshift(...writes);
      this.#trouble("send failed", error);
      return false;
    }
    this.#state = this.#opened ? "retrying" : "connecting";
    if (o.policy === "error") {
      for (const w of writes) this.#fail(w, new DeliveryError(w.record.topic, error));
      return false;
    }
    const front = writes.find((w) => !w.settled);
    const wait = Math.max(
      0,
      Math.min(
        backoffMs(attempt, o.retryInitialMs, o.retryMaxMs),
        (front?.deadline ?? Infinity) - Date.now(),
      ),
    );
    this.#failures.failed(this.#lastError, { provider: o.provider.name, retryInMs: wait });
    await new Promise((r) => setTimeout(r, wait));
    return true;
  }

  /** Adds writes that waited behind a retried batch to it, up to the batch limits. */
  #topUp(flight: { writes: DirectWrite[] }): void {
    this.#takeBuilding();
    flight.writes = flight.writes.filter((w) => !w.settled);
    let n = flight.writes.length;
    let bytes = 0;
    for (const w of flight.writes) {
      bytes += recordBytes(w.record);
    }
    while (
      this.#ready.length > 0 && n < this.#o.batchMaxRecords && bytes < this.#o.batchMaxBytes
    ) {
      const w = this.#ready.shift()!;
      if (w.settled) continue;
      flight.writes.push(w);
      n++;
      bytes += recordBytes(w.record);
    }
  }

  #fail(w: DirectWrite, e: unknown): void {
    if (w.settled) return;
    w.settled = true;
    this.#pending--;
    this.#counters.failedWrites++;
    w.reject(e);
  }

  #trouble(reason: string, error?: unknown): void {
    this.#state = "retrying";
    this.#o.onTrouble?.(reason, error);
  }

  /** Fails (block, error) or hands over (spill) the writes whose deadline has passed. */
  #expire(): void {
    const now = Date.now();
    const o = this.#o;
    const front = this.#inFlight?.writes.find((w) => !w.settled) ??
      this.#ready.find((w) => !w.settled) ?? this.#building[0];
    if (!front || front.deadline > now) return;
    if (o.policy === "spill") {
      this.#trouble(`no acknowledgement within ${o.timeoutMs} ms`);
      return;
    }
    this.#takeBuilding();
    const lists = [this.#inFlight?.writes ?? [], this.#ready];
    for (const list of lists) {
      for (const w of list) {
        if (w.deadline > now) break;
        this.#fail(
          w,
          new DeliveryTimeoutError(w.record.topic, o.timeoutMs, this.#lastErrorCause()),
        );
      }
    }
    this.#notifyProgress();
  }

  #lastErrorCause(): unknown {
    return this.#lastError === null ? undefined : this.#lastCause;
  }

  /** Keeps one timer at the earliest deadline of a write still waiting. */
  #armTimer(at: number): void {
    if (this.#timer !== null && this.#timerAt <= at) return;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#timerAt = Infinity;
      this.#expire();
      const next = this.#inFlight?.writes.find((w) => !w.settled) ??
        this.#ready.find((w) => !w.settled) ?? this.#building[0];
      if (next && !this.#closedAndEmpty()) this.#armTimer(Math.max(next.deadline, Date.now() + 1));
    }, Math.max(0, at - Date.now()));
  }

  #closedAndEmpty(): boolean {
    return this.#closed && this.#pending === 0;
  }

  #notifyProgress(): void {
    this.#progress.notify();
  }
}

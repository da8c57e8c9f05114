/**
 * The sender: reads the oldest segment from its checkpoint, one batch at a time, hands the
 * batch to the {@link Provider}, and moves the checkpoint past it only once the provider
 * has acknowledged it and any records it refused for good are stored in `dead/`. The S file
 * is written before the next batch is sent, so a crash sends again at most the one batch
 * that was in flight. A failing send is retried with backoff and never skipped; a corrupt
 * frame is moved to `quarantine/` and counted; a delivered sealed segment is deleted.
 *
 * @module
 */

import { StorageError } from "../errors.ts";
import type { FileSystem } from "../fs/types.ts";
import type { Logger } from "../log.ts";
import type { DuplicateReason, Provider, ProviderRecord, SendContext } from "../provider/types.ts";
import type { InflightEntry, Position } from "../checkpoint/inflight.ts";
import {
  type Bytes,
  decodeFrame,
  FrameBuilder,
  PayloadError,
  recordBytes,
  type StoredRecord,
} from "../segment/format.ts";
import { type ReadBlock, ReadBlocks, SegmentCursor } from "../segment/reader.ts";
import { RecordPool } from "../binary/ranges.ts";
import type { TurnWait } from "./gate.ts";
import { SegmentFile } from "../segment/writer.ts";
import { validRejections } from "../provider/outcome.ts";
import { type LatencyStats, LatencyWindow } from "./latency.ts";
import { InflightClosedError, type Ledger, type SegmentView as Segment } from "./ledger.ts";
import { ProgressSignal } from "./progress.ts";
import { backoffMs, closeWithin, FailureLog, PROBE_INTERVAL_MS } from "./retry.ts";
import { DEAD_DIR } from "../layout.ts";

/**
 * `connecting` until `open()` succeeds; `retrying` while sends fail; `closed` after close.
 *
 * @example Alert while Kafka is unreachable
 * ```ts
 * if (buffer.stats().provider.state === "retrying") console.warn("Kafka is not accepting sends");
 * ```
 */
export type ProviderState = "connecting" | "ready" | "retrying" | "closed";

/** Settings and hooks of {@link Sender}. */
export interface SenderOptions {
  fs: FileSystem;
  dir: string;
  logger: Logger;
  ledger: Ledger;
  provider: Provider;
  batchMaxRecords: number;
  batchMaxBytes: number;
  maxRecordAgeMs: number;
  retryInitialMs: number;
  retryMaxMs: number;
  /** Seals the active segment (before quarantining it, or to free room for waiting writes). */
  requestRoll: () => Promise<void>;
  /** True while writes wait for room (`whenFull: "block"`). */
  writesWaiting: () => boolean;
  /** What the senders of the lanes share. @default nothing: a latency window and reads of its own */
  shared?: SendersShared;
  /** The in-flight file's entry found at open: the batch to send first, as it was. */
  restored?: InflightEntry | null;
}

/** What the senders of several lanes share. */
export interface SendersShared {
  /** Where delivery latency is noted. */
  latency: LatencyWindow;
  /**
   * Read memory, used again by every lane's sender (see {@link Sender}'s `#blocks`), so that
   * the free blocks kept do not grow with the lanes. Null when the provider keeps records
   * after a send (`releasesRecords` not set): every read then gets new memory.
   */
  blocks: ReadBlocks | null;
  /**
   * True while sends wait for a permit (`maxSendsInFlight`) or lanes for a turn: a sender
   * then reads no batch ahead, since it could not send it before the others anyway, and it
   * would take the permit the next lane's turn is for.
   */
  contended: () => boolean;
  /**
   * A turn to send (see ProviderGate): null when given at once, else a wait for one. A
   * sender takes one before it reads a batch, so that with more lanes than sends in flight,
   * the lanes waiting for their turn hold no batch in memory.
   */
  turn: () => TurnWait | null;
  /** The holder of a turn sends: its permit is taken. */
  turnUsed: () => void;
  /** The holder of a turn sends nothing after all: the turn goes to the next lane. */
  passTurn: () => void;
}

interface Batch {
  records: ProviderRecord[];
  expired: number;
  /** Where it starts and ends in its segment. */
  from: Position;
  next: Position;
  /** Records older than this were skipped as expired (null: no age limit). */
  ttlLimit: number | null;
  /** Read back from the in-flight file: the batch that was in flight when the last run stopped. */
  restored?: { identity: string | null };
  /** The read blocks its records lie in, held until it is delivered (see #blocks). */
  blocks: ReadBlock[];
}

/**
 * A batch's {@link SendContext}: its identity commits go to the in-flight file, with the
 * batch's place in its segment.
 */
class BatchContext implements SendContext {
  identity: string | null;
  readonly #write: (identity: string | null) => Promise<void>;
  readonly #count: (records: number, reason: DuplicateReason, detail: string) => void;

  constructor(
    readonly records: number,
    identity: string | null,
    write: (identity: string | null) => Promise<void>,
    count: (records: number, reason: DuplicateReason, detail: string) => void,
  ) {
    this.identity = identity;
    this.#write = write;
    this.#count = count;
  }

  /** Called once, after the first commit (or note) is stored. */
  onStored: (() => void) | null = null;

  /** Set once the batch was counted as `identity-not-stored`. */
  #unstoredCounted = false;

  async commit(identity: string): Promise<void> {
    await this.#store(identity);
    this.identity = identity;
    this.#stored();
  }

  /**
   * Writes the in-flight entry. A disk that refuses it (full, failing) must not stop
   * delivery, which is what frees it: the batch goes on with its identity in memory only,
   * counted once. Only a closing buffer stops the send.
   */
  async #store(identity: string | null): Promise<void> {
    try {
      await this.#write(identity);
    } catch (e) {
      if (e instanceof InflightClosedError) throw e;
      if (!this.#unstoredCounted) {
        this.#unstoredCounted = true;
        this.#count(
          this.records,
          "identity-not-stored",
          `cannot write the in-flight file: ${e instanceof Error ? e.message : String(e)}`,
        );
      }
    }
  }

  #stored(): void {
    const f = this.onStored;
    this.onStored = null;
    f?.();
  }

  /** Notes the batch as in flight without an identity (a provider that keeps none). */
  async noteInFlight(): Promise<void> {
    await this.#store(null);
    this.#stored();
  }

  maybeDuplicated(records: number, reason: DuplicateReason, detail: string): void {
    this.#count(records, reason, detail);
  }
}

/** See the module doc. */
export class Sender {
  readonly #o: SenderOptions;
  readonly #log: Logger;
  readonly #ledger: Ledger;
  #state: ProviderState = "connecting";
  /** Set by close(): a send still running then changes nothing when it ends. */
  #closed = false;
  #lastError: string | null = null;
  #stopping = false;
  #stop: () => void = () => {};
  readonly #stopSignal: Promise<void> = new Promise((r) => (this.#stop = r));
  #wake: () => void = () => {};
  #wakeSignal: Promise<void> = Promise.resolve();
  #done: Promise<void> = Promise.resolve();
  readonly #progress = new ProgressSignal();
  #cursor: { seg: Segment; cursor: SegmentCursor } | null = null;
  /** The last frame decoded, kept while a batch boundary falls inside it. */
  #frameCache: {
    seg: Segment;
    offset: number;
    end: number;
    records: StoredRecord[];
    block: ReadBlock | null;
  } | null = null;
  /**
   * Read memory used again, when the provider keeps nothing of a batch's records once its
   * send settles (`releasesRecords`): each block is held by the cursor while it reads into
   * it, by the frame cache, and by every batch with records in it, until that batch is
   * delivered. Null: every read gets new memory.
   */
  readonly #blocks: ReadBlocks | null;
  /**
   * The records of delivered batches, decoded into again (see RecordPool); null, like
   * #blocks, when the provider may keep records after a send.
   */
  readonly #records: RecordPool | null;
  #dead: SegmentFile | null = null;
  /** The next batch, read while the current one is with the provider. */
  #prefetched: {
    seg: Segment;
    offset: number;
    skip: number;
    read: Promise<Batch | null>;
  } | null = null;
  readonly #deadBuilder = new FrameBuilder(1 << 16);
  readonly #latency: LatencyWindow;
  /** The batch that was in flight when the last run stopped, until it is sent (or gone). */
  #restored: InflightEntry | null;
  /** Let go for a turn (SendersShared.turn) and not yet sending: handed on if it sends nothing. */
  #turnHeld = false;

  constructor(o: SenderOptions) {
    this.#o = o;
    this.#log = o.logger;
    this.#ledger = o.ledger;
    this.#latency = o.shared?.latency ?? new LatencyWindow();
    this.#restored = o.restored ?? null;
    this.#blocks = o.provider.releasesRecords !== true
      ? null
      : o.shared
      ? o.shared.blocks
      : new ReadBlocks();
    this.#records = this.#blocks === null ? null : new RecordPool();
    this.#resetWake();
  }

  /** The provider's state and the last send error. */
  get provider(): { name: string; state: ProviderState; lastError: string | null } {
    return { name: this.#o.provider.name, state: this.#state, lastError: this.#lastError };
  }

  /** Starts delivering in the background. */
  start(): void {
    this.#done = this.#loop().catch((e) => {
      this.#log.error("sender stopped on an unexpected error", { error: e });
    });
  }

  /** Wakes the sender: new records, a sealed segment, a deletion. */
  wake(): void {
    this.#wake();
  }

  /** Resolves at the next progress (a batch acknowledged, a segment deleted) or after `ms`. */
  progress(ms: number): Promise<void> {
    return this.#progress.wait(ms);
  }

  /**
   * Stops after the batch in flight; resolves true once stopped, false if that took longer
   * than `timeoutMs` (the batch is then sent again after the next open).
   */
  async stop(timeoutMs: number): Promise<boolean> {
    this.#stopping = true;
    this.#stop();
    this.#wake();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((
      r,
    ) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
    const outcome = await Promise.race([this.#done, timeout]);
    clearTimeout(timer);
    return outcome !== "timeout";
  }

  /** Releases files and closes the provider (waiting at most `timeoutMs` for it). */
  async close(timeoutMs: number): Promise<void> {
    this.#closed = true;
    await this.#prefetched?.read;
    this.#prefetched = null;
    await this.#cursor?.cursor.close().catch(() => {});
    this.#cursor = null;
    await this.#dead?.close().catch(() => {});
    this.#dead = null;
    this.#dropFrameCache();
    // A pool the lanes share is closed by their owner, once every sender has closed.
    if (!this.#o.shared) this.#blocks?.close();
    this.#records?.close();
    await closeWithin(this.#o.provider, timeoutMs, this.#log);
    this.#state = "closed";
  }

  /** Delivery latency quantiles. */
  latency(): LatencyStats {
    return this.#latency.stats();
  }

  #resetWake(): void {
    this.#wakeSignal = new Promise((r) => (this.#wake = r));
  }

  /**
   * Waits for something to do, holding no read memory meanwhile: every record read was
   * delivered, so the last frame decoded and the read window are let go of (with lanes, an
   * idle lane's would otherwise stay, a block each).
   */
  async #idle(): Promise<void> {
    this.#passTurn();
    // A batch read ahead from a segment gone since is of no use; its read finishes first (it
    // shares the cursor and the frame cache), and its blocks go to the garbage collector.
    const ahead = this.#prefetched;
    if (ahead) {
      this.#prefetched = null;
      await ahead.read;
    }
    this.#dropFrameCache();
    this.#cursor?.cursor.letGo();
    await this.#idleWait();
  }

  /** Hands on the turn this sender was let go for, if it has not sent with it. */
  #passTurn(): void {
    if (!this.#turnHeld) return;
    this.#turnHeld = false;
    this.#o.shared?.passTurn();
  }

  async #idleWait(): Promise<void> {
    const signal = this.#wakeSignal;
    await signal;
    if (signal === this.#wakeSignal) this.#resetWake();
  }

  #notifyProgress(): void {
    this.#progress.notify();
  }

  async #loop(): Promise<void> {
    if ((await this.#retrying("open", () => this.#o.provider.open())) === false) return;
    this.#state = "ready";
    let failures = 0;
    while (!this.#stopping) {
      try {
        await this.#step();
        failures = 0;
        this.#passTurn();
      } catch (e) {
        this.#passTurn();
        // A storage error while reading, deleting or quarantining: log, back off, try again.
        // The checkpoint has not moved, so nothing is skipped.
        failures++;
        this.#log.error("sender: cannot read the backlog; retrying", {
          segment: this.#ledger.segments[0]?.name ?? null,
          error: e,
          attempt: failures,
        });
        await this.#sleep(this.#backoff(failures));
      }
    }
  }

  /** One step: deliver one batch, delete one delivered segment, or wait. */
  async #step(): Promise<void> {
    const seg = this.#ledger.segments[0];
    if (!seg) {
      await this.#idle();
      return;
    }
    const batch = await this.#takeRestored(seg) ?? await this.#takePrefetched(seg) ??
      await this.#readNext(seg);
    if (batch === null) return; // the segment changed under us (quarantined, dropped)
    if (batch.records.length === 0 && batch.expired === 0) {
      if (seg.sealed && batch.next.offset >= seg.size) {
        if (seg.checkpoint.delivered !== seg.records) this.#countMismatch(seg);
        await this.#ledger.delete(seg);
        this.#notifyProgress();
      } else if (
        !seg.sealed && this.#o.writesWaiting() && seg.checkpoint.delivered >= seg.records
      ) {
        // Writes wait for room and all of it is in the delivered active segment: seal it so
        // that it can be deleted.
        await this.#o.requestRoll();
      } else {
        await this.#idle();
      }
      return;
    }
    let rejected: { index: number; reason: string }[] = [];
    if (batch.records.length > 0) {
      const context = this.#contextOf(seg, batch);
      const provider = this.#o.provider;
      let attempts = 0;
      const sent = this.#retrying(
        "send",
        async () => {
          // A batch sent again without an identity may arrive twice: counted. (Without one,
          // the batch is noted in flight before it leaves, so that a crash's next run counts
          // it too.)
          const r = batch.restored;
          if (attempts === 0 && r && (r.identity === null || !provider.keepsIdentity)) {
            context.maybeDuplicated(
              batch.records.length,
              "at-least-once-client",
              "in flight when the last run stopped, and sent without an identity",
            );
          }
          if (!provider.keepsIdentity) {
            if (attempts === 0 && !r) await context.noteInFlight();
            if (attempts > 0) {
              context.maybeDuplicated(
                batch.records.length,
                "at-least-once-client",
                "sent again after a failed send, without an identity",
              );
            }
          }
          attempts++;
          // The send takes the permit its turn kept at once (see ProviderGate).
          if (this.#turnHeld) {
            this.#turnHeld = false;
            this.#o.shared!.turnUsed();
          }
          return await provider.send(batch.records, context);
        },
        batch.records.length,
        () => seg.gone, // pruned during an outage: its records are counted as dropped
        () => topicsOf(batch.records),
      );
      // While the provider works, read and decode the next batch (pipelining: the send of
      // one batch overlaps the read of the next; sends stay one at a time, in order). It
      // starts once the batch's identity is stored, so that its decoding does not hold up
      // the request between that write and the network.
      // (A send that stores nothing, failing first, leaves the next batch to be read afresh;
      // a restored batch keeps the identity it has, and reads ahead at once.)
      // (Not while other lanes wait for a send permit or a turn: see SendersShared.contended.)
      if (batch.restored) this.#prefetch(seg, batch.next);
      else context.onStored = () => this.#prefetch(seg, batch.next);
      const outcome = await sent;
      // Stopping (the batch is sent again after the next open) or the segment is gone.
      if (outcome === false) return;
      // The buffer closed while this send ran past closeTimeoutMs: it is sent again after
      // the next open; nothing more is written now.
      if (this.#closed) return;
      rejected = validRejections(outcome, batch.records.length);
    }
    this.#latency.add(batch.records);
    // Refused records must be in dead/ before the checkpoint passes them; when that cannot
    // be done (the disk fails, or the buffer closes first), the checkpoint stays and the
    // batch is sent again after the next open.
    if (rejected.length > 0 && !(await this.#deadLetter(seg, batch.records, rejected))) return;
    // Counted as the checkpoint moves, so that the counters and the backlog always add up.
    await this.#ledger.delivered(seg, {
      sent: batch.records.length,
      rejected: rejected.length,
      expired: batch.expired,
      next: batch.next,
    });
    // Delivered: nothing reads these records again. (On the other ways out above, the batch
    // keeps its blocks, and they go to the garbage collector.)
    for (const b of batch.blocks) this.#blocks!.release(b);
    this.#records?.give(batch.records);
    this.#notifyProgress();
  }

  /**
   * A sealed segment read to its end held another number of records than the ledger had
   * for it (from its footer, or from a walk of its frame headers at open). What was read
   * was delivered; the difference is logged and counted.
   */
  #countMismatch(seg: Segment): void {
    this.#ledger.footerDisagreed();
    this.#log.warn(
      "a segment held another number of records than recorded at open (its footer, or the walk)",
      {
        segment: seg.name,
        read: seg.checkpoint.delivered,
        expected: seg.records,
      },
    );
  }

  /**
   * The batch that was in flight when the last run stopped, read again as it was (the same
   * records, whatever the batch limits are now), when `seg` is its segment and its checkpoint
   * is still where the batch starts; otherwise null (it was acknowledged, or its segment is
   * gone), and the entry is dropped once `seg` is past it.
   */
  async #takeRestored(seg: Segment): Promise<Batch | null> {
    const r = this.#restored;
    if (r === null) return null;
    const c = seg.checkpoint;
    if (r.segment !== seg.name || c.offset !== r.from.offset || c.skip !== r.from.skip) {
      if (r.segment <= seg.name) this.#restored = null;
      return null;
    }
    this.#restored = null;
    // A read ahead still running shares the cursor: it finishes first (see #takePrefetched).
    await this.#prefetched?.read;
    const batch = await this.#readBatch(seg, r.from, false, {
      next: r.next,
      ttlLimit: r.ttlLimit,
    });
    if (batch === null) return null;
    if (
      batch.records.length !== r.records || batch.next.offset !== r.next.offset ||
      batch.next.skip !== r.next.skip
    ) {
      this.#log.warn(
        "the in-flight file names records this segment does not hold; sending afresh",
        { segment: seg.name, from: r.from, next: r.next, records: r.records },
      );
      return null;
    }
    this.#log.info("sending first the batch that was in flight when the last run stopped", {
      segment: seg.name,
      records: r.records,
      identity: r.identity !== null,
    });
    return { ...batch, restored: { identity: r.identity } };
  }

  /** The context `seg`'s `batch` is sent with (see {@link SendContext}). */
  #contextOf(seg: Segment, batch: Batch): BatchContext {
    const provider = this.#o.provider;
    return new BatchContext(
      batch.records.length,
      batch.restored?.identity ?? null,
      (identity) =>
        this.#ledger.inflight({
          segment: seg.name,
          from: batch.from,
          next: batch.next,
          ttlLimit: batch.ttlLimit,
          records: batch.records.length,
          at: Date.now(),
          provider: provider.name,
          identity,
        }),
      (records, reason, detail) => {
        this.#ledger.maybeDuplicated(records, reason);
        this.#log.warn("records may reach the destination twice", {
          segment: seg.name,
          records,
          reason,
          detail,
        });
      },
    );
  }

  /**
   * Reads the batch at `seg`'s checkpoint; with lanes, once it has a turn to send (see
   * SendersShared.turn), holding no read memory while it waits. Null when the sender stops
   * meanwhile.
   */
  async #readNext(seg: Segment): Promise<Batch | null> {
    const shared = this.#o.shared;
    if (shared && seg.checkpoint.offset < seg.size) {
      const wait = shared.turn();
      if (wait) {
        this.#dropFrameCache();
        this.#cursor?.cursor.letGo();
        await Promise.race([wait.given, this.#stopSignal]);
        if (this.#stopping) {
          wait.cancel();
          return null;
        }
      }
      this.#turnHeld = true;
    }
    return await this.#readBatch(seg, seg.checkpoint);
  }

  /**
   * Starts reading the batch at `from` in `seg` (only good frames; see #takePrefetched),
   * unless sends of other lanes wait for a permit.
   */
  #prefetch(seg: Segment, from: { offset: number; skip: number }): void {
    if (this.#o.shared?.contended()) return;
    const read = this.#readBatch(seg, from, true).catch(() => null);
    this.#prefetched = { seg, offset: from.offset, skip: from.skip, read };
  }

  /**
   * The batch read ahead, if it starts where `seg`'s checkpoint now is and holds records;
   * otherwise null, and the caller reads afresh (which also handles what a read ahead
   * leaves alone: corrupt frames, the end of a segment).
   */
  async #takePrefetched(seg: Segment): Promise<Batch | null> {
    const p = this.#prefetched;
    if (!p) return null;
    this.#prefetched = null;
    // Always let the read ahead finish: it shares the cursor with the read that follows.
    const batch = await p.read;
    if (p.seg !== seg) return null;
    const c = seg.checkpoint;
    if (!batch || seg.gone || p.offset !== c.offset || p.skip !== c.skip) return null;
    if (batch.records.length === 0 && batch.expired === 0) return null;
    return batch;
  }

  /**
   * Reads up to one batch from `seg` at `from`; or, `exactly`, the records up to `next`, with
   * the age limit given (a batch read again as it was). Returns null when the segment was
   * quarantined or went away while reading, or, reading ahead, when a frame is not good.
   */
  async #readBatch(
    seg: Segment,
    from: Position,
    ahead = false,
    exactly?: { next: Position; ttlLimit: number | null },
  ): Promise<Batch | null> {
    const o = this.#o;
    const records: ProviderRecord[] = [];
    let bytes = 0;
    let expired = 0;
    let { offset, skip } = from;
    const ttl = exactly
      ? exactly.ttlLimit
      : o.maxRecordAgeMs > 0
      ? Date.now() - o.maxRecordAgeMs
      : null;
    const ttlLimit = ttl ?? -Infinity;
    const until = exactly?.next;
    const cursor = await this.#cursorOf(seg, ahead);
    if (cursor === null) return null;
    const blocks: ReadBlock[] = [];
    while (
      until
        ? offset < until.offset || (offset === until.offset && skip < until.skip)
        : records.length < o.batchMaxRecords && bytes < o.batchMaxBytes
    ) {
      const frame = await this.#frame(seg, cursor, offset, ahead);
      if (frame === "gone") return null;
      if (frame === "end") break;
      if (typeof frame === "string") {
        if (records.length > 0 || expired > 0) break; // deliver what is good first
        if (ahead) return null;
        await this.#quarantine(seg, offset, frame);
        return null;
      }
      const taken = records.length;
      let i = skip;
      for (; i < frame.records.length; i++) {
        // (Inline, not a closure: the loop's counters stay in registers.)
        if (until !== undefined) {
          if (offset === until.offset && i === until.skip) break;
        } else if (
          records.length >= o.batchMaxRecords || (bytes >= o.batchMaxBytes && records.length > 0)
        ) break;
        const r = frame.records[i];
        if (r.timestamp < ttlLimit) {
          expired++;
          continue;
        }
        records.push(r);
        bytes += recordBytes(r);
      }
      // Held before the next read can let the block go (see #blocks).
      if (frame.block && records.length > taken && !blocks.includes(frame.block)) {
        this.#blocks!.hold(frame.block);
        blocks.push(frame.block);
      }
      if (i < frame.records.length) {
        skip = i;
        break;
      }
      offset = frame.end;
      skip = 0;
    }
    return { records, expired, from: { ...from }, next: { offset, skip }, ttlLimit: ttl, blocks };
  }

  /** The cursor reading `seg` (opened on first use), or null when `seg` went away meanwhile. */
  async #cursorOf(seg: Segment, ahead: boolean): Promise<SegmentCursor | null> {
    if (this.#cursor?.seg === seg) return this.#cursor.cursor;
    await this.#cursor?.cursor.close().catch(() => {});
    this.#cursor = null;
    try {
      const fh = await this.#o.fs.open(`${this.#o.dir}/${seg.name}`, "read");
      this.#cursor = { seg, cursor: new SegmentCursor(fh, undefined, this.#blocks) };
      return this.#cursor.cursor;
    } catch (e) {
      if (seg.gone) return null;
      throw await this.#readFailed(seg, e, ahead);
    }
  }

  /**
   * The records of the frame at `offset` of `seg` and where it ends (the last one decoded is
   * kept, while a batch boundary falls inside it); "end" when no whole frame is there yet;
   * "gone" when `seg` went away; or why the frame is corrupt (a bad frame, or one whose
   * checksum matched but whose records do not parse: corruption too, not retried forever).
   */
  async #frame(
    seg: Segment,
    cursor: SegmentCursor,
    offset: number,
    ahead: boolean,
  ): Promise<
    { records: StoredRecord[]; end: number; block: ReadBlock | null } | "end" | "gone" | string
  > {
    const cached = this.#frameCache;
    if (cached && cached.seg === seg && cached.offset === offset) return cached;
    let view;
    try {
      view = await cursor.frameAt(offset, seg.size);
    } catch (e) {
      if (seg.gone) return "gone";
      throw await this.#readFailed(seg, e, ahead);
    }
    if (seg.gone) return "gone";
    if (view === null) return "end";
    if (typeof view === "string") return view;
    const records: StoredRecord[] = [];
    try {
      decodeFrame(view.buf, view.at, view.header, records, true, this.#records ?? undefined);
    } catch (e) {
      if (!(e instanceof PayloadError)) throw e;
      return `undecodable frame: ${e.message}`;
    }
    if (view.block) this.#blocks!.hold(view.block);
    this.#dropFrameCache();
    this.#frameCache = { seg, offset, end: view.end, records, block: view.block };
    return this.#frameCache;
  }

  /** Forgets the last frame decoded, and lets go of its block. */
  #dropFrameCache(): void {
    const block = this.#frameCache?.block;
    if (block) this.#blocks!.release(block);
    this.#frameCache = null;
  }

  /**
   * A read of `seg` failed: its cursor is dropped, so that the next attempt opens the file
   * afresh, and the failure comes back as a StorageError naming the file, counted unless it
   * was a read ahead (the read that follows it makes the same read, and counts a failure).
   */
  async #readFailed(seg: Segment, e: unknown, ahead: boolean): Promise<StorageError> {
    if (this.#cursor?.seg === seg) {
      await this.#cursor.cursor.close().catch(() => {});
      this.#cursor = null;
    }
    this.#dropFrameCache();
    if (!ahead) this.#ledger.storageFailed();
    return new StorageError("read segment", `${this.#o.dir}/${seg.name}`, e);
  }

  /** Seals `seg` if it is active, then moves `seg[offset..]` to quarantine (see the ledger). */
  async #quarantine(seg: Segment, offset: number, reason: string): Promise<void> {
    if (!seg.sealed) await this.#o.requestRoll();
    await this.#cursor?.cursor.close().catch(() => {});
    this.#cursor = null;
    this.#dropFrameCache();
    await this.#ledger.quarantine(seg, offset, reason);
  }

  /**
   * Appends refused records, with the reason in a header, to a segment in `dead/`, fsynced.
   * A disk error is retried with backoff (counted as a storage error, not a send retry);
   * once the buffer is closing, one more attempt is made. Resolves true once stored.
   */
  async #deadLetter(
    seg: Segment,
    batch: readonly ProviderRecord[],
    rejected: { index: number; reason: string }[],
  ): Promise<boolean> {
    const b = this.#deadBuilder;
    b.reset();
    for (const { index, reason } of rejected) {
      const r = batch[index];
      const headers: Array<[string, Bytes]> = [
        ...(r.headers ?? []).map(([k, v]): [string, Bytes] => [k, v]),
        ["messagebuffer-error", reason],
        ["messagebuffer-segment", seg.name],
      ];
      b.append(r.topic, r.value, r.key, headers, r.timestamp);
    }
    const frame = b.finish();
    const deadDir = `${this.#o.dir}/${DEAD_DIR}`;
    for (let attempt = 1;; attempt++) {
      try {
        this.#dead ??= await SegmentFile.create(this.#o.fs, deadDir, 0, true);
        await this.#dead.append(frame, true);
        break;
      } catch (e) {
        this.#ledger.storageFailed();
        if (this.#dead?.broken) {
          await this.#dead.close().catch(() => {});
          this.#dead = null;
        }
        const giveUp = this.#stopping || seg.gone;
        this.#log.error(
          giveUp
            ? "cannot store refused records in dead letters; they stay in the buffer and are sent again after the next open"
            : "cannot store refused records in dead letters; retrying",
          { segment: seg.name, records: rejected.length, attempt, error: e },
        );
        if (giveUp) return false;
        await this.#sleep(this.#backoff(attempt));
      }
    }
    for (const { index, reason } of rejected) {
      this.#log.warn("provider rejected a record for good; moved to dead letters", {
        topic: batch[index].topic,
        segment: seg.name,
        reason,
      });
    }
    return true;
  }

  /**
   * Runs a provider call until it succeeds, waiting between failures: the first wait is
   * `retryInitialMs`, doubling up to `retryMaxMs`, each drawn from [wait/2, wait], and cut
   * short when the provider's probe of `topics` changes (see #backoffWait). Returns false if
   * the buffer started closing or `abandon()` became true instead.
   */
  async #retrying<T>(
    what: string,
    fn: () => Promise<T>,
    records = 0,
    abandon: () => boolean = () => false,
    topics: () => readonly string[] = () => [],
  ): Promise<T | false> {
    const failures = new FailureLog(this.#log, what);
    for (let attempt = 0;; attempt++) {
      if (this.#stopping || abandon()) return false;
      try {
        const out = await fn();
        failures.succeeded({ provider: this.#o.provider.name });
        if (this.#state === "retrying") this.#state = "ready";
        return out;
      } catch (e) {
        this.#lastError = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
        if (this.#state !== "connecting") this.#state = "retrying";
        this.#ledger.sendFailed(records);
        const ms = this.#backoff(attempt + 1);
        failures.failed(this.#lastError, { provider: this.#o.provider.name, retryInMs: ms });
        await this.#backoffWait(ms, topics);
      }
    }
  }

  /**
   * Waits out a backoff of `ms`, or less: when the provider can be probed, it is asked at
   * once and then every {@link PROBE_INTERVAL_MS} whether it answers and in what state
   * (for Kafka: the live brokers, and the leaders and in-sync replicas of `topics`). When
   * the answer differs from the first (a cluster back from an outage, a leader elected, a
   * replica back in sync), the wait ends and the send is tried at once; a provider that
   * answers the same as when the send failed keeps the whole backoff.
   */
  async #backoffWait(ms: number, topicsOf: () => readonly string[]): Promise<void> {
    const provider = this.#o.provider;
    if (!provider.probe || ms <= PROBE_INTERVAL_MS) return this.#sleep(ms);
    const deadline = Date.now() + ms;
    const topics = topicsOf();
    const ask = () => provider.probe!(topics).catch(() => "no answer");
    const first = await ask();
    while (!this.#stopping) {
      const left = deadline - Date.now();
      if (left <= 0) return;
      await this.#sleep(Math.min(PROBE_INTERVAL_MS, left));
      if (this.#stopping || Date.now() >= deadline) return;
      const now = await ask();
      if (now !== first) {
        this.#log.debug("the provider's state changed during the backoff; sending now", {
          provider: provider.name,
          before: first,
          now,
        });
        return;
      }
    }
  }

  /** The wait after the `failures`-th failure in a row, with jitter. */
  #backoff(failures: number): number {
    return backoffMs(failures, this.#o.retryInitialMs, this.#o.retryMaxMs);
  }

  /** Sleeps `ms`, or less if the sender is stopping. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.#stopSignal.then(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}

/** The topics of `records`, each once. */
function topicsOf(records: readonly ProviderRecord[]): string[] {
  const topics = new Set<string>();
  let last: string | undefined;
  for (const r of records) {
    if (r.topic === last) continue; // (a batch's records mostly share their topic)
    topics.add(last = r.topic);
  }
  return [...topics];
}

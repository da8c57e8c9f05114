// A model-based test of the buffer, in the manner of Vector's disk buffer model tests
// (lib/vector-buffers/src/variants/disk_v2/tests/model/): fast-check draws random sequences
// of actions (writes, flushes, power losses, restarts, broker outages, disk faults), runs
// them against the real buffer on the in-memory filesystem, and after every step compares
// what the buffer did with a small model of what it may do.
//
// The model follows each record written: pending (write not settled), acked (write resolved),
// failed (write rejected with StorageError) or unknown (pending when the power went out).
// An acked record is durable once the fsync policy promises it survives a power loss:
//   - "always": when its write resolves;
//   - "interval": after flush() and the next periodic fsync, or after a clean close;
//   - "never": never (README: "leave it to the OS").
// An acked record not durable and not delivered when the power goes out may be lost in that
// crash; the model learns whether it was only when the buffer has drained.
//
// What is checked (README, "Library" and "Delivery guarantees"):
//   - only written records reach the provider, never one whose write failed; poison ones
//     (which the provider refuses for good) only as refusals (dead letters);
//   - per topic, records arrive (first arrivals) in write order;
//   - no record arrives twice within one open; across opens only if a crash came between;
//   - per open, the counters add up: recovered backlog + written = delivered + dead-lettered
//     + dropped + expired + quarantined + backlog; written and writeErrors match the
//     model's acked and failed writes; nothing is dropped or expired here;
//   - the backlog holds at least every acked record not delivered and not possibly lost;
//     after a clean close and reopen it is exactly what it was at close;
//   - once drained, every acked record was delivered unless a crash may have lost it, and
//     what a crash lost is, per topic, a suffix of what was written before it: no gaps.
//
// Two allowances, each narrow: records may repeat after a clean restart when an injected
// fault failed an S file or dead-letter write that close() could not write again either
// (the batch is then sent again, as docs/delivery.md says); and one known engine bug, with a
// skipped test that names it in crash_test.ts ("known engine bugs"): under "interval", lost
// durability and gaps once a segment was sealed after a failed fsync. MB_MODEL_RUNS sets the
// runs per policy; MB_MODEL_DEBUG prints what the runs did.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import fc from "fast-check";
import {
  BufferFullError,
  type Counters,
  type FsyncPolicy,
  MessageBuffer,
  type MessageBufferOptions,
  silentLogger,
  StorageError,
} from "../../mod.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import { RecordingFileSystem, RecordingProvider } from "../_helpers.ts";

const DIR = "/buf";
const FSYNC_INTERVAL_MS = 2;
const BATCH = 5;
const TOPICS = ["a", "b"] as const;

/** A deterministic PRNG for torn tails, so that a failing run replays. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Lets every timer that is due, and the work it starts, run. */
const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

type Status = "pending" | "acked" | "failed" | "refused" | "unknown";

/**
 * The size cap: far away, or small (2 KiB over 1 KiB segments) with the oldest segments
 * dropped or new writes refused (BufferFullError) when it is reached.
 */
type Cap = "far" | "drop-oldest" | "reject";

interface Rec {
  value: string;
  topic: string;
  /** Write order over all records. */
  index: number;
  /** The provider rejects it for good: it goes to dead letters, never to `received`. */
  poison: boolean;
  /** The open it was written in. */
  epoch: number;
  status: Status;
  /** The fsync policy promises it survives a power loss. */
  durable: boolean;
  /** Acked, not durable and not delivered when crash number `mayBeLostAt` happened. */
  mayBeLostAt?: number;
  /** Found missing once the buffer drained: it will not be delivered any more. */
  gone?: boolean;
}

/** One `MessageBuffer.open` until its close or crash. */
interface Epoch {
  n: number;
  mem: MemoryFileSystem;
  fs: RecordingFileSystem;
  provider: RecordingProvider;
  buffer: MessageBuffer;
  /** Backlog found at open. */
  recovered: number;
  /** How many of the provider's received and rejected records count (a crash cuts them). */
  cutoff: { received: number; rejected: number };
  end: "open" | "closed" | "crashed";
  /** Counters when it ended. */
  counters?: Counters;
}

interface WriteItem {
  topic: string;
  poison: boolean;
  pad: number;
}

interface Delivery {
  value: string;
  epoch: number;
  /** Rejected by the provider (dead-lettered) rather than accepted. */
  dead: boolean;
}

/** The real buffer and the model of what it may do, side by side. */
class World {
  readonly policy: FsyncPolicy;
  readonly cap: Cap;
  recs: Rec[] = [];
  byValue = new Map<string, Rec>();
  epochs: Epoch[] = [];
  /** For crash c (0-based): the number of records written before it. */
  crashes: number[] = [];
  providerDown = false;
  diskFull = false;
  pending = new Set<Promise<unknown>>();
  /** Write rejections that are not StorageError (none are expected). */
  unexpected: string[] = [];
  /**
   * Crash number from which on a segment's fsync had failed with nothing retrying it (see
   * the skipped "interval" test in crash_test.ts): from then on the model promises nothing
   * more about durability or gaps.
   */
  unsyncedSince = Infinity;
  /** Acked records found gone that no crash can have lost (only the cap may drop them). */
  missing = 0;

  private constructor(policy: FsyncPolicy, cap: Cap) {
    this.policy = policy;
    this.cap = cap;
  }

  static async create(policy: FsyncPolicy, cap: Cap, providerDown: boolean): Promise<World> {
    const w = new World(policy, cap);
    w.providerDown = providerDown;
    await w.open(new MemoryFileSystem());
    return w;
  }

  get current(): Epoch {
    return this.epochs[this.epochs.length - 1];
  }

  options(fs: RecordingFileSystem, provider: RecordingProvider): MessageBufferOptions {
    return {
      dir: DIR,
      provider,
      fs,
      logger: silentLogger,
      fsync: this.policy,
      fsyncIntervalMs: FSYNC_INTERVAL_MS,
      segmentMaxBytes: 1024,
      maxBufferBytes: this.cap === "far" ? 1 << 22 : 2048,
      whenFull: this.cap === "reject" ? "reject" : "drop-oldest",
      batchMaxRecords: BATCH,
      retryInitialMs: 1,
      retryMaxMs: 4,
      closeTimeoutMs: 50,
    };
  }

  async open(mem: MemoryFileSystem): Promise<void> {
    const fs = new RecordingFileSystem(mem);
    const provider = new RecordingProvider();
    provider.down = this.providerDown;
    provider.rejectIf = (r) => r.value[0] === 0x50 /* "P" */ ? "poison" : null;
    const buffer = await MessageBuffer.open(this.options(fs, provider));
    this.epochs.push({
      n: this.epochs.length,
      mem,
      fs,
      provider,
      buffer,
      recovered: buffer.stats().backlog.records,
      cutoff: { received: Infinity, rejected: Infinity },
      end: "open",
    });
  }

  /** Issues writes in order without waiting for them; returns their outcomes. */
  write(items: WriteItem[]): Promise<unknown>[] {
    const epoch = this.current;
    return items.map((item) => {
      const index = this.recs.length;
      const value = `${item.poison ? "P" : "v"}${index}.${"x".repeat(item.pad)}`;
      const rec: Rec = {
        value,
        topic: item.topic,
        index,
        poison: item.poison,
        epoch: epoch.n,
        status: "pending",
        durable: false,
      };
      this.recs.push(rec);
      this.byValue.set(value, rec);
      const p = epoch.buffer.write(item.topic, value).then(
        () => {
          if (epoch.end === "crashed") return; // settled after the power went out: ignored
          rec.status = "acked";
          if (this.policy === "always") rec.durable = true;
        },
        (e) => {
          if (epoch.end === "crashed") return;
          if (e instanceof StorageError) rec.status = "failed";
          else if (e instanceof BufferFullError && this.cap === "reject") rec.status = "refused";
          else this.unexpected.push(`${value.slice(0, 8)}: ${e}`);
        },
      );
      this.pending.add(p);
      p.finally(() => this.pending.delete(p));
      return p;
    });
  }

  async settle(): Promise<void> {
    await Promise.allSettled([...this.pending]);
  }

  /** Every record the providers answered, epoch by epoch, up to a crash's cutoff. */
  deliveries(): Delivery[] {
    const out: Delivery[] = [];
    for (const e of this.epochs) {
      for (const dead of [false, true]) {
        const vals = dead ? e.provider.rejectedValues() : e.provider.values();
        const n = Math.min(vals.length, dead ? e.cutoff.rejected : e.cutoff.received);
        for (let i = 0; i < n; i++) out.push({ value: vals[i], epoch: e.n, dead });
      }
    }
    return out;
  }

  /** Records the cap dropped, over all opens. */
  dropped(): number {
    return this.epochs.reduce((n, e) => n + (e.counters ?? e.buffer.stats().counters).dropped, 0);
  }

  /** Values the providers accepted or dead-lettered. */
  answered(): Set<string> {
    return new Set(this.deliveries().map((d) => d.value));
  }

  /**
   * Under "interval", a segment whose fsync failed is never fsynced again: the engine
   * retires it at once (README, "When fsync fails"), and what it held past its last good
   * fsync may be lost to a power loss until it is delivered.
   */
  noteUnsynced(): void {
    if (this.policy !== "interval" || this.unsyncedSince !== Infinity) return;
    const isSegment = (path: string) => path.endsWith(".seg") && !path.includes("/dead/");
    for (const e of this.epochs) {
      const failedAt = new Map<string, number>();
      e.fs.calls.forEach((c, i) => {
        if (!isSegment(c.path) || c.error === CRASHED) return;
        if (c.op === "sync") {
          if (c.error === null) failedAt.delete(c.path);
          else failedAt.set(c.path, i);
        }
        if (c.op === "remove" && c.error === null) failedAt.delete(c.path);
      });
      if (failedAt.size > 0) {
        this.unsyncedSince = this.crashes.length;
        return;
      }
    }
  }

  /** Marks acked records durable where the policy promises it (after an fsync). */
  fsynced(): void {
    this.noteUnsynced();
    if (this.policy === "never" || this.unsyncedSince !== Infinity) return;
    for (const r of this.recs) {
      if (r.status === "acked" && r.mayBeLostAt === undefined) r.durable = true;
    }
  }

  async crash(torn: boolean, seed: number): Promise<void> {
    this.noteUnsynced();
    const e = this.current;
    // The power goes out: what the provider answered by now counts; nothing after it does.
    e.cutoff = { received: e.provider.received.length, rejected: e.provider.rejected.length };
    e.provider.down = true;
    e.counters = e.buffer.stats().counters;
    const after = e.mem.crash({ torn, random: prng(seed) });
    e.end = "crashed";
    // The dead process writes nothing more (its next mutating operation fails, and every
    // one after it); close it so that its timers and sender stop.
    e.mem.crashAfter(1);
    await e.buffer.close().catch(() => {});
    const answered = this.answered();
    const c = this.crashes.length;
    this.crashes.push(this.recs.length);
    for (const r of this.recs) {
      if (r.status === "pending") r.status = "unknown";
      if (
        r.status === "acked" && !r.durable && !answered.has(r.value) &&
        r.mayBeLostAt === undefined
      ) r.mayBeLostAt = c;
    }
    this.diskFull = false;
    await this.open(after);
  }

  async closeAndReopen(): Promise<void> {
    const e = this.current;
    // close() reports a failed fsync of its last seal (the records stay in the segment);
    // any other failure of close() is a bug.
    await e.buffer.close().catch((err) => {
      assert.ok(err instanceof StorageError, `close() failed: ${err}`);
      assert.ok(
        e.fs.failures().some((f) => f.op === "sync" && f.error !== CRASHED),
        `close() reported ${err.message} without a failed fsync`,
      );
    });
    await this.settle();
    e.end = "closed";
    const stats = e.buffer.stats();
    e.counters = stats.counters;
    this.checkCounters(e, stats.backlog.records, true);
    // close waits for sends; what it counts as delivered is what the checkpoint passed, so a
    // batch kept for a dead-letter write that failed is received but not counted.
    if (checkpointFailed(e)) {
      assert.ok(stats.counters.delivered <= e.provider.received.length, "close waits for sends");
    } else {
      assert.equal(stats.counters.delivered, e.provider.received.length, "close waits for sends");
    }
    this.fsynced(); // close seals the active segment with an fsync (not under "never")
    await this.open(e.mem);
    const now = this.current.recovered;
    if (!checkpointFailed(e)) {
      assert.equal(now, stats.backlog.records, "a reopen finds the backlog left at close");
    } else {
      assert.ok(now >= stats.backlog.records, `reopen found ${now} < ${stats.backlog.records}`);
    }
  }

  /** Waits until the buffer has delivered everything, then settles what crashes lost. */
  async drain(): Promise<void> {
    await this.settle();
    const e = this.current;
    await e.buffer.drained(5000);
    await tick();
    assert.equal(e.buffer.stats().backlog.records, 0, "drained leaves no backlog");
    const answered = this.answered();
    const missing: Rec[] = [];
    for (const r of this.recs) {
      if (answered.has(r.value)) continue;
      if (r.status !== "acked" && r.status !== "unknown") continue;
      if (r.status === "acked" && r.mayBeLostAt === undefined && !r.gone) missing.push(r);
      r.gone = true; // it will not come now
    }
    // Acked records that no crash can have lost: dropped at the cap (and counted), or
    // lost to the known "interval" fsync bug, or a bug.
    const dropped = this.dropped();
    this.missing += missing.length;
    if (this.missing > dropped && this.unsyncedSince > this.crashes.length - 1) {
      const r = missing[0];
      assert.fail(
        `acknowledged ${r.value.slice(0, 8)} (open ${r.epoch}, ${
          r.durable ? "durable" : "not fsynced"
        }) was never delivered; ${this.missing} such in all, ${dropped} dropped at the cap`,
      );
    }
    // What a crash lost is a suffix, per topic, of what was written before it (drops at
    // the cap cut out whole segments anywhere, so then this is not checked).
    if (dropped > 0) return;
    for (const r of this.recs) {
      if (!r.gone || r.status !== "acked" || r.mayBeLostAt === undefined) continue;
      if (r.mayBeLostAt >= this.unsyncedSince) continue;
      const before = this.crashes[r.mayBeLostAt];
      for (let i = r.index + 1; i < before; i++) {
        const y = this.recs[i];
        assert.ok(
          y.topic !== r.topic || !answered.has(y.value),
          `crash ${r.mayBeLostAt} lost ${r.value.slice(0, 8)} but kept ${
            y.value.slice(0, 8)
          }, written after it`,
        );
      }
    }
  }

  /** Per open: the counters add up, and agree with the model. */
  checkCounters(e: Epoch, backlog: number, quiet: boolean): void {
    const c = e.counters ?? e.buffer.stats().counters;
    if (this.cap !== "drop-oldest") assert.equal(c.dropped, 0, "nothing dropped");
    assert.equal(c.expired, 0, "nothing expired (no age limit)");
    const received = Math.min(e.provider.received.length, e.cutoff.received);
    const rejected = Math.min(e.provider.rejected.length, e.cutoff.rejected);
    // A refused batch whose dead-letter write keeps failing (a full disk) while the cap
    // prunes its segment is given up: all its records count as dropped with the segment, those
    // the provider took as well as those it refused, and the sender goes on to the next batch.
    // So each such batch adds to the slack, of both checks.
    assert.ok(
      c.delivered <= received && received <= c.delivered + BATCH + c.dropped,
      `delivered ${c.delivered}, provider received ${received}, dropped ${c.dropped}`,
    );
    assert.ok(
      c.deadLettered <= rejected && rejected <= c.deadLettered + BATCH + c.dropped,
      `dead-lettered ${c.deadLettered}, provider rejected ${rejected}`,
    );
    if (!quiet) return;
    const mine = this.recs.filter((r) => r.epoch === e.n);
    const count = (st: Status) => mine.filter((r) => r.status === st).length;
    assert.equal(c.written, count("acked"), `open ${e.n}: written vs. acked writes`);
    assert.equal(c.writeErrors, count("failed"), `open ${e.n}: writeErrors vs. failed writes`);
    assert.equal(
      e.recovered + c.written,
      c.delivered + c.deadLettered + c.dropped + c.expired + c.quarantinedRecords + backlog,
      `recovered ${e.recovered} + written ${c.written} = delivered ${c.delivered} + dead ${c.deadLettered} + dropped ${c.dropped} + expired ${c.expired} + quarantined ${c.quarantinedRecords} + backlog ${backlog}`,
    );
  }

  /** The invariants that hold after every step. */
  async check(): Promise<void> {
    await tick();
    assert.deepEqual(this.unexpected, [], "writes fail only with StorageError (or full)");
    const all = this.deliveries();
    const firstEpoch = new Map<string, number>();
    const lastByTopic = new Map<string, number>();
    const seenInEpoch = new Set<string>();
    for (const { value, epoch, dead } of all) {
      const r = this.byValue.get(value);
      const name = value.slice(0, 8);
      assert.ok(r, `${name} was answered, but never written`);
      assert.ok(r.status !== "failed", `${name} was answered, but its write failed`);
      assert.ok(r.status !== "refused", `${name} was answered, but the buffer was full`);
      assert.equal(dead, r.poison, `${name} ${dead ? "dead-lettered" : "delivered"}`);
      assert.ok(!seenInEpoch.has(`${epoch}/${value}`), `${name} sent twice in one open`);
      seenInEpoch.add(`${epoch}/${value}`);
      const first = firstEpoch.get(value);
      if (first === undefined) {
        firstEpoch.set(value, epoch);
        const key = `${r.topic}/${dead}`;
        assert.ok(r.index > (lastByTopic.get(key) ?? -1), `${name} came after a later write`);
        lastByTopic.set(key, r.index);
      } else if (first !== epoch) {
        // A crash came between, or a checkpoint write failed (see the skipped test in
        // crash_test.ts: close() does not retry it, so a clean restart resends).
        const between = this.epochs.slice(first, epoch);
        assert.ok(
          between.some((x) => x.end === "crashed" || checkpointFailed(x)),
          `${name} sent again after a clean restart`,
        );
      }
    }
    const e = this.current;
    const stats = e.buffer.stats();
    this.checkCounters(e, stats.backlog.records, this.pending.size === 0);
    const answered = new Set(all.map((d) => d.value));
    const owed =
      this.recs.filter((r) =>
        r.status === "acked" && r.mayBeLostAt === undefined && !r.gone &&
        !answered.has(r.value)
      ).length;
    if (this.unsyncedSince === Infinity) {
      const dropped = this.dropped();
      assert.ok(
        stats.backlog.records >= owed - dropped,
        `backlog ${stats.backlog.records} < ${owed} owed - ${dropped} dropped`,
      );
    }
  }

  /** Ends a run: everything written must come out. */
  async finish(): Promise<void> {
    this.current.mem.capacity = Infinity;
    this.providerDown = false;
    this.current.provider.down = false;
    await this.drain();
    await this.check();
    await this.current.buffer.close().catch((err) => {
      assert.ok(err instanceof StorageError, `close() failed: ${err}`);
    });
  }

  async dispose(): Promise<void> {
    for (const e of this.epochs) {
      e.provider.down = true;
      await e.buffer.close().catch(() => {});
    }
  }
}

/** How MemoryFileSystem fails every operation of a process after its crash. */
const CRASHED = "simulated crash";

/**
 * An S file write failed, or a dead-letter write did (the batch is then kept and sent again
 * after the next open, as the README says): records may repeat after a clean restart.
 */
function checkpointFailed(e: Epoch): boolean {
  return e.fs.failures().some((f) =>
    f.error !== CRASHED && (!f.path.endsWith(".seg") || f.path.includes("/dead/"))
  );
}

type Cmd = fc.AsyncCommand<World, World>;

class Write implements Cmd {
  constructor(readonly items: WriteItem[], readonly wait: boolean) {}
  check = () => true;
  async run(_m: World, w: World): Promise<void> {
    const done = w.write(this.items);
    if (this.wait) await Promise.allSettled(done);
    await w.check();
  }
  toString = () =>
    `write(${this.items.map((i) => `${i.poison ? "P" : ""}${i.topic}+${i.pad}`).join(",")}${
      this.wait ? "" : ", no wait"
    })`;
}

class Flush implements Cmd {
  check = () => true;
  async run(_m: World, w: World): Promise<void> {
    await w.current.buffer.flush();
    await w.settle();
    await w.check();
  }
  toString = () => "flush";
}

/** flush(), then time for several periodic fsyncs: under "interval" that makes it durable. */
class WaitForFsync implements Cmd {
  check = () => true;
  async run(_m: World, w: World): Promise<void> {
    await w.current.buffer.flush();
    await w.settle();
    await tick(8 * FSYNC_INTERVAL_MS);
    w.fsynced();
    await w.check();
  }
  toString = () => "waitForFsync";
}

/** Power loss, optionally right after issuing writes (so that some are in flight). */
class Crash implements Cmd {
  constructor(
    readonly torn: boolean,
    readonly seed: number,
    readonly inFlight: WriteItem[],
    readonly yields: number,
  ) {}
  check = () => true;
  async run(_m: World, w: World): Promise<void> {
    w.write(this.inFlight);
    for (let i = 0; i < this.yields; i++) await Promise.resolve();
    await w.crash(this.torn, this.seed);
    await w.check();
  }
  toString = () =>
    `crash(${
      this.torn ? "torn" : "clean"
    }, seed ${this.seed}, ${this.inFlight.length} in flight, ${this.yields} yields)`;
}

/** close() right after issuing writes (which it must still store), then open again. */
class CloseReopen implements Cmd {
  constructor(readonly inFlight: WriteItem[]) {}
  check = () => true;
  async run(_m: World, w: World): Promise<void> {
    w.write(this.inFlight);
    await w.closeAndReopen();
    await w.check();
  }
  toString = () => `closeReopen(${this.inFlight.length} in flight)`;
}

class Provider implements Cmd {
  constructor(readonly down: boolean) {}
  check = () => true;
  async run(_m: World, w: World): Promise<void> {
    w.providerDown = this.down;
    w.current.provider.down = this.down;
    await w.check();
  }
  toString = () => (this.down ? "providerDown" : "providerUp");
}

class DiskFault implements Cmd {
  constructor(
    readonly op: "append" | "sync",
    readonly code: "EIO" | "ENOSPC",
    readonly segmentsOnly: boolean,
  ) {}
  check = () => true;
  async run(_m: World, w: World): Promise<void> {
    w.current.mem.failNext(this.op, this.code, this.segmentsOnly ? ".seg" : undefined);
    await w.check();
  }
  toString = () => `failNext(${this.op}, ${this.code}${this.segmentsOnly ? ", .seg" : ""})`;
}

class DiskFull implements Cmd {
  constructor(readonly room: number) {}
  check = () => true;
  async run(_m: World, w: World): Promise<void> {
    w.current.mem.capacity = w.current.mem.usedBytes() + this.room;
    w.diskFull = true;
    await w.check();
  }
  toString = () => `diskFull(room ${this.room})`;
}

class DiskFree implements Cmd {
  check = () => true;
  async run(_m: World, w: World): Promise<void> {
    w.current.mem.capacity = Infinity;
    w.diskFull = false;
    await w.check();
  }
  toString = () => "diskFree";
}

class WaitForDelivery implements Cmd {
  check = (m: Readonly<World>) => !m.providerDown && !m.diskFull;
  async run(_m: World, w: World): Promise<void> {
    await w.drain();
    await w.check();
  }
  toString = () => "waitForDelivery";
}

const items = (max: number): fc.Arbitrary<WriteItem[]> =>
  fc.array(
    fc.record({
      topic: fc.constantFrom(...TOPICS),
      poison: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
      pad: fc.integer({ min: 0, max: 200 }),
    }),
    { minLength: 1, maxLength: max },
  );

const commands = fc.commands<World, World, false>([
  fc.tuple(items(8), fc.boolean()).map(([i, wait]) => new Write(i, wait)),
  fc.tuple(items(8), fc.boolean()).map(([i, wait]) => new Write(i, wait)),
  fc.constant(new Flush()),
  fc.constant(new WaitForFsync()),
  fc.tuple(fc.boolean(), fc.nat(), fc.oneof(fc.constant<WriteItem[]>([]), items(6)), fc.nat(30))
    .map(([torn, seed, inFlight, yields]) => new Crash(torn, seed, inFlight, yields)),
  fc.oneof(fc.constant<WriteItem[]>([]), items(4)).map((i) => new CloseReopen(i)),
  fc.boolean().map((down) => new Provider(down)),
  fc.tuple(
    fc.constantFrom("append" as const, "sync" as const),
    fc.constantFrom("EIO" as const, "ENOSPC" as const),
    fc.boolean(),
  ).map(([op, code, seg]) => new DiskFault(op, code, seg)),
  fc.integer({ min: 0, max: 400 }).map((room) => new DiskFull(room)),
  fc.constant(new DiskFree()),
  fc.constant(new WaitForDelivery()),
], {
  maxCommands: 40,
  size: "large",
  ...(process.env.MB_MODEL_REPLAY ? { replayPath: process.env.MB_MODEL_REPLAY } : {}),
});

/** With MB_MODEL_DEBUG set, what the runs did, to see that the actions reach their cases. */
function tally(totals: Record<string, number>, w: World): void {
  const add = (k: string, n: number) => (totals[k] = (totals[k] ?? 0) + n);
  add("runs", 1);
  add(`cap ${w.cap}`, 1);
  add("records", w.recs.length);
  for (const status of ["acked", "failed"] as const) {
    add(status, w.recs.filter((r) => r.status === status).length);
  }
  add("gone", w.recs.filter((r) => r.gone).length);
  add("delivered", w.deliveries().filter((d) => !d.dead).length);
  add("deadLettered", w.deliveries().filter((d) => d.dead).length);
  add("crashes", w.crashes.length);
  add("opens", w.epochs.length);
  add(
    "faults",
    w.epochs.reduce((n, e) => n + e.fs.failures().filter((f) => f.error !== CRASHED).length, 0),
  );
  add("unsyncedSeal", w.unsyncedSince === Infinity ? 0 : 1);
  add("dropped", w.dropped());
  add("refused", w.recs.filter((r) => r.status === "refused").length);
}

const RUNS = Number(process.env.MB_MODEL_RUNS ?? 25);

for (const policy of ["always", "interval", "never"] as const) {
  describe(`model: fsync "${policy}"`, () => {
    it("every acknowledged record is delivered in order, or lost only where the policy allows", async () => {
      const totals: Record<string, number> = {};
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom<Cap>("far", "drop-oldest", "reject"),
          fc.boolean(), // the provider is down at the start
          commands,
          async (cap, down, cmds) => {
            const world = await World.create(policy, cap, down);
            try {
              await fc.asyncModelRun(() => ({ model: world, real: world }), cmds);
              await world.finish();
              if (process.env.MB_MODEL_DEBUG) tally(totals, world);
            } finally {
              await world.dispose();
            }
          },
        ),
        {
          numRuns: RUNS,
          // A failure prints its seed and path, and the counterexample its replayPath;
          // MB_MODEL_SEED, MB_MODEL_PATH and MB_MODEL_REPLAY replay it.
          ...(process.env.MB_MODEL_SEED ? { seed: Number(process.env.MB_MODEL_SEED) } : {}),
          ...(process.env.MB_MODEL_PATH ? { path: process.env.MB_MODEL_PATH } : {}),
        },
      );
      if (process.env.MB_MODEL_DEBUG) console.log(policy, totals);
    });
  });
}

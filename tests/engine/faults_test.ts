// The fault matrix: corrupt and foreign files in the buffer directory, and a disk that fails
// (EIO) on fsync, rename, segment reads and S file writes. Each case builds a backlog of
// several segments of known records, applies the fault, and opens the directory more than
// once (a fault that fails the open would crash-loop an agent under systemd). It checks what
// was delivered, what was quarantined or left alone, the counter, and the log line naming
// the file.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { MessageBuffer, type MessageBufferOptions } from "../../mod.ts";
import type { Counters } from "../../src/engine/ledger.ts";
import { CheckpointFile, checkpointFileName } from "../../src/checkpoint/checkpoint.ts";
import { dirStatus } from "../../src/agent/inspect.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import { loadSyncMark, markNames } from "../../src/checkpoint/sync_mark.ts";
import type { FileHandle, FileSystem } from "../../src/fs/types.ts";
import {
  decodeSegmentFooter,
  encodeSegmentFooter,
  parseSegmentFileName,
  readFrameHeader,
  SEGMENT_FOOTER_SIZE,
  SEGMENT_HEADER_SIZE,
} from "../../src/segment/format.ts";
import {
  memoryBufferOptions,
  RecordingFileSystem,
  recordingLogger,
  RecordingProvider,
  waitFor,
} from "../_helpers.ts";

const DIR = "/buf";
const N = 60;
/** Record i's value: unique, in write order, about 100 bytes (16 or so to a segment). */
const value = (i: number) => `r${String(i).padStart(3, "0")}-${"q".repeat(90)}`;
const ALL = Array.from({ length: N }, (_, i) => value(i));
/** Values of records [from, to). */
const range = (from: number, to: number) => ALL.slice(from, to);
const without = (from: number, to: number) => [...range(0, from), ...range(to, N)];

function opts(fs: FileSystem, p: RecordingProvider, extra: Partial<MessageBufferOptions> = {}) {
  return memoryBufferOptions(fs, p, { closeTimeoutMs: 2000, ...extra });
}

/** The N records written one frame each with the provider down, then closed: sealed segments. */
async function backlog(
  fs: MemoryFileSystem,
  extra: Partial<MessageBufferOptions> = {},
): Promise<void> {
  const p = new RecordingProvider();
  p.down = true;
  const b = await MessageBuffer.open(opts(fs, p, extra));
  for (const v of ALL) await b.write("t", v);
  await b.close();
}

interface Frame {
  offset: number;
  end: number;
  /** Index of its first record among all records written. */
  first: number;
  count: number;
}

interface SegmentLayout {
  name: string;
  path: string;
  size: number;
  /** Index of its first record, and how many it holds. */
  first: number;
  records: number;
  frames: Frame[];
}

/** The segments in `fs` and their frames, read from the bytes (footers included). */
async function layout(fs: MemoryFileSystem): Promise<SegmentLayout[]> {
  const names = (await fs.list(DIR)).filter((n) => n.endsWith(".seg")).sort();
  return names.map((name) => {
    const path = `${DIR}/${name}`;
    const bytes = fs.peek(path)!;
    const footer = decodeSegmentFooter(bytes.subarray(-SEGMENT_FOOTER_SIZE));
    const dataEnd = typeof footer === "string" ? bytes.length : footer.dataSize;
    const first = parseSegmentFileName(name)!.firstSeq;
    const frames: Frame[] = [];
    let records = 0;
    for (let at = SEGMENT_HEADER_SIZE; at < dataEnd;) {
      const h = readFrameHeader(bytes, at);
      const end = at + 20 + h.payloadLength;
      frames.push({ offset: at, end, first: first + records, count: h.count });
      records += h.count;
      at = end;
    }
    return { name, path, size: bytes.length, first, records, frames };
  });
}

/** Overwrites part of a file and keeps its length (what `corrupt` does, for several bytes). */
function overwrite(fs: MemoryFileSystem, path: string, at: number, bytes: Uint8Array) {
  fs.corrupt(path, at, bytes);
}

/** Cuts a file to `size` bytes, durably. */
async function cut(fs: FileSystem, path: string, size: number): Promise<void> {
  const fh = await fs.open(path, "append");
  await fh.truncate(size);
  await fh.sync();
  await fh.close();
}

/** Appends `bytes` to `path` without an fsync: what a killed process leaves in the page cache. */
async function unsynced(fs: FileSystem, path: string, bytes: Uint8Array): Promise<void> {
  const fh = await fs.open(path, "append");
  await fh.append(bytes);
  await fh.close();
}

/** Creates a file holding `bytes`, durably. */
async function put(fs: FileSystem, path: string, bytes: Uint8Array): Promise<void> {
  await fs.remove(path);
  const fh = await fs.open(path, "create");
  await fh.append(bytes);
  await fh.sync();
  await fh.close();
  await fs.syncDir(DIR);
}

interface Run {
  got: string[];
  counters: Counters;
  lines: string[];
}

/** Opens the directory, delivers what it can, closes: what arrived, the counters, the log. */
async function openAndDeliver(
  fs: FileSystem,
  extra: Partial<MessageBufferOptions> = {},
): Promise<Run> {
  const p = new RecordingProvider();
  const log = recordingLogger();
  const b = await MessageBuffer.open(opts(fs, p, { logger: log.logger, ...extra }));
  await b.drained(5000);
  const counters = b.stats().counters;
  await b.close();
  return { got: p.values(), counters, lines: log.lines };
}

/** Log lines at `level` that mention `text`. */
const logged = (r: { lines: string[] }, level: string, text: string) =>
  r.lines.filter((l) => l.startsWith(level) && l.includes(text));

const quarantined = (fs: MemoryFileSystem) => fs.list(`${DIR}/quarantine`);

/** The counters that report trouble, for "the second open finds nothing wrong". */
function trouble(c: Counters) {
  const {
    quarantinedRecords,
    quarantinedBytes,
    tornBytes,
    footerErrors,
    checkpointErrors,
    skippedSegments,
    unknownFiles,
    storageErrors,
  } = c;
  return {
    quarantinedRecords,
    quarantinedBytes,
    tornBytes,
    footerErrors,
    checkpointErrors,
    skippedSegments,
    unknownFiles,
    storageErrors,
  };
}

const NO_TROUBLE = trouble({
  quarantinedRecords: 0,
  quarantinedBytes: 0,
  tornBytes: 0,
  footerErrors: 0,
  checkpointErrors: 0,
  skippedSegments: 0,
  unknownFiles: 0,
  storageErrors: 0,
} as Counters);

describe("corrupt and foreign files", () => {
  it("a flipped bit in a sealed segment: its frame and the rest of that segment go to quarantine, every other record is delivered", async () => {
    const fs = new MemoryFileSystem();
    await backlog(fs);
    const segs = await layout(fs);
    assert.ok(segs.length >= 3, `${segs.length} segments`);
    const seg = segs[1];
    const bad = seg.frames[2];
    const at = bad.offset + 20 + 5; // a byte of the third frame's records
    overwrite(fs, seg.path, at, new Uint8Array([fs.peek(seg.path)![at] ^ 0x10]));

    const first = await openAndDeliver(fs);
    const lostTo = seg.first + seg.records;
    assert.deepEqual(first.got, without(bad.first, lostTo));
    assert.equal(first.counters.quarantinedRecords, lostTo - bad.first);
    assert.equal(first.counters.quarantinedBytes, seg.size - bad.offset);
    assert.deepEqual(await quarantined(fs), [`${seg.name}@${bad.offset}`]);
    assert.equal(logged(first, "ERROR", seg.name).length, 1, first.lines.join("\n"));
    assert.match(logged(first, "ERROR", seg.name)[0], /corrupt frame.*checksum mismatch/);

    for (let again = 0; again < 2; again++) {
      const next = await openAndDeliver(fs);
      assert.deepEqual(next.got, []);
      assert.deepEqual(trouble(next.counters), NO_TROUBLE);
      assert.deepEqual(await quarantined(fs), [`${seg.name}@${bad.offset}`]);
    }
  });

  it("a sealed segment cut in the middle of a record: the cut frame goes to quarantine, every whole record is delivered", async () => {
    const fs = new MemoryFileSystem();
    await backlog(fs);
    const segs = await layout(fs);
    const seg = segs[1];
    const cutFrame = seg.frames[3];
    const cutAt = cutFrame.offset + 20 + 7;
    await cut(fs, seg.path, cutAt); // the footer and everything after byte 7 of a record

    const first = await openAndDeliver(fs);
    // Frames 0-2 of the segment survive; frame 3 is cut, and the frames after it are gone.
    assert.deepEqual(first.got, without(cutFrame.first, seg.first + seg.records));
    assert.equal(first.counters.quarantinedBytes, cutAt - cutFrame.offset);
    assert.equal(first.counters.quarantinedRecords, 0, "at open the records cut are not known");
    assert.equal(first.counters.tornBytes, 0);
    assert.deepEqual(await quarantined(fs), [`${seg.name}@${cutFrame.offset}`]);
    assert.match(logged(first, "ERROR", seg.name)[0] ?? "", /corrupt data in segment/);

    for (let again = 0; again < 2; again++) {
      const next = await openAndDeliver(fs);
      assert.deepEqual(next.got, []);
      assert.deepEqual(trouble(next.counters), NO_TROUBLE);
    }
  });

  it("a zero-filled tail on the newest segment (a power loss): cut off as torn, every whole record is delivered", async () => {
    const live = new MemoryFileSystem();
    const p = new RecordingProvider();
    p.down = true;
    const b = await MessageBuffer.open(opts(live, p));
    for (const v of ALL) await b.write("t", v);
    // The machine stops: the newest segment was never sealed (it has no footer).
    const fs = live.processCrash();
    await b.close();
    const segs = await layout(fs);
    const newest = segs.at(-1)!;
    assert.ok(segs.length >= 3);
    // The filesystem had grown the file but not written its last blocks: the last frame and
    // 4000 bytes past it read as zeros.
    const last = newest.frames.at(-1)!;
    overwrite(fs, newest.path, last.offset, new Uint8Array(newest.size - last.offset));
    const fh = await fs.open(newest.path, "append");
    await fh.append(new Uint8Array(4000));
    await fh.sync();
    await fh.close();

    const first = await openAndDeliver(fs);
    assert.deepEqual(first.got, without(last.first, N));
    assert.equal(first.counters.tornBytes, newest.size - last.offset + 4000);
    assert.equal(first.counters.quarantinedBytes, 0);
    assert.deepEqual(await quarantined(fs), []);
    assert.match(logged(first, "WARN", newest.name)[0] ?? "", /cut a torn tail/);

    for (let again = 0; again < 2; again++) {
      const next = await openAndDeliver(fs);
      assert.deepEqual(next.got, []);
      assert.deepEqual(trouble(next.counters), NO_TROUBLE);
    }
  });

  it("a garbage S file: its segment is delivered from its start, and the file is rewritten usable", async () => {
    const fs = new MemoryFileSystem();
    await backlog(fs);
    const [seg] = await layout(fs);
    const sName = checkpointFileName(seg.name);
    await put(fs, `${DIR}/${sName}`, new Uint8Array(100).fill(0x5a));

    // Two batches of 4 are acknowledged, the third never is; then the buffer closes.
    const p1 = new RecordingProvider();
    p1.hangAfterSends = 2;
    const log = recordingLogger();
    const b1 = await MessageBuffer.open(opts(fs, p1, { logger: log.logger, closeTimeoutMs: 50 }));
    await waitFor(() => p1.sends === 3, 5000, "the third send");
    const c1 = b1.stats().counters;
    await b1.close();
    assert.deepEqual(p1.values(), range(0, 8));
    assert.equal(c1.checkpointErrors, 1);
    assert.match(logged(log, "WARN", sName)[0] ?? "", /unreadable S file/);

    // The S file now holds the position: the next open resumes there, sending nothing twice.
    const second = await openAndDeliver(fs);
    assert.deepEqual(second.got, range(8, N));
    assert.deepEqual(trouble(second.counters), NO_TROUBLE);
    const third = await openAndDeliver(fs);
    assert.deepEqual(third.got, []);
  });

  it("an S file pointing past the end of its segment: the segment is delivered from its start", async () => {
    const fs = new MemoryFileSystem();
    await backlog(fs);
    const segs = await layout(fs);
    const seg = segs[1];
    const sName = checkpointFileName(seg.name);
    const { file } = await CheckpointFile.open(fs, `${DIR}/${sName}`, true);
    await file.commit({ offset: seg.size + 4096, skip: 0, delivered: 3 });
    await file.close();

    const first = await openAndDeliver(fs);
    assert.deepEqual(first.got, ALL, "every record once, in order");
    assert.equal(first.counters.checkpointErrors, 1);
    assert.match(logged(first, "WARN", sName)[0] ?? "", /past the end/);
    assert.ok(logged(first, "WARN", sName)[0].includes(seg.name));

    for (let again = 0; again < 2; again++) {
      const next = await openAndDeliver(fs);
      assert.deepEqual(next.got, []);
      assert.deepEqual(trouble(next.counters), NO_TROUBLE);
    }
  });

  it("unknown files in the directory are left alone, named in the log and counted", async () => {
    const fs = new MemoryFileSystem();
    await backlog(fs);
    const [seg] = await layout(fs);
    const foreign = ["backup.tmp", "extra", "notes.s", "notes.txt", `${seg.name}.bak`];
    const bytes = new TextEncoder().encode("not messagebuffer's");
    for (const n of foreign) if (n !== "extra") await put(fs, `${DIR}/${n}`, bytes);
    await fs.mkdirp(`${DIR}/extra`);
    await put(fs, `${DIR}/messagebuffer.sock`, new Uint8Array(0)); // the agent's own socket

    for (let open = 0; open < 3; open++) {
      const r = await openAndDeliver(fs);
      assert.deepEqual(r.got, open === 0 ? ALL : []);
      assert.deepEqual(trouble(r.counters), { ...NO_TROUBLE, unknownFiles: foreign.length });
      for (const n of foreign) {
        assert.equal(logged(r, "WARN", `"file":"${n}"`).length, 1, `${n}: ${r.lines.join("\n")}`);
        if (n !== "extra") assert.deepEqual(fs.peek(`${DIR}/${n}`), bytes, `${n} is untouched`);
      }
      assert.ok((await fs.list(DIR)).includes("extra"));
      assert.deepEqual(await quarantined(fs), []);
    }
    assert.deepEqual((await dirStatus(fs, DIR, () => false)).unknownFiles, [...foreign].sort());
  });

  it("a segment of a newer format version is left in place untouched, named and counted; the others are delivered", async () => {
    const fs = new MemoryFileSystem();
    await backlog(fs);
    const segs = await layout(fs);
    const seg = segs[1];
    // Version 2 in the header, and that version's own footer (a new footer magic).
    overwrite(fs, seg.path, 4, new Uint8Array([2]));
    overwrite(fs, seg.path, seg.size - SEGMENT_FOOTER_SIZE, new TextEncoder().encode("MBF2"));
    const before = fs.peek(seg.path);

    for (let open = 0; open < 3; open++) {
      const r = await openAndDeliver(fs);
      assert.deepEqual(r.got, open === 0 ? without(seg.first, seg.first + seg.records) : []);
      assert.deepEqual(trouble(r.counters), { ...NO_TROUBLE, skippedSegments: 1 });
      const line = logged(r, "ERROR", seg.name);
      assert.equal(line.length, 1, r.lines.join("\n"));
      assert.match(line[0], /newer format version.*"version":2/);
      assert.deepEqual(fs.peek(seg.path), before, "not changed");
      assert.deepEqual(await quarantined(fs), []);
    }
    const status = await dirStatus(fs, DIR, () => false);
    assert.match(status.segments[0].problem ?? "", /format version 2.*left in place/);
  });
});

/**
 * A filesystem whose S file writes fail with EIO while `failing` is set (the in-memory
 * filesystem's `failNext` cannot tell an S file's path from its segment's, which it prefixes).
 */
class FailingCheckpoints implements FileSystem {
  failing = true;
  failures = 0;
  readonly inner: FileSystem;
  constructor(inner: FileSystem) {
    this.inner = inner;
  }
  async open(path: string, mode: "create" | "append" | "read"): Promise<FileHandle> {
    const fh = await this.inner.open(path, mode);
    if (!path.endsWith(".s")) return fh;
    return {
      ...bound(fh),
      writeAt: (data, position) => {
        if (!this.failing) return fh.writeAt(data, position);
        this.failures++;
        return Promise.reject(Object.assign(new Error(`EIO: write "${path}"`), { code: "EIO" }));
      },
    };
  }
  mkdirp = (p: string) => this.inner.mkdirp(p);
  list = (d: string) => this.inner.list(d);
  readFile = (p: string) => this.inner.readFile(p);
  stat = (p: string) => this.inner.stat(p);
  rename = (a: string, b: string) => this.inner.rename(a, b);
  remove = (p: string) => this.inner.remove(p);
  syncDir = (d: string) => this.inner.syncDir(d);
  lock = (d: string) => this.inner.lock(d);
}

function bound(fh: FileHandle): FileHandle {
  return {
    append: (d) => fh.append(d),
    writeAt: (d, p) => fh.writeAt(d, p),
    read: (i, o, l, p) => fh.read(i, o, l, p),
    sync: () => fh.sync(),
    truncate: (s) => fh.truncate(s),
    size: () => fh.size(),
    close: () => fh.close(),
  };
}

/** `a` then `b`. */
function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Replaces a file's bytes with `bytes`, durably. */
async function rewrite(fs: MemoryFileSystem, path: string, bytes: Uint8Array): Promise<void> {
  await cut(fs, path, 0);
  const fh = await fs.open(path, "append");
  await fh.append(bytes);
  await fh.sync();
  await fh.close();
}

const INTERVAL = { fsync: "interval" as const, fsyncIntervalMs: 60_000 };

/**
 * Records 0-29 sealed and fsynced by a first run; 30-59 acknowledged by a second under
 * `interval`, whose periodic fsync never ran, when the power went (`fs`: the newest segment
 * holds its header only). `sealed` is that segment as its seal would have written it.
 */
async function unsyncedSeal(): Promise<
  { fs: MemoryFileSystem; newest: SegmentLayout; sealed: Uint8Array }
> {
  const fs0 = new MemoryFileSystem();
  const p = new RecordingProvider();
  p.down = true;
  const a = await MessageBuffer.open(opts(fs0, p, { segmentMaxBytes: 64 * 1024, ...INTERVAL }));
  for (const v of range(0, 30)) await a.write("t", v);
  await a.close();
  const b = await MessageBuffer.open(opts(fs0, p, { segmentMaxBytes: 64 * 1024, ...INTERVAL }));
  for (const v of range(30, N)) await b.write("t", v);
  const newest = (await layout(fs0)).at(-1)!;
  assert.equal(newest.first, 30);
  const written = fs0.peek(newest.path)!;
  const fs = fs0.crash();
  await b.close();
  assert.equal(fs.peek(newest.path)!.length, SEGMENT_HEADER_SIZE);
  const footer = encodeSegmentFooter({
    frames: newest.frames.length,
    records: 30,
    firstSeq: 30,
    dataSize: written.length,
    oldestTimestamp: readFrameHeader(written, SEGMENT_HEADER_SIZE).baseTimestamp,
    newestTimestamp: Date.now(),
  });
  return { fs, newest, sealed: concat(written, footer) };
}

/**
 * Writes `values` with the provider down (the default fsync policy, `always`), waits until the
 * sync mark covers the one segment of 64 KiB they fill, and crashes the process: the file
 * system as the crash left it, and that segment's layout.
 */
async function crashedWhenFsynced(values: readonly string[]) {
  const live = new MemoryFileSystem();
  const p = new RecordingProvider();
  p.down = true;
  const b = await MessageBuffer.open(opts(live, p, { segmentMaxBytes: 64 * 1024 }));
  for (const v of values) await b.write("t", v);
  const [seg] = await layout(live);
  await markReaches(live, seg.name, seg.size);
  const fs = live.processCrash();
  await b.close();
  return { fs, seg };
}

/** Resolves once the sync mark in `fs` says segment `name` is fsynced up to `size` bytes. */
async function markReaches(fs: MemoryFileSystem, name: string, size: number): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const m = await loadSyncMark(fs, `${DIR}/SYNCED`);
    if (m && markNames(m, name, parseSegmentFileName(name)!.firstSeq) && m.synced >= size) return;
    if (Date.now() > deadline) throw new Error(`the sync mark never reached ${name} at ${size}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

// What a power cut leaves on a real file system: the pages of the last writes reach the disk
// in any order, so the newest segment can end in zeros followed by a later piece of a write.
// Whether that is a torn tail or corruption follows from what the fsync policy promised, as
// the sync mark records it, not from what the bytes look like.
describe("what a power cut leaves", () => {
  it('fsync "always": a zero run then a piece of a frame past the last fsync is a torn tail: cut, WARN, every acknowledged record delivered', async () => {
    // The power goes out while the next frame is written: 3000 bytes of it reached the disk
    // as zeros, then a piece of it (here, bytes of a frame from the middle of the segment).
    const { fs, seg } = await crashedWhenFsynced(ALL);
    const frame = fs.peek(seg.path)!.subarray(seg.frames[3].offset, seg.frames[5].end);
    await rewrite(
      fs,
      seg.path,
      concat(fs.peek(seg.path)!, new Uint8Array(3000), frame.subarray(7)),
    );

    const first = await openAndDeliver(fs);
    assert.deepEqual(first.got, ALL);
    assert.equal(first.counters.tornBytes, 3000 + frame.length - 7);
    assert.equal(first.counters.quarantinedBytes, 0);
    assert.deepEqual(await quarantined(fs), []);
    assert.match(logged(first, "WARN", seg.name)[0] ?? "", /cut a torn tail.*past the last fsync/);
    assert.deepEqual(logged(first, "ERROR", ""), []);
    const next = await openAndDeliver(fs);
    assert.deepEqual(next.got, []);
    assert.deepEqual(trouble(next.counters), NO_TROUBLE);
  });

  it('fsync "always": the same bytes before the last fsync are corruption: quarantined, ERROR', async () => {
    const { fs, seg } = await crashedWhenFsynced(ALL);
    // Frames 40 to 44, fsynced and acknowledged, read back as zeros then a piece of a frame.
    const bytes = fs.peek(seg.path)!;
    const at = seg.frames[40].offset, end = seg.frames[44].end;
    const piece = bytes.slice(seg.frames[3].offset + 7, seg.frames[3].offset + 7 + 100);
    overwrite(fs, seg.path, at, concat(new Uint8Array(end - at - 100), piece));

    const first = await openAndDeliver(fs);
    assert.deepEqual(first.got, range(0, 40));
    assert.equal(first.counters.quarantinedBytes, seg.size - at);
    assert.match(logged(first, "ERROR", seg.name)[0] ?? "", /corrupt data in segment/);
  });

  // Damage that looks like an interrupted write (the file ends inside the last frame, or the
  // last frame's checksum fails, or a frame seems to run past the file's end) is a torn tail
  // only when that frame was still being written at the last fsync. A frame the sync mark has
  // fsynced whole was acknowledged under "always": a disk that lost it is corruption, reported
  // as such.
  for (
    const [what, frame, damage] of [
      [
        "the file cut short inside frame 44",
        44,
        (b: Uint8Array, at: number) => b.subarray(0, at + 20),
      ],
      ["a bit flipped in the last frame", 44, (b: Uint8Array) => {
        b[b.length - 3] ^= 0x10;
        return b;
      }],
      // 512 KiB more in its length (a big-endian u32 first in the header): a sane header
      // whose frame seems to run past the end of the 64 KiB segment, as a torn one would.
      ["a bit flipped in the length of frame 10 of 45", 10, (b: Uint8Array, at: number) => {
        b[at + 1] ^= 0x08;
        return b;
      }],
    ] as const
  ) {
    it(`fsync "always": ${what}, fsynced whole before, is corruption: quarantined, ERROR, counted`, async () => {
      const { fs, seg } = await crashedWhenFsynced(ALL.slice(0, 45));
      assert.equal(seg.frames.length, 45);
      const at = seg.frames[frame].offset;
      await rewrite(fs, seg.path, damage(fs.peek(seg.path)!.slice(), at));
      const size = fs.peek(seg.path)!.length;

      const first = await openAndDeliver(fs);
      assert.deepEqual(first.got, range(0, frame));
      assert.equal(first.counters.quarantinedBytes, size - at);
      assert.equal(first.counters.tornBytes, 0);
      assert.match(
        logged(first, "ERROR", seg.name)[0] ?? "",
        /corrupt data in segment.*fsynced whole/,
      );
      const next = await openAndDeliver(fs);
      assert.deepEqual(next.got, []);
    });
  }

  it('fsync "always": a torn tail an open could not cut (EIO) is a torn tail at the next open too, though that open counted the segment fsynced', async () => {
    const { fs, seg } = await crashedWhenFsynced(ALL.slice(0, 10));
    const piece = fs.peek(seg.path)!.slice(seg.frames[3].offset, seg.frames[3].offset + 14);
    await rewrite(fs, seg.path, concat(fs.peek(seg.path)!, piece));
    // The first open cannot cut the tail; Kafka is down, so it writes and deletes nothing.
    fs.failNext("truncate", "EIO", seg.name);
    const log = recordingLogger();
    const down = new RecordingProvider();
    down.down = true;
    const a = await MessageBuffer.open(opts(fs, down, { logger: log.logger }));
    await a.close();
    assert.equal(fs.peek(seg.path)!.length, seg.size + 14, "the tail is still there");

    const next = await openAndDeliver(fs);
    assert.deepEqual(next.got, ALL.slice(0, 10));
    assert.equal(next.counters.tornBytes, 14);
    assert.equal(next.counters.quarantinedBytes, 0);
    assert.match(logged(next, "WARN", seg.name)[0] ?? "", /cut a torn tail/);
    assert.deepEqual(logged(next, "ERROR", ""), []);
  });

  it('fsync "interval": a hole in what was written after the last fsync is a torn tail; only those records are lost', async () => {
    const fs0 = new MemoryFileSystem();
    const p = new RecordingProvider();
    p.down = true;
    const interval = { fsync: "interval" as const, fsyncIntervalMs: 60_000 };
    // A first run writes 30 records and stops cleanly: they are sealed and fsynced.
    const a = await MessageBuffer.open(opts(fs0, p, { segmentMaxBytes: 64 * 1024, ...interval }));
    for (const v of range(0, 30)) await a.write("t", v);
    await a.close();
    // A second writes 30 more, acknowledged; the periodic fsync has not run when power goes.
    const b = await MessageBuffer.open(opts(fs0, p, { segmentMaxBytes: 64 * 1024, ...interval }));
    for (const v of range(30, N)) await b.write("t", v);
    const segs = await layout(fs0);
    const newest = segs.at(-1)!;
    assert.equal(newest.first, 30);
    const written = fs0.peek(newest.path)!;
    const fs = fs0.crash(); // what was fsynced: the first segment, the header of the second
    await b.close();
    assert.equal(fs.peek(newest.path)!.length, SEGMENT_HEADER_SIZE);
    // Of the unsynced writes, a later part reached the disk, and the file's new size did,
    // but not the pages before it: zeros, then the data.
    const hole = newest.frames[2].offset + 9;
    const tail = written.slice(SEGMENT_HEADER_SIZE);
    tail.fill(0, 0, hole - SEGMENT_HEADER_SIZE);
    await rewrite(fs, newest.path, concat(written.subarray(0, SEGMENT_HEADER_SIZE), tail));

    const first = await openAndDeliver(fs, interval);
    assert.deepEqual(first.got, range(0, 30), "what was fsynced, and nothing after the hole");
    assert.equal(first.counters.tornBytes, written.length - SEGMENT_HEADER_SIZE);
    assert.equal(first.counters.quarantinedBytes, 0);
    assert.match(logged(first, "WARN", newest.name)[0] ?? "", /cut a torn tail/);
    assert.deepEqual(logged(first, "ERROR", ""), []);
  });

  it('fsync "interval": a power cut during a seal\'s fsync (the footer reached the disk, a page before it did not) is a torn tail, not corruption', async () => {
    const { fs, newest, sealed } = await unsyncedSeal();
    // The footer's page reached the disk, and so did the file's size; a page of frames 2 and
    // 3 did not (zeros).
    const bytes = sealed.slice();
    bytes.fill(0, newest.frames[2].offset + 9, newest.frames[3].offset + 20);
    await rewrite(fs, newest.path, bytes);

    const first = await openAndDeliver(fs, INTERVAL);
    assert.deepEqual(first.got, range(0, 32), "what was fsynced, and the frames before the hole");
    assert.equal(first.counters.tornBytes, sealed.length - newest.frames[2].offset);
    assert.equal(first.counters.quarantinedBytes, 0);
    assert.deepEqual(await quarantined(fs), []);
    assert.match(
      logged(first, "WARN", newest.name)[0] ?? "",
      /cut a torn tail.*past the last fsync/,
    );
    assert.deepEqual(logged(first, "ERROR", ""), []);
  });

  it('fsync "interval": a seal the process wrote but did not fsync (killed, no power cut) is fsynced by the next open, so a later power cut keeps it', async () => {
    const { fs, newest, sealed } = await unsyncedSeal();
    // The process was killed after writing the footer, before its fsync: the page cache
    // holds the sealed segment, the disk only its header.
    await unsynced(fs, newest.path, sealed.subarray(SEGMENT_HEADER_SIZE));
    assert.equal((await dirStatus(fs, DIR, () => false)).segments.at(-1)!.footer, "checked");
    // The next process opens it (and says every segment it found is on stable storage),
    // delivers nothing (Kafka is down), and the power goes.
    const p = new RecordingProvider();
    p.down = true;
    const b = await MessageBuffer.open(opts(fs, p, INTERVAL));
    await b.close();
    const after = fs.crash();

    const run = await openAndDeliver(after, INTERVAL);
    assert.deepEqual(run.got, ALL);
    assert.deepEqual(trouble(run.counters), NO_TROUBLE);
  });

  it('fsync "interval": when the fsync of such a seal fails at the next open, its records are delivered all the same; logged and counted', async () => {
    const { fs, newest, sealed } = await unsyncedSeal();
    await unsynced(fs, newest.path, sealed.subarray(SEGMENT_HEADER_SIZE));
    fs.failNext("sync", "EIO", newest.name);
    const run = await openAndDeliver(fs, INTERVAL);
    assert.deepEqual(run.got, ALL);
    assert.equal(run.counters.storageErrors, 1);
    assert.match(
      logged(run, "ERROR", newest.name)[0] ?? "",
      /fsync of a segment found at open failed/,
    );
  });

  it('fsync "interval": a segment the next open walks but cannot give a footer (the disk full) is fsynced all the same, so a later power cut keeps it', async () => {
    const { fs, newest, sealed } = await unsyncedSeal();
    // The process was killed while writing (no seal): the page cache holds the frames, the
    // disk only the header.
    await unsynced(fs, newest.path, sealed.subarray(SEGMENT_HEADER_SIZE, -SEGMENT_FOOTER_SIZE));
    // The next process walks it, fails to append its footer, delivers nothing (Kafka is
    // down), and the power goes.
    fs.failNext("append", "ENOSPC", newest.name);
    const p = new RecordingProvider();
    p.down = true;
    const log = recordingLogger();
    const b = await MessageBuffer.open(opts(fs, p, { logger: log.logger, ...INTERVAL }));
    await b.close();
    assert.match(log.lines.join("\n"), /could not add a footer to a segment/);
    const after = fs.crash();

    const run = await openAndDeliver(after, INTERVAL);
    assert.deepEqual(run.got, ALL);
    assert.deepEqual(trouble(run.counters), NO_TROUBLE);
  });

  it('fsync "interval": when the fsync of the footer the next open gives a walked segment fails, its records are delivered all the same; logged at ERROR and counted, not trusted to a second fsync', async () => {
    const { fs, newest, sealed } = await unsyncedSeal();
    await unsynced(fs, newest.path, sealed.subarray(SEGMENT_HEADER_SIZE, -SEGMENT_FOOTER_SIZE));
    fs.failNext("sync", "EIO", newest.name);
    const run = await openAndDeliver(fs, INTERVAL);
    assert.deepEqual(run.got, ALL);
    assert.equal(run.counters.storageErrors, 1);
    assert.match(
      logged(run, "ERROR", newest.name)[0] ?? "",
      /fsync of a segment found at open failed/,
    );
  });

  it('fsync "interval": such a seal whose footer miscounts the frames walked is given a new one', async () => {
    const { fs, newest, sealed } = await unsyncedSeal();
    const footer = decodeSegmentFooter(sealed.subarray(-SEGMENT_FOOTER_SIZE));
    assert.ok(typeof footer !== "string");
    const bad = concat(
      sealed.subarray(SEGMENT_HEADER_SIZE, -SEGMENT_FOOTER_SIZE),
      encodeSegmentFooter({ ...footer, records: footer.records - 1 }),
    );
    await unsynced(fs, newest.path, bad);
    const found = (await dirStatus(fs, DIR, () => false)).segments.at(-1)!;
    assert.equal(found.footer, "invalid");
    assert.match(found.problem ?? "", /footer counts 29 records in 30 frames, the walk 30 in 30/);
    const run = await openAndDeliver(fs, INTERVAL);
    assert.deepEqual(run.got, ALL);
    assert.equal(run.counters.footerErrors, 1);
  });

  it('segments a run under "never" left unsynced are fsynced by the next open under "interval", so a power cut after it keeps them', async () => {
    const fs = new MemoryFileSystem();
    const p = new RecordingProvider();
    p.down = true;
    const small = { segmentMaxBytes: 2048 };
    const a = await MessageBuffer.open(opts(fs, p, { ...small, fsync: "never" }));
    for (const v of ALL) await a.write("t", v);
    await a.close(); // sealed, nothing fsynced, no sync mark
    const segs = await layout(fs);
    assert.ok(segs.length > 2);
    const b = await MessageBuffer.open(opts(fs, p, { ...small, ...INTERVAL }));
    await b.close();
    const after = fs.crash();
    // A clean stop under "interval": every segment is read by its footer at the next open.
    const status = await dirStatus(after, DIR, () => false);
    assert.deepEqual(status.segments.map((g) => g.footer), segs.map(() => "used"));
    const run = await openAndDeliver(after, INTERVAL);
    assert.deepEqual(run.got, ALL);
    assert.deepEqual(trouble(run.counters), NO_TROUBLE);
  });

  it("a flipped bit in the newest segment without a footer, inside what the sync mark says was fsynced: quarantined at open", async () => {
    const live = new MemoryFileSystem();
    await backlog(live, { segmentMaxBytes: 64 * 1024 });
    const [seg] = await layout(live);
    // What a crash leaves of it (no footer), with a bit flipped in frame 10 since.
    const bytes = live.peek(seg.path)!.slice(0, seg.frames.at(-1)!.end);
    bytes[seg.frames[10].offset + 25] ^= 0x01;
    await rewrite(live, seg.path, bytes);
    const status = await dirStatus(live, DIR, () => false);
    assert.match(status.segments[0].problem ?? "", /corrupt at \d+: checksum mismatch/);
    const run = await openAndDeliver(live);
    assert.deepEqual(run.got, range(0, 10));
    assert.match(logged(run, "ERROR", seg.name)[0] ?? "", /corrupt data in segment/);
  });

  it('fsync "interval": the same, in a process that started on an emptied directory (sequence numbers start over at 0)', async () => {
    const fs0 = new MemoryFileSystem();
    const interval = { fsync: "interval" as const, fsyncIntervalMs: 60_000 };
    // A first run delivers everything: its segments are gone, its last mark names one of
    // them, far past sequence number 0.
    const p = new RecordingProvider();
    const a = await MessageBuffer.open(opts(fs0, p, interval));
    for (const v of ALL) await a.write("t", v);
    await a.drained(5000);
    await a.close();
    assert.deepEqual(await layout(fs0), []);
    // The next starts over at 0 and writes 30 records the periodic fsync never covers.
    p.down = true;
    const b = await MessageBuffer.open(opts(fs0, p, { segmentMaxBytes: 64 * 1024, ...interval }));
    for (const v of range(0, 30)) await b.write("t", v);
    const [seg] = await layout(fs0);
    assert.equal(seg.first, 0);
    const written = fs0.peek(seg.path)!;
    const fs = fs0.crash();
    await b.close();
    const tail = written.slice(SEGMENT_HEADER_SIZE);
    tail.fill(0, 0, seg.frames[1].offset + 5 - SEGMENT_HEADER_SIZE);
    await rewrite(fs, seg.path, concat(written.subarray(0, SEGMENT_HEADER_SIZE), tail));

    const first = await openAndDeliver(fs, interval);
    assert.deepEqual(first.got, []);
    assert.equal(first.counters.quarantinedBytes, 0);
    assert.equal(first.counters.tornBytes, written.length - SEGMENT_HEADER_SIZE);
    assert.deepEqual(logged(first, "ERROR", ""), []);
  });

  it("a 0-byte S file (its creation interrupted): the segment is delivered from its start, no checkpoint error", async () => {
    const fs = new MemoryFileSystem();
    await backlog(fs);
    const [seg] = await layout(fs);
    const sName = checkpointFileName(seg.name);
    await put(fs, `${DIR}/${sName}`, new Uint8Array(0));

    const first = await openAndDeliver(fs);
    assert.deepEqual(first.got, ALL);
    assert.deepEqual(trouble(first.counters), NO_TROUBLE);
    assert.deepEqual(logged(first, "WARN", sName), []);
    const next = await openAndDeliver(fs);
    assert.deepEqual(next.got, []);
  });

  it('fsync "interval": an S file past the frames a power cut left: nothing of the segment is sent again, no checkpoint error', async () => {
    const fs0 = new MemoryFileSystem();
    const p = new RecordingProvider();
    const interval = { fsync: "interval" as const, fsyncIntervalMs: 60_000 };
    const b = await MessageBuffer.open(opts(fs0, p, { segmentMaxBytes: 64 * 1024, ...interval }));
    for (const v of ALL) await b.write("t", v);
    await b.drained(5000);
    assert.deepEqual(p.values(), ALL);
    const [seg] = await layout(fs0);
    // Everything was delivered and its S file written; the power goes before the periodic
    // fsync: the segment's data is lost but for its first 20 frames, the S file survived.
    const fs = fs0.processCrash();
    await b.close();
    await cut(fs, seg.path, seg.frames[20].offset);
    const sName = checkpointFileName(seg.name);
    assert.ok(fs.peek(`${DIR}/${sName}`), "the S file is there");

    const first = await openAndDeliver(fs, interval);
    assert.deepEqual(first.got, []);
    assert.deepEqual(trouble(first.counters), NO_TROUBLE);
    assert.match(
      logged(first, "WARN", seg.name)[0] ?? "",
      /S file points past the segment's frames/,
    );
    assert.deepEqual(
      await fs.list(DIR).then((l) => l.filter((n) => n.startsWith(seg.name.slice(0, 20)))),
      [],
    );
  });
});

describe("EIO from the disk", () => {
  it("EIO on an S file's fsync: logged and counted, delivery goes on, and the next commit makes the position durable", async () => {
    const mem = new MemoryFileSystem();
    await backlog(mem);
    const [seg] = await layout(mem);
    const sName = checkpointFileName(seg.name);
    const fs = new RecordingFileSystem(mem);
    mem.failNext("sync", "EIO", sName); // the first fsync at or after open: the S file's
    const p = new RecordingProvider();
    p.hangAfterSends = 2;
    const log = recordingLogger();
    const b = await MessageBuffer.open(
      opts(mem, p, { fs, logger: log.logger, closeTimeoutMs: 50 }),
    );
    // The second position is committed before the third send starts.
    await waitFor(() => p.sends === 3, 5000, "the third send");
    // The fault fired, on the S file (a fault left queued would prove nothing).
    assert.deepEqual(fs.failures("sync").map((f) => f.path), [`${DIR}/${sName}`]);
    assert.equal(b.stats().counters.storageErrors, 1);
    assert.match(logged(log, "ERROR", seg.name)[0] ?? "", /write of S file.*failed/);
    // Power loss now: the position of the second batch is on disk, so nothing acknowledged
    // is sent again and nothing is skipped.
    const after = mem.crash();
    await b.close();
    assert.deepEqual(p.values(), range(0, 8));
    for (let open = 0; open < 2; open++) {
      const r = await openAndDeliver(after);
      assert.deepEqual(r.got, open === 0 ? range(8, N) : []);
      assert.deepEqual(trouble(r.counters), NO_TROUBLE);
    }
  });

  it("EIO on the directory fsync that ends recovery: the buffer opens, logs and counts it", async () => {
    const fs = new MemoryFileSystem();
    await backlog(fs);
    // An S file without a segment: recovery removes it, then fsyncs the directory.
    await put(fs, `${DIR}/${"9".repeat(20)}-00000000001.s`, new Uint8Array(64));
    fs.failNext("syncDir", "EIO", DIR);
    const first = await openAndDeliver(fs);
    assert.deepEqual(first.got, ALL);
    assert.equal(first.counters.storageErrors, 1);
    assert.match(
      logged(first, "ERROR", `"dir":"${DIR}"`)[0] ?? "",
      /fsync of the buffer directory/,
    );
    const next = await openAndDeliver(fs);
    assert.deepEqual(next.got, []);
    assert.deepEqual(trouble(next.counters), NO_TROUBLE);
  });

  it("EIO removing a leftover S file at open: the open goes on, and the next open removes it", async () => {
    const fs = new MemoryFileSystem();
    await backlog(fs);
    const orphan = `${DIR}/00000000000099999999-00000000000.s`; // no such segment
    await put(fs, orphan, new Uint8Array(64));
    fs.failNext("remove", "EIO", orphan);

    const first = await openAndDeliver(fs);
    assert.deepEqual(first.got, ALL, "everything is delivered");
    assert.equal(first.counters.storageErrors, 1);
    assert.match(logged(first, "ERROR", "99999999")[0] ?? "", /cannot remove a leftover file.*EIO/);
    assert.ok(fs.peek(orphan), "left for the next open");

    const second = await openAndDeliver(fs);
    assert.equal(second.counters.storageErrors, 0);
    assert.equal(fs.peek(orphan), null, "removed");
  });

  it("EIO on rename (quarantining a segment with a bad header): the open goes on, the file stays, and the next open moves it", async () => {
    const fs = new MemoryFileSystem();
    await backlog(fs);
    const segs = await layout(fs);
    const seg = segs[1];
    // Its header and its footer are garbage (with a good footer, the header is not read).
    overwrite(fs, seg.path, 0, new TextEncoder().encode("JUNK"));
    overwrite(fs, seg.path, seg.size - SEGMENT_FOOTER_SIZE, new TextEncoder().encode("JUNK"));
    fs.failNext("rename", "EIO");

    const first = await openAndDeliver(fs);
    const lost = [seg.first, seg.first + seg.records] as const;
    assert.deepEqual(first.got, without(...lost));
    assert.equal(first.counters.storageErrors, 1);
    assert.equal(first.counters.quarantinedBytes, 0);
    assert.ok(fs.peek(seg.path), "left in place");
    assert.deepEqual(await quarantined(fs), []);
    assert.match(
      logged(first, "ERROR", seg.name).at(-1) ?? "",
      /recovery of a segment failed.*quarantine-file.*EIO/,
    );

    const second = await openAndDeliver(fs);
    assert.deepEqual(second.got, []);
    assert.deepEqual(trouble(second.counters), { ...NO_TROUBLE, quarantinedBytes: seg.size });
    assert.equal(fs.peek(seg.path), null);
    assert.deepEqual(await quarantined(fs), [`${seg.name}@0`]);
    assert.match(logged(second, "ERROR", seg.name)[0] ?? "", /bad header; moved to quarantine/);

    const third = await openAndDeliver(fs);
    assert.deepEqual(trouble(third.counters), NO_TROUBLE);
  });

  it("EIO reading a segment at open: that segment is left in place and the rest delivered; the next open delivers it", async () => {
    const fs = new MemoryFileSystem();
    await backlog(fs);
    const segs = await layout(fs);
    const seg = segs[1];
    fs.failNext("read", "EIO", seg.name);

    const first = await openAndDeliver(fs);
    assert.deepEqual(first.got, without(seg.first, seg.first + seg.records));
    assert.deepEqual(trouble(first.counters), {
      ...NO_TROUBLE,
      skippedSegments: 1,
      storageErrors: 1,
    });
    assert.match(logged(first, "ERROR", seg.name)[0] ?? "", /cannot read segment.*EIO/);

    const second = await openAndDeliver(fs);
    assert.deepEqual(second.got, range(seg.first, seg.first + seg.records));
    assert.deepEqual(trouble(second.counters), NO_TROUBLE);
    const third = await openAndDeliver(fs);
    assert.deepEqual(third.got, []);
  });

  it("EIO reading a segment during delivery: the read is tried again and no record is lost or quarantined", async () => {
    const fs = new MemoryFileSystem();
    const p = new RecordingProvider();
    const log = recordingLogger();
    const b = await MessageBuffer.open(opts(fs, p, { logger: log.logger }));
    for (const v of range(0, 4)) await b.write("t", v);
    await b.drained(5000);
    const [active] = (await fs.list(DIR)).filter((n) => n.endsWith(".seg"));
    // The sender has read the start of the segment; its next read (of what follows) fails.
    fs.failNext("read", "EIO", active);
    for (const v of range(4, 8)) await b.write("t", v);
    await b.drained(5000);
    const c = b.stats().counters;
    await b.close();
    assert.deepEqual(p.values(), range(0, 8));
    assert.deepEqual(trouble(c), { ...NO_TROUBLE, storageErrors: 1 });
    const line = logged(log, "ERROR", active);
    assert.equal(line.length, 1, log.lines.join("\n"));
    assert.match(line[0], /cannot read the backlog; retrying/);
    for (let open = 0; open < 2; open++) {
      const r = await openAndDeliver(fs);
      assert.deepEqual(r.got, []);
      assert.deepEqual(trouble(r.counters), NO_TROUBLE);
    }
  });

  it("EIO on every S file write: delivery goes on, each failure is counted, and a restart sends again rather than skip", async () => {
    const mem = new MemoryFileSystem();
    await backlog(mem);
    const [seg] = await layout(mem);
    const fs = new FailingCheckpoints(mem);
    const p = new RecordingProvider();
    p.hangAfterSends = 2;
    const log = recordingLogger();
    const b = await MessageBuffer.open(
      opts(mem, p, { fs, logger: log.logger, closeTimeoutMs: 50 }),
    );
    await waitFor(() => p.sends === 3, 5000, "the third send");
    await b.close(); // close tries the failed position once more: it fails too
    const c = b.stats().counters;
    assert.deepEqual(p.values(), range(0, 8));
    assert.equal(fs.failures, 3, "two commits and the retry at close");
    assert.equal(c.storageErrors, fs.failures);
    assert.equal(logged(log, "ERROR", seg.name).length, fs.failures);
    // The disk works again. The S file was created but never written: it holds no
    // position, which is no damage; the segment is sent again from its start (records
    // repeat; none are lost).
    fs.failing = false;
    assert.equal(mem.peek(`${DIR}/${checkpointFileName(seg.name)}`)?.length, 0);
    const first = await openAndDeliver(fs);
    assert.deepEqual(first.got, ALL);
    assert.deepEqual(trouble(first.counters), NO_TROUBLE);
    const second = await openAndDeliver(fs);
    assert.deepEqual(second.got, []);
    assert.deepEqual(trouble(second.counters), NO_TROUBLE);
  });
});

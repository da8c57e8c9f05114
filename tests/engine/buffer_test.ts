import { afterEach, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import process from "node:process";
import {
  BufferClosedError,
  BufferFullError,
  LockedError,
  MessageBuffer,
  type MessageBufferOptions,
  silentLogger,
} from "../../mod.ts";
import { OpenBuffers, RecordingProvider, tempDir, waitFor } from "../_helpers.ts";
import { ProgressSignal } from "../../src/engine/progress.ts";
import { SEGMENT_FOOTER_SIZE } from "../../src/segment/format.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

let dir = "";
let cleanup = async () => {};
const buffers = new OpenBuffers();

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
});
afterEach(async () => {
  await buffers.closeAll();
  await cleanup();
});

function openBuffer(
  provider: RecordingProvider,
  extra: Partial<MessageBufferOptions> = {},
): Promise<MessageBuffer> {
  return buffers.open({ dir, provider, logger: silentLogger, closeTimeoutMs: 2000, ...extra });
}

const closeBuffer = (b: MessageBuffer) => buffers.close(b);

const segmentFiles = async () => (await readdir(dir)).filter((n) => n.endsWith(".seg")).sort();

describe("MessageBuffer", () => {
  it("delivers adversarial values, keys and headers unchanged and in order", async () => {
    const p = new RecordingProvider();
    const b = await openBuffer(p, { fsync: "always" });
    const values: Uint8Array[] = [
      enc.encode("tab\there\nnewline\\backslash\r"),
      new Uint8Array(0),
      new Uint8Array([0, 0xff, 0xfe, 0x80, 0x0a]),
      new Uint8Array(1_000_000).fill(0x61),
      enc.encode("🦕"),
    ];
    const writes = values.map((v, i) =>
      b.write("adv", v, {
        key: i % 2 ? null : `k${i}`,
        headers: { n: String(i) },
        timestamp: 1000 + i,
      })
    );
    await Promise.all(writes);
    await b.drained(5000);
    assert.equal(p.received.length, values.length);
    p.received.forEach((r, i) => {
      assert.deepEqual(r.value, values[i]);
      assert.equal(r.key, i % 2 ? null : `k${i}`);
      assert.equal(r.timestamp, 1000 + i, "the write time becomes the record timestamp");
      assert.deepEqual(r.headers, [["n", enc.encode(String(i))]]);
    });
  });

  it("rejects bad input with an error naming it and keeps what it already holds", async () => {
    const p = new RecordingProvider();
    const b = await openBuffer(p);
    await b.write("good", "before");
    await assert.rejects(b.write("bad topic", "x"), {
      name: "TypeError",
      message: /Invalid topic name "bad topic"/,
    });
    await assert.rejects(b.write("good", { no: 1 } as unknown as string), {
      name: "TypeError",
      message: /value must be/,
    });
    await assert.rejects(b.write("good", "x", { timestamp: -5 }), {
      name: "TypeError",
      message: /timestamp/,
    });
    await b.write("good", "after");
    await b.drained(5000);
    assert.deepEqual(p.values(), ["before", "after"]);
  });

  it("writeRange stores the ranges it is given, refuses ranges outside src, and leaves new topics to write", async () => {
    const p = new RecordingProvider();
    const b = await openBuffer(p);
    const src = enc.encode("..key..value..");
    assert.equal(b.writeRange("t", src, 2, 3, 7, 5), null, "a topic never given to write");
    await b.write("t", "first");
    const stored = b.writeRange("t", src, 2, 3, 7, 5);
    assert.ok(stored instanceof Promise);
    assert.ok(b.writeRange("t", src, -1, 0, 0, 0) instanceof Promise, "no key, an empty value");
    const stamped = b.writeRange("t", src, -1, 0, 7, 5, 1_700_000_000_000);
    assert.ok(stamped instanceof Promise, "a given time");
    for (const bad of [-1, 1.5, Number.NaN, "1" as unknown as number]) {
      assert.throws(() => b.writeRange("t", src, 2, 3, 7, 5, bad), {
        name: "TypeError",
        message: new RegExp(`^timestamp must be a non-negative integer .*, got ${String(bad)}$`),
      });
    }
    for (
      const [args, what] of [
        [[2, 3, 7, 8], "value"], // past the end
        [[2, 3, -1, 2], "value"],
        [[2, -3, 7, 5], "key"],
        [[12, 3, 7, 5], "key"],
        [[2, 3, 7, 1.5], "value"],
      ] as Array<[[number, number, number, number], string]>
    ) {
      assert.throws(() => b.writeRange("t", src, args[0], args[1], args[2], args[3]), {
        name: "RangeError",
        message: new RegExp(`^the ${what}'s range .* is not inside src \\(14 bytes\\)`),
      });
    }
    assert.throws(() => b.writeRange("t", "text" as unknown as Uint8Array, -1, 0, 0, 1), {
      name: "TypeError",
      message: /src must be a Uint8Array, got string/,
    });
    await stored;
    await b.drained(5000);
    assert.deepEqual(p.values(), ["first", "value", "", "value"], "nothing stored by a bad call");
    assert.deepEqual(p.received.map((r) => r.key), [null, "key", null, null]);
    assert.equal(p.received[3].timestamp, 1_700_000_000_000);
  });

  it("validates options and names the bad one", async () => {
    const p = new RecordingProvider();
    await assert.rejects(MessageBuffer.open({ dir, provider: p, fsync: "sometimes" as "always" }), {
      name: "TypeError",
      message: /Option "fsync" must be one of "always", "interval", "never"/,
    });
    await assert.rejects(MessageBuffer.open({ dir, provider: p, segmentMaxBytes: 10 }), {
      name: "RangeError",
      message: /segmentMaxBytes/,
    });
    await assert.rejects(
      MessageBuffer.open({ dir, provider: p, segmentMaxBytes: 1 << 20, maxBufferBytes: 1 << 20 }),
      {
        name: "RangeError",
        message: /maxBufferBytes.*at least twice/,
      },
    );
    await assert.rejects(
      MessageBuffer.open({ dir, provider: p, segmentMaxAge: 5 } as unknown as MessageBufferOptions),
      {
        message: /Unknown option "segmentMaxAge"/,
      },
    );
    await assert.rejects(MessageBuffer.open({ dir, provider: {} as RecordingProvider }), {
      message: /Option "provider"/,
    });
  });

  it("rolls the active segment by size", async () => {
    const p = new RecordingProvider();
    p.down = true;
    const b = await openBuffer(p, { segmentMaxBytes: 4096, maxBufferBytes: 1 << 20 });
    for (let i = 0; i < 100; i++) await b.write("t", "x".repeat(200));
    await b.flush();
    const segs = await segmentFiles();
    assert.ok(segs.length >= 5, `expected several segments, got ${segs.length}`);
    for (const s of segs) {
      const size = (await readFile(`${dir}/${s}`)).length;
      assert.ok(size <= 4096, `${s} is ${size} bytes`);
    }
    p.down = false;
    await b.drained(10_000);
    assert.equal(p.received.length, 100);
    assert.deepEqual(await segmentFiles(), segs.slice(-1), "delivered sealed segments are deleted");
  });

  it("rolls the active segment by age", async () => {
    const p = new RecordingProvider();
    p.down = true;
    const b = await openBuffer(p, { segmentMaxAgeMs: 50 });
    await b.write("t", "one");
    await waitFor(() => b.stats().backlog.segments === 1);
    await new Promise((r) => setTimeout(r, 120));
    await b.write("t", "two");
    await b.flush();
    assert.equal((await segmentFiles()).length, 2);
  });

  it("delivers while the segment is still active, without waiting for it to roll", async () => {
    const p = new RecordingProvider();
    const b = await openBuffer(p, { segmentMaxAgeMs: 3_600_000 });
    const t0 = Date.now();
    await b.write("t", "fast");
    await waitFor(() => p.received.length === 1, 2000, "delivery");
    assert.ok(Date.now() - t0 < 2000);
    assert.equal((await segmentFiles()).length, 1, "still the same active segment");
  });

  it("drops the oldest segments at the size cap and counts exactly what was dropped", async () => {
    const p = new RecordingProvider();
    p.down = true;
    const b = await openBuffer(p, {
      segmentMaxBytes: 4096,
      maxBufferBytes: 16384,
      whenFull: "drop-oldest",
    });
    const N = 400;
    for (let i = 0; i < N; i++) {
      await b.write("t", `m${String(i).padStart(4, "0")}-${"x".repeat(90)}`);
    }
    await b.flush();
    const s = b.stats();
    assert.ok(s.counters.dropped > 0, "something was dropped");
    assert.ok(s.usedBytes <= 16384 + 4096, `used ${s.usedBytes}`);
    p.down = false;
    await b.drained(10_000);
    const got = p.values();
    assert.equal(got.length + b.stats().counters.dropped, N, "delivered + dropped = written");
    // What survives is the newest records, contiguous and in order.
    const first = Number(got[0].slice(1, 5));
    assert.deepEqual(
      got.map((v) => Number(v.slice(1, 5))),
      Array.from({ length: got.length }, (_, i) => first + i),
    );
    assert.equal(first, b.stats().counters.dropped);
  });

  it("does not deliver a batch whose segment was pruned while its send was failing", async () => {
    const p = new RecordingProvider();
    const b = await openBuffer(p, {
      segmentMaxBytes: 4096,
      maxBufferBytes: 16384,
      batchMaxRecords: 10,
      retryInitialMs: 5,
      retryMaxMs: 20,
    });
    p.down = true; // opened fine; now every send fails and is retried
    const N = 400;
    for (let i = 0; i < N; i++) {
      await b.write("t", `m${String(i).padStart(4, "0")}-${"x".repeat(90)}`);
    }
    await waitFor(() => b.stats().counters.dropped > 0 && b.stats().counters.sendRetries > 0, 5000);
    p.down = false;
    await b.drained(10_000);
    const s = b.stats().counters;
    assert.equal(
      p.received.length + s.dropped,
      N,
      "each record either delivered or counted as dropped, not both",
    );
    const got = p.values().map((v) => Number(v.slice(1, 5)));
    assert.deepEqual(got, Array.from({ length: got.length }, (_, i) => s.dropped + i));
  });

  it('whenFull "reject" fails writes with BufferFullError and accepts again once there is room', async () => {
    const p = new RecordingProvider();
    p.down = true;
    const b = await openBuffer(p, {
      segmentMaxBytes: 4096,
      maxBufferBytes: 8192,
      whenFull: "reject",
    });
    let stored = 0;
    let err: unknown;
    for (let i = 0; i < 200; i++) {
      try {
        await b.write("t", `r${i}-${"y".repeat(100)}`);
        stored++;
      } catch (e) {
        err = e;
        break;
      }
    }
    assert.ok(err instanceof BufferFullError, String(err));
    assert.equal((err as BufferFullError).code, "MB_FULL");
    assert.ok(b.full);
    p.down = false;
    await waitFor(() => !b.full, 10_000, "room");
    await b.write("t", "later");
    await b.drained(10_000);
    assert.equal(p.received.length, stored + 1);
    assert.equal(b.stats().counters.dropped, 0);
  });

  it('whenFull "block" makes writes wait for room, then stores them in order', async () => {
    const p = new RecordingProvider();
    p.down = true;
    const b = await openBuffer(p, {
      segmentMaxBytes: 4096,
      maxBufferBytes: 8192,
      whenFull: "block",
    });
    const writes: Promise<void>[] = [];
    let resolved = 0;
    for (let i = 0; i < 200; i++) {
      writes.push(b.write("t", `b${i}-${"z".repeat(100)}`).then(() => void resolved++));
    }
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(resolved < 200, "some writes are waiting");
    assert.ok(b.stats().blockedWrites > 0);
    p.down = false;
    await Promise.all(writes);
    await b.drained(10_000);
    assert.deepEqual(
      p.values().map((v) => v.split("-")[0]),
      Array.from({ length: 200 }, (_, i) => `b${i}`),
    );
    assert.equal(b.stats().counters.dropped, 0);
  });

  it("does not deliver records older than maxRecordAgeMs, and counts them", async () => {
    const p = new RecordingProvider();
    const b = await openBuffer(p, { maxRecordAgeMs: 60_000 });
    await b.write("t", "old", { timestamp: Date.now() - 120_000 });
    await b.write("t", "fresh");
    await b.drained(5000);
    assert.deepEqual(p.values(), ["fresh"]);
    assert.equal(b.stats().counters.expired, 1);
  });

  it("expires a whole sealed segment only when even its newest record is past maxRecordAgeMs", async () => {
    const p = new RecordingProvider();
    p.down = true;
    const b = await openBuffer(p, {
      maxRecordAgeMs: 60_000,
      pruneIntervalMs: 20,
      segmentMaxAgeMs: 40,
      retryMaxMs: 20,
    });
    const old = Date.now() - 120_000;
    for (let i = 0; i < 3; i++) await b.write("t", `old-${i}`, { timestamp: old });
    await waitFor(() => b.stats().counters.expired === 3, 5000, "the all-old segment to expire");
    // One frame whose first (base) timestamp is old and whose second record is fresh.
    await Promise.all([
      b.write("t", "old-but-with-a-fresh-neighbour", { timestamp: old }),
      b.write("t", "fresh"),
    ]);
    await new Promise((r) => setTimeout(r, 200)); // several prune passes after the roll
    assert.equal(b.stats().counters.expired, 3, "a segment holding a fresh record is kept");
    p.down = false;
    await b.drained(5000);
    assert.deepEqual(p.values(), ["fresh"]);
    assert.equal(b.stats().counters.expired, 4, "the old record beside it is skipped and counted");
  });

  it("retries a failing provider without skipping, then delivers in order", async () => {
    const p = new RecordingProvider();
    const b = await openBuffer(p, { retryInitialMs: 5, retryMaxMs: 20 });
    p.down = true;
    for (let i = 0; i < 50; i++) await b.write("t", `r${i}`);
    await waitFor(() => b.stats().counters.sendRetries >= 3, 5000, "retries");
    assert.equal(b.stats().provider.state, "retrying");
    assert.match(b.stats().provider.lastError ?? "", /provider down/);
    p.down = false;
    await b.drained(5000);
    assert.deepEqual(p.values(), Array.from({ length: 50 }, (_, i) => `r${i}`));
    assert.equal(b.stats().provider.state, "ready");
  });

  it("moves records the provider rejects for good to dead letters and goes on", async () => {
    const p = new RecordingProvider();
    p.rejectIf = (r) =>
      dec.decode(r.value).startsWith("poison") ? "MESSAGE_TOO_LARGE: too big" : null;
    const b = await openBuffer(p);
    for (const v of ["a", "poison1", "b", "poison2", "c"]) await b.write("t", v);
    await b.drained(5000);
    assert.deepEqual(p.values(), ["a", "b", "c"]);
    assert.equal(b.stats().counters.deadLettered, 2);
    const dead = (await readdir(`${dir}/dead`)).filter((n) => n.endsWith(".seg"));
    assert.equal(dead.length, 1);
    const bytes = await readFile(`${dir}/dead/${dead[0]}`);
    const text = dec.decode(bytes);
    assert.match(text, /poison1/);
    assert.match(text, /MESSAGE_TOO_LARGE: too big/);
  });

  it("resumes at the checkpoint after close and reopen: nothing lost, nothing repeated", async () => {
    const p1 = new RecordingProvider();
    p1.hangAfterSends = 2; // the third batch is never acknowledged
    const b1 = await openBuffer(p1, { batchMaxRecords: 7, closeTimeoutMs: 200 });
    await Promise.all(Array.from({ length: 60 }, (_, i) => b1.write("t", `r${i}`)));
    await waitFor(() => p1.sends === 3, 5000);
    const delivered1 = p1.received.length;
    assert.equal(delivered1, 14);
    await closeBuffer(b1);
    const s = (await readdir(dir)).filter((n) => n.endsWith(".s"));
    assert.equal(s.length, 1, "one S file for the partly delivered segment");

    const p2 = new RecordingProvider();
    const b2 = await openBuffer(p2);
    await b2.drained(5000);
    assert.deepEqual(
      [...p1.values().slice(0, delivered1), ...p2.values()],
      Array.from({ length: 60 }, (_, i) => `r${i}`),
    );
  });

  it("starts over at the segment's start when its S file is corrupt (duplicates, no loss)", async () => {
    const p1 = new RecordingProvider();
    p1.hangAfterSends = 1;
    const b1 = await openBuffer(p1, { batchMaxRecords: 5, closeTimeoutMs: 200 });
    await Promise.all(Array.from({ length: 10 }, (_, i) => b1.write("t", `r${i}`)));
    await waitFor(() => p1.sends >= 2, 5000);
    assert.equal(p1.received.length, 5);
    await closeBuffer(b1);
    const sFile = (await readdir(dir)).find((n) => n.endsWith(".s"))!;
    await writeFile(`${dir}/${sFile}`, "garbage ".repeat(8));
    const lines: string[] = [];
    const p2 = new RecordingProvider();
    const b2 = await MessageBuffer.open({
      dir,
      provider: p2,
      logger: { ...silentLogger, warn: (m: string) => lines.push(m) },
    });
    buffers.keep(b2);
    await b2.drained(5000);
    assert.deepEqual(p2.values(), Array.from({ length: 10 }, (_, i) => `r${i}`));
    assert.ok(lines.some((l) => /unreadable S file/.test(l)), lines.join("\n"));
  });

  it("cuts a torn tail off the newest segment on open and keeps every whole record", async () => {
    const p1 = new RecordingProvider();
    p1.down = true;
    const b1 = await openBuffer(p1, { fsync: "always" });
    for (let i = 0; i < 5; i++) await b1.write("t", `r${i}`);
    await closeBuffer(b1);
    const [seg] = await segmentFiles();
    // As a crash while writing leaves it: no footer (the segment was never sealed), and half
    // a frame after the last whole one. No sync mark counts the seal's fsync either (a mark
    // that did would make the half frame fsynced data lost: corruption, not a torn write).
    const bytes = (await readFile(`${dir}/${seg}`)).subarray(0, -SEGMENT_FOOTER_SIZE);
    await writeFile(`${dir}/${seg}`, Buffer.concat([bytes, bytes.subarray(16, 40)]));
    await rm(`${dir}/SYNCED`);
    const p2 = new RecordingProvider();
    const b2 = await openBuffer(p2);
    await b2.drained(5000);
    assert.deepEqual(p2.values(), ["r0", "r1", "r2", "r3", "r4"]);
    assert.equal(b2.stats().counters.tornBytes, 24);
  });

  it("moves a corrupt frame and the rest of its segment to quarantine, and delivers the next segment", async () => {
    const p1 = new RecordingProvider();
    p1.down = true;
    const b1 = await openBuffer(p1, {
      fsync: "always",
      segmentMaxBytes: 2048,
      maxBufferBytes: 1 << 20,
    });
    for (let i = 0; i < 40; i++) {
      await b1.write("t", `r${String(i).padStart(2, "0")}-${"q".repeat(80)}`);
    }
    await closeBuffer(b1);
    const segs = await segmentFiles();
    assert.ok(segs.length >= 3);
    // Flip a byte inside the first frame of the first segment.
    const bytes = await readFile(`${dir}/${segs[0]}`);
    bytes[16 + 30] ^= 0xff;
    await writeFile(`${dir}/${segs[0]}`, bytes);
    const p2 = new RecordingProvider();
    const b2 = await openBuffer(p2);
    await b2.drained(5000);
    const q = await readdir(`${dir}/quarantine`);
    assert.equal(q.length, 1);
    assert.ok(q[0].startsWith(segs[0]));
    const s = b2.stats().counters;
    assert.ok(s.quarantinedRecords >= 1 && s.quarantinedBytes > 0);
    assert.equal(
      p2.received.length + s.quarantinedRecords,
      40,
      "delivered + quarantined = written",
    );
    assert.equal(p2.values().at(-1)?.slice(0, 3), "r39");
  });

  it("refuses a second open of the same directory, naming the holder", async () => {
    const b = await openBuffer(new RecordingProvider());
    await assert.rejects(
      MessageBuffer.open({ dir, provider: new RecordingProvider(), logger: silentLogger }),
      (e) => {
        assert.ok(e instanceof LockedError);
        assert.match(e.message, /in use by process \d+/);
        return true;
      },
    );
    await closeBuffer(b);
    const again = await openBuffer(new RecordingProvider());
    assert.ok(again);
  });

  it("fails writes after close with BufferClosedError and closes the provider", async () => {
    const p = new RecordingProvider();
    const b = await openBuffer(p);
    await b.write("t", "x");
    await closeBuffer(b);
    await assert.rejects(b.write("t", "y"), BufferClosedError);
    assert.ok(p.closed);
    await b.close(); // idempotent
  });

  it("sends a batch of concurrent writes through one frame (group commit)", async () => {
    const p = new RecordingProvider();
    const b = await openBuffer(p, { fsync: "always" });
    await Promise.all(Array.from({ length: 1000 }, (_, i) => b.write("t", `c${i}`)));
    await b.drained(5000);
    assert.deepEqual(p.values(), Array.from({ length: 1000 }, (_, i) => `c${i}`));
    assert.ok(p.sends <= 5, `1000 concurrent writes took ${p.sends} sends`);
  });
});

describe("ProgressSignal", () => {
  it("keeps nothing of a wait that timed out (whenWritable waits once a second while full)", async () => {
    // Measured in a fresh process: in one that other test files share, their leftovers grew
    // the heap by up to 116 MiB while this ran.
    const [cmd, args] = (globalThis as { Deno?: unknown }).Deno
      ? [process.execPath, [
        "run",
        "-A",
        "--v8-flags=--expose-gc",
        "tests/fixtures/progress_heap.ts",
      ]]
      : [process.execPath, ["tests/fixtures/progress_heap.ts"]];
    const out = execFileSync(cmd, args, { encoding: "utf8" });
    const grown = Number(out.trim());
    assert.ok(Number.isFinite(grown), `the fixture printed ${JSON.stringify(out)}`);
    // Waits kept after their timeout grow the heap by 86 MiB (Bun); none kept, 0.2 MiB.
    assert.ok(grown < 8 * 2 ** 20, `heap grew ${(grown / 2 ** 20).toFixed(1)} MiB`);
    // A wait still wakes at notify().
    const signal = new ProgressSignal();
    const woke = signal.wait(60_000).then(() => true);
    signal.notify();
    assert.equal(await woke, true);
  });
});

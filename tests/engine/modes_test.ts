// The delivery modes with a fake provider that fails, hangs and refuses on demand: the exact
// order of writes across the switches of direct-until-error, what each mode tells the writer,
// and what it counts. The same modes against the real broker: tests/provider/modes_test.ts.

import { afterEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  BufferClosedError,
  BufferFullError,
  DeliveryError,
  DeliveryTimeoutError,
  type MessageBufferOptions,
  RecordRejectedError,
} from "../../mod.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import { memoryBufferOptions, OpenBuffers, RecordingProvider, waitFor } from "../_helpers.ts";

const buffers = new OpenBuffers();
afterEach(() => buffers.closeAll());

function open(
  provider: RecordingProvider,
  extra: Partial<MessageBufferOptions>,
  fs = new MemoryFileSystem(),
) {
  return buffers.open(
    memoryBufferOptions(fs, provider, { closeTimeoutMs: 2000, batchMaxRecords: 50, ...extra }),
  );
}

const range = (from: number, to: number, prefix = "r") =>
  Array.from({ length: to - from }, (_, i) => `${prefix}-${from + i}`);

describe("mode direct-until-error", () => {
  it("sends straight to the provider, stores nothing, and resolves once acknowledged", async () => {
    const p = new RecordingProvider();
    const fs = new MemoryFileSystem();
    const b = await open(p, { mode: "direct-until-error" }, fs);
    await waitFor(() => b.stats().provider.state === "ready");
    const writes = range(0, 500).map((v) => b.write("t", v, { key: "k" }));
    await Promise.all(writes);
    assert.deepEqual(p.values(), range(0, 500), "acknowledged before the writes resolved");
    const s = b.stats();
    assert.equal(s.path, "direct");
    assert.equal(s.counters.sentDirect, 500);
    assert.equal(s.counters.delivered, 500);
    assert.equal(s.counters.written, 0, "no record went through a segment file");
    assert.equal(s.backlog.records, 0);
    assert.equal(s.counters.switchesToDirect, 1, "the first switch, once the provider connected");
  });

  it("sends the writes made together (the lines of one socket read) in one send", async () => {
    // Each send waits for the one before it, so a first write sent alone would hold the rest of
    // its batch back by a round trip to Kafka.
    const p = new RecordingProvider();
    const b = await open(p, { mode: "direct-until-error" });
    await waitFor(() => b.stats().provider.state === "ready");
    for (const round of [0, 1, 2]) {
      const before = p.sends;
      await Promise.all(range(round * 40, round * 40 + 40).map((v) => b.write("t", v)));
      assert.equal(p.sends - before, 1, `round ${round}: 40 writes in ${p.sends - before} sends`);
    }
    assert.deepEqual(p.values(), range(0, 120));
  });

  it("buffers on disk at the first failed send, in order, and goes direct again once the backlog is delivered", async () => {
    const p = new RecordingProvider();
    const b = await open(p, { mode: "direct-until-error", retryInitialMs: 5, retryMaxMs: 20 });
    await waitFor(() => b.stats().provider.state === "ready");
    await Promise.all(range(0, 100).map((v) => b.write("t", v)));
    p.down = true;
    // These go direct, fail, and are stored on disk in write order; they resolve once stored.
    await Promise.all(range(100, 300).map((v) => b.write("t", v)));
    let s = b.stats();
    assert.equal(s.path, "disk");
    assert.equal(s.counters.switchesToBuffer, 1);
    assert.ok(s.counters.spilledRecords > 0, "the records waiting for Kafka went to disk");
    await Promise.all(range(300, 400).map((v) => b.write("t", v)));
    assert.equal(b.stats().path, "disk", "no switch back while the disk holds a backlog");
    p.down = false;
    await b.drained(10_000);
    // The next write finds the backlog delivered and the provider up: direct again.
    await Promise.all(range(400, 600).map((v) => b.write("t", v)));
    s = b.stats();
    assert.equal(s.path, "direct");
    assert.equal(s.counters.switchesToDirect, 2);
    assert.deepEqual(p.values(), range(0, 600), "every record once, in write order");
    assert.equal(s.counters.delivered, 600);
    assert.equal(s.counters.written, s.counters.spilledRecords + 100, "spilled, then buffered");
  });

  it("after a single failed send, writes go direct again only once the spilled records are delivered", async () => {
    // One failure, then Kafka is fine at once; the disk is slow, so the spilled record is
    // still being stored when the next write comes. That write must not overtake it.
    class FailOnce extends RecordingProvider {
      failures = 0;
      override send(records: Parameters<RecordingProvider["send"]>[0]) {
        if (this.failures-- > 0) return Promise.reject(new Error("one failure"));
        return super.send(records);
      }
    }
    const fs = new MemoryFileSystem();
    const p = new FailOnce();
    const b = await open(p, { mode: "direct-until-error", fsync: "always" }, fs);
    await waitFor(() => b.stats().provider.state === "ready");
    await b.write("t", "a0");
    fs.latencyMs = { sync: 200 };
    p.failures = 1;
    const w1 = b.write("t", "a1");
    await waitFor(() => b.stats().path === "disk", 10_000, "the switch to disk");
    const w2 = b.write("t", "a2");
    await Promise.all([w1, w2]);
    fs.latencyMs = {};
    await b.drained(10_000);
    assert.deepEqual(p.values(), ["a0", "a1", "a2"]);
  });

  it("buffers when a send takes longer than directTimeoutMs, and counts the records that may arrive twice", async () => {
    const p = new RecordingProvider();
    const b = await open(p, { mode: "direct-until-error", directTimeoutMs: 100 });
    await waitFor(() => b.stats().provider.state === "ready");
    let release = () => {};
    p.gate = new Promise<void>((r) => (release = r));
    const started = Date.now();
    await Promise.all(range(0, 20).map((v) => b.write("t", v)));
    assert.ok(Date.now() - started >= 90, "the writes waited for the deadline, then were stored");
    assert.equal(b.stats().path, "disk");
    assert.equal(b.stats().counters.spilledRecords, 20);
    // The slow send then succeeds: its records are also on disk and will be sent again.
    release();
    p.gate = null;
    await b.drained(10_000);
    const values = p.values();
    assert.deepEqual([...new Set(values)], range(0, 20), "in order, none lost");
    const duplicates = values.length - 20;
    assert.equal(b.stats().counters.resentRecords, duplicates, "every duplicate is counted");
    assert.equal(b.stats().counters.maybeDuplicatedDirect, duplicates, "as maybe duplicated");
    assert.ok(duplicates > 0, "the slow send did deliver");
  });

  it("buffers past directMaxRecords waiting records", async () => {
    const p = new RecordingProvider();
    const b = await open(p, { mode: "direct-until-error", directMaxRecords: 10 });
    await waitFor(() => b.stats().provider.state === "ready");
    let release = () => {};
    p.gate = new Promise<void>((r) => (release = r));
    const writes = range(0, 30).map((v) => b.write("t", v));
    assert.equal(b.stats().path, "disk", "the 11th write switched");
    release();
    p.gate = null;
    await Promise.all(writes);
    await b.drained(10_000);
    assert.deepEqual([...new Set(p.values())], range(0, 30));
  });

  it("sends refused records to dead letters through the disk path, the others delivered", async () => {
    const p = new RecordingProvider();
    p.rejectIf = (r) => new TextDecoder().decode(r.value) === "r-5" ? "TOO_LARGE" : null;
    const b = await open(p, { mode: "direct-until-error" });
    await waitFor(() => b.stats().provider.state === "ready");
    await Promise.all(range(0, 10).map((v) => b.write("t", v)));
    await b.drained(10_000);
    const c = b.stats().counters;
    assert.equal(c.deadLettered, 1);
    assert.equal(c.delivered, 9);
    assert.deepEqual(p.values(), range(0, 10).filter((v) => v !== "r-5"));
  });

  it("stores what still waits for Kafka at close, and delivers it after the next open", async () => {
    const fs = new MemoryFileSystem();
    const p = new RecordingProvider();
    const b = await open(p, { mode: "direct-until-error", closeTimeoutMs: 50 }, fs);
    await waitFor(() => b.stats().provider.state === "ready");
    p.hangAfterSends = p.sends;
    const writes = range(0, 10).map((v) => b.write("t", v));
    await buffers.close(b);
    await Promise.all(writes); // resolved: stored on disk
    const p2 = new RecordingProvider();
    const b2 = await open(p2, { mode: "direct-until-error" }, fs);
    await b2.drained(10_000);
    assert.deepEqual(p2.values(), range(0, 10));
  });
});

describe("mode block-on-error", () => {
  it("delivers writes made while the provider was down once it is back before their deadline", async () => {
    const p = new RecordingProvider();
    const b = await open(p, {
      mode: "block-on-error",
      directTimeoutMs: 2000,
      retryInitialMs: 800,
      retryMaxMs: 1600,
    });
    await b.write("t", "before");
    p.down = true;
    const first = b.write("t", "first");
    await new Promise((r) => setTimeout(r, 10));
    const second = b.write("t", "second");
    setTimeout(() => (p.down = false), 300);
    await Promise.all([first, second]);
    assert.deepEqual(p.values(), ["before", "first", "second"]);
  });

  it("retries a failing provider until the write's deadline, then fails it with DeliveryTimeoutError", async () => {
    const p = new RecordingProvider();
    const b = await open(p, {
      mode: "block-on-error",
      directTimeoutMs: 200,
      retryInitialMs: 10,
      retryMaxMs: 50,
    });
    await b.write("t", "first");
    p.down = true;
    const started = Date.now();
    const e = await b.write("t", "lost").then(() => null, (e) => e);
    assert.ok(e instanceof DeliveryTimeoutError, `got ${e}`);
    assert.equal(e.code, "MB_TIMEOUT");
    assert.match(e.message, /topic "t" within 200 ms; last error: Error: provider down/);
    assert.ok(Date.now() - started >= 190);
    // A write made while Kafka is down that it then accepts in time resolves.
    const pending = b.write("t", "late");
    setTimeout(() => (p.down = false), 50);
    await pending;
    assert.deepEqual(p.values(), ["first", "late"]);
    const c = b.stats().counters;
    assert.equal(c.failedWrites, 1);
    assert.equal(c.delivered, 2);
    assert.equal(b.stats().backlog.records, 0);
  });

  it("fails a write with RecordRejectedError when the provider refuses it", async () => {
    const p = new RecordingProvider();
    p.rejectIf = (r) => r.value.length > 3 ? "MESSAGE_TOO_LARGE: too big" : null;
    const b = await open(p, { mode: "block-on-error" });
    const [ok, bad] = await Promise.allSettled([b.write("t", "ok"), b.write("t", "too long")]);
    assert.equal(ok.status, "fulfilled");
    assert.equal(bad.status, "rejected");
    const e = (bad as PromiseRejectedResult).reason;
    assert.ok(e instanceof RecordRejectedError);
    assert.equal(e.reason, "MESSAGE_TOO_LARGE: too big");
  });

  it("refuses writes past directMaxRecords waiting, and reports full", async () => {
    const p = new RecordingProvider();
    p.gate = new Promise(() => {});
    const b = await open(p, { mode: "block-on-error", directMaxRecords: 3, closeTimeoutMs: 10 });
    const writes = range(0, 3).map((v) => b.write("t", v).then(() => null, (e) => e));
    assert.equal(b.full, true);
    assert.equal(b.wouldBlock, true, "the agent stops reading sockets");
    await assert.rejects(b.write("t", "x"), BufferFullError);
    await buffers.closeAll();
    for (const e of await Promise.all(writes)) {
      assert.ok(e instanceof BufferClosedError, `the waiting writes fail at close: ${e}`);
    }
    assert.equal(b.stats().counters.failedWrites, 3, "and are counted");
  });
});

describe("mode error-on-error", () => {
  it("fails the writes of a failed send with DeliveryError, and sends later writes again", async () => {
    const p = new RecordingProvider();
    const b = await open(p, { mode: "error-on-error" });
    await b.write("t", "a");
    p.down = true;
    const e = await b.write("t", "b").then(() => null, (e) => e);
    assert.ok(e instanceof DeliveryError, `got ${e}`);
    assert.equal(e.retriable, true);
    assert.match(e.message, /topic "t": Error: provider down/);
    p.down = false;
    await b.write("t", "c");
    assert.deepEqual(p.values(), ["a", "c"]);
    assert.equal(b.stats().counters.failedWrites, 1);
    assert.equal(b.stats().provider.state, "ready");
  });

  it("needs no buffer directory, and names a bad record at once", async () => {
    const p = new RecordingProvider();
    const fs = new MemoryFileSystem();
    const o = memoryBufferOptions(fs, p, { mode: "error-on-error" });
    delete (o as { dir?: string }).dir;
    const b = await buffers.open(o);
    await assert.rejects(b.write("bad topic!", "x"), /Invalid topic name "bad topic!"/);
    await b.write("t", "x");
    assert.deepEqual(await fs.list("/").catch(() => []), [], "nothing on disk");
    assert.equal(b.stats().path, "direct");
  });
});

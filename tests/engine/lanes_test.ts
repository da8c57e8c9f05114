// Delivery lanes with a fake provider that fails one topic's sends on demand: a failing topic
// holds up only its lane, topics keep their lane across restarts and changes of `lanes`, the
// backlog from before lanes keeps its order, and the sends in flight stay within the bound.
// Against the real broker (an ACL refusing one topic): tests/provider/lanes_test.ts.

import { afterEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { MessageBufferOptions } from "../../mod.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import type { FileHandle } from "../../src/fs/types.ts";
import type { ProviderRecord, SendResult } from "../../src/provider/types.ts";
import { memoryBufferOptions, OpenBuffers, RecordingProvider, waitFor } from "../_helpers.ts";

const buffers = new OpenBuffers();
afterEach(() => buffers.closeAll());

/** Fails every send that holds a record of a topic in `failing`; counts sends in flight. */
class TopicFailingProvider extends RecordingProvider {
  failing = new Set<string>();
  inFlight = 0;
  maxInFlight = 0;
  hold: Promise<void> | null = null;
  override async send(records: readonly ProviderRecord[]): Promise<SendResult | void> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.hold) await this.hold;
      if (records.some((r) => this.failing.has(r.topic))) {
        this.sends++;
        throw new Error(`topic down: ${[...this.failing].join(",")}`);
      }
      return await super.send(records);
    } finally {
      this.inFlight--;
    }
  }
  valuesOf(topic: string): string[] {
    return this.received.filter((r) => r.topic === topic).map((r) =>
      new TextDecoder().decode(r.value)
    );
  }
}

function open(
  p: RecordingProvider,
  extra: Partial<MessageBufferOptions>,
  fs = new MemoryFileSystem(),
) {
  return buffers.open(memoryBufferOptions(fs, p, {
    closeTimeoutMs: 2000,
    batchMaxRecords: 10,
    maxBufferBytes: 1 << 22,
    ...extra,
  }));
}

/** A memory file system that notes which lane directories' segments were read. */
class ReadCountingFs extends MemoryFileSystem {
  /** Lane directories relative to /buf ("" for lane 0, "lanes/1", ...). */
  readonly lanesRead = new Set<string>();
  override async open(path: string, mode: "create" | "append" | "read"): Promise<FileHandle> {
    const fh = await super.open(path, mode);
    const m = /^\/buf\/(?:(lanes\/\d+)\/)?[^/]+\.seg$/.exec(path);
    if (mode !== "read" || m === null) return fh;
    const lane = m[1] ?? "";
    return {
      ...fh,
      append: (d) => fh.append(d),
      writeAt: (d, at) => fh.writeAt(d, at),
      sync: () => fh.sync(),
      truncate: (n) => fh.truncate(n),
      size: () => fh.size(),
      close: () => fh.close(),
      read: (into, offset, length, position) => {
        this.lanesRead.add(lane);
        return fh.read(into, offset, length, position);
      },
    };
  }
}

const values = (topic: string, n: number) => Array.from({ length: n }, (_, i) => `${topic}-${i}`);

async function writeBoth(b: Awaited<ReturnType<typeof open>>, n: number) {
  const ws: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    ws.push(b.write("slow", `slow-${i}`), b.write("fast", `fast-${i}`));
  }
  await Promise.all(ws);
}

describe("lanes", () => {
  it("a topic whose sends fail holds up only its own lane", async () => {
    const p = new TopicFailingProvider();
    p.failing.add("slow");
    const b = await open(p, { lanes: 2 });
    await writeBoth(b, 100);
    await waitFor(() => p.valuesOf("fast").length === 100, 10_000, "the other lane to deliver");
    assert.deepEqual(p.valuesOf("fast"), values("fast", 100), "in order");
    assert.equal(p.valuesOf("slow").length, 0);
    const lanes = b.stats().lanes;
    assert.deepEqual(lanes.map((l) => l.topics), [["slow"], ["fast"]]);
    assert.equal(lanes[0].provider.state, "retrying");
    assert.equal(lanes[1].provider.state, "ready");
    assert.equal(lanes[0].backlog.records, 100);
    assert.equal(b.stats().provider.state, "retrying", "overall: not every lane delivers");
    p.failing.clear();
    await b.drained(10_000);
    assert.deepEqual(p.valuesOf("slow"), values("slow", 100), "then the slow topic, in order");
  });

  it("with one lane, the failing topic holds up every topic (what lanes are for)", async () => {
    const p = new TopicFailingProvider();
    p.failing.add("slow");
    const b = await open(p, { lanes: 1 });
    await writeBoth(b, 100);
    await waitFor(() => p.sends >= 5, 10_000, "five failed sends");
    assert.equal(p.valuesOf("fast").length, 0, "fast waits behind slow's first batch");
    assert.deepEqual(b.stats().lanes.map((l) => l.topics), [["*"]]);
  });

  it("keeps each topic in its lane across restarts and a change of lanes", async () => {
    const fs = new MemoryFileSystem();
    const p = new TopicFailingProvider();
    p.failing = new Set(["a", "b", "c"]); // keep everything on disk
    const b1 = await open(p, { lanes: 3 }, fs);
    for (const t of ["a", "b", "c"]) await b1.write(t, `${t}-0`);
    assert.deepEqual(b1.stats().lanes.map((l) => l.topics), [["a"], ["b"], ["c"]]);
    await buffers.close(b1);
    assert.ok((await fs.list("/buf/lanes/1")).some((n) => n.endsWith(".seg")));
    assert.ok((await fs.list("/buf/lanes/2")).some((n) => n.endsWith(".seg")));
    // Fewer lanes: lane 2 stays open for c (and its backlog); new topics use lanes 0 and 1.
    const b2 = await open(p, { lanes: 2 }, fs);
    await b2.write("c", "c-1");
    await b2.write("d", "d-0");
    const lanes = b2.stats().lanes;
    assert.equal(lanes.length, 3);
    assert.deepEqual(lanes[2].topics, ["c"]);
    assert.ok(lanes[0].topics.includes("d") || lanes[1].topics.includes("d"));
    assert.equal(b2.stats().backlog.records, 5);
    p.failing.clear();
    await b2.drained(10_000);
    assert.deepEqual(p.valuesOf("c"), ["c-0", "c-1"], "c in order across the restart");
  });

  it("keeps new topics in lane 0 while the backlog from before lanes is delivered", async () => {
    const fs = new MemoryFileSystem();
    const p = new TopicFailingProvider();
    p.failing = new Set(["old", "new"]);
    const b1 = await open(p, { lanes: 1 }, fs);
    await b1.write("old", "old-0");
    await b1.write("new", "new-0"); // "new" is in the backlog too, but nothing says so
    await buffers.close(b1);
    const b2 = await open(p, { lanes: 2 }, fs);
    await b2.write("new", "new-1");
    assert.deepEqual(b2.stats().lanes[0].topics, ["new"], "pinned to lane 0, behind new-0");
    p.failing.clear();
    await b2.drained(10_000);
    assert.deepEqual(p.valuesOf("new"), ["new-0", "new-1"]);
    await b2.write("later", "later-0");
    assert.deepEqual(b2.stats().lanes[1].topics, ["later"], "spread again once delivered");
  });

  it("keeps a new topic's writes in order while its lane is being recorded, even from microtasks", async () => {
    const fs = new MemoryFileSystem();
    fs.latencyMs = { sync: 5 };
    const p = new TopicFailingProvider();
    const b = await open(p, { lanes: 2 }, fs);
    const ws: Promise<void>[] = [];
    for (let i = 0; i < 50; i++) {
      ws.push(b.write("t", `t-${i}`));
      await null; // a microtask between writes, as an awaiting caller makes
    }
    await Promise.all(ws);
    await b.drained(10_000);
    assert.deepEqual(p.valuesOf("t"), values("t", 50));
  });

  it("gathers a flood of a new topic's records while its lane is recorded: stored in order, byte for byte; a bad one refused alone", async () => {
    const fs = new MemoryFileSystem();
    fs.latencyMs = { sync: 20 };
    const p = new TopicFailingProvider();
    const b = await open(p, { lanes: 2, segmentMaxBytes: 64 << 10, batchMaxRecords: 500 }, fs);
    const enc = new TextEncoder();
    const n = 2000;
    const value = (i: number) => `new-${i}-${"v".repeat(i % 50 === 0 ? 3000 : 100)}`;
    const ws: Promise<void>[] = [];
    let bad: Promise<void> | null = null;
    // All written before the topic's lane is durable (the fsync takes 20 ms): through `write`,
    // with a key, headers and a time, and through `writeRange`, from one buffer.
    for (let i = 0; i < n; i++) {
      if (i === n / 2) bad = b.write("new", 42 as unknown as string);
      if (i % 2 === 0) {
        ws.push(
          b.write("new", value(i), { key: `k${i}`, headers: { h: `${i}` }, timestamp: 1e12 + i }),
        );
      } else {
        const key = `k${i}`, line = enc.encode(`${key}|${value(i)}`);
        const w = b.writeRange(
          "new",
          line,
          0,
          key.length,
          key.length + 1,
          line.length - key.length - 1,
        );
        assert.ok(w !== null, "a new topic's record is taken while its lane is chosen");
        ws.push(w);
      }
    }
    assert.equal(
      b.stats().lanes.flatMap((l) => l.topics).includes("new"),
      false,
      "not assigned yet",
    );
    await assert.rejects(bad!, TypeError);
    await Promise.all(ws);
    await b.drained(10_000);
    const got = p.received.filter((r) => r.topic === "new");
    assert.equal(got.length, n);
    got.forEach((r, i) => {
      assert.equal(new TextDecoder().decode(r.value), value(i), `record ${i}`);
      assert.equal(r.key, `k${i}`);
      if (i % 2 === 0) {
        assert.deepEqual(r.headers.map(([k, v]) => [k, new TextDecoder().decode(v)]), [[
          "h",
          `${i}`,
        ]]);
        assert.equal(r.timestamp, 1e12 + i);
      } else assert.deepEqual(r.headers, []);
    });
  });

  it("refuses a new topic's gathered records, all of them, when its lane is at the cap under whenFull reject", async () => {
    const fs = new MemoryFileSystem();
    const p = new TopicFailingProvider();
    p.failing = new Set(["a", "b", "c"]); // nothing is delivered: the lanes fill
    const b = await open(p, { lanes: 2, whenFull: "reject", maxBufferBytes: 8192 }, fs);
    for (const t of ["a", "b"]) {
      let refused = false;
      for (let i = 0; !refused && i < 1000; i++) {
        await b.write(t, `${t}-${i}-${"x".repeat(200)}`).catch((e) => {
          assert.equal((e as Error).name, "BufferFullError");
          refused = true;
        });
      }
      assert.ok(refused, `lane of ${t} filled`);
    }
    const before = b.stats().backlog.records;
    const cs = Array.from({ length: 20 }, (_, i) => b.write("c", `c-${i}`));
    const outcomes = await Promise.allSettled(cs);
    assert.ok(
      outcomes.every((o) => o.status === "rejected" && o.reason.name === "BufferFullError"),
    );
    assert.equal(b.stats().backlog.records, before, "none of them is held");
    p.failing.clear();
    await b.drained(10_000);
    assert.deepEqual(p.valuesOf("c"), []);
    await b.write("c", "c-later");
    await b.drained(10_000);
    assert.deepEqual(p.valuesOf("c"), ["c-later"]);
  });

  it("holds a new topic's gathered records, in order, while its lane is at the cap under whenFull block", async () => {
    const fs = new MemoryFileSystem();
    const p = new TopicFailingProvider();
    p.failing = new Set(["a", "b", "c"]);
    const b = await open(p, { lanes: 2, whenFull: "block", maxBufferBytes: 8192 }, fs);
    // a fills lane 0; b takes lane 1; c then goes to lane 0 (as few topics, the first).
    for (let i = 0; !b.full && i < 1000; i++) {
      void b.write("a", `a-${i}-${"x".repeat(200)}`);
      await b.flush();
    }
    await b.write("b", "b-0");
    assert.ok(b.full, "lane 0 is at the cap");
    let stored = 0;
    const cs = Array.from({ length: 20 }, (_, i) => b.write("c", `c-${i}`).then(() => stored++));
    await b.flush();
    assert.equal(stored, 0, "they wait for room");
    assert.ok(b.stats().blockedWrites >= 20, "and are counted as waiting");
    p.failing.clear();
    await Promise.all(cs);
    await b.drained(10_000);
    assert.deepEqual(p.valuesOf("c"), values("c", 20));
  });

  it("a torn line in lanes/topics (a crash, a full disk) neither loses nor splits a topic", async () => {
    const fs = new MemoryFileSystem();
    const p = new TopicFailingProvider();
    p.failing = new Set(["a", "b", "c"]);
    const b1 = await open(p, { lanes: 2 }, fs);
    await b1.write("a", "a-0");
    await b1.write("b", "b-0");
    await buffers.close(b1);
    const fh = await fs.open("/buf/lanes/topics", "append");
    // A torn append keeps a prefix of a newline and a line: x was never stored.
    await fh.append(new TextEncoder().encode('\n{"topic":"x","la'));
    await fh.close();
    const b2 = await open(p, { lanes: 2 }, fs);
    await b2.write("c", "c-0");
    const laneOfC = b2.stats().lanes.findIndex((l) => l.topics.includes("c"));
    await buffers.close(b2);
    const b3 = await open(p, { lanes: 2 }, fs);
    assert.deepEqual(
      b3.stats().lanes.map((l) => l.topics),
      [["a", ...(laneOfC === 0 ? ["c"] : [])], ["b", ...(laneOfC === 1 ? ["c"] : [])]],
      "every topic kept its lane; the torn line was skipped",
    );
    await b3.write("c", "c-1");
    p.failing.clear();
    await b3.drained(10_000);
    assert.deepEqual(p.valuesOf("c"), ["c-0", "c-1"]);
  });

  it("keeps new topics in lane 0 across a restart while the backlog from before lanes waits", async () => {
    const fs = new MemoryFileSystem();
    const p = new TopicFailingProvider();
    p.failing = new Set(["x", "y"]);
    const b1 = await open(p, { lanes: 1 }, fs);
    await b1.write("x", "x-old");
    await buffers.close(b1);
    const b2 = await open(p, { lanes: 2 }, fs);
    await b2.write("y", "y-0"); // creates lanes/topics: the rule must survive the restart
    await buffers.close(b2);
    const b3 = await open(p, { lanes: 2 }, fs);
    await b3.write("x", "x-new");
    assert.deepEqual(b3.stats().lanes[0].topics, ["x", "y"]);
    p.failing.clear();
    await b3.drained(10_000);
    assert.deepEqual(p.valuesOf("x"), ["x-old", "x-new"]);
  });

  it("stores a write that waits for its topic's lane before close() returns", async () => {
    const fs = new MemoryFileSystem();
    fs.latencyMs = { sync: 20 };
    const p = new TopicFailingProvider();
    p.failing.add("late");
    const b = await open(p, { lanes: 2 }, fs);
    let stored = false;
    const w = b.write("late", "late-0").then(() => (stored = true));
    await buffers.close(b);
    assert.equal(stored, true, "the write resolved before close did");
    await w;
    p.failing.clear();
    const b2 = await open(p, { lanes: 2 }, fs);
    await b2.drained(10_000);
    assert.deepEqual(p.valuesOf("late"), ["late-0"]);
  });

  it("counts a failure to record a new topic's lane, stores nothing of it, and tries again", async () => {
    const fs = new MemoryFileSystem();
    const p = new TopicFailingProvider();
    const b = await open(p, { lanes: 2 }, fs);
    fs.failNext("sync", "EIO", "lanes/topics");
    await assert.rejects(b.write("t", "t-0"), /Cannot append to ".*lanes\/topics": EIO/);
    const c = b.stats().counters;
    assert.equal(c.storageErrors, 1);
    assert.equal(c.writeErrors, 1);
    await b.write("t", "t-1");
    await b.drained(10_000);
    assert.deepEqual(p.valuesOf("t"), ["t-1"]);
  });

  it("keeps at most maxSendsInFlight sends in flight across lanes", async () => {
    const p = new TopicFailingProvider();
    let release = () => {};
    p.hold = new Promise((r) => (release = r));
    const b = await open(p, { lanes: 4, maxSendsInFlight: 2 });
    const ws = ["t0", "t1", "t2", "t3"].map((t) => b.write(t, "x"));
    await Promise.all(ws);
    await waitFor(() => p.inFlight === 2, 10_000, "two sends in flight");
    release();
    p.hold = null;
    await b.drained(10_000);
    assert.equal(p.maxInFlight, 2);
    assert.equal(p.received.length, 4);
  });

  it("a lane waiting for a send permit reads no batch until one is free", async () => {
    // Segment reads by lane directory ("" is lane 0), and, at each send's start, the lanes
    // whose segments had been read by then.
    const fs = new ReadCountingFs();
    const p = new TopicFailingProvider();
    const readAtSend: string[][] = [];
    let release = () => {};
    p.hold = new Promise((r) => (release = r));
    const send = p.send.bind(p);
    p.send = (records) => {
      readAtSend.push([...fs.lanesRead].sort());
      return send(records);
    };
    const b = await open(p, { lanes: 3, maxSendsInFlight: 1 }, fs);
    await b.write("t0", "x");
    await waitFor(() => p.inFlight === 1, 10_000, "the first lane's send in flight");
    await Promise.all([b.write("t1", "x"), b.write("t2", "x")]);
    const laneOf = (t: string) => b.stats().lanes.find((l) => l.topics.includes(t))!.dir;
    release();
    p.hold = null;
    await b.drained(10_000);
    assert.equal(p.received.length, 3);
    assert.equal(p.maxInFlight, 1);
    // The second send started before the third lane had read anything: it waited for its
    // turn, holding no batch. (Whichever of the two lanes asked first, once the first send's
    // permit came free, got the one turn there was: the other waited for it either way.)
    const [second, third] = [p.received[1].topic, p.received[2].topic];
    assert.deepEqual(readAtSend[1], [laneOf("t0"), laneOf(second)].sort());
    assert.ok(!readAtSend[1].includes(laneOf(third)), `lane of ${third} read before its turn`);
  });

  it("refuses a cap too small for two segments per lane, naming the options", async () => {
    await assert.rejects(
      open(new RecordingProvider(), { lanes: 4, segmentMaxBytes: 2048, maxBufferBytes: 8192 }),
      /Option "maxBufferBytes" \(8192\) must be at least 2 × "segmentMaxBytes" \(2048\) × "lanes" \(4\)/,
    );
  });
});

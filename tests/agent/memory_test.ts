// The soft memory limit (src/agent/memory.ts): when it collects, how its time is capped, and
// its backing off while what is live stays above the limit; on a made-up clock and resident
// set, then with the runtime's own collector.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { MemoryLimit, memoryStats, runtimeCollector } from "../../src/agent/memory.ts";

const MiB = 1024 * 1024;

/** A limit of 100 MiB over a resident set and clock the test sets; collections take `took`. */
function rig(took = 5, afterCollect = (rss: number) => rss) {
  const s = { rss: 50 * MiB, now: 0, collected: 0 };
  const limit = new MemoryLimit({
    limitBytes: 100 * MiB,
    rss: () => s.rss,
    now: () => s.now,
    collect: () => {
      s.collected++;
      s.now += took;
      s.rss = afterCollect(s.rss);
    },
  });
  return { s, limit };
}

describe("MemoryLimit", () => {
  it("does not collect below the limit, and checks often only from three quarters of it", () => {
    const { s, limit } = rig();
    const far = limit.check();
    s.rss = 80 * MiB;
    const near = limit.check();
    s.rss = 100 * MiB; // (at the limit is not above it)
    limit.check();
    assert.equal(s.collected, 0);
    assert.ok(far > near, `checks further apart below 3/4 of the limit (${far} vs ${near} ms)`);
  });

  it("collects above the limit, then not again until the collection is a tenth of the time passed", () => {
    const { s, limit } = rig(5, () => 60 * MiB);
    s.rss = 120 * MiB;
    limit.check();
    assert.equal(s.collected, 1);
    assert.equal(s.rss, 60 * MiB);
    // It took 5 ms: the next may come 50 ms after the first began.
    s.rss = 120 * MiB;
    s.now = 49;
    limit.check();
    assert.equal(s.collected, 1, "a collection within 50 ms of one taking 5 would be over a tenth");
    s.now = 50;
    limit.check();
    assert.equal(s.collected, 2);
    assert.deepEqual(
      { ...limit.stats, collectSeconds: Math.round(limit.stats.collectSeconds * 1000) },
      { rssBytes: 60 * MiB, limitBytes: 100 * MiB, collections: 2, collectSeconds: 10 },
    );
  });

  it("backs off, doubling up to 10 s, while collections leave the resident set above the limit; resets once one does not", () => {
    let stuck = true;
    const { s, limit } = rig(1, (rss) => stuck ? rss : 60 * MiB);
    s.rss = 150 * MiB;
    const gaps: number[] = [];
    let last = 0;
    for (let t = 0; t <= 40_000; t += 10) {
      s.now = Math.max(s.now, t);
      const before = s.collected;
      limit.check();
      if (s.collected > before) {
        if (before > 0) gaps.push(t - last);
        last = t;
      }
    }
    assert.deepEqual(
      gaps.slice(0, 8),
      [100, 200, 400, 800, 1600, 3200, 6400, 10_000],
      "each wait twice the last",
    );
    assert.ok(gaps.slice(7).every((g) => g === 10_000), `then every 10 s: ${gaps}`);
    // Now a collection brings it below the limit: the next time it is above, no waiting.
    stuck = false;
    s.now += 10_000;
    limit.check();
    assert.equal(s.rss, 60 * MiB);
    const n = s.collected;
    s.rss = 150 * MiB;
    s.now += 10; // (past took / share = 10 ms)
    limit.check();
    assert.equal(s.collected, n + 1, "no back-off after a collection that brought it below");
  });

  it("forgets the back-off once the resident set falls below the limit by itself", () => {
    const { s, limit } = rig(1, (rss) => rss); // (collections free nothing)
    s.rss = 150 * MiB;
    for (let i = 0; i < 4; i++) {
      s.now = i === 0 ? 0 : s.now + 10_000;
      limit.check();
    }
    assert.equal(s.collected, 4, "backing off: 100, 200, 400 ms, each waited out");
    // While it backs off, it checks no more often than a collection could come, nor less
    // often than FAR (so that a fall below is seen).
    const wait = limit.check();
    assert.ok(wait > 20 && wait <= 250, `next check in ${wait} ms`);
    s.rss = 50 * MiB; // the engine collected, or the drain ended
    s.now += 10;
    limit.check();
    s.rss = 150 * MiB;
    s.now += 800; // (past the 800 ms the back-off would have asked for, had it gone on)
    const n = s.collected;
    limit.check();
    assert.equal(s.collected, n + 1);
    s.now += 100; // the first step of a fresh back-off, not 1600 ms
    limit.check();
    assert.equal(s.collected, n + 2);
  });

  it("skips a check whose resident set cannot be read (Bun throws when out of file descriptors)", () => {
    let collected = 0;
    const limit = new MemoryLimit({
      limitBytes: MiB,
      rss: () => {
        throw new Error("Failed to get memory usage, errno 24");
      },
      collect: () => collected++,
    });
    assert.equal(limit.check(), 250, "tried again later");
    assert.equal(collected, 0);
    assert.ok(Number.isNaN(limit.stats.rssBytes), "reported as unknown, not thrown");
  });

  it("gives back the executable's unused pages after each collection, and once the agent has started", () => {
    const s = { rss: 50 * MiB, now: 0, order: [] as string[] };
    const limit = new MemoryLimit({
      limitBytes: 100 * MiB,
      rss: () => s.rss,
      now: () => s.now,
      collect: () => s.order.push("collect"),
      trim: () => s.order.push("trim"),
    });
    limit.check();
    assert.deepEqual(s.order, [], "below the limit: neither");
    limit.settled();
    assert.deepEqual(s.order, ["trim"]);
    s.rss = 120 * MiB;
    limit.check();
    assert.deepEqual(s.order, ["trim", "collect", "trim"]);
    // A trim that throws costs only memory: the start does not fail with it.
    const failing = new MemoryLimit({
      limitBytes: 1,
      collect: () => {},
      trim: () => {
        throw new Error("madvise went away");
      },
    });
    assert.doesNotThrow(() => failing.settled());
  });

  it("refuses a limit that is not above 0", () => {
    for (const bad of [0, -1, Number.NaN]) {
      assert.throws(
        () => new MemoryLimit({ limitBytes: bad, collect: () => {} }),
        /memory limit must be above 0/,
      );
    }
  });

  it("with the runtime's collector (where there is one), collects and reports the resident set", () => {
    const collect = runtimeCollector();
    const isBun = "Bun" in globalThis;
    // Bun has one; Deno's V8 keeps what it collects, so none there.
    assert.equal(collect !== null, isBun);
    if (collect === null) {
      assert.equal(memoryStats(null).collections, 0);
      return;
    }
    const limit = new MemoryLimit({ limitBytes: 1, collect });
    limit.check();
    const s = memoryStats(limit);
    assert.equal(s.collections, 1);
    assert.ok(s.rssBytes > MiB, `resident set ${s.rssBytes}`);
    assert.equal(s.limitBytes, 1);
  });
});

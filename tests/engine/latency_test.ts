// The delivery latency window that `top`, /metrics and stats() report.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { LATENCY_WINDOW_MS, LatencyWindow } from "../../src/engine/latency.ts";

describe("delivery latency", () => {
  it("forgets a minute after they were delivered the latencies of an outage", () => {
    const realNow = Date.now;
    let now = 1_000_000_000;
    Date.now = () => now;
    try {
      const w = new LatencyWindow();
      // An outage: 100 records delivered 60 s after they were written.
      w.add(Array.from({ length: 100 }, () => ({ timestamp: now - 60_000 })));
      assert.equal(w.stats().p99, 60_000);
      // Later, quick deliveries; the outage's records are still within the window.
      now += 30_000;
      w.add(Array.from({ length: 300 }, () => ({ timestamp: now - 5 })));
      assert.equal(w.stats().p99, 60_000);
      assert.equal(w.stats().p50, 5);
      // Once the outage's deliveries are older than the window, only the quick ones count.
      now += LATENCY_WINDOW_MS - 29_999;
      assert.deepEqual(
        { ...w.stats() },
        { p50: 5, p99: 5, max: 5, sum: 100 * 60_000 + 300 * 5, count: 400 },
      );
      // With nothing delivered in the last minute there are no quantiles, only totals.
      now += LATENCY_WINDOW_MS;
      assert.deepEqual({ ...w.stats() }, {
        p50: null,
        p99: null,
        max: null,
        sum: 100 * 60_000 + 300 * 5,
        count: 400,
      });
    } finally {
      Date.now = realNow;
    }
  });
});

// Pools let go of memory they no longer need (IdleTrim): after a burst, an agent that kept
// every buffer the burst made stayed tens of MiB above where it otherwise settles.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { FreeList, IDLE_TRIM_MS, IdleTrim } from "../../src/binary/idle.ts";
import { ReadBlocks } from "../../src/segment/reader.ts";
import { BatchMemory } from "../../src/provider/kafka/produce.ts";
import { waitFor } from "../_helpers.ts";

/** A free list of numbers with its trim, as the pools keep theirs. */
function pool(ms: number) {
  const free: number[] = [];
  const trim = new IdleTrim(() => free.length, (n) => free.splice(0, n), ms);
  return {
    free,
    trim,
    give(x: number) {
      free.push(x);
      trim.gave();
    },
    take(): number | undefined {
      const x = free.pop();
      if (x !== undefined) trim.took();
      return x;
    },
  };
}

describe("IdleTrim", () => {
  it("empties a free list nobody takes from", async () => {
    const p = pool(20);
    for (let i = 0; i < 5; i++) p.give(i);
    await waitFor(() => p.free.length === 0, 5000, "the free list to empty");
    p.trim.stop();
  });

  it("keeps what steady use takes, and drops the rest", async () => {
    const p = pool(20);
    for (let i = 0; i < 4; i++) p.give(i);
    // One item in use at a time: three of four are never needed.
    let misses = 0, uses = 0;
    const use = setInterval(() => {
      const x = p.take();
      if (x === undefined) misses++;
      uses++;
      p.give(x ?? -1);
    }, 2);
    try {
      await waitFor(() => p.free.length === 1, 5000, "the free list to shrink to one");
      // Once shrunk, the one item kept serves every use, period after period.
      const [missed, used] = [misses, uses];
      await waitFor(() => uses >= used + 100, 5000, "100 more uses");
      assert.equal(misses, missed, "a use found the free list empty after it shrank");
      assert.equal(p.free.length, 1);
    } finally {
      clearInterval(use);
      p.trim.stop();
    }
  });
});

describe("FreeList", () => {
  it("hands out the smallest item that fits, within the bounds asked for, once", () => {
    const list = new FreeList<{ n: number }>((x) => x.n, 3);
    const [a, b, c] = [{ n: 100 }, { n: 300 }, { n: 200 }];
    for (const x of [a, b, c, b]) list.give(x);
    assert.equal(list.count, 3, "an item given twice is kept once");
    assert.equal(list.take(150), c);
    assert.equal(list.take(150, 250), undefined, "none of 150 to 250 bytes is left");
    assert.equal(list.take(50), a);
    assert.equal(list.take(50), b);
    assert.equal(list.take(1), undefined);
    list.close();
  });

  it("when full, keeps the larger", () => {
    const list = new FreeList<{ n: number }>((x) => x.n, 2);
    const [small, mid, big] = [{ n: 10 }, { n: 20 }, { n: 30 }];
    for (const x of [small, mid, { n: 5 }, big]) list.give(x);
    assert.equal(list.count, 2);
    assert.equal(list.take(1), mid);
    assert.equal(list.take(1), big);
    list.close();
  });
});

describe("the pools", () => {
  it(`read blocks not taken for a period are let go of, the smallest first (${IDLE_TRIM_MS} ms in the agent)`, async () => {
    const blocks = new ReadBlocks(20);
    const taken = [blocks.take(1000), blocks.take(2000), blocks.take(3000)];
    for (const b of taken) blocks.release(b);
    assert.equal(blocks.freeCount, 3);
    // One block in use at a time: two are not needed, and the two smaller ones go.
    const use = setInterval(() => blocks.release(blocks.take(10)), 2);
    try {
      await waitFor(() => blocks.freeCount === 1, 5000, "two free blocks to go");
      const kept = blocks.take(10);
      assert.equal(kept.bytes.length, 3000);
      blocks.release(kept);
    } finally {
      clearInterval(use);
    }
    await waitFor(() => blocks.freeCount === 0, 5000, "the last free block to go");
    blocks.close();
    // A block a batch still held when the reader closed is let go of as before.
    const late = blocks.take(10);
    blocks.hold(late);
    blocks.release(late);
    blocks.release(late);
    assert.throws(() => blocks.release(late), /let go of more often than held/);
  });

  it(`batch memory not used for a period is let go of (${IDLE_TRIM_MS} ms in the agent)`, async () => {
    const memory = new BatchMemory(8, 16 << 20, 20);
    const big = [memory.take(100_000), memory.take(200_000)];
    for (const b of big) memory.give(b);
    assert.equal(memory.freeCount, 2);
    await waitFor(() => memory.freeCount === 0, 5000, "the free buffers to go");
    memory.close();
  });
});

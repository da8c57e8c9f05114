// The room the HTTP input keeps for the bodies of the requests in progress (BodyRoom): who is
// let in at once, who waits, in what order, and what a request that gives up leaves behind.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { BodyRoom } from "../../src/ingest/http.ts";

/** Takes `bytes` for `name`, noting in `order` when it is let in. */
function take(room: BodyRoom, name: string, bytes: number, order: string[]) {
  const t = room.take(bytes);
  void t.taken.then(() => order.push(name));
  return t;
}

const turn = () => new Promise((r) => setTimeout(r, 0));

describe("HTTP input: the room for bodies in progress", () => {
  it("lets in what fits beside the others, one body alone whatever its size, and the rest in turn as room is given back", async () => {
    const seen: number[] = [];
    const room = new BodyRoom(100, (used) => seen.push(used));
    const order: string[] = [];
    assert.equal(room.tryTake(60), true);
    assert.equal(room.tryTake(50), false, "60 + 50 is over 100");
    take(room, "a", 50, order);
    take(room, "b", 10, order); // fits, but waits behind a: first come, first served
    take(room, "c", 30, order);
    await turn();
    assert.deepEqual(order, []);
    assert.equal(room.tryTake(1), false, "nothing passes those waiting");
    room.give(60); // a, b and c fit together (90)
    await turn();
    assert.deepEqual(order, ["a", "b", "c"]);
    assert.equal(room.used, 90);
    room.give(90);
    assert.equal(room.used, 0);
    // Alone, a body bigger than the room is let in; beside it, nothing.
    assert.equal(room.tryTake(500), true);
    take(room, "d", 1, order);
    await turn();
    assert.deepEqual(order, ["a", "b", "c"]);
    room.give(500);
    await turn();
    assert.deepEqual(order, ["a", "b", "c", "d"]);
    room.give(1);
    assert.equal(room.used, 0);
    assert.deepEqual(seen, [60, 0, 50, 60, 90, 0, 500, 0, 1, 0]);
  });

  it("gives up a place in the queue, or the room when it was let in meanwhile, and lets the next in", async () => {
    const room = new BodyRoom(100);
    const order: string[] = [];
    assert.equal(room.tryTake(80), true);
    const a = take(room, "a", 50, order);
    take(room, "b", 20, order); // fits now, but behind a
    await turn();
    assert.deepEqual(order, []);
    a.cancel(); // a gives up: b, behind it, fits
    await turn();
    assert.deepEqual(order, ["b"]);
    assert.equal(room.used, 100);
    // One let in (by a give) before its cancel is seen gives its room back.
    const c = take(room, "c", 100, order);
    room.give(100);
    assert.equal(room.used, 100, "c let in");
    c.cancel();
    assert.equal(room.used, 0);
  });
});

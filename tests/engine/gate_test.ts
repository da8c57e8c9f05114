// The provider gate the lanes send through: at most maxInFlight sends at once, and the turns
// a lane's sender waits for before it reads a batch (so that lanes waiting to send hold no
// batch in memory). A sender let go for a turn it does not use hands it on.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { ProviderGate } from "../../src/engine/gate.ts";
import type { Provider, ProviderRecord } from "../../src/provider/types.ts";

/** A provider whose sends wait until released, one by one. */
function heldProvider() {
  const releases: Array<() => void> = [];
  const provider: Provider = {
    name: "held",
    retryWaitMs: 1,
    open: () => Promise.resolve(),
    close: () => Promise.resolve(),
    send: () => new Promise<void>((r) => releases.push(r)),
  };
  return { provider, releases };
}

const record: ProviderRecord = {
  topic: "t",
  key: null,
  value: new Uint8Array(1),
  headers: null,
  timestamp: 0,
};

/** Settles pending promise callbacks. */
const settle = () => new Promise((r) => setTimeout(r, 0));

/** Whether `p` has resolved, noted as it does. */
function track(p: Promise<void> | null) {
  const t = { done: p === null };
  p?.then(() => (t.done = true));
  return t;
}

describe("ProviderGate turns", () => {
  it("gives a turn at once while a permit is free, and lets as many go as permits come free", async () => {
    const { provider, releases } = heldProvider();
    const gate = new ProviderGate(provider, 2);
    assert.equal(gate.turn(), null, "a permit is free: no wait");
    const lane = gate.shared();
    const sends = [lane.send([record]), lane.send([record])];
    await settle();
    assert.equal(releases.length, 2);
    const waiting = [track(gate.turn()), track(gate.turn()), track(gate.turn())];
    await settle();
    assert.deepEqual(waiting.map((w) => w.done), [false, false, false]);
    releases[0]();
    await sends[0];
    await settle();
    assert.deepEqual(waiting.map((w) => w.done), [true, false, false], "one permit, one turn");
    // The first has not sent yet: both permits are free, so both others go.
    releases[1]();
    await sends[1];
    await settle();
    assert.deepEqual(waiting.map((w) => w.done), [true, true, true]);
  });

  it("gives no turn while a send waits for a permit: the queued send goes first", async () => {
    const { provider, releases } = heldProvider();
    const gate = new ProviderGate(provider, 1);
    const lane = gate.shared();
    const first = lane.send([record]);
    const queued = lane.send([record]);
    await settle();
    const turn = track(gate.turn());
    releases[0]();
    await first;
    await settle();
    assert.equal(releases.length, 2, "the queued send took the permit");
    assert.equal(turn.done, false);
    releases[1]();
    await queued;
    await settle();
    assert.equal(turn.done, true);
  });

  it("hands a turn that is not used on to the next waiter, and none while no permit is free", async () => {
    const { provider, releases } = heldProvider();
    const gate = new ProviderGate(provider, 1);
    const lane = gate.shared();
    const first = lane.send([record]);
    await settle();
    const [a, b] = [track(gate.turn()), track(gate.turn())];
    gate.passTurn(); // no permit is free: nobody goes
    await settle();
    assert.deepEqual([a.done, b.done], [false, false]);
    releases[0]();
    await first;
    await settle();
    assert.deepEqual([a.done, b.done], [true, false]);
    gate.passTurn(); // a sent nothing with its turn
    await settle();
    assert.equal(b.done, true, "the free permit went unused while b waited");
  });

  it("lets every turn go when it closes", async () => {
    const { provider } = heldProvider();
    const gate = new ProviderGate(provider, 1);
    void gate.shared().send([record]).catch(() => {});
    await settle();
    const turns = [track(gate.turn()), track(gate.turn())];
    await gate.close();
    await settle();
    assert.deepEqual(turns.map((t) => t.done), [true, true]);
    assert.equal(gate.turn(), null);
  });
});

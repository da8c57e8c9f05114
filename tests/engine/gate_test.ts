// The provider gate the lanes send through: at most maxInFlight sends at once, and the turns a
// lane's sender takes before it reads a batch: a permit kept for it, so that lanes waiting to
// send hold no batch in memory and no more batches are read than can be sent. A turn ends
// when its send takes the permit, or is handed on when its sender sends nothing.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { ProviderGate, type TurnWait } from "../../src/engine/gate.ts";
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

/** Lets pending promise callbacks run. */
const settle = () => new Promise((r) => setTimeout(r, 0));

/** A wait for a turn, and whether it has been given (noted as it is). */
function track(w: TurnWait | null) {
  assert.ok(w !== null, "a turn was given at once where a wait was expected");
  const t = { wait: w, given: false };
  w.given.then(() => (t.given = true));
  return t;
}

describe("ProviderGate turns", () => {
  it("gives turns at once while permits are spare, and keeps a permit for each until it is used", async () => {
    const { provider, releases } = heldProvider();
    const gate = new ProviderGate(provider, 2);
    assert.equal(gate.turn(), null, "a permit is free");
    assert.equal(gate.turn(), null, "a second one");
    // Both permits are kept for those turns, though neither has sent yet.
    const third = track(gate.turn());
    const lane = gate.shared();
    gate.turnUsed();
    const first = lane.send([record]);
    gate.turnUsed();
    const second = lane.send([record]);
    await settle();
    assert.equal(releases.length, 2);
    assert.equal(third.given, false);
    releases[0]();
    await first;
    await settle();
    assert.equal(third.given, true, "a permit came free");
    releases[1]();
    await second;
  });

  it("gives as many turns as permits come free, no more, in arrival order", async () => {
    const { provider, releases } = heldProvider();
    const gate = new ProviderGate(provider, 2);
    const lane = gate.shared();
    const sends = [lane.send([record]), lane.send([record])];
    await settle();
    const waiting = [track(gate.turn()), track(gate.turn()), track(gate.turn())];
    releases[0]();
    await sends[0];
    await settle();
    assert.deepEqual(waiting.map((w) => w.given), [true, false, false]);
    // The first turn has not sent yet: its permit stays kept, and only one more is given.
    releases[1]();
    await sends[1];
    await settle();
    assert.deepEqual(waiting.map((w) => w.given), [true, true, false]);
    assert.equal(gate.turn() === null, false, "no permit is spare");
  });

  it("gives no turn while a send waits for a permit: the queued send goes first", async () => {
    const { provider, releases } = heldProvider();
    const gate = new ProviderGate(provider, 1);
    const lane = gate.shared();
    const first = lane.send([record]);
    const queued = lane.send([record]);
    await settle();
    assert.equal(gate.contended, true);
    const turn = track(gate.turn());
    releases[0]();
    await first;
    await settle();
    assert.equal(releases.length, 2, "the queued send took the permit");
    assert.equal(turn.given, false);
    releases[1]();
    await queued;
    await settle();
    assert.equal(turn.given, true);
  });

  it("hands a turn its holder does not use on to the next waiter", async () => {
    const { provider } = heldProvider();
    const gate = new ProviderGate(provider, 1);
    assert.equal(gate.turn(), null);
    const [a, b] = [track(gate.turn()), track(gate.turn())];
    assert.equal(gate.contended, true);
    gate.passTurn(); // the holder's batch was empty
    await settle();
    assert.deepEqual([a.given, b.given], [true, false]);
    gate.passTurn(); // so was a's
    await settle();
    assert.equal(b.given, true, "the free permit went unused while b waited");
    gate.passTurn();
    assert.equal(gate.turn(), null, "every turn handed back: the permit is spare again");
  });

  it("lets a sender that stops leave its wait, and hands on a turn it was given meanwhile", async () => {
    const { provider } = heldProvider();
    const gate = new ProviderGate(provider, 1);
    assert.equal(gate.turn(), null);
    const [a, b, c] = [track(gate.turn()), track(gate.turn()), track(gate.turn())];
    a.wait.cancel(); // a stopped while it waited
    gate.passTurn();
    await settle();
    assert.deepEqual([a.given, b.given, c.given], [false, true, false], "a's place was skipped");
    b.wait.cancel(); // b stopped after its turn was given: it goes to c
    await settle();
    assert.equal(c.given, true);
  });

  it("lets every turn go when it closes", async () => {
    const { provider } = heldProvider();
    const gate = new ProviderGate(provider, 1);
    assert.equal(gate.turn(), null);
    const turns = [track(gate.turn()), track(gate.turn())];
    await gate.close();
    await settle();
    assert.deepEqual(turns.map((t) => t.given), [true, true]);
    assert.equal(gate.turn(), null);
  });
});

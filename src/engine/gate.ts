/**
 * The provider as the engine's senders share it: several lanes, and in
 * `direct-until-error` the direct path, send through one {@link Provider}.
 *
 * - `open()` runs once at a time: concurrent callers share the attempt in progress, and once
 *   it succeeded, later calls resolve at once.
 * - Sends take permits from a first-come, first-served semaphore of `maxInFlight`: a lane's
 *   send takes one; an exclusive send (the direct path's) takes them all, so it never runs
 *   beside another send and none that came after it overtakes it.
 * - A lane's sender takes a turn (`turn()`) before it reads a batch: a permit kept for it,
 *   not yet taken. Turns are given while permits are free beyond those already kept, so
 *   that the lanes waiting to send hold no batch in memory and no more batches are read
 *   than can be sent. A turn ends when its send takes the permit (`turnUsed()`), or is
 *   handed on (`passTurn()`) when the sender sends nothing after all.
 * - `close()` does nothing: the buffer closes the provider itself, once, after every sender
 *   has stopped.
 *
 * @module
 */

import type { Provider, ProviderRecord, SendContext, SendResult } from "../provider/types.ts";

interface Waiter {
  permits: number;
  go: () => void;
  fail: (e: Error) => void;
}

interface TurnWaiter {
  go: () => void;
  given: boolean;
}

/** A wait for a turn ({@link ProviderGate.turn}). */
export interface TurnWait {
  /** Resolves once the turn is given (or the gate closed). */
  given: Promise<void>;
  /** Leaves the wait; a turn given meanwhile is handed on. */
  cancel: () => void;
}

/** See the module doc. */
export class ProviderGate {
  readonly #inner: Provider;
  readonly #max: number;
  #free: number;
  #queue: Waiter[] = [];
  /** Senders waiting for a turn, in arrival order. */
  #turns: TurnWaiter[] = [];
  /** Turns given and not yet used or handed on: permits kept for their senders. */
  #kept = 0;
  #opening: Promise<void> | null = null;
  #opened = false;
  #closed = false;

  constructor(inner: Provider, maxInFlight: number) {
    this.#inner = inner;
    this.#max = maxInFlight;
    this.#free = maxInFlight;
  }

  /** True while sends wait for a permit or senders for a turn. */
  get contended(): boolean {
    return this.#queue.length > 0 || this.#turns.length > 0;
  }

  /**
   * A turn to send: null when one is given at once (a permit is free beyond those kept for
   * other turns, and no send waits for one), or once the gate is closed; else a wait for
   * one, in arrival order, which `cancel()` leaves (or, given meanwhile, hands on). The
   * holder of a turn then either sends (calling `turnUsed()` just before, see the module
   * doc) or hands it on with `passTurn()`.
   */
  turn(): TurnWait | null {
    if (this.#closed) return null;
    if (this.#turns.length === 0 && this.#spare() > 0) {
      this.#kept++;
      return null;
    }
    const w: TurnWaiter = { go: () => {}, given: false };
    const given = new Promise<void>((go) => (w.go = go));
    this.#turns.push(w);
    return {
      given,
      cancel: () => {
        const i = this.#turns.indexOf(w);
        if (i >= 0) this.#turns.splice(i, 1);
        else if (w.given) this.passTurn();
      },
    };
  }

  /** The holder of a turn is about to send: the send takes the permit kept for it. */
  turnUsed(): void {
    if (this.#kept > 0) this.#kept--;
  }

  /**
   * The holder of a turn sends nothing after all (its batch was empty or gone, it stopped):
   * the turn goes to the next sender waiting, so that a free permit does not sit unused.
   */
  passTurn(): void {
    if (this.#kept > 0) this.#kept--;
    this.#giveTurns();
  }

  /** The provider every lane sends through (sends take one permit). */
  shared(): Provider {
    return this.#view(1);
  }

  /** The provider for sends that must run alone and in order with all others. */
  exclusive(): Provider {
    return this.#view(this.#max);
  }

  /**
   * Closes the provider itself. Sends still waiting for a permit then fail (their senders
   * have stopped; the batch is sent again after the next open), and none starts after it.
   */
  close(): Promise<void> {
    this.#closed = true;
    this.#opened = false;
    for (const w of this.#queue.splice(0)) w.fail(closedError());
    this.#kept = 0;
    for (const w of this.#turns.splice(0)) this.#give(w);
    return this.#inner.close();
  }

  #view(permits: number): Provider {
    const inner = this.#inner;
    return {
      name: inner.name,
      retryWaitMs: inner.retryWaitMs,
      keepsIdentity: inner.keepsIdentity,
      releasesRecords: inner.releasesRecords,
      sendMaxRecords: inner.sendMaxRecords,
      open: () => this.#open(),
      close: () => Promise.resolve(),
      send: (records, context) => this.#send(records, permits, context),
      prepare: inner.prepare && (() => inner.prepare!()),
      counters: inner.counters && (() => inner.counters!()),
      probe: inner.probe && ((topics) => inner.probe!(topics)),
    };
  }

  #open(): Promise<void> {
    if (this.#opened) return Promise.resolve();
    this.#opening ??= this.#inner.open().then(
      () => {
        this.#opened = true;
        this.#opening = null;
      },
      (e) => {
        this.#opening = null;
        throw e;
      },
    );
    return this.#opening;
  }

  async #send(
    records: readonly ProviderRecord[],
    permits: number,
    context?: SendContext,
  ): Promise<SendResult | void> {
    if (this.#closed) throw closedError();
    await this.#acquire(permits);
    try {
      return await this.#inner.send(records, context);
    } finally {
      this.#free += permits;
      this.#grant();
    }
  }

  #acquire(permits: number): Promise<void> {
    if (this.#queue.length === 0 && this.#free >= permits) {
      this.#free -= permits;
      return Promise.resolve();
    }
    return new Promise((go, fail) => this.#queue.push({ permits, go, fail }));
  }

  /** Lets waiters go in arrival order while their permits are free. */
  #grant(): void {
    while (this.#queue.length > 0 && this.#free >= this.#queue[0].permits) {
      const w = this.#queue.shift()!;
      this.#free -= w.permits;
      w.go();
    }
    this.#giveTurns();
  }

  /** Permits free beyond those kept for turns (none while a send waits for one). */
  #spare(): number {
    return this.#queue.length > 0 ? 0 : this.#free - this.#kept;
  }

  /** Gives turns, in arrival order, while permits are spare. */
  #giveTurns(): void {
    while (this.#turns.length > 0 && this.#spare() > 0) {
      this.#kept++;
      this.#give(this.#turns.shift()!);
    }
  }

  #give(w: TurnWaiter): void {
    w.given = true;
    w.go();
  }
}

function closedError(): Error {
  return new Error("the provider is closed; the batch is sent again after the next open");
}

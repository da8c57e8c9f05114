/**
 * The provider as the engine's senders share it: several lanes, and in
 * `direct-until-error` the direct path, send through one {@link Provider}.
 *
 * - `open()` runs once at a time: concurrent callers share the attempt in progress, and once
 *   it succeeded, later calls resolve at once.
 * - Sends take permits from a first-come, first-served semaphore of `maxInFlight`: a lane's
 *   send takes one; an exclusive send (the direct path's) takes them all, so it never runs
 *   beside another send and none that came after it overtakes it.
 * - A lane's sender waits for its turn (`turn()`: a permit free) before it reads a batch, so
 *   that lanes waiting to send hold no batch in memory; one that then sends nothing hands
 *   its turn on (`passTurn()`).
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

/** See the module doc. */
export class ProviderGate {
  readonly #inner: Provider;
  readonly #max: number;
  #free: number;
  #queue: Waiter[] = [];
  /** Senders waiting for a permit to be free before they read their next batch. */
  #turns: Array<() => void> = [];
  #opening: Promise<void> | null = null;
  #opened = false;
  #closed = false;

  constructor(inner: Provider, maxInFlight: number) {
    this.#inner = inner;
    this.#max = maxInFlight;
    this.#free = maxInFlight;
  }

  /** Sends waiting for permits. */
  get waiting(): number {
    return this.#queue.length;
  }

  /**
   * Null when a permit is free and no send waits for one (or the gate is closed); else a
   * promise that resolves once that is so. It takes no permit: a lane's sender waits here
   * before it reads its next batch, so that lanes waiting for their turn hold no batch in
   * memory. As permits come free, as many waiters go as there are permits free.
   */
  turn(): Promise<void> | null {
    if (this.#closed || (this.#free > 0 && this.#queue.length === 0)) return null;
    return new Promise((go) => this.#turns.push(go));
  }

  /**
   * A sender let go for its turn that sends nothing after all (its batch was empty, it
   * stopped) hands the turn on, so that a free permit does not sit unused while others wait.
   */
  passTurn(): void {
    if (this.#free > 0 && this.#queue.length === 0) this.#turns.shift()?.();
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
    for (const go of this.#turns.splice(0)) go();
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
    if (this.#queue.length === 0) {
      for (const go of this.#turns.splice(0, this.#free)) go();
    }
  }
}

function closedError(): Error {
  return new Error("the provider is closed; the batch is sent again after the next open");
}

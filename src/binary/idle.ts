/**
 * Memory kept for reuse is let go of once it goes unused. The agent's pools (builders of the
 * frames being written, read blocks, encoded batches) grow to what a burst needs; kept, that
 * memory stayed for as long as the process ran: after one burst of a million records the agent
 * sat some 20 MiB above where it would otherwise settle, at any rate after.
 *
 * A pool tells its {@link IdleTrim} when it takes from its free list and when it gives back to
 * it. Every period, the fewest items the free list held during that period (its low-water
 * mark) were not needed at all: that many are dropped. So a pool unused for a whole period
 * empties, and one used at a lower rate than before shrinks to what that rate needs, within a
 * period or two. A timer runs only while the free list holds something: one per period.
 *
 * @module
 */

/** Period over which a pool's unneeded memory is counted, then dropped. */
export const IDLE_TRIM_MS = 2000;

/** See the module doc. */
export class IdleTrim {
  readonly #free: () => number;
  readonly #drop: (n: number) => void;
  readonly #ms: number;
  /** Fewest items free since the period began. */
  #low = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #stopped = false;

  /**
   * @param free how many items the pool's free list holds now
   * @param drop drops `n` items of the free list (0 < n <= free())
   */
  constructor(free: () => number, drop: (n: number) => void, ms = IDLE_TRIM_MS) {
    this.#free = free;
    this.#drop = drop;
    this.#ms = ms;
  }

  /** The pool took an item from its free list. */
  took(): void {
    const n = this.#free();
    if (n < this.#low) this.#low = n;
  }

  /** The pool put an item on its free list. */
  gave(): void {
    if (this.#timer === null && !this.#stopped) this.#arm();
  }

  /** Stops the timer for good (the pool's owner is done with it). */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #arm(): void {
    this.#low = this.#free();
    this.#timer = setTimeout(() => {
      this.#timer = null;
      const unneeded = Math.min(this.#low, this.#free());
      if (unneeded > 0) this.#drop(unneeded);
      if (this.#free() > 0) this.#arm();
    }, this.#ms);
    // A pool's timer never keeps a process alive.
    (this.#timer as { unref?: () => void }).unref?.();
  }
}

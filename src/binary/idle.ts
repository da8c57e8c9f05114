/**
 * Memory kept for reuse is let go of once it goes unused. The agent's pools (builders of the
 * frames being written, read blocks, encoded batches, decoded record objects) grow to what a
 * burst needs; that memory used to stay for as long as the process ran: after one burst of a
 * million records the agent stayed at 92-107 MiB, where it now settles at 82-85.
 *
 * A pool tells its {@link IdleTrim} when it takes from its free list and when it gives back to
 * it. Every period, the fewest items the free list held during that period (its low-water
 * mark) were not needed at all: that many are dropped. So a pool unused for a whole period
 * empties, and one used at a lower rate than before shrinks to what that rate needs, within a
 * period or two. A timer runs only while the free list holds something: one per period.
 * {@link FreeList} is such a free list for pieces of memory of several sizes (read blocks,
 * encoded batches); the frame builders' is a plain list with its own {@link IdleTrim}.
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

/**
 * Pieces of memory kept for reuse, of several sizes: the smallest that fits is handed out, at
 * most `keep` are kept (when full, a larger one takes the place of the smallest), and those a
 * period did not need are let go of, the smallest first ({@link IdleTrim}).
 */
export class FreeList<T> {
  readonly #items: T[] = [];
  readonly #sizeOf: (item: T) => number;
  readonly #keep: number;
  readonly #trim: IdleTrim;

  /**
   * @param sizeOf the bytes of an item
   * @param keep items kept at most
   * @param trimMs the period over which items not needed are counted, then let go of
   */
  constructor(sizeOf: (item: T) => number, keep: number, trimMs?: number) {
    this.#sizeOf = sizeOf;
    this.#keep = keep;
    this.#trim = new IdleTrim(() => this.#items.length, (n) => {
      this.#items.sort((a, b) => sizeOf(a) - sizeOf(b)).splice(0, n);
    }, trimMs);
  }

  /** Items kept now. */
  get count(): number {
    return this.#items.length;
  }

  /** Removes and returns the smallest item of `min` to `max` bytes, if one is kept. */
  take(min: number, max = Infinity): T | undefined {
    const items = this.#items;
    let best = -1;
    for (let i = 0; i < items.length; i++) {
      const n = this.#sizeOf(items[i]);
      if (n >= min && n <= max && (best < 0 || n < this.#sizeOf(items[best]))) best = i;
    }
    if (best < 0) return undefined;
    const item = items[best];
    items[best] = items[items.length - 1];
    items.pop();
    this.#trim.took();
    return item;
  }

  /** Keeps `item` for reuse (once: an item kept already is not added again). */
  give(item: T): void {
    const items = this.#items;
    if (items.includes(item)) return;
    if (items.length < this.#keep) items.push(item);
    else {
      // Full: the larger are kept (a small item fits fewer uses).
      let least = 0;
      for (let i = 1; i < items.length; i++) {
        if (this.#sizeOf(items[i]) < this.#sizeOf(items[least])) least = i;
      }
      if (this.#sizeOf(items[least]) >= this.#sizeOf(item)) return;
      items[least] = item;
    }
    this.#trim.gave();
  }

  /** Lets go of every item and stops the timer for good (the owner is done). */
  close(): void {
    this.#trim.stop();
    this.#items.length = 0;
  }
}

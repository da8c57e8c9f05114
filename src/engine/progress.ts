/**
 * A signal of progress (a batch settled, room made): waiters, each with a timeout, woken
 * together. The sender, the direct path and the disk path each keep one.
 *
 * @module
 */

/** Waiters for the next progress (a batch settled), each with a timeout. */
export class ProgressSignal {
  readonly #waiters = new Set<() => void>();

  /**
   * Resolves at the next `notify()`, or after `ms`. A wait that times out leaves nothing behind
   * (waits are repeated once a second for as long as, say, the buffer stays full).
   */
  wait(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(t);
        this.#waiters.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, ms);
      this.#waiters.add(wake);
    });
  }

  /** Wakes every waiter. */
  notify(): void {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const w of waiters) w();
  }
}

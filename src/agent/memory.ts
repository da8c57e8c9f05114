/**
 * A soft limit on the agent's resident memory, kept by collecting garbage early.
 *
 * The JavaScript engine collects when its heap has grown to about twice what was live after
 * the last collection, so an agent delivering at full speed holds as much garbage as live
 * data at its peak: tens of megabytes, on every host it runs on. Like Go's `GOMEMLIMIT`, the
 * limit makes the agent collect at once when its resident set passes the limit, with a cap
 * on the time collections may take (a share of the time that passes), so that a live set
 * larger than the limit costs a bounded share of CPU, not all of it: the limit is then
 * exceeded, never enforced by refusing work. When a collection leaves the resident set above
 * the limit (what is live is larger), the next waits twice as long as the last, up to 10 s.
 * Checks are frequent only near the limit.
 *
 * @module
 */

import process from "node:process";

/** Settings and hooks of {@link MemoryLimit}. */
export interface MemoryLimitOptions {
  /** Resident bytes above which garbage is collected at once. */
  limitBytes: number;
  /** Collects all garbage now, synchronously (see {@link runtimeCollector}). */
  collect: () => void;
  /** The resident set, in bytes. @default process.memoryUsage.rss */
  rss?: () => number;
  /** Milliseconds, for timing collections. @default performance.now */
  now?: () => number;
  /** The most of the passing time collections may take. @default 0.1 */
  maxShare?: number;
  /**
   * Drops the resident pages of the executable's file that are not in use (see
   * src/agent/code_pages.ts), after each collection and once the agent has started.
   */
  trim?: () => void;
}

/** How often the resident set is read near the limit (from 3/4 of it), and further below. */
const NEAR_MS = 20;
const FAR_MS = 250;
/** The wait after a collection that left the resident set above the limit: from, up to. */
const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 10_000;

/** The agent's memory, for /metrics: its resident set, and what its limit has done. */
export interface MemoryStats {
  /** The resident set now, in bytes. */
  rssBytes: number;
  /** The soft limit, in bytes; 0 when there is none. */
  limitBytes: number;
  /** Collections made because the resident set was above the limit. */
  collections: number;
  /** Seconds they took. */
  collectSeconds: number;
}

/** The soft limit (see the module doc); `start` begins checking, `stop` ends it. */
export class MemoryLimit {
  readonly #o: Required<MemoryLimitOptions>;
  #timer: ReturnType<typeof setTimeout> | null = null;
  /** No collection before this time (see `maxShare`). */
  #notBefore = -Infinity;
  #rss = 0;
  /** While collections leave the resident set above the limit, the wait doubles (ms). */
  #backoff = 0;
  #collections = 0;
  #collectMs = 0;

  constructor(o: MemoryLimitOptions) {
    if (!(o.limitBytes > 0)) {
      throw new RangeError(`memory limit must be above 0, not ${o.limitBytes}`);
    }
    this.#o = {
      rss: processRss,
      now: () => performance.now(),
      maxShare: 0.1,
      ...o,
      trim: o.trim ?? (() => {}),
    };
  }

  /**
   * Reads the resident set and collects when it is above the limit and the time budget
   * allows; returns how long until the next check should come.
   */
  check(): number {
    const o = this.#o;
    const rss = readRss(o.rss);
    if (Number.isNaN(rss)) return FAR_MS; // (unreadable for now: out of file descriptors)
    this.#rss = rss;
    if (rss <= o.limitBytes) {
      // Below by itself (the engine collected, a drain ended): the next time above starts
      // afresh, without the back-off of an earlier time.
      this.#backoff = 0;
      return rss >= o.limitBytes * 0.75 ? NEAR_MS : FAR_MS;
    }
    const t = o.now();
    if (t >= this.#notBefore) {
      o.collect();
      o.trim();
      const took = o.now() - t;
      this.#collections++;
      this.#collectMs += took;
      const after = readRss(o.rss);
      if (!Number.isNaN(after)) this.#rss = after;
      // What is live is above the limit: collecting more often would not bring it below,
      // so wait longer each time (up to MAX_BACKOFF_MS), until a collection does.
      this.#backoff = this.#rss > o.limitBytes
        ? Math.min(MAX_BACKOFF_MS, Math.max(MIN_BACKOFF_MS, 2 * this.#backoff))
        : 0;
      // A collection of `took` ms is followed by at least took / share - took ms without
      // one, so collections take at most `share` of the time.
      this.#notBefore = t + Math.max(took / o.maxShare, this.#backoff);
    }
    // Not before the next collection may come, but often enough to see a fall below.
    return Math.min(FAR_MS, Math.max(NEAR_MS, this.#notBefore - o.now()));
  }

  /** Checks from now on, on a timer that does not keep the process alive. */
  start(): void {
    if (this.#timer !== null) return;
    const tick = () => {
      let next = FAR_MS;
      try {
        next = this.check();
      } catch {
        // (A collection that threw: memory is only trimmed later, nothing else is at stake.)
      }
      this.#timer = setTimeout(tick, next);
      (this.#timer as { unref?: () => void }).unref?.();
    };
    tick();
  }

  /** The agent has started: what only starting used may go (see `trim`). */
  settled(): void {
    try {
      this.#o.trim();
    } catch {
      // (Only memory is at stake, as for a collection that throws.)
    }
  }

  /** Stops checking. */
  stop(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** The resident set now, and what the limit has done so far. */
  get stats(): MemoryStats {
    return {
      rssBytes: readRss(this.#o.rss),
      limitBytes: this.#o.limitBytes,
      collections: this.#collections,
      collectSeconds: this.#collectMs / 1000,
    };
  }
}

/** {@link MemoryLimit.stats}, or the resident set alone when there is no limit. */
export function memoryStats(limit: MemoryLimit | null): MemoryStats {
  return limit?.stats ??
    { rssBytes: readRss(processRss), limitBytes: 0, collections: 0, collectSeconds: 0 };
}

function processRss(): number {
  return process.memoryUsage.rss();
}

/** `rss()`, or NaN when it cannot be read (Bun throws when out of file descriptors). */
function readRss(rss: () => number): number {
  try {
    return rss();
  } catch {
    return Number.NaN;
  }
}

/**
 * The runtime's way to collect all garbage at once, synchronously, where collecting gives
 * memory back: Bun's `Bun.gc(true)` (so also the executable's); null elsewhere. (V8's `gc()`,
 * exposed to Deno by `--v8-flags=--expose-gc`, left the resident set where it was: V8 keeps
 * what it collects for its next allocations.)
 */
export function runtimeCollector(): (() => void) | null {
  const bun = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun;
  return bun ? () => bun.gc(true) : null;
}

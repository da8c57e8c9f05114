/**
 * Delivery latency: time from a record's timestamp to Kafka's acknowledgement, as
 * `stats().deliveryLatencyMs`, `top` and `/metrics` report it.
 *
 * @module
 */

/**
 * Delivery latency of the records delivered in the last minute (the last 8192 at most), in ms.
 *
 * @example Print the delivery latency
 * ```ts
 * const { p50, p99 } = buffer.stats().deliveryLatencyMs;
 * console.log(`to Kafka: p50 ${p50} ms, p99 ${p99} ms`);
 * ```
 */
export interface LatencyStats {
  /** Median, ms; null when nothing was delivered in the last minute. */
  p50: number | null;
  /** 99th percentile, ms; null when nothing was delivered in the last minute. */
  p99: number | null;
  /** Largest, ms; null when nothing was delivered in the last minute. */
  max: number | null;
  /** Sum and count since open. */
  sum: number;
  /** Records delivered since open. */
  count: number;
}

/** How long a delivery's latency counts in the quantiles. */
export const LATENCY_WINDOW_MS = 60_000;

/**
 * Time from a record's timestamp to its acknowledgement, over the last 8192 records
 * acknowledged in the last minute ({@link LATENCY_WINDOW_MS}): a ring of samples with the time
 * each was taken, so that an outage's latencies leave the quantiles a minute after it ends;
 * and the sum and count since it was made.
 */
export class LatencyWindow {
  readonly #ring = new Float64Array(8192);
  readonly #at = new Float64Array(8192);
  #count = 0;
  #sum = 0;

  /** Adds the records just acknowledged. */
  add(records: readonly { timestamp: number }[]): void {
    const now = Date.now();
    const ring = this.#ring;
    for (const r of records) {
      const ms = Math.max(0, now - r.timestamp);
      const i = this.#count % ring.length;
      ring[i] = ms;
      this.#at[i] = now;
      this.#count++;
      this.#sum += ms;
    }
  }

  /** Quantiles over the samples of the last minute (null without any); sum and count since creation. */
  stats(): LatencyStats {
    const n = Math.min(this.#count, this.#ring.length);
    const since = Date.now() - LATENCY_WINDOW_MS;
    const recent: number[] = [];
    for (let i = 0; i < n; i++) if (this.#at[i] >= since) recent.push(this.#ring[i]);
    const m = recent.length;
    if (m === 0) return { p50: null, p99: null, max: null, sum: this.#sum, count: this.#count };
    const sorted = Float64Array.from(recent).sort();
    const q = (p: number) => sorted[Math.min(m - 1, Math.floor(p * m))];
    return { p50: q(0.5), p99: q(0.99), max: sorted[m - 1], sum: this.#sum, count: this.#count };
  }
}

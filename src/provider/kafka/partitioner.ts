/**
 * The partition of each record, picked by messagebuffer rather than by a client library, so
 * that both clients place records alike and the provider knows, for every send, which
 * partitions must acknowledge it.
 *
 * - A keyed record goes where the Java client puts it: murmur2 of the key, sign bit masked,
 *   modulo the partition count (`murmur2.ts`).
 * - Records without a key go to one partition for the whole send, the next partition for the
 *   next send, as the Java client's sticky partitioner does per batch: they spread over the
 *   partitions, and each send's stay in order.
 *
 * @module
 */

import { type KeyValue, RangedRecord } from "../../binary/ranges.ts";
import { murmur2, partitionForKey } from "./murmur2.ts";

/** See the module doc. One per client; {@link Partitioner.newSend} before each send. */
export class Partitioner {
  /** The partition of each topic's unkeyed records in the send being placed. */
  readonly #sticky = new Map<string, number>();
  /** Per topic, a counter that picks the next send's partition for unkeyed records. */
  readonly #next = new Map<string, number>();

  /** Starts placing a new send: its unkeyed records go to each topic's next partition. */
  newSend(): void {
    this.#sticky.clear();
  }

  /** The partition of a record of `topic` with `key`, out of `partitions`. */
  partition(topic: string, key: Uint8Array | null, partitions: number): number {
    if (key !== null) return partitionForKey(key, partitions);
    return this.#unkeyed(topic, partitions);
  }

  /** The partition of record `r` of `topic`, out of `partitions` (as {@link partition}). */
  partitionOf(topic: string, r: KeyValue, partitions: number): number {
    if (partitions === 1) return 0; // (no key hashed for it)
    if (r instanceof RangedRecord) {
      if (r.keyAt < 0) return this.#unkeyed(topic, partitions);
      return (murmur2(r.bytes, r.keyAt, r.keyLength) & 0x7fffffff) % partitions;
    }
    return this.partition(topic, r.key, partitions);
  }

  #unkeyed(topic: string, partitions: number): number {
    let p = this.#sticky.get(topic);
    if (p === undefined) {
      const next = this.#next.get(topic) ?? 0;
      p = next % partitions;
      this.#next.set(topic, (next + 1) % 0x40000000);
      this.#sticky.set(topic, p);
    }
    return p;
  }
}

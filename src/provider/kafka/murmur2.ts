/**
 * Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`), with 32-bit integer
 * arithmetic. The Java client picks a keyed record's partition as
 * `(murmur2(key) & 0x7fffffff) % partitions`.
 *
 * @module
 */

const M = 0x5bd1e995;

/**
 * murmur2 of `data[start, start + length)` (all of `data` by default), as a signed 32-bit
 * integer, as the Java client computes it.
 */
export function murmur2(data: Uint8Array, start = 0, length = data.length - start): number {
  let h = (0x9747b28c ^ length) | 0;
  const whole = start + (length & ~3);
  for (let i = start; i < whole; i += 4) {
    let k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24);
    k = Math.imul(k, M);
    k ^= k >>> 24;
    k = Math.imul(k, M);
    h = Math.imul(h, M) ^ k;
  }
  switch (length & 3) {
    case 3:
      h ^= data[whole + 2] << 16;
    // falls through
    case 2:
      h ^= data[whole + 1] << 8;
    // falls through
    case 1:
      h ^= data[whole];
      h = Math.imul(h, M);
  }
  h ^= h >>> 13;
  h = Math.imul(h, M);
  h ^= h >>> 15;
  return h | 0;
}

/** The partition the Java client's default partitioner gives a record with `key`. */
export function partitionForKey(key: Uint8Array, partitions: number): number {
  return (murmur2(key) & 0x7fffffff) % partitions;
}

/**
 * The Provider interface: what the sender delivers records through, a batch at a time: a
 * name, a first retry wait, open, send, close, and optionally prepare, probe and counters.
 *
 * @module
 */

/**
 * A record header as `[name, value]`; Kafka allows repeated names, so headers are a list.
 *
 * @example Read a header of a record
 * ```ts
 * const trace = record.headers?.find(([name]) => name === "trace-id")?.[1];
 * ```
 */
export type ProviderHeader = readonly [name: string, value: Uint8Array];

/**
 * A record handed to a provider: what a writer stored, as it reads back. `value`, `key` and
 * header values may view memory the engine reuses after `send` settles: copy to keep them.
 *
 * @example The value as text
 * ```ts
 * const text = new TextDecoder().decode(record.value);
 * ```
 */
export interface ProviderRecord {
  /** The Kafka topic. */
  readonly topic: string;
  /** Null when the record was written without a key. */
  readonly key: Uint8Array | null;
  /** The record's value, byte for byte as written. */
  readonly value: Uint8Array;
  /** Null when the record has no headers. */
  readonly headers: readonly ProviderHeader[] | null;
  /** Event time in ms since the Unix epoch (the Kafka record timestamp). */
  readonly timestamp: number;
}

/**
 * A record the provider will never accept (too large, invalid topic, not authorized).
 *
 * @example Refuse records that are too large
 * ```ts
 * const rejected = records
 *   .map((r, index) => ({ r, index }))
 *   .filter(({ r }) => r.value.length > 1_000_000)
 *   .map(({ index }) => ({ index, reason: "MESSAGE_TOO_LARGE: over 1 MB" }));
 * return { rejected };
 * ```
 */
export interface RecordRejection {
  /** Index of the record in the batch passed to `send`. */
  index: number;
  /** Why, e.g. the broker's error name: `"MESSAGE_TOO_LARGE: ..."`. */
  reason: string;
}

/**
 * What `send` resolves with. Absent or empty `rejected`: every record was acknowledged.
 *
 * @example Every record acknowledged
 * ```ts
 * return { rejected: [] };
 * ```
 */
export interface SendResult {
  /** The records that will never be accepted; the others were acknowledged. */
  rejected?: RecordRejection[];
}

/**
 * What a provider counts of the work inside its sends: what a failover inside one send did,
 * which the engine does not see when the send then succeeds. Kafka's words; a provider for
 * another destination leaves at 0 what it does not have.
 *
 * @example Alert on partitions a client left unacknowledged
 * ```ts
 * const c = provider.counters?.();
 * if (c && c.unacknowledgedPartitions > 0) console.warn("a client reported a send it did not make");
 * ```
 */
export interface ProviderCounters {
  /** Requests retried inside a send (a leader moved, a connection dropped, too few replicas). */
  retriesInSend: number;
  /** Partitions whose leader changed between one request to them and the next. */
  leaderMoves: number;
  /** Times the cluster metadata was looked up again because a request failed. */
  metadataRefreshes: number;
  /**
   * Partitions a send covered that came back without an acknowledgement with an offset (a
   * client library that resolved anyway, or a broker's answer that left one out): each was
   * sent again, never counted as delivered.
   */
  unacknowledgedPartitions: number;
}

/**
 * A destination for records.
 *
 * - `send` resolves once the destination has acknowledged every record it did not reject;
 *   the engine then advances the checkpoint past the whole batch and moves rejected records
 *   to the dead-letter folder.
 * - `send` throwing means "not delivered, try again": the engine waits (backoff with jitter)
 *   and sends the same batch again, never skipping it. Any record may then arrive twice.
 *
 * @example A provider that prints records (for a dry run)
 * ```ts
 * import type { Provider } from "./mod.ts";
 * const printer: Provider = {
 *   name: "stdout",
 *   open: () => Promise.resolve(),
 *   send: (records) => {
 *     for (const r of records) console.log(r.topic, new TextDecoder().decode(r.value));
 *     return Promise.resolve();
 *   },
 *   close: () => Promise.resolve(),
 * };
 * ```
 */
export interface Provider {
  /** Short name for logs and metrics, e.g. `"kafka"`. */
  readonly name: string;
  /** Suggested first wait after a failed send, in ms (the engine's backoff starts here). */
  readonly retryWaitMs?: number;
  /**
   * Readies what no retry can fix, such as loading a client library, without connecting.
   * `MessageBuffer.open` calls it first, and fails with its error: a provider that can never
   * send is an error at open, not a backlog that waits forever. @default nothing to ready
   */
  prepare?(): Promise<void>;
  /** Connects. Throwing is retried like a failed send. */
  open(): Promise<void>;
  /** Delivers records in order. See the interface doc for the outcome contract. */
  send(records: readonly ProviderRecord[]): Promise<SendResult | void>;
  /** Disconnects; called once by `MessageBuffer.close()`. */
  close(): Promise<void>;
  /** What it counted inside its sends since it was made. @default none */
  counters?(): ProviderCounters;
  /**
   * Asks the destination whether it answers, cheaply, without sending records: resolves with
   * a summary of its state (for Kafka the live brokers and the leaders and in-sync replicas
   * of `topics`) that changes when that state does, or throws when it does not answer. While
   * a send waits out its backoff, the engine calls it about once a second, and sends again
   * at once when the answer changes: a cluster back from an outage is used within a second,
   * while sends that fail against a cluster that answers keep their backoff. @default none
   */
  probe?(topics: readonly string[]): Promise<string>;
}

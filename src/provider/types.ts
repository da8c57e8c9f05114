/**
 * The Provider interface: what the sender delivers records through. The seed's
 * OpenProducer / SendMessage / CloseProducer / GetRetryWaitTime / Name, made batch-oriented.
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
  /** Connects. Throwing is retried like a failed send. */
  open(): Promise<void>;
  /** Delivers records in order. See the interface doc for the outcome contract. */
  send(records: readonly ProviderRecord[]): Promise<SendResult | void>;
  /** Disconnects; called once by `MessageBuffer.close()`. */
  close(): Promise<void>;
}

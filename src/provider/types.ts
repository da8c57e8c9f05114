/**
 * The Provider interface: what the sender delivers records through. The seed's
 * OpenProducer / SendMessage / CloseProducer / GetRetryWaitTime / Name, made batch-oriented.
 *
 * @module
 */

/** A record header as `[name, value]`; Kafka allows repeated names, so headers are a list. */
export type ProviderHeader = readonly [name: string, value: Uint8Array];

/**
 * A record handed to a provider: what a writer stored, as it reads back. `value`, `key` and
 * header values may view memory the engine reuses after `send` settles: copy to keep them.
 */
export interface ProviderRecord {
  readonly topic: string;
  /** Null when the record was written without a key. */
  readonly key: Uint8Array | null;
  readonly value: Uint8Array;
  /** Null when the record has no headers. */
  readonly headers: readonly ProviderHeader[] | null;
  /** Event time in ms since the Unix epoch (the Kafka record timestamp). */
  readonly timestamp: number;
}

/** A record the provider will never accept (too large, invalid topic, not authorized). */
export interface RecordRejection {
  /** Index of the record in the batch passed to `send`. */
  index: number;
  /** Why, e.g. the broker's error name: `"MESSAGE_TOO_LARGE: ..."`. */
  reason: string;
}

/** What `send` resolves with. Absent or empty `rejected`: every record was acknowledged. */
export interface SendResult {
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

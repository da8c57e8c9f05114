/**
 * What `KafkaProvider` asks of a Kafka client library (`platformatic.ts`,
 * `kafkajs.ts`), and the errors they share: which protocol errors concern records rather than
 * the cluster, how a library's nested error reads in a log line, and the error a failed send
 * ends with.
 *
 * @module
 */

import type { ProviderCounters, ProviderRecord, RecordRejection, SendContext } from "../types.ts";
import type { ErrorLink } from "./tls.ts";

/** Protocol errors that concern particular records and will not pass by retrying. */
export const PER_RECORD_ERRORS: ReadonlySet<string> = new Set([
  "MESSAGE_TOO_LARGE",
  "RECORD_LIST_TOO_LARGE",
  "INVALID_RECORD",
  "CORRUPT_MESSAGE",
  "INVALID_TOPIC_EXCEPTION",
  "TOPIC_AUTHORIZATION_FAILED",
  "POLICY_VIOLATION",
  "INVALID_TIMESTAMP",
]);

/** What `KafkaProvider` needs of a client library. */
export interface KafkaClient {
  /** Connects the producer; throws when the brokers cannot be reached. */
  open(): Promise<void>;
  /** Produces `records` in order in one call; resolves once all are acknowledged. */
  produce(records: readonly ProviderRecord[]): Promise<void>;
  /**
   * Sends `records` under an identity kept through `context` (exactly once across retries
   * and restarts), cut into requests by `limits`; resolves with the refused records. Absent
   * for a client that keeps no identity.
   */
  sendPlanned?(
    records: readonly ProviderRecord[],
    context: SendContext,
    limits: { maxRequestBytes: number; maxMessageBytes: number },
  ): Promise<RecordRejection[]>;
  /** The protocol error name behind `e` (such as `MESSAGE_TOO_LARGE`), if it has one. */
  errorType(e: unknown): string | undefined;
  /** See {@link Provider.probe}. */
  probe(topics: readonly string[]): Promise<string>;
  /** What it counted inside sends (see {@link ProviderCounters}). */
  readonly counters: ProviderCounters;
  /**
   * A TLS failure a socket reported since the last call, when the library's own error may
   * have lost it (kafkajs under Deno); then forgotten.
   */
  takeSocketFailure?(): ErrorLink | null;
  close(): Promise<void>;
}

/**
 * What went wrong behind `e`, in the words of its root cause: client libraries wrap a socket's
 * or a broker's error in layers ("AggregateError: metadata failed 4 times.: Cannot connect to
 * any broker.: ...: connect ECONNREFUSED 127.0.0.1:1"), and the last layer says it
 * ("connect ECONNREFUSED 127.0.0.1:1", "The request included a message larger than ...").
 */
export function describeError(e: unknown): string {
  let root: string | undefined;
  let cur = e as
    | { message?: string; cause?: unknown; errors?: unknown[]; originalError?: unknown }
    | undefined;
  for (let i = 0; i < 8 && cur; i++) {
    if (typeof cur.message === "string" && cur.message.trim() !== "") root = cur.message;
    cur = (Array.isArray(cur.errors) && cur.errors.length > 0
      ? cur.errors[0]
      : cur.cause ?? cur.originalError) as typeof cur;
  }
  return (root ?? String(e)).replace(/^Connection error: /, "").replace(/\.$/, "");
}

/** The error a retried send ends with: names the cause and says that records are kept. */
export class KafkaSendError extends Error {
  constructor(what: string, cause: unknown, explanation?: string) {
    super(`${what}: ${explanation ?? describeError(cause)}`, { cause });
    this.name = "KafkaSendError";
  }
}

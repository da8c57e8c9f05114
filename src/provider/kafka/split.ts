/**
 * A batch from the engine as Kafka takes it: split into requests of at most
 * `maxRequestBytes`, sent one after another, in order, so that no partition's record batch
 * exceeds what a broker accepts; records over `maxMessageBytes` rejected without being sent;
 * and a per-record permanent error (too large, invalid topic, not authorized) narrowed down
 * to the records that cause it by splitting the request, those records rejected. Any other
 * failure is thrown, for the engine to retry the batch.
 *
 * @module
 */

import { keyLength, valueLength } from "../../binary/ranges.ts";
import type { ProviderRecord, RecordRejection } from "../types.ts";
import { describeError, type KafkaClient, KafkaSendError, PER_RECORD_ERRORS } from "./client.ts";

/** Of those, the errors that concern a whole topic: every record of it is refused. */
export const TOPIC_ERRORS: ReadonlySet<string> = new Set([
  "INVALID_TOPIC_EXCEPTION",
  "TOPIC_AUTHORIZATION_FAILED",
]);

/** Bytes a record adds to a request, roughly (record framing included). */
function recordBytes(r: ProviderRecord): number {
  let n = valueLength(r) + Math.max(0, keyLength(r)) + 24;
  if (r.headers) { for (const [k, v] of r.headers) n += k.length + v.length + 8; }
  return n;
}

/** How {@link sendInRequests} sends. */
export interface SplitContext {
  client: KafkaClient;
  maxRequestBytes: number;
  maxMessageBytes: number;
  /** True once the provider is closed: nothing more is sent. */
  closed: () => boolean;
  /** A TLS problem behind a failure, in words, to say in the error. */
  tlsProblem: (e: unknown) => string | undefined;
}

/**
 * `records` cut into requests of at most `maxRequestBytes` (each a list of indexes, in
 * order), with the records over `maxMessageBytes` rejected and left out.
 */
export function requestsOf(
  records: readonly ProviderRecord[],
  maxRequestBytes: number,
  maxMessageBytes: number,
): { requests: number[][]; rejected: RecordRejection[] } {
  const requests: number[][] = [];
  const rejected: RecordRejection[] = [];
  let chunk: number[] = [];
  let bytes = 0;
  for (let i = 0; i < records.length; i++) {
    const size = recordBytes(records[i]);
    if (size > maxMessageBytes) {
      if (chunk.length) requests.push(chunk);
      chunk = [];
      bytes = 0;
      rejected.push({
        index: i,
        reason:
          `MESSAGE_TOO_LARGE: record of ${size} bytes is over maxMessageBytes (${maxMessageBytes})`,
      });
      continue;
    }
    if (chunk.length > 0 && bytes + size > maxRequestBytes) {
      requests.push(chunk);
      chunk = [];
      bytes = 0;
    }
    chunk.push(i);
    bytes += size;
  }
  if (chunk.length) requests.push(chunk);
  return { requests, rejected };
}

/** Sends `records` in requests as the module doc says; resolves with the rejected ones. */
export async function sendInRequests(
  c: SplitContext,
  records: readonly ProviderRecord[],
): Promise<RecordRejection[]> {
  const { requests, rejected } = requestsOf(records, c.maxRequestBytes, c.maxMessageBytes);
  for (const idx of requests) await sendIndexes(c, records, idx, rejected);
  return rejected.sort((a, b) => a.index - b.index);
}

/**
 * Sends `records[idx]` in one request. On a per-record permanent error, splits the request
 * in halves (sent in order) until the records that fail are alone; those are rejected. On a
 * topic-wide one (not authorized, invalid topic), splits it by topic instead, and rejects
 * all the records of the refused topic at once.
 */
async function sendIndexes(
  c: SplitContext,
  records: readonly ProviderRecord[],
  idx: number[],
  rejected: RecordRejection[],
): Promise<void> {
  if (c.closed()) throw new KafkaSendError("not sent", new Error("the provider is closed"));
  try {
    await c.client.produce(idx.length === records.length ? records : idx.map((i) => records[i]));
  } catch (e) {
    const type = c.client.errorType(e);
    if (type === undefined || !PER_RECORD_ERRORS.has(type)) {
      throw new KafkaSendError(`sending ${idx.length} record(s) failed`, e, c.tlsProblem(e));
    }
    if (idx.length === 1) {
      rejected.push({ index: idx[0], reason: `${type}: ${describeError(e)}` });
      return;
    }
    if (TOPIC_ERRORS.has(type)) {
      // A topic-wide refusal: send each topic's records apart; the refused topic's are
      // refused together, without halving them one by one.
      const byTopic = new Map<string, number[]>();
      for (const i of idx) {
        const list = byTopic.get(records[i].topic);
        if (list) list.push(i);
        else byTopic.set(records[i].topic, [i]);
      }
      if (byTopic.size === 1) {
        for (const i of idx) rejected.push({ index: i, reason: `${type}: ${describeError(e)}` });
        return;
      }
      for (const sub of byTopic.values()) await sendIndexes(c, records, sub, rejected);
      return;
    }
    const half = Math.ceil(idx.length / 2);
    await sendIndexes(c, records, idx.slice(0, half), rejected);
    await sendIndexes(c, records, idx.slice(half), rejected);
  }
}

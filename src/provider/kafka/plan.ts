/**
 * A send's plan: the identity under which the `platformatic` client sends a batch from the
 * engine, so that sending it again (after a failure, after a crash) lets the broker drop
 * what it already has. It fixes everything the broker compares: the idempotent producer's id
 * and epoch, the requests in order, in each the partition batches with their records (as
 * indexes into the engine's batch) and first sequence numbers. The records refused for good
 * are part of it, so that a plan read back after a crash refuses them again rather than
 * sending them. It is made once per batch, committed (stored in the in-flight file, through
 * the engine's `SendContext`) before any of it leaves, and changed only where the broker
 * refused a partition batch, or forgot the producer (the rest then goes under a new id):
 * committed again then.
 *
 * Its text is JSON: `{"v":2,"pid":"<id>","epoch":e,"at":ms,"counts":{"<topic>":n},
 * "requests":[[[["<topic>",partition,sequence],...],[first,count,...],"<batch of each record>"],
 * ...],"rejected":[[index,"reason"],...]}`. A request names its batches, then its records as runs
 * of consecutive indexes, then for each of those records, in order, the batch it is in: one
 * character, the batch's place in the list in base64url (`A` the first); nothing (`""`) when the
 * request has one batch. Keyed records spread over many partitions leave one run per record in
 * each batch, so a plan that listed each batch's records (version 1) took about ten characters
 * a record, and its encoding showed in profiles of the agent. Version 1 is still read, and still
 * written where it is the shorter: a request of over 64 batches, or batches of a few long runs.
 *
 * @module
 */

import type { RecordRejection } from "../types.ts";

/** Sequence numbers wrap to 0 after 2^31 - 1, as the broker counts them. */
export const SEQUENCE_WRAP = 0x80000000;

/** One partition's records in a request, and the sequence number of the first. */
export interface PlannedBatch {
  topic: string;
  partition: number;
  sequence: number;
  /** Indexes into the engine's batch, in order. */
  records: number[];
}

/** See the module doc. */
export interface Plan {
  producerId: bigint;
  producerEpoch: number;
  /** When the producer id was handed this plan's sequence numbers, ms since the epoch. */
  madeAt: number;
  /** The partition count of each topic the records were placed with. */
  partitionCounts: Map<string, number>;
  requests: PlannedBatch[][];
  rejected: RecordRejection[];
}

/** Indexes as runs: [first, count, first, count, ...]. */
function runsOf(idx: readonly number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < idx.length;) {
    let j = i + 1;
    while (j < idx.length && idx[j] === idx[j - 1] + 1) j++;
    out.push(idx[i], j - i);
    i = j;
  }
  return out;
}

/** Base64url: a request's batch numbers, one character each (at most 64 batches). */
const BATCH_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const BATCH_OF_DIGIT = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++) BATCH_OF_DIGIT[BATCH_DIGITS.charCodeAt(i)] = i;

const latin1 = new TextDecoder("latin1");

/** A request in version 2's form: its batches, its records' runs, each record's batch. */
function requestV2(
  batches: readonly PlannedBatch[],
): [Array<[string, number, number]>, number[], string] {
  const list = batches.map((b): [string, number, number] => [b.topic, b.partition, b.sequence]);
  // One batch (one partition): every record is in it, which no character need say.
  if (batches.length === 1) return [list, runsOf(batches[0].records), ""];
  let low = Infinity, high = -1;
  for (const b of batches) {
    if (b.records[0] < low) low = b.records[0];
    if (b.records[b.records.length - 1] > high) high = b.records[b.records.length - 1];
  }
  // The batch of each index from `low` to `high` (255: not in this request).
  const of = new Uint8Array(high >= low ? high - low + 1 : 0).fill(255);
  batches.forEach((b, n) => {
    for (const i of b.records) of[i - low] = n;
  });
  const runs: number[] = [];
  const digits = new Uint8Array(of.length);
  let d = 0;
  for (let k = 0; k < of.length;) {
    if (of[k] === 255) {
      k++;
      continue;
    }
    const first = k;
    for (; k < of.length && of[k] !== 255; k++) digits[d++] = BATCH_DIGITS.charCodeAt(of[k]);
    runs.push(low + first, k - first);
  }
  return [list, runs, latin1.decode(digits.subarray(0, d))];
}

/**
 * Whether version 1 says `p` in fewer characters: a request over 64 batches, or batches that
 * are a few long runs each (two topics arriving in bursts), where one character a record costs
 * more than about a dozen a run.
 */
function shorterInV1(p: Plan): boolean {
  let records = 0, runs = 0;
  for (const r of p.requests) {
    if (r.length > 64) return true;
    if (r.length === 1) continue;
    for (const b of r) {
      const idx = b.records;
      records += idx.length;
      runs++;
      for (let j = 1; j < idx.length; j++) if (idx[j] !== idx[j - 1] + 1) runs++;
    }
  }
  return runs * 12 < records;
}

/** The plan as text (see the module doc). */
export function encodePlan(p: Plan): string {
  if (shorterInV1(p)) return encodePlanV1(p);
  return JSON.stringify({
    v: 2,
    pid: p.producerId.toString(),
    epoch: p.producerEpoch,
    at: p.madeAt,
    counts: Object.fromEntries(p.partitionCounts),
    requests: p.requests.map(requestV2),
    rejected: p.rejected.map((r) => [r.index, r.reason]),
  });
}

/** Version 1 (see the module doc): each batch with its records' runs. */
export function encodePlanV1(p: Plan): string {
  return JSON.stringify({
    v: 1,
    pid: p.producerId.toString(),
    epoch: p.producerEpoch,
    at: p.madeAt,
    counts: Object.fromEntries(p.partitionCounts),
    requests: p.requests.map((r) =>
      r.map((b) => [b.topic, b.partition, b.sequence, runsOf(b.records)])
    ),
    rejected: p.rejected.map((r) => [r.index, r.reason]),
  });
}

const isInt = (n: unknown, min = 0): n is number => Number.isSafeInteger(n) && (n as number) >= min;

/**
 * The plan in `text`, checked against a batch of `records` records: null when it is not one
 * (another client's identity, or damaged), or names records the batch does not have, or
 * names one twice.
 */
export function decodePlan(text: string, records: number): Plan | null {
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof j !== "object" || j === null || (j.v !== 1 && j.v !== 2)) return null;
  if (typeof j.pid !== "string") return null;
  if (!/^\d+$/.test(j.pid) || !isInt(j.epoch) || typeof j.at !== "number") return null;
  if (typeof j.counts !== "object" || j.counts === null) return null;
  if (!Array.isArray(j.requests) || !Array.isArray(j.rejected)) return null;
  const counts = new Map<string, number>();
  for (const [t, n] of Object.entries(j.counts)) {
    if (!isInt(n, 1)) return null;
    counts.set(t, n);
  }
  const seen = new Uint8Array(records);
  const take = (i: unknown) => {
    if (!isInt(i) || i >= records || seen[i]) return false;
    seen[i] = 1;
    return true;
  };
  const requests: PlannedBatch[][] = [];
  const batchOf = (topic: unknown, partition: unknown, sequence: unknown) => {
    if (typeof topic !== "string" || !isInt(partition) || !isInt(sequence)) return null;
    if (partition >= (counts.get(topic) ?? 0)) return null;
    return { topic, partition, sequence, records: [] as number[] };
  };
  for (const r of j.requests) {
    if (!Array.isArray(r)) return null;
    if (j.v === 2) {
      // [[[topic, partition, sequence], ...], [first, count, ...], "<batch of each record>"]
      if (r.length !== 3 || !Array.isArray(r[0]) || !Array.isArray(r[1])) return null;
      const [list, runs, digits] = r as [unknown[], unknown[], unknown];
      if (typeof digits !== "string" || list.length === 0 || list.length > 64) return null;
      const batches: PlannedBatch[] = [];
      for (const b of list) {
        if (!Array.isArray(b) || b.length !== 3) return null;
        const batch = batchOf(b[0], b[1], b[2]);
        if (batch === null) return null;
        batches.push(batch);
      }
      let d = 0;
      for (let k = 0, end = 0; k < runs.length; k += 2) {
        // Runs in order, as they are written: a batch's records stay in their order.
        if (!isInt(runs[k], end) || !isInt(runs[k + 1], 1)) return null;
        end = (runs[k] as number) + (runs[k + 1] as number) + 1;
        for (let i = runs[k] as number; i < (runs[k] as number) + (runs[k + 1] as number); i++) {
          const c = digits.charCodeAt(d++);
          const n = digits === "" && batches.length === 1 ? 0 : c < 128 ? BATCH_OF_DIGIT[c] : -1;
          if (n < 0 || n >= batches.length || !take(i)) return null;
          batches[n].records.push(i);
        }
      }
      if (digits !== "" && d !== digits.length) return null;
      if (batches.some((b) => b.records.length === 0)) return null;
      requests.push(batches);
      continue;
    }
    const batches: PlannedBatch[] = [];
    for (const b of r) {
      if (!Array.isArray(b) || b.length !== 4) return null;
      const [topic, partition, sequence, runs] = b;
      if (typeof topic !== "string" || !isInt(partition) || !isInt(sequence)) return null;
      if (partition >= (counts.get(topic) ?? 0) || !Array.isArray(runs) || runs.length === 0) {
        return null;
      }
      const idx: number[] = [];
      for (let k = 0; k < runs.length; k += 2) {
        if (!isInt(runs[k]) || !isInt(runs[k + 1], 1)) return null;
        for (let i = runs[k]; i < runs[k] + runs[k + 1]; i++) {
          if (!take(i)) return null;
          idx.push(i);
        }
      }
      batches.push({ topic, partition, sequence, records: idx });
    }
    requests.push(batches);
  }
  const rejected: RecordRejection[] = [];
  for (const r of j.rejected) {
    if (!Array.isArray(r) || !take(r[0]) || typeof r[1] !== "string") return null;
    rejected.push({ index: r[0], reason: r[1] });
  }
  return {
    producerId: BigInt(j.pid),
    producerEpoch: j.epoch,
    madeAt: j.at,
    partitionCounts: counts,
    requests,
    rejected,
  };
}

/** Records the plan still sends (in its requests, not refused). */
export function plannedRecords(p: Plan): number {
  let n = 0;
  for (const r of p.requests) for (const b of r) n += b.records.length;
  return n;
}

/**
 * The plan after the broker refused, for good, batch `b` of request `r` (a per-record error):
 * a batch of one record is refused with `reason` and taken out; a larger batch is split in
 * two halves under the same sequence numbers, the second in a request of its own right
 * after `r`, so that the refused records are narrowed down; a topic-wide refusal
 * (`wholeTopic`) refuses every record of `b`'s topic not yet acknowledged (`acked` holds the
 * batches that were). A batch no longer in the plan (taken out by a refusal before it) is
 * left alone. Returns true when a record was taken out of its partition's run of sequence
 * numbers: the batches after it may not take its numbers (a broker that had appended it
 * before would take them for copies), so the caller sends them under a new producer id.
 */
export function refuse(
  p: Plan,
  r: number,
  b: PlannedBatch,
  reason: string,
  wholeTopic: boolean,
  acked: ReadonlySet<PlannedBatch>,
): boolean {
  if (!p.requests.some((q) => q.includes(b))) return false;
  let gap = false;
  if (wholeTopic) {
    for (let k = r; k < p.requests.length; k++) {
      p.requests[k] = p.requests[k].filter((x) => {
        if (x.topic !== b.topic || acked.has(x)) return true;
        for (const i of x.records) p.rejected.push({ index: i, reason });
        return false;
      });
    }
  } else if (b.records.length === 1) {
    p.requests[r] = p.requests[r].filter((x) => x !== b);
    p.rejected.push({ index: b.records[0], reason });
    gap = p.requests.slice(r + 1).some((q) =>
      q.some((x) => x.topic === b.topic && x.partition === b.partition)
    );
  } else {
    const half = Math.ceil(b.records.length / 2);
    const second: PlannedBatch = {
      topic: b.topic,
      partition: b.partition,
      sequence: (b.sequence + half) % SEQUENCE_WRAP,
      records: b.records.slice(half),
    };
    b.records = b.records.slice(0, half);
    p.requests.splice(r + 1, 0, [second]);
  }
  p.requests = p.requests.filter((x) => x.length > 0);
  p.rejected.sort((x, y) => x.index - y.index);
  return gap;
}

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
 * Its text is JSON: `{"v":1,"pid":"<id>","epoch":e,"at":ms,"counts":{"<topic>":n},
 * "requests":[[["<topic>",partition,sequence,[first,count,...]],...],...],"rejected":[[index,
 * "reason"],...]}`; the records of a batch are runs of consecutive indexes.
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

/** The plan as text (see the module doc). */
export function encodePlan(p: Plan): string {
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
  if (typeof j !== "object" || j === null || j.v !== 1 || typeof j.pid !== "string") return null;
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
  for (const r of j.requests) {
    if (!Array.isArray(r)) return null;
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

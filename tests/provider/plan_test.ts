// A send's plan (the identity of a batch under the platformatic client): its text round
// trip, what it refuses to read, and how a refusal by the broker narrows it down.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodePlan,
  encodePlan,
  encodePlanV1,
  type Plan,
  type PlannedBatch,
  refuse,
  SEQUENCE_WRAP,
} from "../../src/provider/kafka/plan.ts";

function plan(): Plan {
  return {
    producerId: 9007199254740993n, // past 2^53: kept exact
    producerEpoch: 2,
    madeAt: 1_700_000_000_000,
    partitionCounts: new Map([["a", 3], ["b", 1]]),
    requests: [
      [
        { topic: "a", partition: 0, sequence: 10, records: [0, 1, 2, 5] },
        { topic: "b", partition: 0, sequence: 0, records: [3, 4] },
      ],
      [{ topic: "a", partition: 0, sequence: 14, records: [6, 7] }],
    ],
    rejected: [{ index: 8, reason: "MESSAGE_TOO_LARGE: record of 2000000 bytes" }],
  };
}

describe("send plan", () => {
  it("reads back what it wrote: each request's records as runs, then each one's batch", () => {
    const p = plan();
    const text = encodePlan(p);
    assert.match(text, /\[0,6\],"AAABBA"\]/);
    assert.match(text, /\[6,2\],""\]/, "a request of one batch needs no characters");
    assert.deepEqual(decodePlan(text, 9), p);
  });

  it("reads back the version before (each batch with its runs), and writes it past 64 batches", () => {
    const p = plan();
    const v1 = encodePlanV1(p);
    assert.match(v1, /"v":1.*\[0,3,5,1\]/);
    assert.deepEqual(decodePlan(v1, 9), p);
    const wide: Plan = {
      ...plan(),
      partitionCounts: new Map([["w", 100]]),
      requests: [Array.from({ length: 65 }, (_, i) => ({
        topic: "w",
        partition: i,
        sequence: 0,
        records: [i],
      }))],
      rejected: [],
    };
    assert.match(encodePlan(wide), /"v":1/);
    assert.deepEqual(decodePlan(encodePlan(wide), 65), wide);
    // Two topics in bursts: two long runs say it in fewer characters than one per record.
    const bursts: Plan = {
      ...plan(),
      requests: [[
        {
          topic: "a",
          partition: 1,
          sequence: 0,
          records: Array.from({ length: 500 }, (_, i) => i),
        },
        {
          topic: "b",
          partition: 0,
          sequence: 0,
          records: Array.from({ length: 500 }, (_, i) => 500 + i),
        },
      ]],
      rejected: [],
    };
    const text = encodePlan(bursts);
    assert.match(text, /"v":1/);
    assert.ok(text.length < 200, `${text.length} characters`);
    assert.deepEqual(decodePlan(text, 1000), bursts);
  });

  it("reads back any plan, in either version (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 1, max: 70 }),
        fc.integer({ min: 1, max: 4 }),
        fc.nat(),
        (n, partitions, requestCount, seed) => {
          // n records, some refused, the rest spread over requests of consecutive records and,
          // in each, over partitions by a seeded hash (as keys spread them).
          let x = seed;
          const next = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0);
          const p: Plan = {
            producerId: 5n,
            producerEpoch: 0,
            madeAt: 1,
            partitionCounts: new Map([["t", partitions]]),
            requests: [],
            rejected: [],
          };
          const per = Math.ceil(n / requestCount);
          for (let from = 0; from < n; from += per) {
            const byPartition = new Map<number, PlannedBatch>();
            for (let i = from; i < Math.min(n, from + per); i++) {
              if (next() % 10 === 0) {
                p.rejected.push({ index: i, reason: "r" });
                continue;
              }
              const part = next() % partitions;
              let b = byPartition.get(part);
              if (!b) {
                byPartition.set(
                  part,
                  b = { topic: "t", partition: part, sequence: i, records: [] },
                );
              }
              b.records.push(i);
            }
            if (byPartition.size > 0) p.requests.push([...byPartition.values()]);
          }
          assert.deepEqual(decodePlan(encodePlan(p), n), p);
          assert.deepEqual(decodePlan(encodePlanV1(p), n), p);
          assert.equal(decodePlan(encodePlan(p), n - 1), null, "a record past the batch");
        },
      ),
      { numRuns: 300 },
    );
  });

  it("refuses text that is not a plan for this batch", () => {
    const text = encodePlan(plan());
    const bad = [
      "",
      "null",
      '{"v":2}',
      text.replace('"pid":"9007199254740993"', '"pid":"-1"'),
      text.replace('"b":1', '"b":0'), // a partition count of 0
      text.replace('["b",0,', '["b",1,'), // partition 1 of a topic of 1
      text.replace("[6,2]", "[5,2]"), // record 5 twice
      text.replace('"AAABBA"', '"AAABCA"'), // a batch the request does not have
      text.replace('"AAABBA"', '"AAABB"'), // a record without its batch
      text.replace('"AAABBA"', '"AAAAAA"'), // a batch with no records
      text.replace('"AAABBA"', '"AAABBAA"'), // a batch for a record not in the runs
      text.replace('"AAABBA"', '""'), // no batches said, in a request of two
      text.replace('[0,6],"AAABBA"', '[3,3,0,3],"AAABBA"'), // runs out of order
    ];
    for (const t of bad) assert.equal(decodePlan(t, 9), null, t);
    assert.equal(decodePlan(text, 8), null, "record 8 past a batch of 8");
  });

  it("a refused batch of one record is refused; the batches after it must go under a new id", () => {
    const p = plan();
    p.requests[0][0].records = [0];
    const b = p.requests[0][0];
    assert.equal(refuse(p, 0, b, "INVALID_RECORD: bad", false, new Set()), true);
    assert.deepEqual(p.requests[0].map((x) => x.topic), ["b"]);
    assert.equal(p.requests[1][0].sequence, 14, "no sequence number is taken twice");
    assert.deepEqual(p.rejected.map((r) => r.index), [0, 8]);
    // Refused again (two errors in one answer): nothing changes.
    assert.equal(refuse(p, 0, b, "INVALID_RECORD: bad", false, new Set()), false);
    assert.deepEqual(p.rejected.map((r) => r.index), [0, 8]);
  });

  it("a larger refused batch is split in halves, the second in a request of its own", () => {
    const p = plan();
    const b = p.requests[0][0];
    refuse(p, 0, b, "MESSAGE_TOO_LARGE", false, new Set());
    assert.deepEqual(b, { topic: "a", partition: 0, sequence: 10, records: [0, 1] });
    assert.deepEqual(p.requests[1], [{ topic: "a", partition: 0, sequence: 12, records: [2, 5] }]);
    assert.equal(p.requests[2][0].sequence, 14, "later batches keep their numbers");
  });

  it("a topic-wide refusal refuses every record of the topic not acknowledged", () => {
    const p = plan();
    const acked = new Set<PlannedBatch>([p.requests[0][1]]);
    refuse(p, 0, p.requests[0][0], "TOPIC_AUTHORIZATION_FAILED", true, acked);
    assert.deepEqual(p.requests, [[{ topic: "b", partition: 0, sequence: 0, records: [3, 4] }]]);
    assert.deepEqual(p.rejected.map((r) => r.index), [0, 1, 2, 5, 6, 7, 8]);
  });

  it("sequence numbers wrap as the broker counts them", () => {
    const p = plan();
    p.requests[0][0].sequence = SEQUENCE_WRAP - 1;
    p.requests[0][0].records = [0, 1];
    assert.equal(refuse(p, 0, p.requests[0][0], "MESSAGE_TOO_LARGE", false, new Set()), false);
    assert.equal(p.requests[1][0].sequence, 0);
  });
});

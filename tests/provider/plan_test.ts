// A send's plan (the identity of a batch under the platformatic client): its text round
// trip, what it refuses to read, and how a refusal by the broker narrows it down.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  decodePlan,
  encodePlan,
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
  it("reads back what it wrote, records as runs of indexes", () => {
    const p = plan();
    const text = encodePlan(p);
    assert.match(text, /\[0,3,5,1\]/);
    assert.deepEqual(decodePlan(text, 9), p);
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

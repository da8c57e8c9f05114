// The agent on a real 3-broker cluster, with the client under test (MB_TEST_KAFKA_CLIENT):
// a crashed leader, a controlled shutdown, a leader election, two brokers down (below
// min.insync.replicas) and a full outage, all during delivery (tests/_failover.ts). An
// independent consumer then checks every acknowledged record.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { KAFKA_CLIENT } from "../_kafka.ts";
import { CLUSTER_SKIP } from "../_cluster.ts";
import { failoverProblems, failoverSummary, runFailover } from "../_failover.ts";

if (CLUSTER_SKIP) console.log(`tests/cluster/failover_test.ts: skipping: ${CLUSTER_SKIP}`);

describe(`agent (${KAFKA_CLIENT}) on a 3-broker cluster`, () => {
  it(
    "loses, corrupts, reorders and dead-letters nothing through a crash, a controlled shutdown, a leader election, two brokers down and a full outage",
    { skip: CLUSTER_SKIP },
    async () => {
      const seed = Number(process.env.MB_FAILOVER_SEED ?? Math.floor(Math.random() * 2 ** 31));
      const r = await runFailover({
        client: KAFKA_CLIENT,
        seed,
        say: (line) => console.log(`failover (${KAFKA_CLIENT}, seed ${seed}): ${line}`),
      });
      console.log(`failover (${KAFKA_CLIENT}, seed ${seed}): ${failoverSummary(r)}`);
      const problems = failoverProblems(r);
      if (problems.length > 0) console.log(r.log.slice(-20_000));
      assert.deepEqual(problems, [], `seed ${seed} (MB_FAILOVER_SEED replays it)`);
    },
  );
});

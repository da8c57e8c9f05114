// The cluster failover run (tests/_failover.ts), many times in a row with each client: the
// real agent delivers to the 3-broker cluster of scripts/kafka_cluster.sh (started here if it
// is not running) through a crashed leader, a controlled shutdown, a leader election, two
// brokers down and a full outage, and an independent consumer checks every acknowledged
// record. One line per run, a summary per client; exit 1 on any lost, corrupt, reordered or
// dead-lettered record, or duplicates beyond what the agent counted as re-sent.
//
//   deno run -A scripts/cluster_loop.ts [--runs 5] [--client platformatic,kafkajs]
//     [--seed N] [--exe PATH]
//
// --exe (or MB_AGENT_BIN) runs the executable instead of the agent from source.

import { execFileSync } from "node:child_process";
import { homedir } from "node:os";
import process from "node:process";
import { parseArgs } from "node:util";
import { machine } from "./_bench_util.ts";

const { values: args } = parseArgs({
  options: {
    runs: { type: "string", default: "5" },
    client: { type: "string", default: "platformatic,kafkajs" },
    seed: { type: "string" },
    exe: { type: "string" },
  },
});

const cluster = (command: string) =>
  execFileSync("bash", ["scripts/kafka_cluster.sh", command], { encoding: "utf8" }).trim();
try {
  cluster("status");
} catch {
  cluster("start");
}
process.env.MB_TEST_CLUSTER_BROKERS = cluster("bootstrap");
process.env.MB_TEST_KAFKA_LIBS ??= `${homedir()}/.cache/messagebuffer/kafka-${
  process.env.KAFKA_VERSION ?? "4.1.2"
}`;
if (args.exe) process.env.MB_AGENT_BIN = args.exe;
// Imported once the environment names the cluster.
const { failoverProblems, failoverSummary, runFailover } = await import("../tests/_failover.ts");

const runs = Number(args.runs);
let seed = Number(args.seed ?? Math.floor(Math.random() * 2 ** 31));
let failed = false;
console.log(
  `cluster-loop: ${runs} runs per client, agent ${
    process.env.MB_AGENT_BIN ? "executable" : "from source"
  }, ${machine()}`,
);
for (const client of args.client!.split(",") as Array<"platformatic" | "kafkajs">) {
  const totals = { acked: 0, lost: 0, duplicated: 0, resumeMax: 0, ok: 0 };
  for (let i = 0; i < runs; i++, seed++) {
    const r = await runFailover({ client, seed });
    const problems = failoverProblems(r);
    console.log(
      `cluster-loop: ${client} run ${i + 1}/${runs} seed ${seed}: ${failoverSummary(r)} => ${
        problems.length ? `FAIL (${problems.join("; ")})` : "OK"
      }`,
    );
    totals.acked += r.acked;
    totals.lost += r.check.missing;
    totals.duplicated += r.check.duplicates;
    totals.resumeMax = Math.max(totals.resumeMax, r.resumeMs.belowMinIsr, r.resumeMs.fullOutage);
    if (problems.length === 0) totals.ok++;
    else failed = true;
  }
  console.log(
    `cluster-loop: ${client}: ${totals.ok} of ${runs} runs OK, acked ${totals.acked}, lost ${totals.lost}, duplicated ${totals.duplicated}, slowest resume ${totals.resumeMax} ms`,
  );
}
process.exit(failed ? 1 : 0);

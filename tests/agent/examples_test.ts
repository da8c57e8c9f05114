// The client examples the README shows (docs/examples/): Python, Go, Node.js and the shell's
// socat and nc, each run as a user would against a real agent; a consumer then reads what
// each sent from Kafka. A client whose tool is not installed is skipped, saying so
// (.ci/run installs them all).

import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { type Agent, startAgent } from "../_agent.ts";
import { tempDir } from "../_helpers.ts";
import { BROKERS, consume, createTopics, uniqueTopic } from "../_kafka.ts";

function has(tool: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const CLIENTS: Array<{ name: string; tools: string[]; cmd: string[]; records: string[] }> = [
  {
    name: "Python (docs/examples/send.py)",
    tools: ["python3"],
    cmd: ["python3", "docs/examples/send.py"],
    records: ["hello from Python", "second line"],
  },
  {
    name: "Go (docs/examples/send.go)",
    tools: ["go"],
    cmd: ["go", "run", "docs/examples/send.go"],
    records: ["hello from Go", "second line"],
  },
  {
    name: "Node.js (docs/examples/send.mjs)",
    tools: ["node"],
    cmd: ["node", "docs/examples/send.mjs"],
    records: ["hello from Node.js", "second line"],
  },
  {
    name: "socat and nc -U -N (docs/examples/send.sh)",
    tools: ["bash", "socat", "nc"],
    cmd: ["bash", "docs/examples/send.sh"],
    records: ["hello from socat", "second line", "hello from nc", "second line"],
  },
];

const t = await tempDir();
let agent: Agent | null = null;
after(async () => {
  await agent?.stop();
  await t.cleanup();
});

describe("the README's clients, against a real agent", () => {
  for (const c of CLIENTS) {
    const missing = c.tools.filter((x) => !has(x));
    const skip = missing.length ? `not installed here: ${missing.join(", ")}` : false;
    if (skip) console.log(`tests/agent/examples_test.ts: skipping ${c.name}: ${skip}`);
    it(
      `${c.name} gets ok for #ack and each line, and Kafka has the records`,
      { skip },
      async () => {
        agent ??= await startAgent(["--brokers", BROKERS.join(","), "--buffer-dir", t.dir]);
        const topic = uniqueTopic("example");
        await createTopics([topic], 1);
        const out = await new Promise<{ code: number; stdout: string; stderr: string }>(
          (resolve) => {
            execFile(
              c.cmd[0],
              [...c.cmd.slice(1), `${t.dir}/messagebuffer.sock`, topic],
              { timeout: 120_000 },
              (err, stdout, stderr) =>
                resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr }),
            );
          },
        );
        assert.equal(out.code, 0, out.stderr + out.stdout);
        assert.match(out.stdout, /records stored/);
        const got = await consume([topic], c.records.length);
        assert.deepEqual(got.map((r) => r.value!.toString()), c.records);
      },
    );
  }
});

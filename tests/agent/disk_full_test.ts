// A real full disk: the buffer directory on a small tmpfs (mounting needs root, as CI runs;
// skipped, saying so, otherwise). The agent is first pointed where no broker listens, so
// that what it stores stays on the small filesystem; a second agent on the same directory
// then delivers to the real broker, which shows what the full disk left stored.

import { after, afterEach, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, readdir, rm, statfs, writeFile } from "node:fs/promises";
import { type Agent, freePort, RawClient, startAgent, waitForMetrics } from "../_agent.ts";
import { tempDir } from "../_helpers.ts";
import { BROKERS, consume, createTopics, uniqueTopic } from "../_kafka.ts";

let mnt = "";
let skip: string | false = false;
let cleanup = async () => {};

before(async () => {
  const t = await tempDir("mb-diskfull-");
  cleanup = t.cleanup;
  mnt = `${t.dir}/mnt`;
  await mkdir(mnt);
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", mnt], {
      stdio: "pipe",
    });
  } catch (e) {
    skip = `cannot mount a tmpfs (needs root): ${String((e as Error).message).split("\n")[0]}`;
  }
});

const agents: Agent[] = [];
afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop("SIGKILL");
  // Each test has the whole small filesystem to itself.
  if (!skip) {
    for (const f of await readdir(mnt)) await rm(`${mnt}/${f}`, { recursive: true, force: true });
  }
});

after(async () => {
  if (!skip) execFileSync("umount", [mnt]);
  await cleanup();
});

async function agent(dir: string, brokers: string, extra: string[]): Promise<[Agent, string]> {
  const port = await freePort();
  const a = await startAgent([
    "--brokers",
    brokers,
    "--buffer-dir",
    dir,
    "--file-max-size",
    "1",
    "--fsync",
    "always",
    "--metrics",
    `127.0.0.1:${port}`,
    ...extra,
  ]);
  agents.push(a);
  return [a, `127.0.0.1:${port}`];
}

/** Writes `lines` in ack mode on one connection; resolves with the answers. */
async function send(sock: string, lines: string[]): Promise<string[]> {
  const c = await RawClient.connect(sock);
  c.write("#ack\n" + lines.join(""));
  const answers = await c.waitAnswers(lines.length + 1, 60_000);
  c.end();
  await c.closed;
  return answers.slice(1);
}

const line = (topic: string, i: number) => `${topic}\tk\t${i}:${"v".repeat(20_000)}\n`;

describe("disk full (a real tmpfs)", () => {
  it("fails writes with a storage error, stays up, resumes once space returns, and keeps every acknowledged record", async (t) => {
    if (skip) return t.skip(skip);
    const dir = `${mnt}/full`;
    const topic = uniqueTopic("disk-full");
    await createTopics([topic]);
    // A filler file that is removed later: the space that "returns".
    await writeFile(`${mnt}/filler`, new Uint8Array(1 << 20));
    const [a, metrics] = await agent(dir, "127.0.0.1:1", ["--total-size", "1024"]);
    const sock = `${dir}/messagebuffer.sock`;
    let next = 0;
    const acked: number[] = [];
    let firstError = "";
    // Fill: batches of lines until the filesystem refuses them.
    for (let round = 0; round < 40 && !firstError; round++) {
      const batch = Array.from({ length: 20 }, () => next++);
      const answers = await send(sock, batch.map((i) => line(topic, i)));
      answers.forEach((ans, j) => {
        if (ans === "ok") acked.push(batch[j]);
        else firstError ||= ans;
      });
    }
    assert.match(
      firstError,
      /^error line \d+: .*(no space|ENOSPC)/i,
      "a storage error names the cause",
    );
    const full = await waitForMetrics(
      metrics,
      (m) => m.messagebuffer_write_errors_total > 0,
      "write errors",
    );
    assert.equal(a.proc.exitCode, null, "the agent is still up");
    assert.ok(full.messagebuffer_write_errors_total >= 1);
    // Space returns: writing resumes without a restart.
    await rm(`${mnt}/filler`);
    const resumed: number[] = [];
    for (let tries = 0; tries < 50 && resumed.length === 0; tries++) {
      const i = next++;
      const [ans] = await send(sock, [line(topic, i)]);
      // (A write may fit again before the filler goes: a failed frame's bytes are cut off.)
      if (ans === "ok") resumed.push(i);
      else await new Promise((r) => setTimeout(r, 100)); // the next write tries the disk again
    }
    assert.equal(resumed.length, 1, "a write succeeds once space returned");
    const more = Array.from({ length: 5 }, () => next++);
    assert.deepEqual(await send(sock, more.map((i) => line(topic, i))), Array(5).fill("ok"));
    acked.push(...resumed, ...more);
    assert.equal(await a.stop(), 0, "a clean stop after the full disk");
    // What is stored is intact: another agent delivers exactly the acknowledged lines, in order.
    const [b, m2] = await agent(dir, BROKERS.join(","), []);
    await waitForMetrics(m2, (m) => m.messagebuffer_backlog_records === 0, "delivery", 60_000);
    await b.stop();
    const got = (await consume([topic], acked.length)).map((r) =>
      Number(String(r.value).split(":")[0])
    );
    assert.deepEqual(got, acked);
  });

  it('under "drop-oldest" the cap keeps the agent away from ENOSPC: every write is stored, the oldest are dropped and counted', async (t) => {
    if (skip) return t.skip(skip);
    const dir = `${mnt}/capped`;
    const topic = uniqueTopic("disk-capped");
    await createTopics([topic]);
    const [a, metrics] = await agent(dir, "127.0.0.1:1", [
      "--total-size",
      "3",
      "--when-full",
      "drop-oldest",
    ]);
    const sock = `${dir}/messagebuffer.sock`;
    const total = 600; // 12 MB through a 6 MB filesystem
    for (let from = 0; from < total; from += 50) {
      const batch = Array.from({ length: 50 }, (_, j) => line(topic, from + j));
      assert.deepEqual(await send(sock, batch), Array(50).fill("ok"), `lines ${from}..`);
    }
    const fs = await statfs(mnt);
    assert.ok(fs.bfree > 0, "the filesystem never filled");
    const m = await waitForMetrics(
      metrics,
      (x) => x.messagebuffer_records_dropped_total > 0,
      "drops",
    );
    assert.equal(m.messagebuffer_write_errors_total, 0);
    const dropped = m.messagebuffer_records_dropped_total;
    assert.equal(await a.stop(), 0);
    const [b, m2] = await agent(dir, BROKERS.join(","), []);
    await waitForMetrics(m2, (x) => x.messagebuffer_backlog_records === 0, "delivery", 60_000);
    await b.stop();
    const got = (await consume([topic], total - dropped)).map((r) =>
      Number(String(r.value).split(":")[0])
    );
    // The newest records, in order: exactly those not counted as dropped.
    assert.deepEqual(got, Array.from({ length: total - dropped }, (_, i) => dropped + i));
  });
});

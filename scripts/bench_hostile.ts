// The agent's ingest under hostile clients: well-behaved ack-mode clients write at a steady
// rate while others hold connections up to the limit and past it, dribble long lines a few
// bytes at a time, flood lines without reading the answers, send garbage and cut lines off.
// Prints, for a quiet run and a hostile one on the same machine: the well-behaved clients'
// answered lines/s and answer latency (p50, p99), and the agent's peak RSS (VmHWM).
//
//   deno run -A scripts/bench_hostile.ts [--seconds 20] [--exe PATH] [--rate 20000]
//
// The agent runs offline (no broker: lines are stored, not sent), so the figures are the
// socket server's and the disk path's.

import { Buffer } from "node:buffer";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { machine, peakRss as peakRssOf } from "./_bench_util.ts";

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "20" },
    exe: { type: "string" },
    rate: { type: "string", default: "20000" },
  },
});
const SECONDS = Number(args.seconds);
const RATE = Number(args.rate); // lines/s over all well-behaved clients
const EXE = args.exe ?? process.env.MB_AGENT_BIN;
const MAX_CONNECTIONS = 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function command(argv: string[]): [string, string[]] {
  if (EXE) return [EXE, argv];
  if ((globalThis as { Deno?: unknown }).Deno) {
    return [process.execPath, ["run", "-A", "cli.ts", ...argv]];
  }
  return [process.execPath, ["cli.ts", ...argv]];
}

function connect(path: string): Promise<net.Socket | null> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once("connect", () => resolve(s));
    s.once("error", () => resolve(null));
  });
}

interface Result {
  answered: number;
  p50: number;
  p99: number;
  peakRss: number;
  refused: number;
}

async function run(hostile: boolean): Promise<Result> {
  const dir = await mkdtemp(join(tmpdir(), "mb-hostile-"));
  const sock = join(dir, "messagebuffer.sock");
  const [cmd, argv] = command([
    "run",
    "--brokers",
    "127.0.0.1:1",
    "--buffer-dir",
    dir,
    "--total-size",
    "4096",
    "--max-connections",
    String(MAX_CONNECTIONS),
    "--idle-timeout",
    "5",
    "--log-level",
    "error",
  ]);
  const agent = spawn(cmd, argv, { stdio: ["ignore", "ignore", "inherit"] });
  for (let i = 0; !(await connect(sock).then((s) => (s?.destroy(), s !== null))); i++) {
    if (i > 600) throw new Error("agent did not start");
    await sleep(50);
  }
  const stopAt = Date.now() + SECONDS * 1000;
  const latencies: number[] = [];
  let refused = 0;
  // Well-behaved: 4 clients, each RATE/4 lines/s, answers timed.
  const good = Array.from({ length: 4 }, async (_, c) => {
    const s = (await connect(sock))!;
    const sent: number[] = [];
    let text = "";
    s.setEncoding("utf8");
    s.on("data", (t: string) => {
      text += t;
      let nl;
      while ((nl = text.indexOf("\n")) >= 0) {
        text = text.slice(nl + 1);
        const t0 = sent.shift();
        if (t0 !== undefined && t0 > 0) latencies.push(performance.now() - t0);
      }
    });
    s.write("#ack\n");
    sent.push(0);
    const perTick = Math.max(1, Math.round(RATE / 4 / 100));
    let i = 0;
    while (Date.now() < stopAt) {
      let chunk = "";
      const now = performance.now();
      for (let j = 0; j < perTick; j++) {
        chunk += `good${c}\tk\t${i++}:${"g".repeat(100)}\n`;
        sent.push(now);
      }
      s.write(chunk);
      await sleep(10);
    }
    s.end();
    await new Promise((r) => s.once("close", r));
  });
  const hostiles: Promise<void>[] = [];
  if (hostile) {
    // Connections that never write, up to the limit and past it.
    hostiles.push((async () => {
      const held: net.Socket[] = [];
      while (Date.now() < stopAt) {
        const s = await connect(sock);
        if (!s) continue;
        s.on("error", () => {});
        s.on("data", (d) => {
          if (String(d).startsWith("error too many")) refused++;
        });
        held.push(s);
        if (held.length >= MAX_CONNECTIONS + 50) break;
      }
      while (Date.now() < stopAt) await sleep(100);
      for (const s of held) s.destroy();
    })());
    // Dribblers: 1 MiB lines 16 bytes at a time.
    for (let d = 0; d < 8; d++) {
      hostiles.push((async () => {
        const s = await connect(sock);
        if (!s) return;
        s.on("error", () => {});
        const line = Buffer.from(`drib\t\t${"x".repeat(1 << 20)}\n`);
        for (let i = 0; i < line.length && Date.now() < stopAt; i += 16) {
          if (!s.write(line.subarray(i, i + 16))) await new Promise((r) => s.once("drain", r));
          if (i % 4096 === 0) await sleep(1);
        }
        s.destroy();
      })());
    }
    // Flooders that never read their answers, and garbage with cut-off lines.
    for (let f = 0; f < 4; f++) {
      hostiles.push((async () => {
        while (Date.now() < stopAt) {
          const s = await connect(sock);
          if (!s) {
            await sleep(50);
            continue;
          }
          s.on("error", () => {});
          s.write("#ack\n" + `flood\t\t${"f".repeat(200)}\n`.repeat(20_000));
          const junk = Buffer.alloc(64 * 1024);
          for (let i = 0; i < junk.length; i++) junk[i] = (i * 7919) & 0xff;
          s.write(junk);
          await sleep(200);
          s.destroy();
        }
      })());
    }
  }
  let peakRss = 0;
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, peakRssOf(agent.pid!));
  }, 200);
  await Promise.all([...good, ...hostiles]);
  clearInterval(sampler);
  peakRss = Math.max(peakRss, peakRssOf(agent.pid!));
  agent.kill("SIGTERM");
  await new Promise((r) => agent.once("exit", r));
  await rm(dir, { recursive: true, force: true });
  latencies.sort((a, b) => a - b);
  const q = (p: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  return { answered: latencies.length, p50: q(0.5), p99: q(0.99), peakRss, refused };
}

const fmt = (r: Result) =>
  `${(r.answered / SECONDS).toFixed(0)} lines/s answered, p50 ${r.p50.toFixed(1)} ms, p99 ${
    r.p99.toFixed(1)
  } ms, agent peak RSS ${(r.peakRss / 2 ** 20).toFixed(0)} MiB`;
const quiet = await run(false);
const hostile = await run(true);
console.log(
  `bench-hostile: ${SECONDS} s, offered ${RATE} lines/s by 4 well-behaved clients, agent ${
    EXE ? "executable" : "from source"
  }, ${machine()}`,
);
console.log(`  quiet:   ${fmt(quiet)}`);
console.log(
  `  hostile: ${
    fmt(hostile)
  } (${MAX_CONNECTIONS}+ silent connections, ${hostile.refused} refused past the limit, 8 dribblers of 1 MiB lines in 16-byte writes, 4 flooders not reading answers, garbage)`,
);
console.log(
  `  ratio hostile/quiet: throughput ${(hostile.answered / quiet.answered).toFixed(2)}x, p99 ${
    (hostile.p99 / quiet.p99).toFixed(1)
  }x`,
);

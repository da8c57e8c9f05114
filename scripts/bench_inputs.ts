// The agent's inputs side by side, in one sitting, on one agent: how many records per second
// each one stores (durable under the fsync policy, answered where the input answers):
//   - socket lines: N lines through the Unix socket in acknowledged mode, pipelined by one
//     client (Python's sendfile, which costs next to nothing); timed until the last answer;
//   - HTTP, batches of 1 and of 500: POST /topics/{topic} (REST Proxy v2, json format) from
//     --concurrency clients in this process (fetch); timed until the last 200;
//   - syslog over TCP: N RFC 5424 lines on one connection (Python); timed until the agent's
//     metrics count N stored;
//   - syslog over the Unix datagram socket: N datagrams (Python, blocking sendto, so none is
//     lost in the kernel); timed until the agent's metrics count N stored.
// The agent delivers to the broker meanwhile, as in use. The clients run on the same cores as
// the agent: the figures are of the whole host, as a user would see them.
//
//   scripts/kafka.sh start
//   npm run compile
//   deno run -A scripts/bench_inputs.ts [--records N] [--agent dist/messagebuffer]
//       [--brokers HOST:PORT] [--concurrency 4] [--value-bytes 100]

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { fmtRate, machine } from "./_bench_util.ts";

const { values: a } = parseArgs({
  options: {
    records: { type: "string", default: "200000" },
    agent: { type: "string" },
    brokers: { type: "string", default: "127.0.0.1:9092" },
    concurrency: { type: "string", default: "4" },
    "value-bytes": { type: "string", default: "100" },
  },
});
const N = Number(a.records);
const C = Number(a.concurrency);
const VALUE = "v".repeat(Number(a["value-bytes"]));
const agentCmd = a.agent ? [a.agent] : [process.execPath, "run", "-A", "cli.ts"];
const dir = await mkdtemp(join(tmpdir(), "mb-bench-inputs-"));
const [HTTP, METRICS, SYSLOG] = ["127.0.0.1:18481", "127.0.0.1:18482", "127.0.0.1:18483"];
const sock = join(dir, "buf", "messagebuffer.sock");
const logSock = join(dir, "log.sock");

const p = spawn(agentCmd[0], [
  ...agentCmd.slice(1),
  "run",
  "--brokers",
  a.brokers!,
  "--buffer-dir",
  join(dir, "buf"),
  "--log-level",
  "warn",
  "--metrics",
  METRICS,
  "--http",
  HTTP,
  "--syslog-tcp",
  SYSLOG,
  "--syslog-socket",
  logSock,
  "--syslog-topic",
  "bench-inputs-syslog",
], { stdio: ["ignore", "inherit", "inherit"] });
const exited = new Promise<void>((r) => p.on("exit", () => r()));
for (let i = 0; !existsSync(logSock); i++) {
  if (i > 30_000 || p.exitCode !== null) throw new Error("the agent did not start");
  await new Promise((r) => setTimeout(r, 1));
}
while (!(await fetch(`http://${METRICS}/metrics`).then((r) => r.ok, () => false))) {
  await new Promise((r) => setTimeout(r, 10));
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`http://${METRICS}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? NaN);
}

function python(code: string, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn("python3", ["-c", code, ...args], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    c.stdout.on("data", (d) => (out += d));
    c.on("exit", (code) => code === 0 ? resolve(out) : reject(new Error(`python exited ${code}`)));
  });
}

const results: Array<[string, number]> = [];

// Socket lines, acknowledged.
{
  const file = join(dir, "lines.txt");
  let text = "#ack\n";
  for (let i = 0; i < N; i++) text += `bench-inputs-socket\tk${i % 100}\t${VALUE}\n`;
  await writeFile(file, text);
  const t0 = performance.now();
  const answers = await python(
    `
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(sys.argv[1])
f = open(sys.argv[2], "rb"); n = int(sys.argv[3]) + 1; got = 0; ok = 0; buf = b""
import threading
threading.Thread(target=lambda: (s.sendfile(f), None), daemon=True).start()
while got < n:
    chunk = s.recv(1 << 20)
    if not chunk: break
    buf += chunk; lines = buf.split(b"\\n"); buf = lines.pop()
    got += len(lines); ok += sum(1 for l in lines if l == b"ok")
print(ok - 1)
`,
    sock,
    file,
    String(N),
  );
  const ms = performance.now() - t0;
  if (Number(answers) !== N) throw new Error(`socket: ${answers.trim()} of ${N} answered ok`);
  results.push(["socket lines (#ack)", N / (ms / 1000)]);
}

// HTTP, batches of 1 and of 500.
for (const batch of [1, 500]) {
  const requests = Math.max(1, Math.floor((batch === 1 ? N / 10 : N) / batch));
  const body = JSON.stringify({
    records: Array.from({ length: batch }, (_, i) => ({ key: `k${i % 100}`, value: VALUE })),
  });
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: C }, async () => {
    while (next < requests) {
      next++;
      const r = await fetch(`http://${HTTP}/topics/bench-inputs-http`, {
        method: "POST",
        headers: { "content-type": "application/vnd.kafka.json.v2+json" },
        body,
      });
      await r.arrayBuffer();
      if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
    }
  }));
  const ms = performance.now() - t0;
  results.push([
    `HTTP, ${batch} record${batch > 1 ? "s" : ""} a request`,
    requests * batch / (ms / 1000),
  ]);
}

// Syslog: TCP lines, then datagrams.
for (const how of ["tcp", "datagram"] as const) {
  const before = await metric("messagebuffer_syslog_stored_total");
  const t0 = performance.now();
  await python(
    how === "tcp"
      ? `
import socket, sys
host, port = sys.argv[1].rsplit(":", 1); n = int(sys.argv[2]); v = sys.argv[3]
s = socket.create_connection((host, int(port)))
line = f"<14>1 2026-12-05T10:00:00.000Z web-1 bench 1 - - {v}\\n".encode()
for i in range(0, n, 1000): s.sendall(line * min(1000, n - i))
s.close()
`
      : `
import socket, sys
path, n, v = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
msg = f"<14>1 2026-12-05T10:00:00.000Z web-1 bench 1 - - {v}".encode()
for i in range(n): s.sendto(msg, path)
`,
    how === "tcp" ? SYSLOG : logSock,
    String(N),
    VALUE,
  );
  while ((await metric("messagebuffer_syslog_stored_total")) - before < N) {
    await new Promise((r) => setTimeout(r, 10));
  }
  const ms = performance.now() - t0;
  results.push([`syslog, ${how === "tcp" ? "TCP lines" : "Unix datagrams"}`, N / (ms / 1000)]);
}

p.kill("SIGTERM");
await exited;
await rm(dir, { recursive: true, force: true });

const base = results[0][1];
console.log(
  `bench_inputs: ${N} records of ${VALUE.length} bytes (HTTP with 1 a request: ${
    Math.floor(N / 10)
  }), ${C} HTTP clients, ${a.agent ?? "cli.ts from source"}, ${machine()}`,
);
console.log(`command: deno run -A scripts/bench_inputs.ts ${process.argv.slice(2).join(" ")}`);
for (const [name, rate] of results) {
  console.log(
    `  ${name.padEnd(30)} ${fmtRate(rate).padStart(10)} records/s  ${
      (rate / base).toFixed(2)
    }x socket lines`,
  );
}

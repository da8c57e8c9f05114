import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { KafkaProvider, MessageBuffer, type Provider, silentLogger } from "../mod.ts";
const N = Number(process.argv[2] ?? 300000);
const client = (process.argv[3] ?? "platformatic") as "platformatic";
const brokers = ["127.0.0.1:9092"];
const topic = `prof-${Date.now().toString(36)}`;
const dir = await mkdtemp(join(tmpdir(), "mb-prof-"));
let release!: () => void;
const gate = new Promise<void>((r) => (release = r));
const kp = new KafkaProvider({ brokers, client });
const held: Provider = {
  name: "kafka",
  open: () => kp.open(),
  send: async (r) => {
    await gate;
    return kp.send(r);
  },
  close: () => kp.close(),
};
const b = await MessageBuffer.open({
  dir,
  provider: held,
  logger: silentLogger,
  batchMaxRecords: 1000,
  maxBufferBytes: 64 * 2 ** 30,
});
const VALUE = "x".repeat(100);
for (let i = 0; i < N; i++) {
  const p = b.write(topic, VALUE, { key: `k${i % 10}` });
  if ((i & 4095) === 4095) await p;
}
await b.flush();
const c0 = process.cpuUsage();
const t0 = performance.now();
release();
await b.drained(3_600_000);
const s = (performance.now() - t0) / 1000;
const c = process.cpuUsage(c0);
console.log(`${(N / s / 1000).toFixed(1)}K/s cpu ${((c.user + c.system) / N).toFixed(2)} us/rec`);
await b.close();
await rm(dir, { recursive: true, force: true });

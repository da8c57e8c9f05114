import { KafkaProvider, MessageBuffer, type Provider, silentLogger } from "./mod.ts";
const N = 300000;
const dir = Deno.makeTempDirSync();
let release!: () => void;
const gate = new Promise<void>((r) => (release = r));
const kp = new KafkaProvider({ brokers: ["127.0.0.1:39592"], client: "platformatic" });
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
  maxBufferBytes: 2 ** 34,
});
for (let i = 0; i < N; i++) {
  const p = b.write("prof-topic", "x".repeat(100), { key: `k${i % 10}` });
  if ((i & 4095) === 4095) await p;
}
await b.flush();
console.log("written");
const t0 = performance.now();

release();
await b.drained(600000);
console.log("drain", (performance.now() - t0).toFixed(0), "ms");
await b.close();

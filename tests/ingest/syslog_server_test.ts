// The syslog inputs' back-pressure, on a real TCP socket: a flood whose writes the disk holds
// is read no further than the inputs' bound, then stored whole and in order once the disk goes
// on. (The inputs as users reach them, through the agent, are in tests/agent/inputs_test.ts.)

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { MessageBuffer, silentLogger } from "../../mod.ts";
import { SyslogServer } from "../../src/ingest/syslog_server.ts";
import { MAX_WAITING_BYTES } from "../../src/ingest/bounds.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import type { FileSystem } from "../../src/fs/types.ts";
import { heldSegmentWrites, RecordingProvider, waitFor } from "../_helpers.ts";

/**
 * A buffer on `fs` (delivering to a recording provider) under a syslog TCP input storing raw
 * messages, and a client connected to it.
 */
async function syslogOverTcp(
  fs: FileSystem,
  sizes: { maxBufferBytes?: number; segmentMaxBytes?: number } = {},
) {
  const provider = new RecordingProvider();
  const buffer = await MessageBuffer.open({
    dir: "/buf",
    fs,
    provider,
    logger: silentLogger,
    fsync: "never",
    ...sizes,
  });
  const s = await SyslogServer.start({
    tcp: "127.0.0.1:0",
    mapping: { topic: "syslog", key: "none", value: "raw" },
    buffer,
    logger: silentLogger,
  });
  const [host, port] = s.tcpAddress!.split(":");
  const c = net.connect(Number(port), host);
  await new Promise<void>((r) => c.once("connect", () => r()));
  return { provider, buffer, s, c };
}

describe("syslog TCP input: memory a flood takes", () => {
  it("stops reading once about 2 MiB of messages wait for the disk, then stores them all in order", async () => {
    const { fs, held, release } = heldSegmentWrites();
    const { provider, buffer, s, c } = await syslogOverTcp(fs, {
      maxBufferBytes: 1 << 30,
      segmentMaxBytes: 64 << 20,
    });
    // 16 MiB of 512-byte messages, one per line: far more than the bound and the kernel's
    // socket buffers.
    const message = (i: number) => `<14>app: ${String(i).padStart(8, "0")} ${"m".repeat(490)}`;
    const count = 32_768;
    let text = "";
    for (let i = 0; i < count; i++) text += message(i) + "\n";
    c.write(text);
    await waitFor(() => held() > 0, 5000, "a segment write to be held");
    await waitFor(() => s.stats.pauses > 0, 10_000, "the input to stop reading");
    const read = s.stats.received;
    assert.ok(read > 0, "the input read some of the flood");
    // The bound, and a MiB for the reads in progress when it was passed.
    assert.ok(
      read * 512 <= MAX_WAITING_BYTES + (1 << 20),
      `read ${read} messages (${read * 512} bytes) not stored`,
    );
    assert.equal(s.stats.stored, 0, "nothing stored while the disk holds its writes");
    release();
    await waitFor(() => s.stats.stored === count, 30_000, "every message to be stored");
    c.end();
    await buffer.drained(30_000);
    const dec = new TextDecoder();
    const got = provider.received.map((r) => dec.decode(r.value));
    assert.equal(got.length, count);
    assert.ok(got.every((v, i) => v === message(i)), "every message, in order");
    await s.close();
    await buffer.close();
  });

  it("counts every message of the writes the disk failed as refused, and every other as stored", async () => {
    const fs = new MemoryFileSystem();
    const { provider, buffer, s, c } = await syslogOverTcp(fs);
    fs.failNext("append", "EIO", ".seg");
    const count = 2000;
    let text = "";
    for (let i = 0; i < count; i++) text += `<14>app: ${i}\n`;
    c.end(text);
    await waitFor(
      () => s.stats.stored + s.stats.droppedRefused === count,
      10_000,
      "every message counted, stored or refused",
    );
    assert.equal(s.stats.received, count);
    // The failed append took a whole frame's messages with it: counted each, not once.
    assert.ok(s.stats.droppedRefused > 1, `${s.stats.droppedRefused} refused`);
    await buffer.drained(10_000).catch(() => {});
    assert.equal(provider.received.length, s.stats.stored, "what was counted stored is delivered");
    await s.close();
    await buffer.close().catch(() => {});
  });
});

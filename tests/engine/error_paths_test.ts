// Error paths where data could be lost or misreported, each with the behaviour it must have.
// Fault injection uses the in-memory filesystem; a fake provider stands in for Kafka.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { MessageBuffer, type MessageBufferOptions, StorageError } from "../../mod.ts";
import { CheckpointFile, checkpointFileName } from "../../src/checkpoint/checkpoint.ts";
import { dirStatus } from "../../src/agent/inspect.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import type { ProviderRecord, SendResult } from "../../src/provider/types.ts";
import { memoryBufferOptions, recordingLogger, RecordingProvider, waitFor } from "../_helpers.ts";

const DIR = "/buf";
const dec = new TextDecoder();

function opts(
  fs: MemoryFileSystem,
  provider: RecordingProvider,
  extra: Partial<MessageBufferOptions> = {},
): MessageBufferOptions {
  return memoryBufferOptions(fs, provider, { closeTimeoutMs: 2000, ...extra });
}

/** Records in `dead/`, read the way `status` reads them. */
async function deadRecords(fs: MemoryFileSystem): Promise<number> {
  return (await dirStatus(fs, DIR, () => false)).deadLetters.records;
}

/** A provider whose sends wait for `release()`; `sending` resolves when one is waiting. */
class GatedProvider extends RecordingProvider {
  #release: () => void = () => {};
  sending: Promise<void>;
  #sent: () => void = () => {};
  constructor() {
    super();
    this.gate = new Promise((r) => (this.#release = r));
    this.sending = new Promise((r) => (this.#sent = r));
  }
  override send(records: readonly ProviderRecord[]): Promise<SendResult | void> {
    this.#sent();
    return super.send(records);
  }
  release(): void {
    this.#release();
  }
}

describe("dead letters", () => {
  it("a record refused while the buffer closes is stored in dead/ and counted, or kept and sent again", async () => {
    for (const diskFails of [false, true]) {
      const fs = new MemoryFileSystem();
      const p = new GatedProvider();
      p.rejectIf = (r) => dec.decode(r.value) === "poison" ? "MESSAGE_TOO_LARGE: no" : null;
      const b = await MessageBuffer.open(opts(fs, p));
      await b.write("t", "a");
      await b.write("t", "poison");
      await p.sending;
      if (diskFails) { for (let i = 0; i < 3; i++) fs.failNext("open", "EIO", "/dead/"); }
      const closed = b.close(); // close starts while the batch is in flight...
      p.release(); // ...and the provider then refuses one of its records
      await closed;
      const counted = b.stats().counters.deadLettered;
      assert.equal(counted, await deadRecords(fs), `disk fails ${diskFails}: counted = stored`);
      assert.equal(counted, diskFails ? 0 : 1);
      // Reopen: a refused record that is not in dead/ is still in the buffer.
      const p2 = new RecordingProvider();
      p2.rejectIf = p.rejectIf;
      const b2 = await MessageBuffer.open(opts(fs, p2));
      await b2.drained(5000);
      await b2.close();
      assert.equal(await deadRecords(fs), 1, `disk fails ${diskFails}: poison in dead/ once`);
      assert.ok([...p.values(), ...p2.values()].includes("a"), "the record beside it arrives");
    }
  });

  it("a disk error while storing dead letters is a storage error, not a provider retry", async () => {
    const fs = new MemoryFileSystem();
    const p = new RecordingProvider();
    p.rejectIf = (r) => dec.decode(r.value) === "poison" ? "MESSAGE_TOO_LARGE: no" : null;
    const b = await MessageBuffer.open(opts(fs, p));
    fs.failNext("open", "EIO", "/dead/");
    fs.failNext("open", "EIO", "/dead/");
    for (const v of ["a", "poison", "b"]) await b.write("t", v);
    await b.drained(5000);
    const s = b.stats();
    assert.equal(s.counters.sendRetries, 0, "Kafka is not blamed for the disk");
    assert.equal(s.provider.state, "ready");
    assert.equal(s.counters.storageErrors, 2);
    assert.equal(s.counters.deadLettered, 1);
    assert.deepEqual(p.values(), ["a", "b"]);
    await b.close();
    assert.equal(await deadRecords(fs), 1);
  });
  it("a refused batch whose dead-letter write keeps failing while the cap prunes its segment counts as dropped", async () => {
    const fs = new MemoryFileSystem();
    const p = new RecordingProvider();
    p.rejectIf = () => "MESSAGE_TOO_LARGE: no"; // Kafka refuses everything
    for (let i = 0; i < 1000; i++) fs.failNext("open", "ENOSPC", "/dead/"); // dead/ never opens
    const b = await MessageBuffer.open(
      opts(fs, p, { segmentMaxBytes: 1024, maxBufferBytes: 2048, whenFull: "drop-oldest" }),
    );
    const value = "v".repeat(100);
    let written = 0;
    // Write until the cap has pruned segments the sender was trying to dead-letter.
    while ((b.stats().counters.dropped === 0 || p.rejected.length <= 4 * 2) && written < 2000) {
      await b.write("t", `${written++}${value}`);
      await new Promise((r) => setTimeout(r, 1));
    }
    await b.close();
    const c = b.stats().counters;
    assert.ok(c.dropped > 0, "the cap pruned");
    assert.equal(c.deadLettered, 0, "nothing reached dead/");
    assert.ok(p.rejected.length > c.deadLettered + 4, "refused more than one batch");
    assert.equal(
      written,
      c.delivered + c.deadLettered + c.dropped + b.stats().backlog.records,
      "every record is delivered, dead-lettered, dropped or still held",
    );
    assert.ok(c.storageErrors > 0);
  });
});

describe("failed fsync is a lasting state", () => {
  it('under "interval", a failed fsync retires the segment, refuses writes until fsync works, then recovers', async () => {
    const fs = new MemoryFileSystem();
    const p = new RecordingProvider();
    p.down = true;
    const log = recordingLogger();
    const b = await MessageBuffer.open(
      opts(fs, p, { fsync: "interval", fsyncIntervalMs: 5, logger: log.logger }),
    );
    await b.write("t", "before-1");
    await b.write("t", "before-2");
    // The disk now fails every fsync: the periodic one, and the probe of a fresh segment.
    for (let i = 0; i < 50; i++) fs.failNext("sync", "EIO", ".seg");
    await b.write("t", "unsynced"); // acknowledged under interval, before the fsync fails
    await waitFor(() => b.stats().storage.state === "failed", 5000, "the failed state");
    assert.match(b.stats().storage.lastError ?? "", /EIO/);
    await assert.rejects(b.write("t", "refused"), (e) => e instanceof StorageError);
    assert.equal(b.stats().counters.storageErrors, 1);
    assert.equal(b.stats().counters.writeErrors, 1);
    // The disk heals (the remaining faults are used up by a burst of failing probes).
    while (true) {
      try {
        await b.write("t", "after");
        break;
      } catch (e) {
        assert.ok(e instanceof StorageError);
      }
    }
    assert.equal(b.stats().storage.state, "ok");
    p.down = false;
    await b.drained(5000);
    const got = p.values();
    assert.deepEqual(got, ["before-1", "before-2", "unsynced", "after"]);
    assert.ok(log.lines.some((l) => /storage works again/.test(l)), log.lines.join("\n"));
    await b.close();
  });

  it("a failed fsync while sealing a segment enters the failed state too", async () => {
    const fs = new MemoryFileSystem();
    const p = new RecordingProvider();
    p.down = true;
    const b = await MessageBuffer.open(opts(fs, p, { fsync: "interval", fsyncIntervalMs: 1e6 }));
    await b.write("t", "x".repeat(1500));
    fs.failNext("sync", "EIO", ".seg"); // the seal
    fs.failNext("sync", "EIO", ".seg"); // the fresh segment's header
    // The next record does not fit: the segment is sealed, and its fsync fails.
    await assert.rejects(b.write("t", "y".repeat(1500)), (e) => e instanceof StorageError);
    assert.equal(b.stats().storage.state, "failed");
    await b.write("t", "z");
    assert.equal(b.stats().storage.state, "ok");
    p.down = false;
    await b.drained(5000);
    assert.deepEqual(p.values().map((v) => v[0]), ["x", "z"]);
    await b.close();
  });
});

describe("quarantine", () => {
  it("a quarantine that fails is tried again and never shrinks the segment without moving its data", async () => {
    const fs = new MemoryFileSystem();
    const p = new RecordingProvider();
    p.down = true;
    const b = await MessageBuffer.open(opts(fs, p));
    for (let i = 0; i < 30; i++) {
      await b.write("t", `r${String(i).padStart(2, "0")}-${"q".repeat(80)}`);
    }
    const first = (await fs.list(DIR)).filter((n) => n.endsWith(".seg"))[0];
    const size = fs.peek(`${DIR}/${first}`)!.length;
    fs.corrupt(`${DIR}/${first}`, 16 + 30, new Uint8Array([0xee])); // inside the first frame
    fs.failNext("open", "EIO", "/quarantine/");
    p.down = false;
    await b.drained(5000);
    const s = b.stats().counters;
    const q = await fs.list(`${DIR}/quarantine`);
    assert.equal(q.length, 1, "the corrupt data is in quarantine/");
    assert.equal(s.quarantinedBytes, size - 16);
    assert.equal(fs.peek(`${DIR}/quarantine/${q[0]}`)!.length, size - 16);
    assert.ok(s.storageErrors >= 1);
    assert.equal(p.received.length + s.quarantinedRecords, 30);
    await b.close();
  });
});

describe("interrupted segment creation", () => {
  it("a newest segment without a complete header is removed quietly and counted as torn", async () => {
    for (const headerBytes of [0, 7]) {
      const fs = new MemoryFileSystem();
      const p = new RecordingProvider();
      p.down = true;
      const b = await MessageBuffer.open(opts(fs, p));
      for (let i = 0; i < 3; i++) await b.write("t", `r${i}`);
      await b.close();
      // What a crash between creating a segment and writing its header leaves.
      const name = `${"9".repeat(20)}-00000000001.seg`;
      const fh = await fs.open(`${DIR}/${name}`, "create");
      if (headerBytes) await fh.append(new Uint8Array(headerBytes).fill(0x4d));
      await fh.sync();
      await fh.close();
      await fs.syncDir(DIR);
      const status = await dirStatus(fs, DIR, () => false);
      assert.match(status.segments.at(-1)!.problem ?? "", /interrupted creation/);
      const log = recordingLogger();
      const p2 = new RecordingProvider();
      const b2 = await MessageBuffer.open(opts(fs, p2, { logger: log.logger }));
      await b2.drained(5000);
      const c = b2.stats().counters;
      await b2.close();
      assert.deepEqual(p2.values(), ["r0", "r1", "r2"]);
      assert.equal(c.tornBytes, headerBytes);
      assert.equal(c.quarantinedBytes, 0);
      assert.deepEqual(await fs.list(`${DIR}/quarantine`), []);
      assert.equal(await fs.stat(`${DIR}/${name}`), null);
      assert.ok(!log.lines.some((l) => l.startsWith("ERROR")), log.lines.join("\n"));
    }
  });
});

describe("re-sends after a crash", () => {
  for (const [fsync, crash] of [["always", "power loss"], ["interval", "SIGKILL"]] as const) {
    it(`under "${fsync}", a ${crash} during delivery sends again at most the batch in flight`, async () => {
      for (let crashAtSend = 2; crashAtSend <= 12; crashAtSend += 5) {
        const fs = new MemoryFileSystem();
        const p = new RecordingProvider();
        p.down = true;
        const b = await MessageBuffer.open(opts(fs, p, { fsync }));
        for (let i = 0; i < 60; i++) await b.write("t", `r${i}`);
        await b.flush();
        // Checkpoint writes take a while (a busy disk), longer than a send.
        fs.latencyMs = { append: 3, sync: 3, syncDir: 3 };
        let after: MemoryFileSystem | null = null;
        // The crash: taken the moment the provider is handed batch number `crashAtSend`.
        const send = p.send.bind(p);
        p.send = (records) => {
          if (p.sends + 1 === crashAtSend && !after) {
            after = crash === "SIGKILL" ? fs.processCrash() : fs.crash();
          }
          return send(records);
        };
        p.down = false;
        await b.drained(5000);
        await b.close();
        assert.ok(after, "the crash point was reached");
        const acknowledgedBefore = (crashAtSend - 1) * 4;
        const p2 = new RecordingProvider();
        const b2 = await MessageBuffer.open(opts(after!, p2, { fsync }));
        await b2.drained(5000);
        await b2.close();
        const again = p2.values();
        // Everything from the batch in flight on, nothing acknowledged before it.
        assert.deepEqual(
          again,
          Array.from({ length: 60 - acknowledgedBefore }, (_, i) => `r${acknowledgedBefore + i}`),
          `crash at send ${crashAtSend}`,
        );
      }
    });
  }
});

describe("status reads a buffer as opening it would", () => {
  it("an S file pointing inside a frame: status and open both start the segment over", async () => {
    const fs = new MemoryFileSystem();
    const p = new RecordingProvider();
    p.down = true;
    const b = await MessageBuffer.open(opts(fs, p, { segmentMaxBytes: 1 << 16 }));
    await Promise.all(Array.from({ length: 10 }, (_, i) => b.write("t", `r${i}`)));
    await b.close();
    const [seg] = (await fs.list(DIR)).filter((n) => n.endsWith(".seg"));
    // An S file that claims 7 records were delivered, at an offset inside the first frame.
    const { file } = await CheckpointFile.open(fs, `${DIR}/${checkpointFileName(seg)}`, true);
    await file.commit({ offset: 16 + 5, skip: 0, delivered: 7 });
    await file.close();
    const status = await dirStatus(fs, DIR, () => false);
    assert.equal(status.segments[0].delivered, 0);
    assert.equal(status.backlog.records, 10);
    assert.match(status.segments[0].checkpointProblem ?? "", /not at a frame start/);
    const p2 = new RecordingProvider();
    const b2 = await MessageBuffer.open(opts(fs, p2));
    assert.equal(b2.stats().backlog.records, status.backlog.records);
    await b2.drained(5000);
    await b2.close();
    assert.equal(p2.received.length, 10);
  });
});

// What `messagebuffer replay` reads: the records of quarantined bytes around a corrupt frame,
// and the journal that keeps a record from being replayed twice. The replay through a running
// agent to a real broker is in agent_test.ts.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { formatSources, replaySources } from "../../src/agent/replay.ts";
import { readQuarantined } from "../../src/segment/reader.ts";
import { readJournal } from "../../src/agent/journal.ts";
import { SegmentFile } from "../../src/segment/writer.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import { encodeSegmentHeader, FrameBuilder } from "../../src/segment/format.ts";
import { REPLAY_JOURNAL } from "../../src/layout.ts";

function frame(values: string[]): Uint8Array {
  const b = new FrameBuilder(1024);
  for (const v of values) b.append("t", v, null, [["h", "x"]], 1000);
  return b.finish().slice();
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const dec = new TextDecoder();

describe("replay: quarantined data", () => {
  it("reads the good frames before and after a corrupt one, and reports the bytes it skips", () => {
    const f1 = frame(["a", "b"]), f2 = frame(["c"]), f3 = frame(["d", "e"]);
    const bytes = concat([f1, f2, f3]);
    bytes[f1.length + 25] ^= 0x40; // a flipped bit in f2's payload
    const { records, unreadable } = readQuarantined(bytes);
    assert.deepEqual(records.map((r) => dec.decode(r.value)), ["a", "b", "d", "e"]);
    assert.deepEqual(unreadable, [{
      offset: f1.length,
      bytes: f2.length,
      reason: "corrupt frame",
    }]);
    assert.deepEqual(records[0].headers?.map(([k, v]) => [k, dec.decode(v)]), [["h", "x"]]);
  });

  it("reads a whole quarantined segment (header first), and a torn end", () => {
    const f1 = frame(["a"]), f2 = frame(["b"]);
    const bytes = concat([encodeSegmentHeader(7), f1, f2.subarray(0, f2.length - 3)]);
    const { records, unreadable } = readQuarantined(bytes);
    assert.deepEqual(records.map((r) => dec.decode(r.value)), ["a"]);
    assert.equal(unreadable.length, 1);
    assert.equal(unreadable[0].reason, "corrupt or torn end");
    assert.equal(unreadable[0].bytes, f2.length - 3);
  });

  it("finds nothing in garbage, without throwing", () => {
    const junk = new Uint8Array(4096).map((_, i) => (i * 7919) & 0xff);
    const { records, unreadable } = readQuarantined(junk);
    assert.equal(records.length, 0);
    assert.equal(unreadable.reduce((n, u) => n + u.bytes, 0), 4096);
  });
});

describe("replay: sources", () => {
  it("reads the dead letters of every lane, without the dead-letter headers", async () => {
    const fs = new MemoryFileSystem();
    for (const lane of ["/b", "/b/lanes/2"]) {
      await fs.mkdirp(`${lane}/dead`);
      const f = await SegmentFile.create(fs, `${lane}/dead`, 0, true);
      const b = new FrameBuilder(1024);
      b.append(lane.endsWith("2") ? "t2" : "t0", "v", "k", [
        ["app", "x"],
        ["messagebuffer-error", "TOPIC_AUTHORIZATION_FAILED: no"],
        ["messagebuffer-segment", "s"],
      ], 5);
      await f.append(b.finish(), true);
      await f.close();
    }
    const sources = await replaySources(fs, "/b", { quarantine: false });
    assert.deepEqual(sources.map((s) => s.file.replace(/[^/]+\.seg$/, "*.seg")), [
      "dead/*.seg",
      "lanes/2/dead/*.seg",
    ]);
    assert.deepEqual(sources.map((s) => s.records[0].topic), ["t0", "t2"]);
    assert.deepEqual(sources[1].records[0].headers?.map(([k]) => k), ["app"]);
    assert.equal(sources[1].reasons[0], "TOPIC_AUTHORIZATION_FAILED: no");
    assert.match(formatSources(sources), /2 records to replay from 2 file\(s\)/);
  });
});

describe("replay: the journal", () => {
  it("unions the accepted ranges of every entry per file, and skips a torn last line", async () => {
    const fs = new MemoryFileSystem();
    await fs.mkdirp("/b/dead");
    const fh = await fs.open(`/b/${REPLAY_JOURNAL}`, "create");
    await fh.append(new TextEncoder().encode(
      JSON.stringify({ file: "dead/a.seg", accepted: [[0, 2], [5, 5]] }) + "\n" +
        JSON.stringify({ file: "dead/a.seg", accepted: [[3, 3]] }) + "\n" +
        JSON.stringify({ file: "quarantine/x@0", accepted: [[1, 1]] }) + "\n" +
        '{"file": "dead/a.seg", "accep',
    ));
    await fh.close();
    const j = await readJournal(fs, "/b");
    assert.deepEqual([...j.get("dead/a.seg")!].sort(), [0, 1, 2, 3, 5]);
    assert.deepEqual([...j.get("quarantine/x@0")!], [1]);
  });
});

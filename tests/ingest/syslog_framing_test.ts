// Syslog over TCP split into messages (RFC 6587), whatever the pieces the stream arrives in:
// each stream is fed whole, split at every point, and a byte at a time.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { SyslogFramer } from "../../src/ingest/syslog_framing.ts";

interface Seen {
  messages: string[];
  tooLong: number;
  droppedAtEnd: boolean;
}

/** Feeds `pieces` to a framer with limit `max`, then ends the stream. */
function frame(pieces: Buffer[], max: number): Seen {
  const seen: Seen = { messages: [], tooLong: 0, droppedAtEnd: false };
  const f = new SyslogFramer(max, {
    message: (m) => seen.messages.push(m.toString("latin1")),
    tooLong: () => seen.tooLong++,
  });
  for (const p of pieces) f.push(p);
  seen.droppedAtEnd = f.end();
  return seen;
}

/** The stream whole, split at each point into two, and a byte at a time: all must agree. */
function everySplit(stream: string, max: number, expected: Partial<Seen>): void {
  const b = Buffer.from(stream, "latin1");
  const ways: Array<[string, Buffer[]]> = [["whole", [b]]];
  for (let i = 1; i < b.length; i++) {
    ways.push([`split at ${i}`, [b.subarray(0, i), b.subarray(i)]]);
  }
  ways.push(["a byte at a time", [...b].map((x) => Buffer.from([x]))]);
  for (const [how, pieces] of ways) {
    const seen = frame(pieces, max);
    for (const [k, v] of Object.entries(expected)) {
      assert.deepEqual(seen[k as keyof Seen], v, `${how}: ${k}`);
    }
  }
}

describe("SyslogFramer", () => {
  it("splits octet-counted frames, whatever pieces they come in", () => {
    everySplit("11 <13>hello A5 <13>b11 <13>c\nd e f", 100, {
      messages: ["<13>hello A", "<13>b", "<13>c\nd e f"],
      tooLong: 0,
      droppedAtEnd: false,
    });
  });

  it("splits lines, and keeps a line that starts with a number whole", () => {
    everySplit("<13>first\n5 errors found\r\n12 <13>not a count\n\nlast", 100, {
      messages: ["<13>first", "5 errors found\r", "12 <13>not a count", "last"],
      tooLong: 0,
      droppedAtEnd: false,
    });
  });

  it("skips an over-long counted frame and goes on with the next", () => {
    everySplit(`30 ${"x".repeat(30)}4 <1>a4 <2>`, 10, {
      messages: ["<1>a"],
      tooLong: 1,
      droppedAtEnd: true, // "4 <2>" lacks a byte
    });
  });

  it("skips an over-long line up to its LF and goes on with the next", () => {
    everySplit(`<13>${"y".repeat(30)}\n<13>ok\n`, 10, {
      messages: ["<13>ok"],
      tooLong: 1,
      droppedAtEnd: false,
    });
  });

  it("takes a counted frame that ends a stream of counted frames only whole", () => {
    everySplit("5 <13>a6 <13>", 100, { messages: ["<13>a"], droppedAtEnd: true });
  });

  it("holds an unfinished frame in about its own size, however finely it is split", () => {
    const f = new SyslogFramer(1 << 20, { message: () => {}, tooLong: () => {} });
    f.push(Buffer.from("<13>"));
    for (let i = 0; i < 10_000; i++) f.push(Buffer.from("z"));
    assert.equal(f.pendingBytes, 10_004);
    assert.equal(f.discard(), true);
    assert.equal(f.pendingBytes, 0);
  });
});

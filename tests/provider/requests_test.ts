// Produce requests freed at their answer (src/provider/kafka/requests.ts): never before it,
// never a buffer that is not the request's own, and not at all on a socket where anything
// unexpected was seen; and, against the real broker, requests freed while every record still
// arrives whole and in order.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { AnsweredRequests } from "../../src/provider/kafka/requests.ts";
import { PlatformaticClient } from "../../src/provider/kafka/platformatic.ts";
import { resolveKafkaSettings } from "../../src/provider/kafka/options.ts";
import type { ProviderRecord } from "../../src/provider/types.ts";
import { BROKERS, consume, createTopics, uniqueTopic } from "../_kafka.ts";

/** A request as the library writes it: size, API key, version, correlation id, then a body. */
function request(apiKey: number, correlationId: number, bytes: number): Buffer {
  const b = Buffer.alloc(bytes, 0x5a);
  b.writeInt32BE(bytes - 4, 0);
  b.writeInt16BE(apiKey, 4);
  b.writeInt16BE(9, 6);
  b.writeInt32BE(correlationId, 8);
  return b;
}

/** A socket as far as the watch goes: what was written reaches the original write. */
function socketAndWrites() {
  const written: Uint8Array[] = [];
  const socket = {
    write(chunk: Uint8Array): boolean {
      written.push(chunk);
      return true;
    },
  };
  return { socket, written };
}

const BIG = 200 * 1024;

describe("Produce requests freed at their answer", () => {
  it("frees each Produce request once answered, oldest first, never one still unanswered", () => {
    const requests = new AnsweredRequests();
    const { socket, written } = socketAndWrites();
    const watched = requests.watch({ socket })!;
    assert.equal(requests.watch({ socket }), watched, "a socket is watched once");
    const [a, metadata, b] = [request(0, 1, BIG), request(3, 2, 100), request(0, 3, BIG)];
    for (const r of [a, metadata, b]) socket.write(r);
    assert.deepEqual(written, [a, metadata, b], "every write reaches the socket, unchanged");
    watched.answered();
    assert.equal(a.buffer.byteLength, 0, "the first Produce request is freed");
    assert.equal(b.length, BIG, "the second, unanswered, is untouched");
    assert.equal(b.readInt32BE(8), 3);
    assert.equal(metadata.length, 100, "other requests are never freed");
    watched.answered();
    assert.equal(b.buffer.byteLength, 0);
    assert.equal(requests.freed, 2);
  });

  it("leaves small requests and views of larger memory to the collector, in their turn", () => {
    const requests = new AnsweredRequests();
    const { socket } = socketAndWrites();
    const watched = requests.watch({ socket })!;
    const small = request(0, 1, 1000);
    const shared = Buffer.alloc(BIG + 100);
    const view = shared.subarray(100);
    request(0, 2, BIG).copy(view);
    const own = request(0, 3, BIG);
    for (const r of [small, view, own]) socket.write(r);
    watched.answered(); // small
    watched.answered(); // view
    assert.equal(small.length, 1000);
    assert.equal(shared.buffer.byteLength, BIG + 100, "memory the request does not own is kept");
    assert.equal(own.length, BIG, "the third is not answered yet");
    watched.answered();
    assert.equal(own.buffer.byteLength, 0);
    assert.equal(requests.freed, 1);
  });

  it("frees nothing more on a socket once anything unexpected was seen", () => {
    // What is heard of each: a failed request is expected in an outage, so it is not reported.
    const cases: Array<
      [string, (s: { write(c: Uint8Array): boolean }, w: Watch) => void, string[]]
    > = [
      [
        "a write that is not one whole request",
        (s) => s.write(request(0, 1, BIG).subarray(0, 9000)),
        ["a write that is not one whole request"],
      ],
      ["a request that failed without an answer", (_s, w) => w.stop(), []],
      [
        "an answer with no request noted",
        (_s, w) => w.answered(),
        ["an answer to a request never noted"],
      ],
    ];
    for (const [what, surprise, reported] of cases) {
      const heard: string[] = [];
      const requests = new AnsweredRequests((why) => heard.push(why));
      const { socket } = socketAndWrites();
      const watched = requests.watch({ socket })!;
      surprise(socket, watched);
      assert.equal(watched.off, true, `freeing stops after ${what}`);
      assert.deepEqual(heard, reported, `what is heard of ${what}`);
      const later = request(0, 5, BIG);
      socket.write(later);
      watched.answered();
      assert.equal(later.length, BIG, `after ${what}`);
      assert.equal(requests.freed, 0, `after ${what}`);
    }
  });

  it("stops freeing on a socket with more Produce requests unanswered than expected", () => {
    const heard: string[] = [];
    const requests = new AnsweredRequests((why) => heard.push(why));
    const { socket } = socketAndWrites();
    const watched = requests.watch({ socket })!;
    const all = Array.from({ length: 65 }, (_, i) => request(0, i + 1, BIG));
    for (const r of all.slice(0, 64)) socket.write(r);
    assert.equal(watched.off, false, "64 unanswered are still followed");
    socket.write(all[64]);
    assert.equal(watched.off, true);
    assert.deepEqual(heard, ["over 64 Produce requests unanswered"]);
    watched.answered();
    assert.ok(all.every((r) => r.length === BIG), "none is freed after");
  });

  it("frees the requests the real broker answered, and every record arrives whole and in order", async () => {
    const topic = uniqueTopic("mb-requests");
    await createTopics([topic], 2);
    const client = new PlatformaticClient(
      resolveKafkaSettings({ brokers: BROKERS, connectionTimeoutMs: 5000 }),
    );
    await client.open();
    const sent: string[] = [];
    try {
      // Three sends of 400 records of 1 KB over 2 partitions: requests of about 400 KB.
      for (let s = 0; s < 3; s++) {
        const records: ProviderRecord[] = [];
        for (let i = 0; i < 400; i++) {
          const value = `${s}:${i}:`.padEnd(1000, String.fromCharCode(97 + ((s + i) % 26)));
          sent.push(value);
          records.push({
            topic,
            key: Buffer.from(`k${i % 7}`),
            value: Buffer.from(value),
            headers: null,
            timestamp: Date.now(),
          });
        }
        await client.produce(records);
      }
      // One request a send per partition leader: 3 on one broker, up to 6 on a cluster.
      assert.ok(
        client.requestsFreed >= 3 && client.requestsFreed <= 6,
        `${client.requestsFreed} requests freed at their answers`,
      );
    } finally {
      await client.close();
    }
    const got = await consume([topic], sent.length);
    assert.equal(got.length, sent.length);
    // Each key's records stay in their order (one key, one partition).
    const byKey = (values: string[]) => {
      const m = new Map<string, string[]>();
      for (const v of values) {
        const [s, i] = v.split(":");
        const k = `k${Number(i) % 7}`;
        m.set(k, [...(m.get(k) ?? []), `${s}:${i}`]);
      }
      return m;
    };
    const inOffsetOrder = [...got].sort((a, b) => a.partition - b.partition || a.offset - b.offset)
      .map((r) => r.value!.toString());
    assert.deepEqual(new Set(inOffsetOrder), new Set(sent), "every record whole, no other");
    assert.deepEqual(byKey(inOffsetOrder), byKey(sent));
  });

  it("frees a request the broker answered with an error, and goes on freeing after it", async () => {
    const topic = uniqueTopic("mb-requests-refused");
    // Batches over 100 KB are refused (MESSAGE_TOO_LARGE): an answer, with an error in it.
    await createTopics([topic], 1, { "max.message.bytes": "100000" });
    const client = new PlatformaticClient(
      resolveKafkaSettings({ brokers: BROKERS, connectionTimeoutMs: 5000 }),
    );
    await client.open();
    const records = (n: number, bytes: number): ProviderRecord[] =>
      Array.from({ length: n }, (_, i) => ({
        topic,
        key: null,
        value: Buffer.alloc(bytes, 97 + (i % 26)),
        headers: null,
        timestamp: Date.now(),
      }));
    try {
      const refused = await client.produce(records(200, 1000)).then(() => null, (e) => e);
      assert.ok(refused instanceof Error, "the broker refuses a batch of 200 KB");
      const afterRefusal = client.requestsFreed;
      assert.ok(afterRefusal >= 1, "the answered request is freed");
      await client.produce(records(80, 1000)); // 80 KB: taken
      assert.equal(client.requestsFreed, afterRefusal + 1, "freeing goes on after an error answer");
    } finally {
      await client.close();
    }
    const got = await consume([topic], 80);
    assert.equal(got.length, 80);
  });
});

type Watch = NonNullable<ReturnType<AnsweredRequests["watch"]>>;

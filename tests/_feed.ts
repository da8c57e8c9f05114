// Feeding a real agent and checking what reached Kafka, shared by the crash loop
// (scripts/crash_loop.ts), the cluster failover test and loop (tests/cluster/,
// scripts/cluster_loop.ts): socket clients in ack mode send adversarial records and note
// each answer; an independent client (kafkajs's consumer; the agent produces with
// @platformatic/kafka by default) then reads the topic and checks every acknowledged record
// byte for byte (key, value, headers), order per key, and the duplicates.

import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import net from "node:net";
import { Kafka, logLevel } from "kafkajs";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What a record must look like in Kafka: a digest of key, value and headers. */
function digest(key: Buffer | null, value: Buffer, headers: Array<[string, Buffer]>): string {
  const h = createHash("sha256");
  h.update(key === null ? "-" : `k${key.length}:`);
  if (key) h.update(key);
  h.update(`v${value.length}:`);
  h.update(value);
  for (const [k, v] of headers) {
    h.update(`h${Buffer.byteLength(k)}:${k}${v.length}:`);
    h.update(v);
  }
  return h.digest("base64").slice(0, 16);
}

const TEXT_CHARS = ["a", "Z", " ", "\t", "\n", "\r", "\\", "é", "日本", "🦀", "\u0001", "|", "{"];
const escapeText = (s: string) =>
  s.replace(/\\/g, "\\\\").replace(/\t/g, "\\t").replace(/\n/g, "\\n").replace(/\r/g, "\\r");

/** Options of {@link Feed}. */
export interface FeedOptions {
  topic: string;
  /** Random numbers in [0, 1): a seeded generator makes a run repeatable. */
  rand: () => number;
  /** Records per second each client offers while unlimited (paced). */
  rate: number;
  /** Keys per client: record ids run in order per key. @default 1 */
  keysPerClient?: number;
}

/** What {@link Feed.check} found. */
export interface FeedCheck {
  /** Records in the topic, by its offsets. */
  total: number;
  consumed: number;
  /** Acknowledged records not in Kafka, and their ids. */
  missing: number;
  missingIds: string[];
  /** Of those, acknowledged in a life after `lastPruneLife`. */
  missingAfterPrune: number;
  /** Records whose bytes differ from what was sent, or that no client sent. */
  corrupt: number;
  /** First arrivals out of order within a key. */
  reordered: number;
  /** Copies beyond the first. */
  duplicates: number;
  /** Runs of re-sent records in a partition, and the longest. */
  dupRuns: number;
  longestDupRun: number;
  /** Answered with an error yet in Kafka. */
  ghosts: number;
  /** Delivered ids, and how many of those were never answered (the agent died first). */
  delivered: number;
  unknownDelivered: number;
}

/** See the module doc. */
export class Feed {
  readonly #o: FeedOptions;
  /** id ("c.seq") → digest, the life it was acknowledged in, and when (ms since the epoch). */
  readonly acked = new Map<string, { d: string; life: number; at: number }>();
  /** Sent but never answered (the agent died first): may or may not be in Kafka. */
  readonly unknown = new Map<string, string>();
  /** Answered with an error: must not be in Kafka. */
  readonly errored = new Set<string>();
  readonly #seqs: number[] = [];

  constructor(o: FeedOptions) {
    this.#o = o;
  }

  #between(lo: number, hi: number): number {
    return lo + Math.floor(this.#o.rand() * (hi - lo + 1));
  }

  /** One line for record `id` with `key`, and what it must be in Kafka. */
  #record(c: number, key: string, id: string): { line: string; digest: string } {
    const topic = this.#o.topic;
    const r = this.#o.rand();
    if (r < 0.4) {
      // Text form: tabs, newlines, CRs and backslashes escaped; any other character as is.
      let s = "";
      for (let n = this.#between(0, 120); n > 0; n--) {
        s += TEXT_CHARS[this.#between(0, TEXT_CHARS.length - 1)];
      }
      const value = `${id}|${s}`;
      const line = `${topic}\t${escapeText(key)}\t${escapeText(value)}\n`;
      return { line, digest: digest(Buffer.from(key), Buffer.from(value), []) };
    }
    if (r < 0.85 || r >= 0.9995) {
      // JSON with every byte value possible in the value and a binary header; rarely 1 MiB.
      const size = r >= 0.9995 ? 1 << 20 : this.#between(0, 400);
      const body = Buffer.alloc(size);
      for (let i = 0; i < size; i++) body[i] = (i * 131 + size + c) & 0xff;
      for (let i = 0; i < Math.min(size, 64); i++) body[i] = this.#between(0, 255);
      const value = Buffer.concat([Buffer.from(`${id}|`), body]);
      const hv = Buffer.from([0, 255, 10, 9, 92, this.#between(0, 255)]);
      const line = JSON.stringify({
        topic,
        key,
        value_base64: value.toString("base64"),
        headers_base64: [["bin", hv.toString("base64")], [
          "bin",
          Buffer.from("twice").toString("base64"),
        ]],
      }) + "\n";
      return {
        line,
        digest: digest(Buffer.from(key), value, [["bin", hv], ["bin", Buffer.from("twice")]]),
      };
    }
    // An empty value: the id travels in a header.
    const headers: Array<[string, Buffer]> = [["mb-id", Buffer.from(id)], [
      "tab\tname",
      Buffer.from("a\nb"),
    ]];
    const line = JSON.stringify({
      topic,
      key,
      value: "",
      headers: { "mb-id": id, "tab\tname": "a\nb" },
    }) + "\n";
    return { line, digest: digest(Buffer.from(key), Buffer.alloc(0), headers) };
  }

  /**
   * One client's life: connect, `#ack`, pipeline lines (at most 64 unanswered), note each
   * answer, until `limit` lines were sent (paced at the rate when Infinity), `stop.now`, or
   * the agent closes the connection.
   */
  async client(
    c: number,
    socketPath: string,
    life: number,
    limit: number,
    stop: { now: boolean },
  ): Promise<void> {
    let sock: net.Socket | null = null;
    for (let i = 0; i < 200 && !stop.now; i++) {
      sock = await new Promise<net.Socket | null>((resolve) => {
        const s = net.connect(socketPath);
        s.once("connect", () => resolve(s));
        s.once("error", () => resolve(null));
      });
      if (sock) break;
      await sleep(25);
    }
    if (!sock) return;
    const keys = this.#o.keysPerClient ?? 1;
    this.#seqs[c] ??= 0;
    const pending: Array<{ id: string; d: string } | null> = [null]; // null: the #ack line
    let text = "";
    let sent = 0;
    let closed = false;
    let wake: () => void = () => {};
    sock.setEncoding("utf8");
    sock.on("data", (t: string) => {
      text += t;
      let nl;
      while ((nl = text.indexOf("\n")) >= 0) {
        const answer = text.slice(0, nl);
        text = text.slice(nl + 1);
        const p = pending.shift();
        if (p === undefined) throw new Error(`client ${c}: an answer with no line: ${answer}`);
        if (p === null) continue;
        this.unknown.delete(p.id);
        if (answer === "ok") this.acked.set(p.id, { d: p.d, life, at: Date.now() });
        else this.errored.add(p.id);
      }
      wake();
    });
    sock.on("error", () => {});
    sock.on("close", () => {
      closed = true;
      wake();
    });
    sock.write("#ack\n");
    const t0 = Date.now();
    while (!closed && !stop.now && sent < limit) {
      const due = limit === Infinity
        ? Math.floor(((Date.now() - t0) * this.#o.rate) / 1000)
        : Infinity;
      while (pending.length < 64 && sent < limit && sent < due && !stop.now) {
        const seq = this.#seqs[c]++;
        const id = `${c}.${seq}`;
        const r = this.#record(c, `k${c}.${seq % keys}`, id);
        pending.push({ id, d: r.digest });
        this.unknown.set(id, r.digest);
        sent++;
        if (!sock.write(r.line)) break;
      }
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 50);
      });
    }
    // Wait for the answers to what was sent (unless cut), then leave.
    const deadline = Date.now() + 30_000;
    while (!closed && pending.length > 0 && Date.now() < deadline) {
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 50);
      });
    }
    sock.end();
  }

  /**
   * Reads the whole topic from `brokers` with kafkajs's consumer and checks it against what
   * was acknowledged. `lastPruneLife`: acknowledged records of later lives must all be there.
   */
  async check(brokers: string[], lastPruneLife = -1): Promise<FeedCheck> {
    const topic = this.#o.topic;
    const keys = this.#o.keysPerClient ?? 1;
    const kafka = new Kafka({ brokers, clientId: "mb-feed-check", logLevel: logLevel.NOTHING });
    const offsets = await topicOffsets(kafka, topic);
    const total = offsets.reduce((n, o) => n + Number(o.high) - Number(o.low), 0);
    const seen = new Map<string, number>();
    let corrupt = 0, reordered = 0, ghosts = 0, consumed = 0;
    const lastSeq = new Map<string, number>();
    const dupRun = new Map<number, { n: number; len: number }>();
    let dupRuns = 0, longestDupRun = 0;
    const consumer = kafka.consumer({
      groupId: `mb-feed-check-${Date.now()}-${Math.random().toString(36).slice(2)}`,
      maxBytes: 64 << 20,
    });
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({
      eachBatch: ({ batch }) => {
        for (const m of batch.messages) {
          consumed++;
          const headers: Array<[string, Buffer]> = [];
          for (const [k, v] of Object.entries(m.headers ?? {})) {
            for (const x of Array.isArray(v) ? v : [v]) {
              headers.push([k, Buffer.from(x as Buffer)]);
            }
          }
          const value = m.value ?? Buffer.alloc(0);
          const idHeader = headers.find(([k]) => k === "mb-id");
          const bar = value.indexOf(0x7c);
          const id = idHeader
            ? idHeader[1].toString()
            : bar > 0
            ? value.subarray(0, bar).toString()
            : "";
          const expected = this.acked.get(id)?.d ?? this.unknown.get(id);
          if (this.errored.has(id)) ghosts++;
          if (!expected || digest(m.key, value, headers) !== expected) {
            corrupt++;
            continue;
          }
          const n = (seen.get(id) ?? 0) + 1;
          seen.set(id, n);
          // Re-sent records come as runs in a partition, one run per re-send (a batch sent
          // again twice gives a run of second copies, then one of third copies): a run longer
          // than a batch would mean more than the batch in flight was sent again.
          const prev = dupRun.get(batch.partition);
          const run = n === 1 ? 0 : prev && prev.n === n ? prev.len + 1 : 1;
          dupRun.set(batch.partition, { n, len: run });
          if (run === 1) dupRuns++;
          longestDupRun = Math.max(longestDupRun, run);
          if (n > 1) continue; // a duplicate: counted below
          const [c, seq] = id.split(".").map(Number);
          const key = `k${c}.${seq % keys}`;
          if ((lastSeq.get(key) ?? -1) > seq) reordered++;
          else lastSeq.set(key, seq);
        }
        return Promise.resolve();
      },
    });
    const deadline = Date.now() + 300_000;
    while (consumed < total && Date.now() < deadline) await sleep(100);
    await consumer.disconnect();

    let missing = 0, missingAfterPrune = 0, duplicates = 0, unknownDelivered = 0;
    const missingIds: string[] = [];
    for (const [id, a] of this.acked) {
      if (!seen.has(id)) {
        missing++;
        missingIds.push(id);
        if (a.life > lastPruneLife) missingAfterPrune++;
      }
    }
    for (const [id, n] of seen) {
      duplicates += n - 1;
      if (this.unknown.has(id)) unknownDelivered++;
    }
    return {
      total,
      consumed,
      missing,
      missingIds,
      missingAfterPrune,
      corrupt,
      reordered,
      duplicates,
      dupRuns,
      longestDupRun,
      ghosts,
      delivered: seen.size,
      unknownDelivered,
    };
  }
}

/**
 * The topic's offsets, asked of a fresh admin client (fresh metadata) until the cluster
 * answers: just after leaders moved, a broker may still answer that it is not the leader
 * (a retriable error), for up to a minute.
 */
async function topicOffsets(kafka: Kafka, topic: string) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const admin = kafka.admin();
    try {
      await admin.connect();
      return await admin.fetchTopicOffsets(topic);
    } catch (e) {
      if (!(e as { retriable?: boolean }).retriable || Date.now() > deadline) throw e;
    } finally {
      await admin.disconnect().catch(() => {});
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * `messagebuffer top`: a running agent's state, from its socket's `#stats` answer, as a
 * view that refreshes every second (after `vector top`) or, for scripts, once. Rates are
 * the difference of two snapshots over the time between them.
 *
 * @module
 */

import net from "node:net";
import type { AgentSnapshot } from "../ingest/server.ts";
import { DUPLICATE_COUNTERS } from "../engine/ledger.ts";

/** A connection to an agent's socket that asks for `#stats`, one answer at a time. */
export class StatsClient {
  readonly #socket: net.Socket;
  #text = "";
  #waiting: Array<{ resolve: (s: AgentSnapshot) => void; reject: (e: Error) => void }> = [];
  #error: Error | null = null;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.setEncoding("utf8");
    socket.on("data", (t: string) => {
      this.#text += t;
      for (let i; (i = this.#text.indexOf("\n")) >= 0;) {
        const line = this.#text.slice(0, i);
        this.#text = this.#text.slice(i + 1);
        const w = this.#waiting.shift();
        if (!w) continue;
        if (!line.startsWith("stats ")) {
          w.reject(new Error(`unexpected answer from the agent: ${line.slice(0, 200)}`));
          continue;
        }
        try {
          w.resolve(JSON.parse(line.slice(6)) as AgentSnapshot);
        } catch (e) {
          w.reject(new Error(`unreadable stats from the agent: ${(e as Error).message}`));
        }
      }
    });
    const fail = (e: Error) => {
      this.#error = e;
      for (const w of this.#waiting.splice(0)) w.reject(e);
    };
    socket.on("error", (e) => fail(e));
    socket.on("close", () => fail(new Error("the agent closed the connection")));
  }

  /** Connects to the agent's socket at `path`. */
  static connect(path: string): Promise<StatsClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(path);
      s.once("connect", () => resolve(new StatsClient(s)));
      s.once("error", (e: Error & { code?: string }) =>
        reject(
          new Error(
            `cannot reach an agent at ${path}: ${e.code ?? e.message}` +
              (e.code === "ENOENT" || e.code === "ECONNREFUSED"
                ? " (is `messagebuffer run` running with this socket?)"
                : ""),
          ),
        ));
    });
  }

  /** Asks for one snapshot. */
  get(): Promise<AgentSnapshot> {
    if (this.#error) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve, reject });
      this.#socket.write("#stats\n");
    });
  }

  close(): void {
    this.#socket.destroy();
  }
}

/** Per-second rates between two snapshots (null without an earlier one). */
export interface Rates {
  linesIn: number | null;
  stored: number | null;
  sentDirect: number | null;
  delivered: number | null;
}

/** Rates from `prev` to `cur`. */
export function ratesOf(prev: AgentSnapshot | null, cur: AgentSnapshot): Rates {
  if (!prev || cur.time <= prev.time) {
    return { linesIn: null, stored: null, sentDirect: null, delivered: null };
  }
  const s = (cur.time - prev.time) / 1000;
  const a = prev.buffer.counters, b = cur.buffer.counters;
  return {
    linesIn: (cur.ingest.linesReceived - prev.ingest.linesReceived) / s,
    stored: (b.written - a.written) / s,
    sentDirect: (b.sentDirect - a.sentDirect) / s,
    delivered: (b.delivered - a.delivered) / s,
  };
}

const rate = (n: number | null) => n === null ? "-" : `${count(Math.round(n))}/s`;

function count(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

function bytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}

function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${(ms / 1000).toFixed(1)} s`;
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(s % 60).padStart(2, "0")}s`;
}

/** Records that may have reached Kafka twice: the total, and by reason when any. */
function maybeDuplicated(c: AgentSnapshot["buffer"]["counters"]): string {
  const by = Object.entries(DUPLICATE_COUNTERS).map(([reason, counter]) =>
    [reason, c[counter]] as const
  );
  const total = by.reduce((n, [, v]) => n + v, 0);
  if (total === 0) return "0 records";
  return `${total} records (${
    by.filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(", ")
  })`;
}

/** The view: one screen of text. */
export function formatTop(prev: AgentSnapshot | null, cur: AgentSnapshot): string {
  const b = cur.buffer;
  const c = b.counters;
  const r = ratesOf(prev, cur);
  const lat = b.deliveryLatencyMs;
  const ms = (v: number | null) => v === null ? "-" : `${Math.round(v)} ms`;
  const row = (label: string, text: string) => `${label.padEnd(12)}${text}`;
  const lines = [
    `messagebuffer top: pid ${cur.pid}, up ${duration(cur.uptimeMs)}, socket ${cur.socket}, ${
      new Date(cur.time).toISOString().replace("T", " ").slice(0, 19)
    } UTC`,
    row(
      "mode",
      `${b.mode}, writes go ${b.path === "direct" ? "straight to Kafka" : "through the disk"}`,
    ),
    row(
      "provider",
      `${b.provider.name} ${b.provider.state}` +
        (b.provider.lastError && b.provider.state !== "ready"
          ? `: ${b.provider.lastError.replace(/\s+/g, " ").slice(0, 160)}`
          : ""),
    ),
    row(
      "storage",
      b.storage.state +
        (b.storage.lastError ? `: ${b.storage.lastError.replace(/\s+/g, " ").slice(0, 160)}` : ""),
    ),
    row(
      "in",
      `${rate(r.linesIn)} lines, ${rate(r.stored)} stored, ${rate(r.sentDirect)} direct`,
    ),
    row("out", `${rate(r.delivered)} delivered to Kafka`),
    row(
      "backlog",
      `${count(b.backlog.records)} records, ${
        bytes(b.backlog.bytes)
      }, ${b.backlog.segments} segments, oldest ${
        b.oldestRecordAgeMs === null ? "-" : duration(b.oldestRecordAgeMs)
      }; ${bytes(b.usedBytes)} of the cap used, ${b.blockedWrites} writes waiting for room`,
    ),
    row("latency", `write to Kafka ack p50 ${ms(lat.p50)}, p99 ${ms(lat.p99)}, max ${ms(lat.max)}`),
    row(
      "connections",
      `${cur.ingest.connections} open, ${count(cur.ingest.connectionsTotal)} since start`,
    ),
    row(
      "totals",
      `${count(c.written)} stored, ${count(c.delivered)} delivered (${
        count(c.sentDirect)
      } direct), ${count(cur.ingest.linesReceived)} lines read`,
    ),
    row(
      "drops",
      `${c.dropped} dropped (${
        bytes(c.droppedBytes)
      }), ${c.expired} expired, ${c.deadLettered} dead-lettered, ${c.quarantinedRecords} quarantined (${
        bytes(c.quarantinedBytes)
      }), ${bytes(c.tornBytes)} torn`,
    ),
    row(
      "",
      `${c.writeErrors} write errors, ${c.failedWrites} failed writes, ${cur.ingest.linesRejected} lines refused, ${cur.ingest.partialLinesDropped} partial lines, ${
        cur.ingest.connectionsRefused ?? 0
      } connections refused, ${cur.ingest.idleTimeouts ?? 0} idle closed`,
    ),
    row(
      "retries",
      `${c.sendRetries} failed sends, ${c.resentRecords} records resent, ${c.storageErrors} storage errors, ${c.footerErrors} footer errors`,
    ),
    row("maybe twice", maybeDuplicated(c)),
  ];
  if (b.lanes.length > 1) {
    const secs = prev && cur.time > prev.time ? (cur.time - prev.time) / 1000 : null;
    for (const l of b.lanes) {
      const before = prev?.buffer.lanes.find((p) => p.lane === l.lane);
      const out = secs !== null && before ? (l.delivered - before.delivered) / secs : null;
      const topics = l.topics.length === 0
        ? "no topics"
        : `${l.topics.length} topic${l.topics.length > 1 ? "s" : ""} (${
          l.topics.slice(0, 3).join(", ")
        }${l.topics.length > 3 ? ", ..." : ""})`;
      lines.push(row(
        `lane ${l.lane}`,
        `${l.provider.state}, ${rate(out)} out, ${count(l.backlog.records)} waiting, oldest ${
          l.oldestRecordAgeMs === null ? "-" : duration(l.oldestRecordAgeMs)
        }; ${topics}` +
          (l.provider.lastError && l.provider.state !== "ready"
            ? `; ${l.provider.lastError.replace(/\s+/g, " ").slice(0, 80)}`
            : ""),
      ));
    }
  }
  if (b.mode === "direct-until-error") {
    lines.push(row(
      "switches",
      `${c.switchesToBuffer} to disk, ${c.switchesToDirect} to direct, ${c.spilledRecords} records spilled`,
    ));
  }
  return lines.join("\n") + "\n";
}

/**
 * Prometheus text exposition of the buffer's and the ingest server's state, and the HTTP
 * listener that serves it (`/metrics`) with a health check (`/health`).
 *
 * @module
 */

import http from "node:http";
import type { BufferStats } from "../engine/buffer.ts";
import type { IngestStats, InputStats } from "../ingest/server.ts";
import { DUPLICATE_COUNTERS } from "../engine/ledger.ts";
import { splitHostPort } from "../ingest/address.ts";
import type { MemoryStats } from "./memory.ts";

type Sample = [
  name: string,
  type: "counter" | "gauge" | "summary",
  help: string,
  value: number | null,
];

/** Every metric, from a stats snapshot. Names are listed in the README. */
export function metricSamples(
  s: BufferStats,
  ingest: IngestStats | null,
  inputs: InputStats = {},
  memory: MemoryStats | null = null,
): Sample[] {
  const c = s.counters;
  const out: Sample[] = [
    [
      "messagebuffer_records_written_total",
      "counter",
      "Records stored in segment files.",
      c.written,
    ],
    [
      "messagebuffer_records_delivered_total",
      "counter",
      "Records acknowledged by Kafka.",
      c.delivered,
    ],
    [
      "messagebuffer_records_dead_lettered_total",
      "counter",
      "Records Kafka refused for good, kept in dead/.",
      c.deadLettered,
    ],
    [
      "messagebuffer_records_dropped_total",
      "counter",
      "Records deleted unsent by pruning at the size cap.",
      c.dropped,
    ],
    [
      "messagebuffer_bytes_dropped_total",
      "counter",
      "Bytes deleted unsent by pruning at the size cap.",
      c.droppedBytes,
    ],
    [
      "messagebuffer_records_expired_total",
      "counter",
      "Records not sent because older than max_record_age.",
      c.expired,
    ],
    [
      "messagebuffer_records_quarantined_total",
      "counter",
      "Records in corrupt data moved to quarantine/.",
      c.quarantinedRecords,
    ],
    [
      "messagebuffer_bytes_quarantined_total",
      "counter",
      "Bytes moved to quarantine/.",
      c.quarantinedBytes,
    ],
    [
      "messagebuffer_torn_bytes_total",
      "counter",
      "Bytes of torn tails cut off at start-up.",
      c.tornBytes,
    ],
    [
      "messagebuffer_footer_errors_total",
      "counter",
      "Segment footers that failed their checks at start-up or disagreed with the records read.",
      c.footerErrors,
    ],
    [
      "messagebuffer_checkpoint_errors_total",
      "counter",
      "S files found unusable at start-up (their segments are delivered from their start).",
      c.checkpointErrors,
    ],
    [
      "messagebuffer_segments_skipped_total",
      "counter",
      "Segments left in place undelivered at start-up: a newer format version, or unreadable.",
      c.skippedSegments,
    ],
    [
      "messagebuffer_unknown_files_total",
      "counter",
      "Files in the buffer directory this version does not know, found at start-up and left alone.",
      c.unknownFiles,
    ],
    [
      "messagebuffer_write_errors_total",
      "counter",
      "Records whose write failed on a storage error.",
      c.writeErrors,
    ],
    [
      "messagebuffer_send_retries_total",
      "counter",
      "Failed sends (each is retried).",
      c.sendRetries,
    ],
    [
      "messagebuffer_records_resent_total",
      "counter",
      "Records sent again after a failed send (the default client sends them under the same identity: the broker keeps one copy).",
      c.resentRecords,
    ],
    [
      "messagebuffer_provider_retries_in_send_total",
      "counter",
      "Requests the Kafka client retried inside one send (a leader moved, a connection dropped, too few replicas).",
      s.provider.counters?.retriesInSend ?? 0,
    ],
    [
      "messagebuffer_provider_leader_moves_total",
      "counter",
      "Partitions whose leader changed between one produce request to them and the next.",
      s.provider.counters?.leaderMoves ?? 0,
    ],
    [
      "messagebuffer_provider_metadata_refreshes_total",
      "counter",
      "Cluster metadata look-ups forced by a failed produce request.",
      s.provider.counters?.metadataRefreshes ?? 0,
    ],
    [
      "messagebuffer_provider_unacknowledged_partitions_total",
      "counter",
      "Partitions a send covered that came back without an offset (sent again, never counted delivered).",
      s.provider.counters?.unacknowledgedPartitions ?? 0,
    ],
    [
      "messagebuffer_storage_errors_total",
      "counter",
      "Filesystem operations that failed outside a write: fsync, S file, deletion, quarantine, dead letters, segment reads, repairs at start-up.",
      c.storageErrors,
    ],
    [
      "messagebuffer_records_sent_direct_total",
      "counter",
      "Records Kafka acknowledged without going through the disk (direct modes; in delivered too).",
      c.sentDirect,
    ],
    [
      "messagebuffer_failed_writes_total",
      "counter",
      "Writes failed because Kafka did not take their record (block-on-error, error-on-error).",
      c.failedWrites,
    ],
    [
      "messagebuffer_records_spilled_total",
      "counter",
      "Records direct-until-error moved from the direct path to the disk.",
      c.spilledRecords,
    ],
    [
      "messagebuffer_switches_to_buffer_total",
      "counter",
      "direct-until-error: switches from sending directly to buffering on disk.",
      c.switchesToBuffer,
    ],
    [
      "messagebuffer_switches_to_direct_total",
      "counter",
      "direct-until-error: switches back to sending directly, the disk backlog delivered.",
      c.switchesToDirect,
    ],
    [
      "messagebuffer_direct",
      "gauge",
      "1 while writes go straight to Kafka (direct modes), 0 while they go to the disk.",
      s.path === "direct" ? 1 : 0,
    ],
    [
      "messagebuffer_storage_up",
      "gauge",
      "0 after an fsync failed, until a fresh segment and a write fsync cleanly again.",
      s.storage.state === "ok" ? 1 : 0,
    ],
    [
      "messagebuffer_backlog_records",
      "gauge",
      "Records stored and not yet acknowledged.",
      s.backlog.records,
    ],
    [
      "messagebuffer_backlog_bytes",
      "gauge",
      "Bytes stored and not yet acknowledged.",
      s.backlog.bytes,
    ],
    ["messagebuffer_backlog_segments", "gauge", "Segment files on disk.", s.backlog.segments],
    ["messagebuffer_used_bytes", "gauge", "Bytes counted against total_size.", s.usedBytes],
    [
      "messagebuffer_oldest_record_age_seconds",
      "gauge",
      "Age of the oldest unacknowledged record (0 when none).",
      (s.oldestRecordAgeMs ?? 0) / 1000,
    ],
    [
      "messagebuffer_blocked_writes",
      "gauge",
      "Writes waiting for room (when_full=block).",
      s.blockedWrites,
    ],
    [
      "messagebuffer_provider_up",
      "gauge",
      "1 when the provider is connected and sends succeed.",
      s.provider.state === "ready" ? 1 : 0,
    ],
  ];
  if (ingest) {
    out.push(
      [
        "messagebuffer_ingest_lines_total",
        "counter",
        "Ingest lines read (control lines included).",
        ingest.linesReceived,
      ],
      [
        "messagebuffer_ingest_lines_rejected_total",
        "counter",
        "Ingest lines refused (bad line, full, storage).",
        ingest.linesRejected,
      ],
      [
        "messagebuffer_ingest_pauses_total",
        "counter",
        "Times an ingest connection stopped being read until its lines were stored or its answers read.",
        ingest.pauses,
      ],
      [
        "messagebuffer_ingest_partial_lines_dropped_total",
        "counter",
        "Lines cut off by a client disconnecting mid-line.",
        ingest.partialLinesDropped,
      ],
      ["messagebuffer_ingest_connections", "gauge", "Open ingest connections.", ingest.connections],
      [
        "messagebuffer_ingest_connections_total",
        "counter",
        "Ingest connections accepted.",
        ingest.connectionsTotal,
      ],
      [
        "messagebuffer_ingest_connections_refused_total",
        "counter",
        "Ingest connections refused: max_connections were open.",
        ingest.connectionsRefused,
      ],
      [
        "messagebuffer_ingest_idle_timeouts_total",
        "counter",
        "Ingest connections closed after idle_timeout without input.",
        ingest.idleTimeouts,
      ],
    );
  }
  const h = inputs.http;
  if (h) {
    out.push(
      ["messagebuffer_http_requests_total", "counter", "HTTP input requests answered.", h.requests],
      [
        "messagebuffer_http_requests_failed_total",
        "counter",
        "HTTP input requests answered with a 4xx or 5xx status (nothing stored for a 4xx).",
        h.requestsFailed,
      ],
      ["messagebuffer_http_requests_active", "gauge", "HTTP input requests in progress.", h.active],
      [
        "messagebuffer_http_body_bytes",
        "gauge",
        "Bytes of HTTP request bodies being parsed and stored (more wait past about 4 MiB).",
        h.bodyBytes,
      ],
      [
        "messagebuffer_http_records_total",
        "counter",
        "Records the HTTP input stored.",
        h.records,
      ],
    );
  }
  const y = inputs.syslog;
  if (y) {
    out.push(
      ["messagebuffer_syslog_messages_total", "counter", "Syslog messages read.", y.received],
      ["messagebuffer_syslog_stored_total", "counter", "Syslog messages stored.", y.stored],
      [
        "messagebuffer_syslog_without_priority_total",
        "counter",
        "Syslog messages without a valid <PRI>, stored whole as user.notice.",
        y.withoutPriority,
      ],
      [
        "messagebuffer_syslog_dropped_too_long_total",
        "counter",
        "Syslog messages dropped: longer than max_line_bytes.",
        y.droppedTooLong,
      ],
      [
        "messagebuffer_syslog_dropped_refused_total",
        "counter",
        "Syslog messages dropped: the buffer refused them (full under reject, storage error).",
        y.droppedRefused,
      ],
      [
        "messagebuffer_syslog_pauses_total",
        "counter",
        "Times a syslog input stopped reading until the messages it had read were stored or the buffer had room.",
        y.pauses,
      ],
      [
        "messagebuffer_syslog_partial_dropped_total",
        "counter",
        "Unfinished syslog TCP frames dropped when the sender closed or went idle.",
        y.partialDropped,
      ],
      ["messagebuffer_syslog_connections", "gauge", "Open syslog TCP connections.", y.connections],
      [
        "messagebuffer_syslog_connections_refused_total",
        "counter",
        "Syslog TCP connections refused: max_connections were open.",
        y.connectionsRefused,
      ],
    );
  }
  if (memory) {
    out.push(
      ["process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", memory.rssBytes],
      [
        "messagebuffer_memory_limit_bytes",
        "gauge",
        "The soft memory limit in effect (memory_limit); 0 when off or the runtime cannot collect.",
        memory.limitBytes,
      ],
      [
        "messagebuffer_memory_collections_total",
        "counter",
        "Garbage collections made because resident memory was above memory_limit.",
        memory.collections,
      ],
      [
        "messagebuffer_memory_collection_seconds_total",
        "counter",
        "Seconds those collections took.",
        memory.collectSeconds,
      ],
    );
  }
  return out;
}

/** The Prometheus text format (version 0.0.4). */
export function renderMetrics(
  s: BufferStats,
  ingest: IngestStats | null,
  inputs: InputStats = {},
  memory: MemoryStats | null = null,
): string {
  let text = "";
  for (const [name, type, help, value] of metricSamples(s, ingest, inputs, memory)) {
    text += `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name} ${value ?? "NaN"}\n`;
  }
  const dup = "messagebuffer_records_maybe_duplicated_total";
  text +=
    `# HELP ${dup} Records that may have reached Kafka twice, by reason (docs/delivery.md).\n`;
  text += `# TYPE ${dup} counter\n`;
  for (const [reason, counter] of Object.entries(DUPLICATE_COUNTERS)) {
    text += `${dup}{reason="${reason}"} ${s.counters[counter]}\n`;
  }
  const l = s.deliveryLatencyMs;
  const name = "messagebuffer_delivery_latency_seconds";
  text +=
    `# HELP ${name} Record timestamp to Kafka acknowledgement (quantiles over the last 8192 records).\n`;
  text += `# TYPE ${name} summary\n`;
  text += `${name}{quantile="0.5"} ${l.p50 === null ? "NaN" : l.p50 / 1000}\n`;
  text += `${name}{quantile="0.99"} ${l.p99 === null ? "NaN" : l.p99 / 1000}\n`;
  text += `${name}_sum ${l.sum / 1000}\n${name}_count ${l.count}\n`;
  return text;
}

/** Serves `/metrics` and `/health` on `host:port`; resolves once listening. */
export async function serveMetrics(
  address: string,
  snapshot: () => {
    stats: BufferStats;
    ingest: IngestStats | null;
    inputs?: InputStats;
    memory?: MemoryStats;
    open: boolean;
  },
): Promise<http.Server> {
  const split = splitHostPort(address);
  if (split === null) throw new Error(`metrics address "${address}" is not host:port`);
  const host = split.host || "127.0.0.1";
  const port = split.port;
  const server = http.createServer((req, res) => {
    const { stats, ingest, inputs, memory, open } = snapshot();
    if (req.url === "/metrics") {
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
      res.end(renderMetrics(stats, ingest, inputs, memory));
    } else if (req.url === "/health") {
      const healthy = open && stats.provider.state === "ready" && stats.storage.state === "ok";
      res.writeHead(healthy ? 200 : 503, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          status: healthy ? "ok" : "degraded",
          buffer: open ? "open" : "closed",
          provider: stats.provider.state,
          lastError: stats.provider.lastError,
          storage: stats.storage.state,
          storageError: stats.storage.lastError,
          backlogRecords: stats.backlog.records,
        }) + "\n",
      );
    } else {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found: try /metrics or /health\n");
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once(
      "error",
      (e) => {
        const code = (e as { code?: string }).code;
        reject(
          Object.assign(new Error(`Cannot serve metrics on ${address}: ${code ?? e}`), { code }),
        );
      },
    );
    server.listen(port, host, () => resolve());
  });
  return server;
}

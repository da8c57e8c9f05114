#!/usr/bin/env -S deno run -A
/**
 * The messagebuffer agent: `run` (buffer + Unix-socket ingest + Kafka sender), `send`,
 * `status`, `dump`. This file parses arguments and wires adapters; the work is in `src/`.
 *
 * @module
 */

import { createReadStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname } from "node:path";
import process from "node:process";
import pkg from "./package.json" with { type: "json" };
import {
  type AgentConfig,
  buildConfig,
  ConfigError,
  engineOptions,
  explainStartError,
  httpOptions,
  printableConfig,
  providerOptions,
  SETTINGS,
  settingsHelp,
  socketPath,
  type StartPhase,
  syslogOptions,
} from "./src/agent/config.ts";
import { checkBufferDir } from "./src/agent/buffer_dir.ts";
import { nativeCrc32c } from "./src/binary/crc32c.ts";
import { closest, FlagError, type FlagSpec, parseFlags } from "./src/agent/flags.ts";
import { dirStatus, formatStatus, lockHolder } from "./src/agent/inspect.ts";
import { readSegmentRecords } from "./src/segment/reader.ts";
import { serveMetrics } from "./src/agent/metrics.ts";
import { MemoryLimit, memoryStats, runtimeCollector } from "./src/agent/memory.ts";
import { codePageTrimmer } from "./src/agent/code_pages.ts";
import { formatTop, ratesOf, StatsClient } from "./src/agent/top.ts";
import { formatSources, replay, replaySources } from "./src/agent/replay.ts";
import {
  deadLetterFiles,
  formatDeadLetters,
  purgeDeadLetters,
  type PurgeOutcome,
} from "./src/agent/dead_letters.ts";
import { MessageBuffer } from "./src/engine/buffer.ts";
import { defaultFileSystem } from "./src/fs/default.ts";
import { pidIsAlive } from "./src/process.ts";
import { sendLines } from "./src/ingest/client.ts";
import { recordToJson } from "./src/ingest/protocol.ts";
import { IngestServer } from "./src/ingest/server.ts";
import { HttpIngest } from "./src/ingest/http.ts";
import { SyslogServer } from "./src/ingest/syslog_server.ts";
import { createLogger, type Logger } from "./src/log.ts";
import { KafkaProvider } from "./src/provider/kafka/kafka.ts";
import type { Provider } from "./src/provider/types.ts";
import { delegating } from "./src/provider/delegate.ts";
import { withFailpoint } from "./src/agent/failpoint.ts";
import { resolveKafkaSettings } from "./src/provider/kafka/options.ts";
import { AGENT } from "./src/settings.ts";
import { DEAD_DIR, defaultSocketPath, REPLAY_JOURNAL } from "./src/layout.ts";

const VERSION = pkg.version;

/** Set by scripts/compile.ts in the executable: JSON of the commit, runtime and build date. */
declare const MB_BUILD_INFO: string | undefined;

/**
 * What `--version` prints: the version, and how this program was built (or run); then how it
 * checksums (a temporary directory mounted `noexec` keeps the executable's native code from
 * loading: checksums then cost about three times as much).
 */
function versionLine(): string {
  return `${buildLine()}\nchecksums: CRC32C in ${
    nativeCrc32c ? "native code (@node-rs/crc32)" : "TypeScript (the native code did not load)"
  }`;
}

function buildLine(): string {
  const g = globalThis as { Deno?: { version: { deno: string } }; Bun?: { version: string } };
  const running = g.Deno ? `Deno ${g.Deno.version.deno}` : g.Bun ? `Bun ${g.Bun.version}` : "Node";
  if (typeof MB_BUILD_INFO === "string") {
    const b = JSON.parse(MB_BUILD_INFO) as { commit?: string; runtime?: string; date?: string };
    return `messagebuffer ${VERSION} (commit ${b.commit ?? "unknown"}, built with ${
      b.runtime ?? running
    } on ${b.date ?? "an unknown date"}, single executable)`;
  }
  return `messagebuffer ${VERSION} (from source, running on ${running})`;
}

const USAGE = `messagebuffer ${VERSION}: a local store-and-forward agent for Kafka

Usage:
  messagebuffer run --brokers HOST:PORT [options]   buffer lines (Unix socket, HTTP, syslog), deliver to Kafka
  messagebuffer send [--socket PATH] [FILE]         send lines (stdin or FILE) to a running agent
  messagebuffer status [--buffer-dir DIR] [--json]  what is buffered, delivered, dead-lettered
  messagebuffer dump SEGMENT                        print a segment's records as JSON lines
  messagebuffer tail --brokers B --topic T          print a Kafka topic's records as JSON lines
  messagebuffer top [--socket PATH] [--once|--json] a running agent's rates, backlog, drops, live
  messagebuffer replay [--dry-run] [--quarantine]   send dead letters again through the agent
  messagebuffer dead-letters [list|purge]           what is in dead/; remove what was replayed
  messagebuffer help [COMMAND]                      details of a command
  messagebuffer --version

Lines are TOPIC<TAB>KEY<TAB>VALUE (with \\\\ \\n \\t \\r escapes) or JSON objects
{"topic":..., "key":..., "value":...}. See the README for the protocol.
`;

const HELP: Record<string, string> = {
  run: `messagebuffer run: open the buffer, listen on the Unix socket, deliver to Kafka.

Inputs: the Unix socket's line protocol, always; with --http, the Kafka REST Proxy v2
produce call (POST /topics/{topic}) and NDJSON (POST /records), each request answered 200
once its records are stored; with --syslog-socket (a Unix datagram socket, like /dev/log)
and --syslog-tcp, syslog messages (RFC 5424, RFC 3164), parsed into records (no answers).

Every record is written to a segment file before it is acknowledged; a separate sender
delivers segments in order and moves the checkpoint (the S file) only after Kafka
acknowledges. SIGTERM or SIGINT: stop reading, answer pending lines, fsync, let the batch
in flight finish, write checkpoints, exit 0. A second signal exits at once (still safe:
what was acknowledged is on disk).

The buffer directory and everything created in it are owner-only (directories 0700, files
0600). A buffer directory that another user owns, or that its group or others may write
to, is refused (exit 1) unless --allow-unsafe-buffer-dir is given.

Options (flags override the config file; the password comes from the environment or a file).
A <time> takes a unit: 500ms, 5s, 2min, 1h, 1d; a <size> too: 64KiB, 16MiB, 1GiB (KiB, MiB,
GiB are powers of 1024; KB, MB, GB of 1000). A plain number is in the unit the option names.
  --config <file>
      JSON file with the keys below, e.g. {"brokers": ["127.0.0.1:9092"], "file_max_time": "5s"}
  --print-config
      Print the effective configuration (secrets masked) and exit
${settingsHelp()}

Examples:
  messagebuffer run --brokers 127.0.0.1:9092 --buffer-dir /var/lib/messagebuffer
  messagebuffer run --config /etc/messagebuffer/config.json --fsync always --metrics 127.0.0.1:9464
  messagebuffer run --brokers 127.0.0.1:9092 --http 127.0.0.1:8082 --syslog-tcp 127.0.0.1:5514
`,
  send: `messagebuffer send: send lines to a running agent, each acknowledged.

Usage: messagebuffer send [--socket PATH | --buffer-dir DIR] [FILE]

Reads lines from FILE (or stdin), already in the ingest format, and sends them pipelined in
acknowledged mode. Every line the agent refuses is printed to stderr with its line number
and reason. Exits 0 when every line was accepted (stored; in a direct mode, acknowledged by
Kafka), 1 if any was refused, 2 on usage errors or when no agent answers.

  --socket <path>       The agent's socket [default: <buffer-dir>/messagebuffer.sock]
  --buffer-dir <dir>    Where to find the socket [default: ./messagebuffer-data]
  --quiet               Do not print the summary line

Example:
  printf 'events\\tuser-1\\thello\\n' | messagebuffer send --socket /run/messagebuffer/messagebuffer.sock
`,
  status: `messagebuffer status: what a buffer directory holds (works while the agent runs or not).

Usage: messagebuffer status [--buffer-dir DIR | --config FILE] [--json]

Shows whether an agent holds the directory, each segment with its records and checkpoint,
the backlog (records, bytes, age of the oldest record), dead letters and quarantined files.
`,
  top: `messagebuffer top: a running agent's state, refreshed every second.

Usage: messagebuffer top [--socket PATH | --buffer-dir DIR] [--once | --json] [--interval S]

Asks the agent over its socket (the control line #stats) and shows: the mode and where
writes go, the provider's and the storage's state, lines in, records stored and delivered
per second, the backlog in records and bytes with the age of its oldest record, delivery
latency, connections, and every drop and error counter. Rates need two answers, so the
first screen shows "-" for them. q or Ctrl-C quits.

  --socket <path>       The agent's socket [default: <buffer-dir>/messagebuffer.sock]
  --buffer-dir <dir>    Where to find the socket [default: ./messagebuffer-data]
  --once                Print one view (rates over --interval) and exit, for scripts
  --json                Print one snapshot as JSON, with the rates over --interval, and exit
  --interval <s>        Seconds between answers [default: 1]

Exits 1 when no agent answers on the socket.
`,
  replay: `messagebuffer replay: send dead-lettered records again, once their cause is fixed.

Usage: messagebuffer replay [--buffer-dir DIR | --config FILE] [--socket PATH] [--dry-run]
                            [--quarantine] [--restamp]

Reads the records in <buffer-dir>/dead/ (and with --quarantine, the records in quarantine/
whose frames still pass their checksum) and sends them through the running agent's socket,
acknowledged, with their original key, headers and timestamp. They are then stored and
delivered in order like any other write, and dead-lettered again if Kafka still refuses
them. The journal dead/replay.log records which records of which file the agent accepted;
a later replay skips them, so nothing is replayed twice by accident. Values and keys go as
text when they are valid UTF-8, else in base64: a record whose line is longer than the
agent's --max-line-bytes is refused (raise it on the agent to replay such records). With
lanes, every lane's dead/ (and quarantine/) is read.

  --dry-run             List what would be sent (files, records, topics, Kafka's reasons), send nothing
  --quarantine          Also replay the readable records of quarantined data (which may hold
                        records delivered before the damage was found: they arrive again)
  --restamp             Give the records the current time instead of their original timestamp
                        (when max_record_age or the topic's retention would drop them)
  --socket <path>       The agent's socket [default: <buffer-dir>/messagebuffer.sock]
  --buffer-dir <dir>    The buffer directory [default: ./messagebuffer-data]
  --config <file>       Take buffer_dir and socket from the agent's config file
  --allow-unsafe-buffer-dir
                        Replay from a buffer directory another user owns or its group or
                        others may write to (refused otherwise, as by run)

Exits 0 when every record was accepted (or there was nothing to do), 1 if the agent refused
some (each is printed; they stay in dead/ and are offered again next time), 2 on usage
errors, an unsafe buffer directory, or when no agent answers.
`,
  "dead-letters":
    `messagebuffer dead-letters: the records Kafka refused for good, and their cleanup.

Usage: messagebuffer dead-letters [list] [--buffer-dir DIR | --config FILE]
       messagebuffer dead-letters purge [--dry-run] [--all] [--buffer-dir DIR | --config FILE]

Kafka refuses some records for good (too large, an invalid topic, not authorized); the agent
keeps them in <buffer-dir>/dead/ and goes on. Once the cause is fixed, "messagebuffer replay"
sends them again and notes in dead/replay.log what the agent accepted.

  list (the default)    Each dead-letter file: its records, how many were replayed, the topics,
                        and Kafka's reasons; then what waits to be replayed
  purge                 Remove the files whose every record was replayed, and their journal
                        lines. A file the running agent may still add to (the newest of its
                        lane) is kept.
  --all                 purge: also remove files with records never replayed (they are lost)
  --dry-run             purge: say what would be removed, remove nothing
  --buffer-dir <dir>    The buffer directory [default: ./messagebuffer-data]
  --config <file>       Take buffer_dir from the agent's config file
  --allow-unsafe-buffer-dir
                        purge in a buffer directory another user owns or its group or others may
                        write to (refused otherwise, as by run)

list and purge --dry-run only read, as any user who may read the directory.
`,
  tail: `messagebuffer tail: read a Kafka topic back, one JSON line per record.

Usage: messagebuffer tail --topic TOPIC [--from-beginning] [--count N]
                          [--brokers HOST:PORT | --config FILE] [TLS and SASL options of run]

Prints each record of the topic as it arrives, in the ingest protocol's JSON form after its
partition and offset, until --count records were printed or Ctrl-C:
  {"partition":0,"offset":7,"topic":"t","key":"k","value":"v","timestamp":1700000000000}
To check that what an app sent reached Kafka, without Kafka's console tools.

  --topic <name>        The topic to read (required)
  --from-beginning      Read the topic from its start, not only what arrives from now on
  --count <n>           Exit after n records
  --brokers, --config, --tls..., --sasl...
                        Where Kafka is and how to connect, as for run
`,
  dump: `messagebuffer dump: print the records of a segment file as JSON lines.

Usage: messagebuffer dump SEGMENT_FILE

Works on buffer segments and on dead-letter segments (dead/*.seg). Each line is the record in
the ingest protocol's JSON form, after its offset in the file:
  {"offset":16,"topic":"t","key":"k","value":"text","headers":{"h":"v"},"timestamp":1700000000000}
A key or value that is not valid UTF-8 is printed as "key_base64" / "value_base64"; headers
with a binary value or a repeated name as "headers_base64": [[name, base64], ...].
Exits 1 if the file ends in a torn or corrupt frame (the records before it are printed).
`,
};

/** Wrong use of a command; `main` prints it after the command's name and exits 2. */
class UsageError extends Error {}

function parse<S extends FlagSpec>(
  command: string,
  args: string[],
  flags: S,
  allowPositionals = false,
) {
  try {
    return parseFlags(args, flags, allowPositionals);
  } catch (e) {
    if (!(e instanceof FlagError)) throw e;
    throw new UsageError(`${e.message} (see: messagebuffer help ${command})`);
  }
}

async function loadConfig(flags: Record<string, unknown>): Promise<AgentConfig> {
  let file: Record<string, unknown> | null = null;
  if (typeof flags.config === "string") {
    let text: string;
    try {
      text = await readFile(flags.config, "utf8");
    } catch (e) {
      throw new ConfigError(
        `--config: cannot read "${flags.config}": ${(e as { code?: string }).code ?? e}`,
      );
    }
    try {
      file = JSON.parse(text);
    } catch (e) {
      throw new ConfigError(`--config "${flags.config}": invalid JSON: ${(e as Error).message}`);
    }
  }
  return buildConfig(flags, file, process.env);
}

const settingFlags: FlagSpec = Object.fromEntries(
  SETTINGS.map((s) => [s.flag, s.spec.type === "boolean" ? "boolean" : "value"]),
);

/**
 * Refuses (throws) a buffer directory another user owns or may write to, unless
 * allow_unsafe_buffer_dir is set, when it warns instead. Resolves with whether it exists.
 */
async function guardBufferDir(config: AgentConfig, logger: Logger | null): Promise<boolean> {
  const { exists, problem } = await checkBufferDir(config.values.buffer_dir);
  if (problem !== null) {
    if (!config.values.allow_unsafe_buffer_dir) throw new Error(problem);
    logger?.warn("using an unsafe buffer directory (--allow-unsafe-buffer-dir)", { problem });
  }
  return exists;
}

async function run(args: string[]): Promise<number> {
  const { values: flags } = parse("run", args, {
    ...settingFlags,
    config: "value",
    "print-config": "boolean",
  });
  const config = await loadConfig(flags);
  if (flags["print-config"]) {
    process.stdout.write(JSON.stringify(printableConfig(config), null, 2) + "\n");
    if (!config.values.brokers?.length) {
      process.stderr.write('note: run needs brokers (--brokers or "brokers" in the file)\n');
    }
    return 0;
  }
  const logger: Logger = createLogger({
    level: config.values.log_level,
    format: config.values.log_format,
  });
  // SIGTERM and SIGINT are caught from here on, before "agent ready" is logged: one that comes
  // while the agent starts waits for the start, then stops it cleanly (without a handler, the
  // runtime would end the process at once, leaving its LOCK and socket files behind).
  const signals = catchSignals();
  let existed: boolean;
  try {
    existed = await guardBufferDir(config, logger);
  } catch (e) {
    // The directory cannot even be looked at (ENOTDIR, EACCES...): say which and why.
    if (typeof (e as { code?: unknown }).code !== "string") throw e;
    logger.error("cannot start", { error: explainStartError(e, "buffer_dir", config) });
    return 1;
  }
  const readText = (p: string) => readFile(p, "utf8");
  const provider = new KafkaProvider({ ...(await providerOptions(config, readText)), logger });
  // (Read before anything starts, as the provider's files: a bad one is a usage error.)
  const http = await httpOptions(config, readText);
  // The client library loads once the agent is ready: it is most of the start-up (about 0.2 s
  // of the executable's CPU), and lines sent meanwhile wait in the socket, then are stored and
  // answered. So the sender's first connection waits for that too (and, when the start fails,
  // is refused: the buffer then closes without ever connecting). A library that cannot load
  // stops the agent, as a start error would.
  let started!: (ok: boolean) => void;
  const ready = new Promise<void>((resolve, reject) => {
    started = (ok) => ok ? resolve() : reject(new Error("the agent did not start"));
  });
  ready.catch(() => {}); // (only the sender's open awaits it)
  const late = delegating(provider, {
    prepare: undefined,
    open: () => ready.then(() => provider.open()),
  });
  const memory = memoryLimit(
    config.values.memory_limit,
    config.sources.memory_limit !== "default",
    logger,
  );
  const agent = await startAgent(
    config,
    logger,
    withFailpoint(late, process.env.MB_FAILPOINT),
    existed,
    http,
    memory,
    started,
  );
  if (agent === null) return 1;
  const reminder = remindOfBacklog(agent.buffer, logger);
  memory?.start();
  // (Once the signal handlers are in place: loading the library blocks for a moment, and a
  // SIGTERM then must find them.)
  const code = await untilStopped(agent, logger, signals, () => {
    started(true);
    return provider.prepare().then(() => {
      memory?.settled();
      return null;
    }, (e: unknown) => e);
  });
  clearInterval(reminder);
  memory?.stop();
  const spent = memory?.stats; // (read once: it reads the resident set)
  if (spent && spent.collections > 0) logger.info("memory limit", { ...spent });
  return code;
}

/**
 * The soft memory limit, when one is set (see src/agent/memory.ts); null when it is off, or
 * where the runtime cannot collect (said at WARN when a limit was asked for, at DEBUG for the
 * default).
 */
function memoryLimit(limitBytes: number, asked: boolean, logger: Logger): MemoryLimit | null {
  if (limitBytes === 0) return null;
  const collect = runtimeCollector();
  if (collect === null) {
    const message = "memory_limit has no effect: only Bun gives memory back when collecting";
    const fields = { fix: "run the executable (npm run compile) or cli.ts with Bun" };
    if (asked) logger.warn(message, fields);
    else logger.debug(message, fields);
    return null;
  }
  const trim = codePageTrimmer();
  if (trim === null) {
    logger.debug("memory_limit collects, but cannot give back the executable's unused pages", {
      why: "that takes Linux, Bun, libc.so.6 and bun:ffi",
    });
  }
  return new MemoryLimit({ limitBytes, collect, trim: trim ?? undefined });
}

/** The agent's running parts. */
interface RunningAgent {
  buffer: MessageBuffer;
  ingest: IngestServer;
  http: HttpIngest | null;
  syslog: SyslogServer | null;
  metrics: { close(): void } | null;
  /** Tells /health the buffer is closed. */
  closed(): void;
}

/**
 * Opens the buffer, listens on the socket, serves metrics; logs `agent ready`. A start that
 * fails logs one ERROR naming the setting and the fix, and leaves nothing behind (no socket
 * file, no LOCK, no half-open buffer): then null, and `started(false)` is called before the
 * buffer closes (the caller says `started(true)` once it is ready for the sender to connect).
 */
async function startAgent(
  config: AgentConfig,
  logger: Logger,
  provider: Provider,
  existed: boolean,
  httpConfig: Awaited<ReturnType<typeof httpOptions>>,
  memory: MemoryLimit | null = null,
  started: (ok: boolean) => void = () => {},
): Promise<RunningAgent | null> {
  const startedAt = Date.now();
  const fs = defaultFileSystem();
  let buffer: MessageBuffer | null = null;
  let ingest: IngestServer | null = null;
  let http: HttpIngest | null = null;
  let syslog: SyslogServer | null = null;
  let open = true;
  let phase: StartPhase = "buffer_dir";
  try {
    logger.info("opening buffer", { dir: config.values.buffer_dir });
    buffer = await MessageBuffer.open({ ...engineOptions(config), provider, logger, fs });
    // Made by another user between the check and the open (which takes an existing one)?
    if (!existed) await guardBufferDir(config, logger);
    phase = "socket";
    // The modes without disk do not create the buffer directory, where the socket may be.
    await fs.mkdirp(dirname(socketPath(config)));
    ingest = await IngestServer.listen({
      path: socketPath(config),
      mode: Number.parseInt(config.values.socket_mode, 8),
      maxLineBytes: config.values.max_line_bytes,
      maxConnections: config.values.max_connections,
      idleTimeoutMs: config.values.idle_timeout * 1000,
      buffer,
      logger,
    });
    phase = "http";
    if (httpConfig) http = await HttpIngest.listen({ ...httpConfig, buffer, logger });
    phase = "syslog_socket";
    const syslogConfig = syslogOptions(config);
    if (syslogConfig) {
      syslog = await SyslogServer.start({ ...syslogConfig, buffer, logger }, (input) => {
        phase = input;
      });
    }
    const b = buffer, i = ingest;
    i.inputs = { http: http?.stats, syslog: syslog?.stats };
    phase = "metrics";
    const metrics = config.values.metrics
      ? await serveMetrics(
        config.values.metrics,
        () => ({
          stats: b.stats(),
          ingest: i.stats,
          inputs: i.inputs,
          memory: memoryStats(memory),
          open,
        }),
      )
      : null;
    logger.info("agent ready", {
      socket: ingest.path,
      brokers: config.values.brokers?.join(","),
      mode: config.values.mode,
      fsync: config.values.fsync,
      metrics: config.values.metrics,
      ...(http ? { http: http.address } : {}),
      ...(syslog
        ? { syslogSocket: config.values.syslog_socket, syslogTcp: syslog.tcpAddress }
        : {}),
      backlogRecords: buffer.stats().backlog.records,
      startupMs: Date.now() - startedAt,
    });
    return { buffer, ingest, http, syslog, metrics, closed: () => (open = false) };
  } catch (e) {
    started(false);
    logger.error("cannot start", { error: explainStartError(e, phase, config) });
    // As at a stop: the inputs stop reading, the buffer closes (which settles the writes
    // that wait for room), then the inputs answer what they read and close.
    ingest?.stop();
    http?.stop();
    syslog?.stop();
    await buffer?.close().catch(() => {});
    await http?.close().catch(() => {});
    await syslog?.close().catch(() => {});
    await ingest?.close().catch(() => {});
    return null;
  }
}

/**
 * While records wait for Kafka, a reminder every 5 minutes of how many and for how long (the
 * sender says when sends start failing and when the reason changes); while a backlog of over
 * 100,000 records drains, its progress every minute.
 */
function remindOfBacklog(buffer: MessageBuffer, logger: Logger): ReturnType<typeof setInterval> {
  let waitingSince: number | null = null;
  let lastNote = 0;
  const timer = setInterval(() => {
    const s = buffer.stats();
    const now = Date.now();
    if (s.backlog.records > 0 && s.provider.state !== "ready") {
      if (waitingSince === null) waitingSince = lastNote = now;
      else if (now - lastNote >= 300_000) {
        lastNote = now;
        logger.info("records still wait for Kafka", {
          records: s.backlog.records,
          waitingForS: Math.round((now - waitingSince) / 1000),
          lastError: s.provider.lastError,
        });
      }
      return;
    }
    waitingSince = null;
    if (s.backlog.records > 100_000 && now - lastNote >= 60_000) {
      lastNote = now;
      logger.info("draining backlog", {
        records: s.backlog.records,
        delivered: s.counters.delivered,
      });
    }
  }, 10_000);
  (timer as { unref?: () => void }).unref?.();
  return timer;
}

/** SIGTERM and SIGINT, caught: those that came before a handler, then each as it comes. */
interface Signals {
  handle(h: (signal: string) => void): void;
}

/** Catches SIGTERM and SIGINT now; they are handed to the handler once there is one. */
function catchSignals(): Signals {
  const early: string[] = [];
  let handler: ((signal: string) => void) | null = null;
  const on = (signal: string) => handler ? handler(signal) : early.push(signal);
  process.on("SIGTERM", () => on("SIGTERM"));
  process.on("SIGINT", () => on("SIGINT"));
  return {
    handle(h) {
      handler = h;
      for (const signal of early.splice(0)) h(signal);
    },
  };
}

/**
 * Runs until SIGTERM or SIGINT, then stops cleanly: stop taking lines; close the buffer
 * (stores what was read, fails writes that wait for room, lets the batch in flight finish);
 * answer every line and hang up. A second signal exits at once. Resolves with the exit code
 * (1 when `load()`, called once the signal handlers are in place, resolves with an error: the
 * client library did not load; the same stop).
 */
function untilStopped(
  agent: RunningAgent,
  logger: Logger,
  signals: Signals,
  load: () => Promise<unknown>,
): Promise<number> {
  return new Promise<number>((resolve) => {
    let stopping = false;
    let failed = false;
    const stop = async (signal: string) => {
      if (stopping) {
        logger.warn(
          "second signal: exiting now; acknowledged records are on disk and will be sent after restart",
          { signal },
        );
        process.exit(1);
      }
      stopping = true;
      logger.info("shutting down", { signal });
      try {
        agent.ingest.stop();
        agent.http?.stop();
        agent.syslog?.stop();
        await agent.buffer.close();
        await agent.ingest.close();
        await agent.http?.close();
        await agent.syslog?.close();
        agent.closed();
        agent.metrics?.close();
        const s = agent.buffer.stats();
        logger.info("stopped", {
          written: s.counters.written,
          delivered: s.counters.delivered,
          backlogRecords: s.backlog.records,
        });
        resolve(failed ? 1 : 0);
      } catch (e) {
        logger.error("shutdown failed", { error: e });
        resolve(1);
      }
    };
    signals.handle((signal) => void stop(signal));
    void load().then((e) => {
      if (e === null || stopping) return;
      failed = true;
      logger.error("cannot start", { error: String((e as Error)?.message ?? e) });
      void stop("client library");
    });
  });
}

async function send(args: string[]): Promise<number> {
  const { values, positionals } = parse("send", args, {
    socket: "value",
    "buffer-dir": "value",
    quiet: "boolean",
  }, true);
  if (positionals.length > 1) {
    throw new UsageError("give at most one FILE (see: messagebuffer help send)");
  }
  const dir = values["buffer-dir"] ?? AGENT.buffer_dir.default;
  const path = values.socket ?? defaultSocketPath(dir);
  const input = positionals[0] ? createReadStream(positionals[0]) : process.stdin;
  let summary;
  try {
    summary = await sendLines(path, input, (e) => process.stderr.write(`refused: ${e}\n`));
  } catch (e) {
    process.stderr.write(`messagebuffer send: ${(e as Error).message}\n`);
    return 2;
  }
  if (!values.quiet) {
    process.stderr.write(
      `sent ${summary.lines} line(s): ${summary.ok} accepted, ${summary.errors.length} refused\n`,
    );
  }
  return summary.errors.length > 0 ? 1 : 0;
}

async function top(args: string[]): Promise<number> {
  const { values } = parse("top", args, {
    socket: "value",
    "buffer-dir": "value",
    once: "boolean",
    json: "boolean",
    interval: "value",
  });
  const interval = values.interval === undefined ? 1 : Number(values.interval);
  if (!Number.isFinite(interval) || interval < 0.1 || interval > 3600) {
    throw new UsageError(
      `--interval: expected seconds from 0.1 to 3600, got ${JSON.stringify(values.interval)}`,
    );
  }
  const dir = values["buffer-dir"] ?? AGENT.buffer_dir.default;
  const path = values.socket ?? defaultSocketPath(dir);
  let client: StatsClient;
  try {
    client = await StatsClient.connect(path);
  } catch (e) {
    process.stderr.write(`messagebuffer top: ${(e as Error).message}\n`);
    return 1;
  }
  const sleep = () => new Promise((r) => setTimeout(r, interval * 1000));
  try {
    if (values.once || values.json) {
      const first = await client.get();
      await sleep();
      const cur = await client.get();
      process.stdout.write(
        values.json
          ? JSON.stringify({ ...cur, rates: ratesOf(first, cur) }, null, 2) + "\n"
          : formatTop(first, cur),
      );
      return 0;
    }
    // The live view: redraw in place; q or Ctrl-C quits.
    let quit = false;
    const stdin = process.stdin as typeof process.stdin & { setRawMode?: (on: boolean) => void };
    if (stdin.isTTY && stdin.setRawMode) {
      stdin.setRawMode(true);
      stdin.on("data", (d: Uint8Array) => {
        if (d[0] === 0x71 /* q */ || d[0] === 3 /* Ctrl-C */) quit = true;
      });
    }
    process.on("SIGINT", () => (quit = true));
    let prev = null;
    while (!quit) {
      const cur = await client.get();
      process.stdout.write("\x1b[H\x1b[2J" + formatTop(prev, cur) + "\n(q to quit)\n");
      prev = cur;
      for (let waited = 0; waited < interval * 1000 && !quit; waited += 100) {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    if (stdin.isTTY && stdin.setRawMode) stdin.setRawMode(false);
    return 0;
  } catch (e) {
    process.stderr.write(`messagebuffer top: ${(e as Error).message}\n`);
    return 1;
  } finally {
    client.close();
    process.stdin.pause();
  }
}

async function replayCommand(args: string[]): Promise<number> {
  const { values } = parse("replay", args, {
    "buffer-dir": "value",
    config: "value",
    socket: "value",
    "dry-run": "boolean",
    quarantine: "boolean",
    restamp: "boolean",
    "allow-unsafe-buffer-dir": "boolean",
  });
  const config = await loadConfig({
    config: values.config,
    "buffer-dir": values["buffer-dir"],
    "allow-unsafe-buffer-dir": values["allow-unsafe-buffer-dir"],
  });
  const dir = config.values.buffer_dir;
  const socket = values.socket ?? socketPath(config);
  const fs = defaultFileSystem();
  const { exists, problem } = await checkBufferDir(dir, "replay");
  if (!exists) {
    process.stderr.write(`messagebuffer replay: no buffer directory "${dir}" (--buffer-dir)\n`);
    return 2;
  }
  // A dry run only reads: no ownership needed, no lock taken, nothing written.
  if (values["dry-run"]) return await replayLocked(fs, dir, socket, values);
  // Replay writes its journal and lock in dead/: not in a directory another user controls.
  if (problem !== null) {
    process.stderr.write(
      `messagebuffer replay: ${
        config.values.allow_unsafe_buffer_dir ? "warning: " : ""
      }${problem}\n`,
    );
    if (!config.values.allow_unsafe_buffer_dir) return 2;
  }
  // One replay at a time: the journal is read before sending and written after.
  await fs.mkdirp(`${dir}/${DEAD_DIR}`);
  let lock;
  try {
    lock = await fs.lock(`${dir}/${DEAD_DIR}`);
  } catch (e) {
    process.stderr.write(
      `messagebuffer replay: another replay is running: ${(e as Error).message}\n`,
    );
    return 2;
  }
  try {
    return await replayLocked(fs, dir, socket, values);
  } finally {
    await lock.release();
  }
}

async function replayLocked(
  fs: ReturnType<typeof defaultFileSystem>,
  dir: string,
  socket: string,
  values: { "dry-run"?: boolean; quarantine?: boolean; restamp?: boolean },
): Promise<number> {
  const sources = await replaySources(fs, dir, { quarantine: values.quarantine ?? false });
  process.stdout.write(formatSources(sources) + "\n");
  if (values["dry-run"]) {
    process.stdout.write("dry run: nothing sent\n");
    return 0;
  }
  let accepted = 0, refused = 0;
  try {
    await replay(fs, dir, socket, sources, { restamp: values.restamp ?? false }, (o) => {
      accepted += o.accepted;
      refused += o.refused.length;
      process.stdout.write(
        `${o.file}: ${o.accepted} of ${o.sent} accepted by the agent` +
          (o.refused.length > 0 ? `, ${o.refused.length} refused` : "") + "\n",
      );
      for (const r of o.refused) {
        process.stderr.write(`refused: ${o.file} record ${r.index}: ${r.reason}\n`);
      }
    });
  } catch (e) {
    process.stderr.write(`messagebuffer replay: ${(e as Error).message}\n`);
    return 2;
  }
  process.stdout.write(
    `replayed ${accepted} records (${refused} refused); journal: ${dir}/${REPLAY_JOURNAL}\n`,
  );
  return refused > 0 ? 1 : 0;
}

async function deadLettersCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse("dead-letters", args, {
    "buffer-dir": "value",
    config: "value",
    "dry-run": "boolean",
    all: "boolean",
    "allow-unsafe-buffer-dir": "boolean",
  }, true);
  const action = positionals[0] ?? "list";
  if ((action !== "list" && action !== "purge") || positionals.length > 1) {
    throw new UsageError(
      `expected "list" or "purge", got "${
        positionals.join(" ")
      }" (see: messagebuffer help dead-letters)`,
    );
  }
  const config = await loadConfig({
    config: values.config,
    "buffer-dir": values["buffer-dir"],
    "allow-unsafe-buffer-dir": values["allow-unsafe-buffer-dir"],
  });
  const dir = config.values.buffer_dir;
  const fs = defaultFileSystem();
  const { exists, problem } = await checkBufferDir(dir, "dead-letters purge");
  if (!exists) {
    process.stderr.write(
      `messagebuffer dead-letters: no buffer directory "${dir}" (--buffer-dir)\n`,
    );
    return 2;
  }
  const running = (await lockHolder(fs, dir, pidIsAlive))?.running ?? false;
  if (action === "list" || values["dry-run"]) {
    const files = await deadLetterFiles(fs, dir, running);
    if (action === "list") {
      process.stdout.write(formatDeadLetters(files) + "\n");
      return 0;
    }
    const plan = await purgeDeadLetters(fs, dir, files, { all: values.all ?? false, dryRun: true });
    process.stdout.write(formatPurge(plan, true) + "\n");
    return 0;
  }
  if (problem !== null && !config.values.allow_unsafe_buffer_dir) {
    process.stderr.write(`messagebuffer dead-letters: ${problem}\n`);
    return 2;
  }
  // The replay lock: no replay reads a file or the journal while they are removed.
  await fs.mkdirp(`${dir}/${DEAD_DIR}`);
  let lock;
  try {
    lock = await fs.lock(`${dir}/${DEAD_DIR}`);
  } catch (e) {
    process.stderr.write(
      `messagebuffer dead-letters: a replay is running: ${(e as Error).message}\n`,
    );
    return 2;
  }
  try {
    const files = await deadLetterFiles(fs, dir, running);
    const done = await purgeDeadLetters(fs, dir, files, {
      all: values.all ?? false,
      dryRun: false,
    });
    process.stdout.write(formatPurge(done, false) + "\n");
    return 0;
  } finally {
    await lock.release();
  }
}

/** What a purge did, or would do. */
function formatPurge(p: PurgeOutcome, dryRun: boolean): string {
  const lines = p.removed.map((f) =>
    `${
      dryRun ? "would remove" : "removed"
    } ${f.file} (${f.records} records, ${f.replayed} replayed)`
  );
  for (const k of p.kept) lines.push(`kept ${k.file.file}: ${k.why}`);
  const n = p.removed.reduce((s, f) => s + f.records, 0);
  lines.push(
    `${
      dryRun ? "dry run: would remove" : "removed"
    } ${p.removed.length} file(s), ${n} records; kept ${p.kept.length}`,
  );
  return lines.join("\n");
}

async function tail(args: string[]): Promise<number> {
  const { values } = parse("tail", args, {
    ...settingFlags,
    config: "value",
    topic: "value",
    "from-beginning": "boolean",
    count: "value",
  });
  if (!values.topic) throw new UsageError("--topic is required (see: messagebuffer help tail)");
  const count = values.count === undefined ? Infinity : Number(values.count);
  if (!(count === Infinity || (Number.isInteger(count) && count > 0))) {
    throw new UsageError(`--count: expected a whole number above 0, got "${values.count}"`);
  }
  const config = await loadConfig(values);
  const options = await providerOptions(config, (p) => readFile(p, "utf8"));
  const { readTopic } = await import("./src/provider/kafka/platformatic.ts");
  let stop: () => void = () => {};
  const stopped = new Promise<void>((r) => (stop = r));
  process.once("SIGINT", () => stop());
  process.once("SIGTERM", () => stop());
  await readTopic(
    resolveKafkaSettings(options),
    values.topic,
    { fromBeginning: values["from-beginning"] ?? false, count, stop: stopped },
    (r) => {
      const { partition, offset, ...rest } = r;
      const json = recordToJson({
        topic: rest.topic,
        key: rest.key,
        value: rest.value,
        headers: rest.headers,
        timestamp: rest.timestamp,
      });
      process.stdout.write(JSON.stringify({ partition, offset: Number(offset), ...json }) + "\n");
    },
  );
  return 0;
}

async function status(args: string[]): Promise<number> {
  const { values } = parse("status", args, {
    "buffer-dir": "value",
    config: "value",
    json: "boolean",
  });
  const config = await loadConfig({ config: values.config, "buffer-dir": values["buffer-dir"] });
  const s = await dirStatus(defaultFileSystem(), config.values.buffer_dir, pidIsAlive);
  process.stdout.write((values.json ? JSON.stringify(s, null, 2) : formatStatus(s)) + "\n");
  return 0;
}

async function dump(args: string[]): Promise<number> {
  const { positionals } = parse("dump", args, {}, true);
  if (positionals.length !== 1) {
    throw new UsageError("give one segment file (see: messagebuffer help dump)");
  }
  const out: string[] = [];
  const flush = () => {
    if (out.length) process.stdout.write(out.join("\n") + "\n");
    out.length = 0;
  };
  let problem: string | null;
  try {
    problem = await readSegmentRecords(defaultFileSystem(), positionals[0], (r, offset) => {
      out.push(JSON.stringify({ offset, ...recordToJson(r) }));
      if (out.length >= 1000) flush();
    });
  } catch (e) {
    const code = (e as { code?: string }).code;
    process.stderr.write(
      code === "ENOENT"
        ? `messagebuffer dump: "${
          positionals[0]
        }" does not exist: the agent deletes a segment once every record in it is delivered (messagebuffer status lists the segments on disk now)\n`
        : `messagebuffer dump: cannot read "${positionals[0]}": ${code ?? (e as Error).message}\n`,
    );
    return 2;
  }
  flush();
  if (problem) {
    process.stderr.write(`messagebuffer dump: ${positionals[0]}: ${problem}\n`);
    return 1;
  }
  return 0;
}

/** Runs the CLI with `argv` (without the runtime and script); resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "run":
        return await run(rest);
      case "send":
        return await send(rest);
      case "status":
        return await status(rest);
      case "top":
        return await top(rest);
      case "replay":
        return await replayCommand(rest);
      case "dead-letters":
        return await deadLettersCommand(rest);
      case "tail":
        return await tail(rest);
      case "dump":
        return await dump(rest);
      case "help":
        if (rest[0] && HELP[rest[0]]) process.stdout.write(HELP[rest[0]]);
        else if (rest[0]) {
          throw new UsageError(
            `no command "${rest[0]}" (commands: ${Object.keys(HELP).join(", ")})`,
          );
        } else process.stdout.write(USAGE);
        return 0;
      case "--help":
      case "-h":
      case undefined:
        process.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      case "--version":
      case "-V":
        process.stdout.write(versionLine() + "\n");
        return 0;
      default:
        throw new UsageError(
          `unknown command "${command}"${
            closest(command, Object.keys(HELP))
              ? ` (did you mean ${closest(command, Object.keys(HELP))}?)`
              : ""
          } (commands: ${Object.keys(HELP).join(", ")}, help)`,
        );
    }
  } catch (e) {
    // Every error starts with the command: "messagebuffer run: --fsync: must be one of ...".
    const who = command === "help" || Object.hasOwn(HELP, command)
      ? `messagebuffer ${command}`
      : "messagebuffer";
    const usage = e instanceof UsageError || e instanceof ConfigError;
    process.stderr.write(`${who}: ${(e as Error).message}\n`);
    return usage ? 2 : 1;
  }
}

/**
 * Ends with `code` once what was written to stdout and stderr has reached them. On a pipe,
 * writes are asynchronous, and an exit right after them can cut the output short (`send`
 * printing a thousand refused lines and then its summary): under Bun a write's callback can
 * come before the bytes are out. So the process ends on its own, which flushes its output,
 * once nothing else is left to run; a handle left open cannot keep it alive for more than a
 * second after the output's callbacks.
 */
function exitAfterOutput(code: number): void {
  process.exitCode = code;
  let pending = 2;
  const done = () => {
    if (--pending > 0) return;
    const t = setTimeout(() => process.exit(code), 1000);
    (t as { unref?: () => void }).unref?.();
  };
  process.stdout.write("", done);
  process.stderr.write("", done);
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  // "help run" and "run --help" mean the same.
  if (args.length >= 2 && (args.includes("--help") || args.includes("-h")) && HELP[args[0]]) {
    process.stdout.write(HELP[args[0]]);
    exitAfterOutput(0);
  } else {
    main(args).then(exitAfterOutput);
  }
}

/**
 * The Unix-socket ingest server: reads lines (see `protocol.ts`), writes records to the
 * buffer, and in acknowledged mode answers every line, in order, with `ok` once its record
 * is durable, or `error <reason>`. A bad line never closes the connection. When the buffer
 * is full under `whenFull: "block"`, or a client does not read its answers, the server
 * stops reading that socket (back-pressure) instead of buffering in memory, and reads on
 * when room returns (no polling). A client that ends its side (a half-close) still gets every
 * answer; the server then ends its side.
 *
 * Careless and hostile clients: connections past `maxConnections` are answered with one
 * `error` line and closed; a connection with nothing in progress that sends nothing for
 * `idleTimeoutMs` is closed; an unfinished line is kept in a buffer that grows by doubling (a
 * line dribbled a byte at a time costs linear time and about its own size in memory), and
 * never holds more than `maxLineBytes`.
 *
 * @module
 */

import { Buffer, isUtf8 } from "node:buffer";
import { setImmediate } from "node:timers";
import { chmod, lstat, mkdtemp, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import net from "node:net";
import process from "node:process";
import type { BufferStats, MessageBuffer } from "../engine/buffer.ts";
import type { Logger } from "../log.ts";
import { freeBuffer } from "../binary/free.ts";
import { MAX_WAITING_BYTES, MAX_WAITING_LINES } from "./bounds.ts";
import { parseLine } from "./protocol.ts";
import type { HttpStats } from "./http.ts";
import type { SyslogStats } from "./syslog_server.ts";

/** Options of {@link IngestServer.listen}. */
export interface IngestServerOptions {
  /** Socket file path. */
  path: string;
  /** Permission bits of the socket file. @default 0o660 */
  mode?: number;
  /** Longest line accepted, in bytes (without LF). @default 1 MiB */
  maxLineBytes?: number;
  /** Connections served at once; one more is answered with an error and closed. @default 1024 */
  maxConnections?: number;
  /**
   * A connection that sends nothing for this long while none of its lines waits for an
   * answer is closed (an unfinished line is dropped and counted). 0 = never. @default 600000
   */
  idleTimeoutMs?: number;
  buffer: MessageBuffer;
  logger: Logger;
}

/** Ingest counters (also exported as metrics). */
export interface IngestStats {
  connections: number;
  connectionsTotal: number;
  /** Lines read (control lines included, but not `#stats`). */
  linesReceived: number;
  /** Lines refused: unparsable, invalid, or not stored (full, storage error). */
  linesRejected: number;
  /** Lines a client started but did not finish before disconnecting. */
  partialLinesDropped: number;
  /** Connections refused because `maxConnections` were open. */
  connectionsRefused: number;
  /** Connections closed after `idleTimeoutMs` without input. */
  idleTimeouts: number;
  /**
   * Times a connection stopped being read until its lines were stored (the disk behind, the
   * buffer full under `block`) or its answers were read.
   */
  pauses: number;
}

/** The answer to `#stats`, as JSON after `stats `. */
export interface AgentSnapshot {
  /** ms since the epoch when it was taken. */
  time: number;
  pid: number;
  uptimeMs: number;
  socket: string;
  buffer: BufferStats;
  ingest: IngestStats;
  /** The other inputs' counters, those that are on. */
  http?: HttpStats;
  syslog?: SyslogStats;
}

/** The counters of the agent's other inputs, when on. */
export interface InputStats {
  http?: HttpStats;
  syslog?: SyslogStats;
}

interface AckEntry {
  /** The write's promise, or null for a line refused before it reached the buffer. */
  p: Promise<void> | null;
  /** Lines answered by this entry (consecutive lines in one frame share a promise). */
  n: number;
  /** Number of the entry's first line (0 for the `#ack` control line). */
  first: number;
  /** Answer it (the connection was in ack mode when the line came). */
  answer: boolean;
  /** Why the line was refused before reaching the buffer. */
  error: string | null;
  /** Bytes of input read, counted by whole chunks, when its last line came. */
  to: number;
  /** A control line's answer, made when its turn comes (after the lines before it). */
  reply?: () => string;
  /** The write's promise has settled; `failure` is its error message, if it failed. */
  settled?: boolean;
  failure?: string | null;
  /** Set once the entry's lines went into more than one frame (see {@link Mixed}). */
  mixed?: Mixed;
}

/**
 * The promises of an entry whose lines went into the frames of several writers at once
 * (lines of topics in different lanes, interleaved): one entry for the run of lines, not one
 * per line. `ps[0]` is the entry's `p`; each line notes which of them stores it. Its lines
 * are answered in order, each once it and those before it have settled, as separate entries'
 * would be.
 */
interface Mixed {
  ps: Promise<void>[];
  /** Per promise: undefined until it settles, then its error message or null. */
  outcomes: Array<string | null | undefined>;
  /** Per line of the entry, the index in `ps` of the promise that stores it. */
  which: Uint8Array;
  /** Lines of the entry answered so far (its first ones). */
  answered: number;
}

/** Adds `p` to `m`, noting its outcome once it settles; returns its index. */
function track(m: Mixed, p: Promise<void>): number {
  const k = m.ps.push(p) - 1;
  m.outcomes.push(undefined);
  p.then(() => void (m.outcomes[k] = null), (err) => void (m.outcomes[k] = failureText(err)));
  return k;
}

/**
 * Distinct promises one entry takes before a new one is started: enough for interleaved
 * lanes (each lane's writer fills one frame at a time), few enough to search.
 */
const MAX_MIXED = 16;

/**
 * An entry of this many lines or more takes no line of another frame: lines that go round a few
 * lanes make entries of a line or a few each, while one writer's frames make entries of many
 * (those stay as they are, one per frame).
 */
const MIX_BELOW_LINES = 16;

/**
 * Lines a mixed entry takes at most: what it has read counts against the read-ahead bound
 * until its last line is answered.
 */
const MAX_MIXED_LINES = 4096;

/** Topics a connection keeps as text to look its lines' topics up in (see `#topicOf`). */
const RECENT_TOPICS = 8;

/** The error message a failed write answers with (one line). */
function failureText(err: unknown): string {
  return String((err as Error)?.message ?? err).replace(/\n/g, " ");
}

const NL = 10;
const TAB = 9;
const BACKSLASH = 92;

/** Index of the first `byte` in `buf[from, last)`, else `last` + 1. */
function nextIndex(buf: Buffer, byte: number, from: number, last: number): number {
  const i = buf.indexOf(byte, from);
  return i < 0 || i >= last ? last + 1 : i;
}
/**
 * Index of the first tab in `buf[from, end)`, else `end`. Keys are mostly short: a loop over
 * their first bytes costs less than a call into native code, which takes over after that.
 */
function nextTab(buf: Buffer, from: number, end: number): number {
  const stop = Math.min(end, from + 32);
  for (let i = from; i < stop; i++) if (buf[i] === TAB) return i;
  if (stop === end) return end;
  const i = buf.indexOf(TAB, stop);
  return i < 0 || i > end ? end : i;
}

/**
 * Frees the memory of a socket read the agent has finished with, at once, rather than when
 * the collector gets to it: under Bun each read is an `ArrayBuffer` of its own (256-512 KiB),
 * and a flood of lines made them faster than they were collected (a store of 1M lines peaked
 * 40 MB higher without this; docs/benchmarks.md). Only under Bun, and only a chunk that is a
 * whole buffer: elsewhere a read may be a slice of memory the runtime uses again.
 */
const releaseChunk: (chunk: Buffer) => void = "Bun" in globalThis
  ? (chunk) => void freeBuffer(chunk)
  : () => {};

/** Answers not yet read by a client beyond which its socket is paused. */
const MAX_UNREAD_ANSWER_BYTES = 1 << 20;

/**
 * About what one socket read takes in (up to about 214 KiB under Bun, 64 KiB under Deno): how
 * many paused connections room for more input wakes at once.
 */
const READ_BYTES = 256 << 10;

/**
 * What the connections together have read and not yet answered, bounded as a whole (see
 * bounds.ts): with a bound per connection alone, 64 clients flooding at once had 110 frames
 * waiting for the disk, 115 MiB. A connection stops being read once the whole is over the
 * bound, and paused connections read on as it falls: as many at a time as the room left would
 * take reads of (oldest pause first, so that none waits behind the others for long), and all
 * of them once nothing is left unanswered (one woken before may have had nothing to send). So
 * the input held is the bound plus about one read per connection reading on.
 */
export class ReadAhead {
  /** Bytes read past each connection's last answered line, summed. */
  bytes = 0;
  /** Lines read and not yet answered, summed. */
  lines = 0;
  /** Paused connections' wakes, oldest first. */
  readonly #paused = new Set<() => void>();

  /** True while the connections together hold more than the bound. */
  get over(): boolean {
    return this.bytes > MAX_WAITING_BYTES || this.lines > MAX_WAITING_LINES;
  }

  /** A connection's share changed by these amounts. */
  add(bytes: number, lines: number): void {
    this.bytes += bytes;
    this.lines += lines;
    if (this.#paused.size > 0 && (bytes < 0 || lines < 0)) this.#wakeSome();
  }

  /** Queues a paused connection: `wake` is called (once) when room comes, unless forgotten. */
  waitFor(wake: () => void): void {
    this.#paused.add(wake);
  }

  forget(wake: () => void): void {
    this.#paused.delete(wake);
  }

  #wakeSome(): void {
    if (this.over) return;
    let n = this.bytes === 0 && this.lines === 0
      ? Infinity
      : Math.max(1, Math.ceil((MAX_WAITING_BYTES - this.bytes) / READ_BYTES));
    for (const wake of this.#paused) {
      if (n-- <= 0) break;
      this.#paused.delete(wake);
      wake();
    }
  }
}

class Connection {
  readonly #socket: net.Socket;
  readonly #server: IngestServer;
  #ack = false;
  #lineNo = 0;
  /**
   * The unfinished line so far: its first `#partBytes` bytes, in a buffer grown by doubling (a
   * chunk is copied in, not kept: one Buffer per chunk costs hundreds of bytes each when a line
   * is dribbled a byte at a time).
   */
  #part: Buffer | null = null;
  #partBytes = 0;
  #skipping = false;
  /** Lines waiting for their answer, from `#head` on (answered entries are dropped in bulk). */
  #queue: AckEntry[] = [];
  #head = 0;
  #draining = false;
  #paused = false;
  #ended = false;
  #idle: (() => void) | null = null;
  /** Set while paused: wakes the loop that decides whether to read on. */
  #wake: (() => void) | null = null;
  /** Closed by the idle timeout: input still arriving is counted as refused. */
  #idleClosed = false;
  /** While paused on a full buffer: resolves once it has room. */
  #writable: Promise<void> | null = null;

  constructor(socket: net.Socket, server: IngestServer) {
    this.#socket = socket;
    this.#server = server;
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("end", () => this.#onEnd());
    socket.on("error", (e) => server.logger.debug("ingest connection error", { error: e }));
    socket.on("close", () => {
      this.#wake?.();
      server.connectionClosed(this);
    });
    socket.on("drain", () => this.#wake?.());
    if (server.idleTimeoutMs > 0) {
      socket.setTimeout(server.idleTimeoutMs);
      socket.on("timeout", () => this.#onIdle());
    }
  }

  /** No input for idleTimeoutMs: closes the connection unless one of its lines is in progress. */
  #onIdle(): void {
    // Waiting on us (an answer not yet given, or paused by back-pressure) is not idleness.
    // So is a client that has not read the answers already sent: closing now could lose them.
    if (
      this.#ended || this.#paused || this.#draining || this.#queue.length > this.#head ||
      this.#socket.writableLength > 0
    ) {
      this.#socket.setTimeout(this.#server.idleTimeoutMs); // look again a period later
      return;
    }
    this.#server.stats.idleTimeouts++;
    const partial = this.#partBytes > 0 || this.#skipping;
    if (partial) this.#server.stats.partialLinesDropped++;
    this.#server.logger.info("closed an ingest connection idle for too long", {
      idleMs: this.#server.idleTimeoutMs,
      lines: this.#lineNo,
      ...(partial ? { unfinishedLineBytes: this.#partBytes, dropped: "unfinished line" } : {}),
    });
    this.#part = null;
    this.#partBytes = 0;
    this.#skipping = false;
    this.#ended = true;
    this.#idleClosed = true;
    this.#socket.end();
    const t = setTimeout(() => this.#socket.destroy(), 2000);
    this.#socket.once("close", () => clearTimeout(t));
  }

  #onData(chunk: Buffer): void {
    // The time the lines of this read were read: each record's timestamp, unless its line
    // gives one (a clock read per read, not per line: a read holds thousands of lines).
    this.#readAt = Date.now();
    this.#read += chunk.length;
    this.#chunk = chunk;
    this.#viewsKept = false;
    this.#take(chunk);
    this.#chunk = null;
    if (!this.#viewsKept) releaseChunk(chunk);
    this.#account();
    this.#maybePause();
  }

  /** This connection's share of the server's {@link ReadAhead}, as last told to it. */
  #heldBytes = 0;
  #heldLines = 0;

  /** Tells the server's {@link ReadAhead} what this connection now holds. */
  #account(): void {
    // (Once every line is answered, what was read past them is an unfinished line only.)
    const bytes = this.#queue.length > this.#head ? this.#read - this.#answeredTo : 0;
    const lines = this.#unansweredLines;
    if (bytes === this.#heldBytes && lines === this.#heldLines) return;
    const db = bytes - this.#heldBytes, dl = lines - this.#heldLines;
    this.#heldBytes = bytes;
    this.#heldLines = lines;
    this.#server.readAhead.add(db, dl);
  }

  /** Bytes read from the socket; of those, up to the last answered line's chunk (see AckEntry.to). */
  #read = 0;
  #answeredTo = 0;
  /** Lines queued and not yet answered (or, without #ack, not yet settled). */
  #unansweredLines = 0;

  /**
   * Set when a record kept views of the chunk being read, `#chunk` (a write that waits holds
   * them): that chunk's memory is then left to the collector.
   */
  #viewsKept = false;
  #chunk: Buffer | null = null;
  /** When the chunk being handled was read (ms since the epoch). */
  #readAt = 0;

  /** Takes in a chunk: its whole lines, and the start of an unfinished one (copied). */
  #take(chunk: Buffer): void {
    if (this.#ended) return this.#afterClose(chunk);
    const max = this.#server.maxLineBytes;
    const buf = chunk;
    let start = 0;
    if (this.#partBytes > 0) {
      const nl = this.#continueLine(chunk);
      if (nl < 0) return;
      start = nl + 1;
    }
    if (this.#skipping) {
      const nl = buf.indexOf(NL);
      if (nl < 0) return;
      this.#skipping = false;
      this.#line(null, `line too long (over ${max} bytes); skipped`);
      start = nl + 1;
    }
    const last = buf.lastIndexOf(NL);
    if (last >= start) {
      this.#lines(buf, start, last);
      start = last + 1;
    }
    if (start < buf.length) {
      if (buf.length - start > max) {
        this.#skipping = true;
      } else {
        // A copy: the chunk's memory may be a slice of a larger pooled buffer.
        this.#part = Buffer.from(buf.subarray(start));
        this.#partBytes = this.#part.length;
      }
    }
  }

  /**
   * Input sent after the idle close began (the client did not see it yet): never stored, so
   * counted and logged, not dropped silently (an ack-mode client also sees no answer).
   */
  #afterClose(chunk: Buffer): void {
    if (!this.#idleClosed) return;
    let lines = 0;
    for (let i = chunk.indexOf(NL); i >= 0; i = chunk.indexOf(NL, i + 1)) lines++;
    this.#server.stats.linesRejected += lines;
    this.#server.logger.warn("ingest lines arrived after an idle close; not stored", {
      lines,
      bytes: chunk.length,
    });
  }

  /**
   * An unfinished line goes on with `chunk`: appended until its newline (or the limit) comes,
   * in a buffer grown by doubling, so that the copying stays linear however finely the line
   * is split. Once the newline comes, the line is handled (only its own bytes copied, not the
   * rest of the chunk); returns where that newline is in `chunk`, else -1.
   */
  #continueLine(chunk: Buffer): number {
    const max = this.#server.maxLineBytes;
    const nl = chunk.indexOf(NL);
    if (nl < 0) {
      const need = this.#partBytes + chunk.length;
      if (need > max) {
        this.#part = null;
        this.#partBytes = 0;
        this.#skipping = true;
      } else {
        if (need > this.#part!.length) {
          const grown = Buffer.allocUnsafe(Math.min(max, Math.max(need, 2 * this.#part!.length)));
          this.#part!.copy(grown, 0, 0, this.#partBytes);
          this.#part = grown;
        }
        chunk.copy(this.#part!, this.#partBytes);
        this.#partBytes = need;
      }
      return -1;
    }
    const line = Buffer.concat([
      this.#part!.subarray(0, this.#partBytes),
      chunk.subarray(0, nl + 1),
    ]);
    this.#part = null;
    this.#partBytes = 0;
    this.#lines(line, 0, line.length - 1);
    return nl;
  }

  /** Handles the whole lines of `buf[start, last)` (`last` is a newline's index). */
  #lines(buf: Buffer, start: number, last: number): void {
    // Plain text lines (TOPIC<TAB>KEY<TAB>VALUE, no escapes, valid UTF-8) go from the socket's
    // bytes into the frame as they are: no string per line or field, nothing decoded and then
    // encoded again. Any other line is parsed as text, as below.
    if (!isUtf8(buf.subarray(start, last))) return this.#textLines(buf, start, last);
    const max = this.#server.maxLineBytes;
    // The next backslash and the next tab are searched for once, not once per line: lines
    // without them (garbage) would otherwise each scan to the end of the chunk. A plain line
    // costs two searches in native code: its newline, and the next tab after the key's own
    // (which a loop finds): that one lies past the value, showing that the value holds none,
    // and is the next line's first.
    let backslash = nextIndex(buf, BACKSLASH, start, last);
    let tab = nextIndex(buf, TAB, start, last);
    let from = start;
    while (from <= last) {
      const nl = buf.indexOf(NL, from); // (at most `last`, a newline)
      if (backslash < from) backslash = nextIndex(buf, BACKSLASH, from, last);
      if (tab < from) tab = nextIndex(buf, TAB, from, last);
      let plain = false;
      if (backslash > nl && tab < nl && nl - from <= max) {
        const t1 = tab;
        const t2 = nextTab(buf, t1 + 1, nl);
        if (t2 < nl) {
          tab = nextIndex(buf, TAB, t2 + 1, last);
          plain = tab > nl && this.#plainLine(buf, from, t1, t2, nl);
        }
      }
      if (!plain) this.#textLines(buf, from, nl);
      from = nl + 1;
    }
  }

  /**
   * Takes `buf[from, nl)`, whose only two tabs are at `t1` and `t2`, if it is a plain text
   * line (see #lines): returns false, taking nothing, for anything else (JSON, a control
   * line, a CR before the LF, an error).
   */
  #plainLine(buf: Buffer, from: number, t1: number, t2: number, nl: number): boolean {
    const c = buf[from];
    if (c === 123 /* { */ || c === 35 /* # */ || buf[nl - 1] === 13) return false;
    if (t1 === from) return false; // no topic
    const topic = this.#topicOf(buf, from, t1);
    this.#server.stats.linesReceived++;
    this.#lineNo++;
    // Copied straight out of the chunk when the record can be stored at once (most lines);
    // else views of the chunk: a write that waits (for a lane, for room) keeps them, and so
    // the chunk, whose memory Node, Deno and Bun never reuse while it is referenced.
    let p: Promise<void> | null;
    try {
      p = this.#server.buffer.writeRange(
        topic,
        buf,
        t2 === t1 + 1 ? -1 : t1 + 1,
        t2 - t1 - 1,
        t2 + 1,
        nl - t2 - 1,
        this.#readAt,
      );
    } catch (e) {
      p = Promise.reject(e);
    }
    if (p !== null) this.#answer(p);
    else {
      if (buf === this.#chunk) this.#viewsKept = true; // (not for a line joined from pieces)
      const key = t2 === t1 + 1 ? null : buf.subarray(t1 + 1, t2);
      this.#record(topic, buf.subarray(t2 + 1, nl), key, null, this.#readAt);
    }
    return true;
  }

  /**
   * The topics of the last lines, as bytes and as strings, the newest first: consecutive
   * lines mostly share a topic, and a client that interleaves a few topics (lines for
   * several lanes) finds each here too, without a copy and a decoding per line.
   */
  #topics: Array<{ bytes: Buffer; text: string }> = [];

  #topicOf(buf: Buffer, from: number, end: number): string {
    const topics = this.#topics;
    const len = end - from;
    for (let k = 0; k < topics.length; k++) {
      const t = topics[k].bytes;
      if (t.length !== len) continue;
      // (A loop: topics are short, and a native compare costs more in the call than the bytes.)
      let i = 0;
      while (i < len && t[i] === buf[from + i]) i++;
      if (i === len) return topics[k].text;
    }
    const text = buf.toString("utf8", from, end);
    topics.unshift({ bytes: Buffer.from(buf.subarray(from, end)), text });
    if (topics.length > RECENT_TOPICS) topics.pop();
    return text;
  }

  /** Handles the lines of `buf[start, last)` (`last` is a newline's index) as text. */
  #textLines(buf: Buffer, start: number, last: number): void {
    const max = this.#server.maxLineBytes;
    // Lines end at an ASCII byte, so the region decodes as whole UTF-8 characters.
    const text = buf.toString("utf8", start, last);
    let from = 0;
    for (;;) {
      const nl = text.indexOf("\n", from);
      const line = nl < 0 ? text.slice(from) : text.slice(from, nl);
      if (line.length > max || (line.length * 3 > max && Buffer.byteLength(line) > max)) {
        this.#line(null, `line too long (over ${max} bytes); skipped`);
      } else {
        this.#line(line, null);
      }
      if (nl < 0) break;
      from = nl + 1;
    }
  }

  /** Handles one line; `error` set means it was refused before parsing. Control lines are not numbered. */
  #line(line: string | null, error: string | null): void {
    this.#server.stats.linesReceived++;
    if (line !== null) {
      const parsed = parseLine(line);
      if (parsed.kind === "control") {
        const reply = parsed.command === "stats"
          ? () => `stats ${JSON.stringify(this.#server.snapshot())}\n`
          : undefined;
        if (parsed.command === "ack") this.#ack = true;
        else this.#server.stats.linesReceived--; // a query, not input
        this.#unansweredLines++;
        this.#queue.push({
          p: null,
          n: 1,
          first: 0,
          answer: true,
          error: null,
          reply,
          to: this.#read,
        });
        if (!this.#draining) void this.#drain();
        return;
      }
      this.#lineNo++;
      if (parsed.kind === "record") {
        this.#record(
          parsed.topic,
          parsed.value,
          parsed.key,
          parsed.headers,
          parsed.timestamp ?? this.#readAt,
        );
        return;
      }
      error = parsed.reason;
    } else {
      this.#lineNo++;
    }
    this.#unansweredLines++;
    this.#queue.push({
      p: null,
      n: 1,
      first: this.#lineNo,
      answer: this.#ack,
      error,
      to: this.#read,
    });
    if (!this.#draining) void this.#drain();
  }

  /** Writes the record of line `#lineNo`, and queues its answer. */
  #record(
    topic: string,
    value: string | Uint8Array,
    key: string | Uint8Array | null,
    headers: Array<[string, string | Uint8Array]> | null,
    timestamp: number,
  ): void {
    this.#answer(this.#server.buffer.write(topic, value, { key, headers, timestamp }));
  }

  /** Queues the answer of line `#lineNo`, which `p` settles. */
  #answer(p: Promise<void>): void {
    // (Only an entry not answered yet can take more lines.)
    const last = this.#queue.length > this.#head ? this.#queue.at(-1) : undefined;
    this.#unansweredLines++;
    if (last && last.p !== null && last.answer === this.#ack) {
      if (last.p === p && last.mixed === undefined) {
        last.n++;
        last.to = this.#read;
        return;
      }
      if (this.#join(last, p)) return;
    }
    // One entry and one handler per distinct promise (lines in one frame share it); the
    // handler notes the outcome, the answer loop reads it.
    const entry: AckEntry = {
      p,
      n: 1,
      first: this.#lineNo,
      answer: this.#ack,
      error: null,
      to: this.#read,
      settled: false,
      failure: null,
    };
    p.then(
      () => (entry.settled = true),
      (err) => {
        entry.settled = true;
        entry.failure = failureText(err);
      },
    );
    this.#queue.push(entry);
    if (!this.#draining) void this.#drain();
  }

  /**
   * Adds the line just read, which `p` stores, to `entry` (unanswered, with a promise), when
   * the entry has `p` among its promises, or room for one more and none of them has settled
   * (from then on, later lines would only hold back answers that could go); false when not.
   */
  #join(entry: AckEntry, p: Promise<void>): boolean {
    let m = entry.mixed;
    if (entry.n >= MAX_MIXED_LINES && m !== undefined) return false;
    let k = m === undefined ? -1 : m.ps.indexOf(p);
    if (k < 0) {
      if (
        entry.settled || (m === undefined && entry.n >= MIX_BELOW_LINES) ||
        (m !== undefined && (m.ps.length >= MAX_MIXED || m.outcomes.some((o) => o !== undefined)))
      ) {
        return false;
      }
      if (m === undefined) {
        const which = new Uint8Array(Math.max(64, entry.n * 2));
        m = entry.mixed = { ps: [], outcomes: [], which, answered: 0 };
        track(m, entry.p!);
      }
      k = track(m, p);
    }
    const mm = m!;
    if (entry.n === mm.which.length) {
      const grown = new Uint8Array(mm.which.length * 2);
      grown.set(mm.which);
      mm.which = grown;
    }
    mm.which[entry.n++] = k;
    entry.to = this.#read;
    return true;
  }

  /**
   * Answers (or, without #ack, counts and logs) each line's outcome, in order. The answers of
   * lines already settled go out together in one socket write, and the loop gives the event
   * loop a turn after each 64 KiB of them, so that a flood of small writes (lines of several
   * lanes each have their own promise) neither costs a system call per line nor starves the
   * sender's network I/O.
   */
  async #drain(): Promise<void> {
    this.#draining = true;
    let out = "";
    while (this.#head < this.#queue.length) {
      const e = this.#queue[this.#head];
      const m = e.mixed;
      let waitFor: Promise<void> | null = null;
      if (m === undefined) {
        if (e.p !== null && !e.settled) waitFor = e.p;
      } else {
        // Its lines in order, as far as they have settled.
        while (m.answered < e.n) {
          const k = m.which[m.answered];
          const outcome = m.outcomes[k];
          if (outcome === undefined) {
            waitFor = m.ps[k];
            break;
          }
          out += this.#lineAnswer(e, e.first + m.answered, outcome);
          m.answered++;
          this.#unansweredLines--;
        }
      }
      if (waitFor !== null) {
        if (out) this.#send(out);
        out = "";
        this.#account();
        this.#wake?.(); // (the lines answered may end a pause)
        await waitFor.then(() => {}, () => {}); // its own handler (registered first) has run
        continue;
      }
      this.#head++;
      this.#answeredTo = e.to;
      if (m === undefined) {
        this.#unansweredLines -= e.n;
        const reason = e.p !== null ? e.failure ?? null : e.error;
        if (e.reply) {
          out += e.reply();
        } else if (reason === null) {
          if (e.answer) out += e.first === 0 ? "ok\n" : "ok\n".repeat(e.n);
        } else {
          this.#server.stats.linesRejected += e.n;
          if (e.answer) {
            for (let i = 0; i < e.n; i++) out += `error line ${e.first + i}: ${reason}\n`;
          } else this.#server.rejected(reason, e.first, e.n);
        }
      }
      if (this.#head >= 4096 && this.#head * 2 >= this.#queue.length) {
        // Drop the answered entries (the loop may not empty the queue under steady load).
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
      if (out.length >= 65536) {
        this.#send(out);
        out = "";
        this.#account();
        this.#wake?.();
        await new Promise((r) => setImmediate(r));
      }
    }
    if (out) this.#send(out);
    this.#queue = [];
    this.#head = 0;
    this.#account();
    this.#wake?.();
    this.#draining = false;
    this.#idle?.();
  }

  /** The answer to line `lineNo` of `e` (a mixed entry's), whose write ended with `reason`. */
  #lineAnswer(e: AckEntry, lineNo: number, reason: string | null): string {
    if (reason === null) return e.answer ? "ok\n" : "";
    this.#server.stats.linesRejected++;
    if (e.answer) return `error line ${lineNo}: ${reason}\n`;
    this.#server.rejected(reason, lineNo);
    return "";
  }

  #send(text: string): void {
    if (!this.#socket.destroyed) this.#socket.write(text);
  }

  #shouldPause(): boolean {
    return this.#server.buffer.wouldBlock || this.#overReadAhead() ||
      this.#socket.writableLength > MAX_UNREAD_ANSWER_BYTES;
  }

  /**
   * The connections together hold more than the bound, and this one holds some of it: one
   * that holds nothing (`top`'s queries, a quiet client) reads on, a read at a time.
   */
  #overReadAhead(): boolean {
    return this.#server.readAhead.over && (this.#heldBytes > 0 || this.#heldLines > 0);
  }

  #maybePause(): void {
    if (this.#paused || this.#ended || !this.#shouldPause()) return;
    this.#paused = true;
    this.#server.stats.pauses++;
    this.#socket.pause();
    void this.#resumeWhenRoom();
  }

  /**
   * Reads on once nothing calls for a pause any more. Woken by what can end one: the buffer
   * has room again, the client read its answers ("drain"), its answers went out, the
   * {@link ReadAhead} has room for it, or the socket closed. (Each wait also ends after a
   * second, as a safety net, not as the mechanism.) While over the read-ahead bound, it keeps
   * its place among the connections waiting for room from its pause until room wakes it.
   */
  async #resumeWhenRoom(): Promise<void> {
    const readAhead = this.#server.readAhead;
    let queued = false;
    const roomCame = () => {
      queued = false;
      this.#wake?.();
    };
    while (!this.#ended && !this.#socket.destroyed && this.#shouldPause()) {
      if (!queued && this.#overReadAhead()) {
        readAhead.waitFor(roomCame);
        queued = true;
      }
      await new Promise<void>((resolve) => {
        const wake = this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
        const t = setTimeout(wake, 1000);
        if (this.#server.buffer.wouldBlock && !this.#writable) {
          // One wait on the buffer per connection (and one handler on it), however often the
          // loop wakes; it wakes whichever wait is current when room returns.
          this.#writable = this.#server.buffer.whenWritable().then(() => {
            this.#writable = null;
            this.#wake?.();
          });
        }
      });
      this.#wake = null;
    }
    if (queued) readAhead.forget(roomCame);
    this.#paused = false;
    if (!this.#ended && !this.#socket.destroyed) this.#socket.resume();
  }

  #onEnd(): void {
    if (this.#partBytes > 0 || this.#skipping) {
      this.#server.stats.partialLinesDropped++;
      this.#server.logger.warn(
        "client closed the connection in the middle of a line; that line was dropped",
        {
          line: this.#lineNo + 1,
          bytes: this.#partBytes,
        },
      );
      this.#part = null;
      this.#partBytes = 0;
      this.#skipping = false;
    }
    this.#ended = true;
    // The client's side is closed, ours is not (allowHalfOpen): answer, then end (end()
    // flushes the answers written before it).
    void this.whenAnswered().then(() => this.#socket.end());
  }

  /** Resolves once every line read so far has been answered. */
  whenAnswered(): Promise<void> {
    if (!this.#draining && this.#queue.length === this.#head) return Promise.resolve();
    return new Promise((r) => {
      const prev = this.#idle;
      this.#idle = () => {
        prev?.();
        r();
      };
    });
  }

  /**
   * Stops reading from the client (lines already read are still answered). An unfinished line
   * read so far is let go of here: the stop cut it, not the client, so it is neither counted
   * nor logged as a client's disconnect; like the bytes the client sends after, it was never
   * stored or acknowledged (logged at debug).
   */
  stopReading(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#socket.pause();
    if (this.#partBytes > 0 || this.#skipping) {
      this.#server.logger.debug("stopped reading in the middle of a line; it was not stored", {
        line: this.#lineNo + 1,
        bytes: this.#partBytes,
      });
      this.#part = null;
      this.#partBytes = 0;
      this.#skipping = false;
    }
  }

  /** Stops reading; answers what was read; then closes. */
  async shutdown(): Promise<void> {
    this.stopReading();
    await this.whenAnswered();
    this.#socket.end();
    // Read on so that the client's close is seen; anything it still sends is ignored (never
    // acknowledged). A client that does not close is cut off after a grace period.
    this.#socket.resume();
    const t = setTimeout(() => this.#socket.destroy(), 2000);
    this.#socket.once("close", () => clearTimeout(t));
  }
}

/** See the module doc. */
export class IngestServer {
  readonly buffer: MessageBuffer;
  readonly logger: Logger;
  readonly maxLineBytes: number;
  readonly maxConnections: number;
  readonly idleTimeoutMs: number;
  readonly path: string;
  readonly stats: IngestStats = {
    connections: 0,
    connectionsTotal: 0,
    linesReceived: 0,
    linesRejected: 0,
    partialLinesDropped: 0,
    connectionsRefused: 0,
    idleTimeouts: 0,
    pauses: 0,
  };
  /** The other inputs' counters, shown in `#stats` (set by the agent). */
  inputs: InputStats = {};
  /** What the connections together read ahead of their answers. */
  readonly readAhead: ReadAhead = new ReadAhead();
  readonly #server: net.Server;
  readonly #started = Date.now();
  readonly #connections = new Set<Connection>();
  #lastRejectLog = 0;
  #lastRefuseLog = 0;
  #rejectsSinceLog = 0;

  private constructor(o: IngestServerOptions, server: net.Server) {
    this.buffer = o.buffer;
    this.logger = o.logger;
    this.maxLineBytes = o.maxLineBytes ?? 1 << 20;
    this.maxConnections = o.maxConnections ?? 1024;
    this.idleTimeoutMs = o.idleTimeoutMs ?? 600_000;
    this.path = o.path;
    this.#server = server;
  }

  /** What `#stats` answers: the buffer's stats, the ingest counters, the process. */
  snapshot(): AgentSnapshot {
    return {
      time: Date.now(),
      pid: process.pid,
      uptimeMs: Date.now() - this.#started,
      socket: this.path,
      buffer: this.buffer.stats(),
      ingest: { ...this.stats },
      ...(this.inputs.http ? { http: { ...this.inputs.http } } : {}),
      ...(this.inputs.syslog ? { syslog: { ...this.inputs.syslog } } : {}),
    };
  }

  /**
   * Listens on `path`. A socket file left by a crashed agent is replaced; one that a live
   * process answers on is not (the error says so).
   */
  static async listen(o: IngestServerOptions): Promise<IngestServer> {
    const bytes = Buffer.byteLength(o.path);
    if (bytes > 107) {
      throw new Error(
        `Socket path "${o.path}" is ${bytes} bytes; Unix socket paths are limited to 107 (use --socket with a shorter path)`,
      );
    }
    const st = await lstat(o.path).catch(() => null);
    if (st) {
      if (!st.isSocket()) {
        throw new Error(`Cannot listen on "${o.path}": it exists and is not a socket`);
      }
      if (await answers(o.path)) {
        throw new Error(
          `Cannot listen on "${o.path}": another process is serving it (is an agent already running?)`,
        );
      }
      o.logger.info("removed a stale socket file", { socket: o.path });
      await rm(o.path, { force: true });
    }
    // allowHalfOpen: a client that ends its side after its last line (`nc -U -N`) still
    // reads; the connection ends our side once every line is answered (see #onEnd).
    const server = net.createServer({ pauseOnConnect: false, allowHalfOpen: true });
    const ingest = new IngestServer(o, server);
    server.on("connection", (socket) => ingest.#accept(socket));
    // Bound in a fresh owner-only directory next to the final path, given its mode, then
    // renamed into place: the socket is never reachable with wider permissions than its mode,
    // not even between listen() and chmod().
    const staging = await mkdtemp(join(dirname(o.path), ".mb-"));
    const bound = join(staging, "s");
    try {
      if (Buffer.byteLength(bound) > 107) {
        throw new Error(
          `Socket path "${o.path}" is too long: it is bound first as "${bound}", over the 107 bytes Unix socket paths may have (use --socket with a shorter path)`,
        );
      }
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(bound, () => {
          server.off("error", reject);
          resolve();
        });
      });
      await chmod(bound, o.mode ?? 0o660);
      await rename(bound, o.path);
    } catch (e) {
      server.close();
      throw e;
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
    return ingest;
  }

  #accept(socket: net.Socket): void {
    if (this.#connections.size >= this.maxConnections) {
      // Told why (a client may retry later), then closed; nothing it sends is read.
      this.stats.connectionsRefused++;
      socket.on("error", () => {});
      socket.resume(); // what it sends is discarded
      socket.end(
        `error too many connections (${this.maxConnections} open, the agent's --max-connections); try again later\n`,
      );
      const t = setTimeout(() => socket.destroy(), 2000);
      socket.once("close", () => clearTimeout(t));
      const now = Date.now();
      if (now - this.#lastRefuseLog >= 1000) {
        this.#lastRefuseLog = now;
        this.logger.warn("refused an ingest connection: too many open", {
          limit: this.maxConnections,
          refusedTotal: this.stats.connectionsRefused,
        });
      }
      return;
    }
    this.stats.connections++;
    this.stats.connectionsTotal++;
    this.#connections.add(new Connection(socket, this));
  }

  /** @internal */
  connectionClosed(c: Connection): void {
    if (this.#connections.delete(c)) this.stats.connections--;
  }

  /** @internal Logs refused lines of connections not in ack mode, at most once a second. */
  rejected(reason: string, line: number, lines = 1): void {
    this.#rejectsSinceLog += lines;
    const now = Date.now();
    if (now - this.#lastRejectLog < 1000) return;
    this.logger.warn("refused ingest line(s) on a connection without #ack", {
      lines: this.#rejectsSinceLog,
      lastLine: line,
      reason,
    });
    this.#lastRejectLog = now;
    this.#rejectsSinceLog = 0;
  }

  /**
   * Stops accepting connections and reading lines. Lines already read are answered by
   * `close()`; writes still waiting for room settle when the buffer closes.
   */
  stop(): void {
    if (this.#closed) return;
    this.#closed = new Promise<void>((r) => this.#server.close(() => r()));
    for (const c of this.#connections) c.stopReading();
  }

  /** Stops (if not yet), answers every line already read, closes connections and the socket. */
  async close(): Promise<void> {
    this.stop();
    await Promise.all([...this.#connections].map((c) => c.shutdown()));
    await this.#closed;
    await rm(this.path, { force: true });
  }

  #closed: Promise<void> | null = null;
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

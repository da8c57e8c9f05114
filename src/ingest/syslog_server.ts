/**
 * The syslog inputs: a Unix datagram socket (like `/dev/log`; `logger -u PATH`) and a TCP
 * listener (RFC 6587: octet counting, `LEN SP MSG`, or one message per LF-terminated line,
 * told apart by each frame's first byte). Each message is parsed (`syslog.ts`), mapped to a
 * record and written to the buffer, through the same engine, limits and metrics as socket
 * lines.
 *
 * Syslog has no answers: a message is as safe as its record once stored (under the fsync
 * policy), and a message refused by the buffer (full under `whenFull: "reject"`, a storage
 * error) is counted and logged, not answered. Both inputs stop reading while the messages
 * read and not yet stored pass about 2 MiB or 50,000 (the disk behind a flood; in the direct
 * modes, Kafka behind, since a write settles once Kafka has it), and, under
 * `whenFull: "block"`, while the buffer is full (TCP senders then wait on their socket;
 * datagram senders on the kernel's queue, or drop there); they read on as those are stored,
 * or when room returns.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { chmod, lstat, mkdtemp, rename, rm } from "node:fs/promises";
import { hostname } from "node:os";
import { setImmediate } from "node:timers";
import { dirname, join } from "node:path";
import net from "node:net";
import type { MessageBuffer } from "../engine/buffer.ts";
import type { Logger } from "../log.ts";
import { parseSyslog, type SyslogMapping, toRecord } from "./syslog.ts";
import { UnixDatagramSocket } from "./unix_datagram.ts";
import { SyslogFramer } from "./syslog_framing.ts";
import { splitHostPort } from "./address.ts";
import { MAX_WAITING_BYTES, MAX_WAITING_LINES } from "./bounds.ts";

/** Options of {@link SyslogServer.start}. */
export interface SyslogServerOptions {
  /** Unix datagram socket to bind (off when unset). */
  socket?: string;
  /** Permission bits of the socket file. @default 0o660 */
  socketMode?: number;
  /** `host:port` to listen on for TCP syslog (off when unset). */
  tcp?: string;
  mapping: SyslogMapping;
  /** Longest message taken, in bytes; longer ones are dropped and counted. @default 1 MiB */
  maxMessageBytes?: number;
  /** TCP connections served at once; more are closed at once. @default 1024 */
  maxConnections?: number;
  /** A TCP connection silent this long is closed. 0 = never. @default 600000 */
  idleTimeoutMs?: number;
  buffer: MessageBuffer;
  logger: Logger;
}

/** Syslog counters (also exported as metrics and in `#stats`). */
export interface SyslogStats {
  /** Messages read, from both inputs: stored, dropped, or on their way to the buffer. */
  received: number;
  /** Messages stored in the buffer. */
  stored: number;
  /** Messages taken without a valid `<PRI>` (stored as user.notice, with the text whole). */
  withoutPriority: number;
  /** Messages not stored: longer than the limit. */
  droppedTooLong: number;
  /** Messages not stored: the buffer refused them (full under "reject", storage error, closing). */
  droppedRefused: number;
  /** TCP connections open. */
  connections: number;
  /** TCP connections refused because `maxConnections` were open. */
  connectionsRefused: number;
  /** Unfinished TCP frames dropped when the sender closed or went idle. */
  partialDropped: number;
  /**
   * Times an input stopped reading until the messages it had read were stored (the disk
   * behind) or the buffer had room (full under `whenFull: "block"`).
   */
  pauses: number;
}

/** See the module doc. */
export class SyslogServer {
  readonly stats: SyslogStats = {
    received: 0,
    stored: 0,
    withoutPriority: 0,
    droppedTooLong: 0,
    droppedRefused: 0,
    connections: 0,
    connectionsRefused: 0,
    partialDropped: 0,
    pauses: 0,
  };
  readonly #o: Required<Omit<SyslogServerOptions, "socket" | "tcp">> & SyslogServerOptions;
  readonly #host = hostname();
  /** Open TCP connections, each with what drops (and counts) its unfinished frame. */
  readonly #connections = new Map<net.Socket, () => void>();
  #tcp: net.Server | null = null;
  #dgram: UnixDatagramSocket | null = null;
  #dgramPath: string | null = null;
  #dgramLoop: Promise<void> | null = null;
  #stopped = false;
  #lastLog = new Map<string, number>();
  /**
   * The settlements of the writes waiting, one per group (see #message): close() waits for
   * them, so that the counters are final.
   */
  #pending = new Set<Promise<unknown>>();
  /** Messages read and not yet stored (or refused), and their bytes. */
  #pendingCount = 0;
  #pendingBytes = 0;
  /** The last group of messages written: those whose writes share one promise (a frame). */
  #group: { p: Promise<void>; n: number; bytes: number } | null = null;
  /** Inputs waiting for the messages waiting to fall back under their bounds. */
  #caughtUp: Array<() => void> = [];

  private constructor(o: SyslogServerOptions) {
    this.#o = {
      socketMode: 0o660,
      maxMessageBytes: 1 << 20,
      maxConnections: 1024,
      idleTimeoutMs: 600_000,
      ...o,
    };
  }

  /** The TCP address listened on (`host:port`, the port resolved), or null. */
  get tcpAddress(): string | null {
    const a = this.#tcp?.address();
    return a && typeof a === "object" ? `${a.address}:${a.port}` : null;
  }

  /**
   * Starts the inputs configured, telling `starting` which one it starts (for an error to name
   * it). Throws (having closed what it opened) when one cannot.
   */
  static async start(
    o: SyslogServerOptions,
    starting: (input: "syslog_socket" | "syslog_tcp") => void = () => {},
  ): Promise<SyslogServer> {
    const s = new SyslogServer(o);
    try {
      starting("syslog_socket");
      if (o.socket) await s.#bindDatagram(o.socket);
      starting("syslog_tcp");
      if (o.tcp) await s.#listenTcp(o.tcp);
    } catch (e) {
      await s.close();
      throw e;
    }
    return s;
  }

  async #bindDatagram(path: string): Promise<void> {
    const st = await lstat(path).catch(() => null);
    if (st) {
      if (!st.isSocket()) {
        throw new Error(`Cannot bind the syslog socket "${path}": it exists and is not a socket`);
      }
      if (await UnixDatagramSocket.inUse(path)) {
        throw new Error(
          `Cannot bind the syslog socket "${path}": another process receives on it (a syslog daemon, or another agent?)`,
        );
      }
      await rm(path, { force: true });
      this.#o.logger.info("removed a stale syslog socket file", { socket: path });
    }
    // Bound in a fresh owner-only directory, given its mode, then renamed into place (as the
    // ingest socket): never reachable with wider permissions than its mode.
    const staging = await mkdtemp(join(dirname(path), ".mb-"));
    try {
      const sock = await UnixDatagramSocket.bind(join(staging, "s"));
      try {
        await chmod(join(staging, "s"), this.#o.socketMode);
        await rename(join(staging, "s"), path);
      } catch (e) {
        sock.close();
        throw e;
      }
      this.#dgram = sock;
      this.#dgramPath = path;
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
    this.#dgramLoop = this.#receiveDatagrams(this.#dgram);
  }

  async #receiveDatagrams(sock: UnixDatagramSocket): Promise<void> {
    const max = this.#o.maxMessageBytes;
    const buf = Buffer.allocUnsafe(max + 1);
    for (let taken = 1;; taken++) {
      if (this.#mustWait()) {
        this.stats.pauses++;
        await this.#untilRoom();
      }
      // Datagrams already queued are taken without waiting: give the event loop a turn now
      // and then, so that a flood of them cannot hold up the sender and the other inputs.
      if (taken % 512 === 0) await new Promise((r) => setImmediate(r));
      let n: number | null;
      try {
        n = await sock.receive(buf);
      } catch (e) {
        this.#o.logger.error("the syslog socket input stopped: receiving failed", {
          socket: this.#dgramPath,
          error: e,
        });
        return;
      }
      if (n === null) return;
      if (n === 0) continue;
      if (n > max) {
        this.#tooLong(n, "datagram");
        continue;
      }
      // A copy: the receive buffer is reused.
      this.#message(Buffer.from(buf.subarray(0, n)), this.#host);
    }
  }

  async #listenTcp(address: string): Promise<void> {
    const split = splitHostPort(address);
    if (split === null) throw new Error(`syslog TCP address "${address}" is not host:port`);
    const { host, port } = split;
    const server = net.createServer((socket) => this.#accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.#tcp = server;
  }

  #accept(socket: net.Socket): void {
    socket.on("error", (e) => this.#o.logger.debug("syslog connection error", { error: e }));
    if (this.#stopped || this.#connections.size >= this.#o.maxConnections) {
      this.stats.connectionsRefused++;
      this.#rateLog("warn", "refused a syslog TCP connection: too many open", {
        limit: this.#o.maxConnections,
      });
      socket.destroy();
      return;
    }
    const peer = socket.remoteAddress ?? "unknown";
    const framer = new SyslogFramer(this.#o.maxMessageBytes, {
      message: (frame) => this.#message(frame, peer),
      tooLong: (bytes) => this.#tooLong(bytes, "TCP frame"),
    });
    const unfinished = () => {
      if (framer.discard()) this.stats.partialDropped++;
    };
    this.#connections.set(socket, unfinished);
    this.stats.connections++;
    const idle = this.#o.idleTimeoutMs;
    let paused = false;
    socket.on("data", (chunk: Buffer) => {
      framer.push(chunk);
      if (paused || this.#stopped || !this.#mustWait()) return;
      // Back-pressure: stop reading until what was read is stored, or there is room. A
      // connection paused by us is not idle, so its idle timer is off meanwhile.
      paused = true;
      this.stats.pauses++;
      socket.pause();
      if (idle > 0) socket.setTimeout(0);
      void this.#untilRoom().then(() => {
        paused = false;
        if (this.#stopped || socket.destroyed) return;
        if (idle > 0) socket.setTimeout(idle);
        socket.resume();
      });
    });
    socket.on("end", () => {
      // A last line without its LF (`printf 'msg' | nc`) is a message; a counted frame cut
      // short is not.
      if (framer.end()) this.stats.partialDropped++;
      socket.end();
    });
    socket.on("close", () => {
      this.#connections.delete(socket);
      this.stats.connections--;
    });
    if (idle > 0) {
      socket.setTimeout(idle, () => {
        unfinished();
        socket.destroy();
      });
    }
  }

  #tooLong(bytes: number, what: string): void {
    this.stats.received++;
    this.stats.droppedTooLong++;
    this.#rateLog("warn", `dropped a syslog ${what} longer than the limit`, {
      bytes,
      limit: this.#o.maxMessageBytes,
      droppedTooLong: this.stats.droppedTooLong,
    });
  }

  /** Stores one message. */
  #message(bytes: Uint8Array, fallbackHost: string): void {
    this.stats.received++;
    const m = parseSyslog(bytes);
    if (!m.hasPriority) {
      this.stats.withoutPriority++;
      this.#rateLog("warn", "syslog message without a valid <PRI>; stored as user.notice", {
        start: Buffer.from(bytes.subarray(0, 40)).toString("latin1"),
        withoutPriority: this.stats.withoutPriority,
      });
    }
    const r = toRecord(m, bytes, this.#o.mapping, fallbackHost);
    const p = this.#o.buffer.write(r.topic, r.value, { key: r.key, timestamp: r.timestamp });
    const size = bytes.length;
    this.#pendingCount++;
    this.#pendingBytes += size;
    // The writes of one frame share its promise: the messages are counted by group, one
    // settlement for all of them, not two promises and two closures per message.
    const g = this.#group;
    if (g !== null && g.p === p) {
      g.n++;
      g.bytes += size;
      return;
    }
    const group = this.#group = { p, n: 1, bytes: size };
    const settled = p.then(
      () => this.#settled(group, true),
      (e: unknown) => this.#settled(group, false, e),
    );
    this.#pending.add(settled);
    void settled.then(() => this.#pending.delete(settled));
  }

  /** A group of messages stored, or refused (with `error`). */
  #settled(group: { n: number; bytes: number }, stored: boolean, error?: unknown): void {
    if (this.#group === group) this.#group = null; // (no message joins it after this)
    if (stored) this.stats.stored += group.n;
    else {
      this.stats.droppedRefused += group.n;
      this.#rateLog("warn", "the buffer refused syslog messages; dropped", {
        reason: String((error as Error)?.message ?? error),
        droppedRefused: this.stats.droppedRefused,
      });
    }
    this.#pendingCount -= group.n;
    this.#pendingBytes -= group.bytes;
    if (this.#caughtUp.length > 0 && !this.#behind()) {
      for (const go of this.#caughtUp.splice(0)) go();
    }
  }

  /** True when the messages read and not yet stored are past their bounds. */
  #behind(): boolean {
    return this.#pendingCount > MAX_WAITING_LINES || this.#pendingBytes > MAX_WAITING_BYTES;
  }

  /** True when the inputs should stop reading: the disk behind, or no room under "block". */
  #mustWait(): boolean {
    return this.#behind() || this.#o.buffer.wouldBlock;
  }

  /** Resolves once neither holds any more, or once stopped. */
  async #untilRoom(): Promise<void> {
    while (!this.#stopped) {
      if (this.#behind()) await new Promise<void>((go) => this.#caughtUp.push(go));
      else if (this.#o.buffer.wouldBlock) await this.#o.buffer.whenWritable();
      else return;
    }
  }

  /** Logs `msg` at most once a second (per message text). */
  #rateLog(level: "warn" | "info", msg: string, fields: Record<string, unknown>): void {
    const now = Date.now();
    if (now - (this.#lastLog.get(msg) ?? 0) < 1000) return;
    this.#lastLog.set(msg, now);
    this.#o.logger[level](msg, fields);
  }

  /** Stops reading both inputs (messages already read are still written). */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#tcp?.close();
    this.#dgram?.close();
    for (const s of this.#connections.keys()) s.pause();
    for (const go of this.#caughtUp.splice(0)) go(); // (waits in #untilRoom end)
  }

  /** Stops, waits for the writes of messages read, closes connections and removes the socket. */
  async close(): Promise<void> {
    this.stop();
    await this.#dgramLoop;
    await Promise.all([...this.#pending]);
    for (const [s, unfinished] of this.#connections) {
      unfinished();
      s.destroy();
    }
    if (this.#dgramPath) await rm(this.#dgramPath, { force: true });
  }
}

/**
 * A Unix datagram socket to receive on (like `/dev/log`), for Deno and Bun. Neither runtime
 * offers one in a stable API (`node:dgram` is UDP only; Bun's `udpSocket` too; Deno's
 * `listenDatagram` needs `--unstable-net`), so the socket is made and bound with libc's
 * `socket(2)` and `bind(2)` through the runtime's FFI, and read off the event loop: under
 * Deno by a non-blocking FFI call of `recv(2)` (on a thread of its own), under Bun by
 * `node:fs` `read(2)` on the descriptor (on a thread of the pool). Datagrams already queued
 * are taken by a non-blocking `recv(2)` on the event loop, without that trip. Each read
 * returns one datagram. `close()` shuts the socket down, which ends a read in progress.
 *
 * This is the one file of the ingest that looks at `globalThis.Deno` and `Bun`.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { read as fsRead } from "node:fs";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const SHUT_RDWR = 2;
const MSG_DONTWAIT = 0x40;
/** sockaddr_un: 2 bytes of family, then 108 of path. */
const SUN_PATH_MAX = 108;

interface Libc {
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Uint8Array, len: number): number;
  connect(fd: number, addr: Uint8Array, len: number): number;
  shutdown(fd: number, how: number): number;
  close(fd: number): number;
  /** One datagram into `buf`: its length (at most `buf.length`), 0 once shut down. */
  recv(fd: number, buf: Buffer): Promise<number>;
  /** One datagram already waiting, without blocking: its length, or -1 when none waits. */
  recvNow(fd: number, buf: Buffer): number;
}

type DenoFfi = {
  dlopen(
    path: string,
    symbols: Record<
      string,
      { name?: string; parameters: string[]; result: string; nonblocking?: boolean }
    >,
  ): { symbols: Record<string, (...a: unknown[]) => unknown> };
};

async function libc(): Promise<Libc> {
  const g = globalThis as { Deno?: DenoFfi; Bun?: unknown };
  if (g.Deno) {
    const s = g.Deno.dlopen("libc.so.6", {
      socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
      bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
      connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
      shutdown: { parameters: ["i32", "i32"], result: "i32" },
      close: { parameters: ["i32"], result: "i32" },
      recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize", nonblocking: true },
      recv_now: { name: "recv", parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
    }).symbols;
    return {
      socket: (d, t, p) => s.socket(d, t, p) as number,
      bind: (fd, a, l) => s.bind(fd, a, l) as number,
      connect: (fd, a, l) => s.connect(fd, a, l) as number,
      shutdown: (fd, h) => s.shutdown(fd, h) as number,
      close: (fd) => s.close(fd) as number,
      recv: async (fd, buf) =>
        Number(await (s.recv(fd, buf, BigInt(buf.length), 0) as Promise<bigint>)),
      recvNow: (fd, buf) => Number(s.recv_now(fd, buf, BigInt(buf.length), MSG_DONTWAIT) as bigint),
    };
  }
  if (g.Bun) {
    const name = "bun:ffi"; // (a variable: Deno's type checker knows no bun: modules)
    const ffi = await import(name) as {
      dlopen(path: string, s: Record<string, { args: string[]; returns: string }>): {
        symbols: Record<string, (...a: unknown[]) => number>;
      };
      ptr(u: Uint8Array): unknown;
    };
    const s = ffi.dlopen("libc.so.6", {
      socket: { args: ["i32", "i32", "i32"], returns: "i32" },
      bind: { args: ["i32", "ptr", "u32"], returns: "i32" },
      connect: { args: ["i32", "ptr", "u32"], returns: "i32" },
      shutdown: { args: ["i32", "i32"], returns: "i32" },
      close: { args: ["i32"], returns: "i32" },
      recv: { args: ["i32", "ptr", "u64", "i32"], returns: "i64" },
    }).symbols;
    return {
      socket: (d, t, p) => s.socket(d, t, p),
      bind: (fd, a, l) => s.bind(fd, ffi.ptr(a), l),
      connect: (fd, a, l) => s.connect(fd, ffi.ptr(a), l),
      shutdown: (fd, h) => s.shutdown(fd, h),
      close: (fd) => s.close(fd),
      recvNow: (fd, buf) => Number(s.recv(fd, ffi.ptr(buf), buf.length, MSG_DONTWAIT)),
      recv: (fd, buf) =>
        new Promise((resolve, reject) =>
          fsRead(fd, buf, 0, buf.length, null, (e, n) => e ? reject(e) : resolve(n))
        ),
    };
  }
  throw new Error("a Unix datagram socket needs Deno or Bun");
}

/** `sockaddr_un` for `path`, and its length. Throws when the path is too long. */
function address(path: string): { addr: Uint8Array; len: number } {
  const bytes = Buffer.from(path, "utf8");
  if (bytes.length >= SUN_PATH_MAX) {
    throw new Error(
      `Socket path "${path}" is ${bytes.length} bytes; Unix socket paths are limited to 107`,
    );
  }
  const addr = new Uint8Array(2 + SUN_PATH_MAX);
  addr[0] = AF_UNIX; // sa_family, little-endian
  addr.set(bytes, 2);
  return { addr, len: 2 + bytes.length + 1 };
}

/** A bound Unix datagram socket. */
export class UnixDatagramSocket {
  readonly path: string;
  readonly #libc: Libc;
  readonly #fd: number;
  #closed = false;
  #reading: Promise<number> | null = null;

  private constructor(path: string, lib: Libc, fd: number) {
    this.path = path;
    this.#libc = lib;
    this.#fd = fd;
  }

  /**
   * Whether a process receives on the datagram socket at `path` (a connect succeeds), as
   * opposed to a socket file left behind by one that is gone.
   */
  static async inUse(path: string): Promise<boolean> {
    const lib = await libc();
    const { addr, len } = address(path);
    const fd = lib.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    try {
      return lib.connect(fd, addr, len) === 0;
    } finally {
      lib.close(fd);
    }
  }

  /** Binds `path` (which must not exist). Throws an Error naming the path when it cannot. */
  static async bind(path: string): Promise<UnixDatagramSocket> {
    const { addr, len } = address(path);
    const lib = await libc();
    const fd = lib.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new Error(`Cannot create a Unix datagram socket for "${path}"`);
    if (lib.bind(fd, addr, len) !== 0) {
      lib.close(fd);
      throw new Error(
        `Cannot bind the Unix datagram socket "${path}" (does its directory exist, and is the path free?)`,
      );
    }
    return new UnixDatagramSocket(path, lib, fd);
  }

  /**
   * The next datagram, copied into `buf`: its length (a datagram longer than `buf` is cut to
   * `buf.length`), or null once the socket is closed. Throws when the system call fails.
   */
  async receive(buf: Buffer): Promise<number | null> {
    if (this.#closed) return null;
    // What already waits is taken at once, without a trip to another thread; only an empty
    // queue waits off the event loop.
    const ready = this.#libc.recvNow(this.#fd, buf);
    if (ready >= 0) return ready;
    this.#reading = this.#libc.recv(this.#fd, buf);
    const n = await this.#reading.finally(() => (this.#reading = null));
    // A datagram that came as the socket closed is still handed on; the shutdown's 0 is not.
    if (n > 0) return n;
    if (this.#closed) return null;
    if (n < 0) throw new Error(`receiving on the Unix datagram socket "${this.path}" failed`);
    return 0; // an empty datagram
  }

  /**
   * Stops receiving: a `receive()` in progress resolves with null, or with a datagram that came
   * meanwhile. The path is not removed.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#libc.shutdown(this.#fd, SHUT_RDWR);
    // Closed once the read in progress has returned (closing under it could hand its
    // descriptor number to a file opened meanwhile, which the read would then consume).
    const fd = this.#fd;
    void (this.#reading ?? Promise.resolve(0)).catch(() => 0).then(() => this.#libc.close(fd));
  }
}

/**
 * The memory of each Produce request freed as soon as the broker has answered it, instead of
 * whenever the collector gets to it.
 *
 * The client library joins each request into one new buffer (its header, then the record
 * batches `produce.ts` encoded) and keeps that buffer until the answer comes. A drain sends a
 * request of about 0.6 MB every few milliseconds, so these buffers were garbage faster than
 * the collector took them back: freeing each one at its answer took the executable's peak while
 * delivering 1M records 10-25 MiB lower (docs/benchmarks.md).
 *
 * The library writes each request with one `write` on the connection's socket (its public
 * `socket`), so the writes on a socket are watched (a wrapper that only looks) and each whole
 * Produce request is noted in order. Kafka answers the requests of a connection in the order
 * they were sent, so once `n` Produce answers have come on a socket, its first `n` Produce
 * requests are answered, whatever order their senders see them in: each answer frees the oldest
 * noted request. A request is freed only if its buffer is its own (never a view of memory used
 * for anything else), and only by detaching it (`ArrayBuffer.prototype.transfer(0)`).
 *
 * (By TCP's order alone, an answer to a connection's `n`th request means its first `n` were
 * wholly handed to the kernel, so the count would stay safe even if answers came out of order.)
 * That each request is one `write`, and that the library reads no request after its answer,
 * holds for @platformatic/kafka 2.12.1 (pinned in package.json and deno.json): read
 * `dist/network/connection.js` again before moving to another version.
 *
 * Freeing a request before its answer could send garbage, so anything unexpected stops the
 * freeing on that socket for good, leaving its buffers to the collector: a write that is not
 * one whole request, a request that fails without an answer (a lost connection, a timeout), an
 * answer with no request noted, or too many requests unanswered.
 *
 * @module
 */

import { freeBuffer, ownsBuffer } from "../../binary/free.ts";

/** Smaller requests are left to the collector. */
const MIN_BYTES = 64 * 1024;
/** More Produce requests unanswered on one socket than this is not expected: freeing stops. */
const MAX_UNANSWERED = 64;

/** What is needed of a connection: the socket it writes its requests to. */
export interface WatchedConnection {
  readonly socket: { write(...args: never[]): boolean } | null | undefined;
}

/** One socket's Produce requests, oldest first; `off` once anything unexpected was seen. */
export class SocketRequests {
  /** Each request's bytes, or null when it is not to be freed (small, or not its own buffer). */
  readonly written: Array<Uint8Array | null> = [];
  off = false;

  constructor(readonly owner: AnsweredRequests) {}

  /** Notes what the library writes: see the module doc. */
  note(chunk: unknown): void {
    if (this.off) return;
    // The size prefix (int32, big-endian) counts the bytes after it; then the API key (int16).
    if (
      !(chunk instanceof Uint8Array) || chunk.length < 8 ||
      ((chunk[0] << 24) | (chunk[1] << 16) | (chunk[2] << 8) | chunk[3]) !== chunk.length - 4
    ) {
      return this.#unexpected("a write that is not one whole request");
    }
    if (chunk[4] !== 0 || chunk[5] !== 0) return; // not Produce (metadata, ApiVersions, ...)
    if (this.written.length >= MAX_UNANSWERED) {
      return this.#unexpected(`over ${MAX_UNANSWERED} Produce requests unanswered`);
    }
    this.written.push(chunk.length >= MIN_BYTES && ownsBuffer(chunk) ? chunk : null);
  }

  /** One Produce request on this socket was answered: frees the oldest one noted. */
  answered(): void {
    if (this.off) return;
    const oldest = this.written.shift();
    if (oldest === undefined) return this.#unexpected("an answer to a request never noted");
    if (oldest !== null && freeBuffer(oldest)) this.owner.freed++;
  }

  /**
   * A request on this socket failed without an answer (a lost connection, a timeout): nothing
   * more is freed here. Expected in an outage, so not reported.
   */
  stop(): void {
    this.off = true;
    this.written.length = 0;
  }

  /**
   * Something the library is not known to do was seen: nothing more is freed here, and the
   * owner's `onUnexpected` hears why (the library may have changed; see the module doc).
   */
  #unexpected(why: string): void {
    this.stop();
    // (Called inside the library's write: whatever the listener does must not break it.)
    try {
      this.owner.onUnexpected?.(why);
    } catch {
      // a logger that throws: nothing to do
    }
  }
}

/** See the module doc; one per client. */
export class AnsweredRequests {
  readonly #sockets = new WeakMap<object, SocketRequests>();
  /** Requests freed at their answer, since the start. */
  freed = 0;

  /**
   * @param onUnexpected hears why freeing stopped on a socket, when it stopped for something the
   *   library is not known to do (not for a failed request)
   */
  constructor(readonly onUnexpected?: (why: string) => void) {}

  /**
   * Watches `connection`'s socket (once per socket); returns its requests, for the answer (or
   * the failure) of the request about to be sent on it. Null when it has no socket.
   */
  watch(connection: WatchedConnection): SocketRequests | null {
    const socket = connection.socket;
    if (!socket) return null;
    let requests = this.#sockets.get(socket);
    if (requests === undefined) {
      const r = requests = new SocketRequests(this);
      this.#sockets.set(socket, r);
      const write = socket.write as (...args: unknown[]) => boolean;
      (socket as { write: unknown }).write = function (this: unknown, ...args: unknown[]) {
        r.note(args[0]);
        return write.apply(this, args);
      };
    }
    return requests;
  }
}

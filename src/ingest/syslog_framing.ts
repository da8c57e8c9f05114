/**
 * Syslog over TCP, split into messages (RFC 6587): octet counting (`LEN SP MSG`) or
 * non-transparent framing (each message ends with LF). A connection's first frame decides
 * which it uses, as the RFC has a sender keep one method per session: digits then a space
 * start octet counting, anything else lines. So a line that begins with a number
 * (`5 errors found`) on a connection of lines is a line, not a count. On a connection of
 * counted frames, a frame that does not start with a count is taken as a line.
 *
 * The unfinished frame is kept as the chunks that hold it, joined once it is complete: a large
 * message dribbled in small pieces costs linear time, and never more than the limit in memory.
 *
 * @module
 */

import { Buffer } from "node:buffer";

const LF = 10;
const SP = 32;

/** What a {@link SyslogFramer} finds. */
export interface FramerHandlers {
  /** A whole message (without its count or LF). A view: copy it to keep it past the call. */
  message(frame: Buffer): void;
  /** A message longer than the limit: skipped (its length so far, for the log). */
  tooLong(bytes: number): void;
}

/** See the module doc. */
export class SyslogFramer {
  readonly #max: number;
  readonly #on: FramerHandlers;
  #mode: "unknown" | "octet" | "lf" = "unknown";
  /** The unfinished frame's chunks, and their total length. */
  #parts: Buffer[] = [];
  #held = 0;
  /** The unfinished frame is a line (else a count, or a counted frame). */
  #holdingLine = false;
  /** Bytes the unfinished counted frame needs in all (count and message), or -1: not known yet. */
  #need = -1;
  /** Bytes of an over-long counted frame still to skip. */
  #skip = 0;
  /** Skipping an over-long line, up to its LF. */
  #skipLine = false;

  constructor(maxBytes: number, on: FramerHandlers) {
    this.#max = maxBytes;
    this.#on = on;
  }

  /** Bytes held for an unfinished frame. */
  get pendingBytes(): number {
    return this.#held;
  }

  /** Takes the next bytes of the stream. */
  push(chunk: Buffer): void {
    if (this.#skip > 0) {
      const n = Math.min(this.#skip, chunk.length);
      this.#skip -= n;
      chunk = chunk.subarray(n);
    }
    if (this.#skipLine && chunk.length > 0) {
      const lf = chunk.indexOf(LF);
      if (lf < 0) return;
      this.#skipLine = false;
      chunk = chunk.subarray(lf + 1);
    }
    if (chunk.length === 0) return;
    if (this.#held > 0) {
      const total = this.#held + chunk.length;
      if (this.#holdingLine) {
        if (chunk.indexOf(LF) < 0) {
          if (total > this.#max) {
            this.#on.tooLong(total);
            this.#clear();
            this.#skipLine = true;
          } else this.#hold(chunk, true);
          return;
        }
      } else if (this.#need >= 0 && total < this.#need) {
        this.#hold(chunk, false);
        return;
      }
      const parts = this.#parts;
      parts.push(chunk);
      this.#clear();
      chunk = Buffer.concat(parts, total);
    }
    this.#frames(chunk);
  }

  /**
   * The sender closed its side: a last line without its LF is a message. Returns true when an
   * unfinished counted frame was dropped.
   */
  end(): boolean {
    if (this.#held > 0 && this.#holdingLine) {
      const last = Buffer.concat(this.#parts, this.#held);
      this.#clear();
      this.#on.message(last);
      return false;
    }
    return this.discard();
  }

  /** Drops what is held. Returns true when there was an unfinished frame. */
  discard(): boolean {
    const had = this.#held > 0;
    this.#clear();
    this.#skip = 0;
    this.#skipLine = false;
    return had;
  }

  #clear(): void {
    this.#parts = [];
    this.#held = 0;
    this.#need = -1;
  }

  #hold(b: Buffer, line: boolean): void {
    // (A small piece is copied: a view would keep its whole chunk alive.)
    this.#parts.push(b.length < 4096 ? Buffer.from(b) : b);
    this.#held += b.length;
    this.#holdingLine = line;
  }

  #frames(buf: Buffer): void {
    const max = this.#max;
    let at = 0;
    while (at < buf.length) {
      const c = buf[at];
      if (c === LF || c === 13 || c === 0) {
        at++; // empty frames, stray separators
        continue;
      }
      if (c >= 49 && c <= 57 && this.#mode !== "lf") {
        let len = 0;
        let i = at;
        while (i < buf.length && i - at < 10 && buf[i] >= 48 && buf[i] <= 57) {
          len = len * 10 + buf[i] - 48;
          i++;
        }
        if (i === buf.length && i - at < 10) {
          this.#hold(buf.subarray(at), false); // the count is not complete yet
          return;
        }
        if (buf[i] === SP) {
          this.#mode = "octet";
          const start = i + 1;
          const have = buf.length - start;
          if (len > max) {
            this.#on.tooLong(len);
            if (have >= len) {
              at = start + len;
              continue;
            }
            this.#skip = len - have;
            return;
          }
          if (have < len) {
            this.#hold(buf.subarray(at), false);
            this.#need = start - at + len;
            return;
          }
          this.#on.message(buf.subarray(start, start + len));
          at = start + len;
          continue;
        }
      }
      if (this.#mode === "unknown") this.#mode = "lf";
      const lf = buf.indexOf(LF, at);
      if (lf < 0) {
        const rest = buf.length - at;
        if (rest > max) {
          this.#on.tooLong(rest);
          this.#skipLine = true;
        } else this.#hold(buf.subarray(at), true);
        return;
      }
      if (lf - at > max) this.#on.tooLong(lf - at);
      else this.#on.message(buf.subarray(at, lf));
      at = lf + 1;
    }
  }
}

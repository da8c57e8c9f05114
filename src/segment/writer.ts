/**
 * Appending frames to one segment file. A failed append (ENOSPC, EIO, a short write) is cut
 * back off the file, so the file always ends at a frame boundary and records stored before
 * the failure stay readable.
 *
 * @module
 */

import type { FileHandle, FileSystem } from "../fs/types.ts";
import { encodeSegmentHeader, SEGMENT_HEADER_SIZE, segmentFileName } from "./format.ts";

/** An open segment being appended to. */
export class SegmentFile {
  readonly name: string;
  readonly path: string;
  readonly firstSeq: number;
  /** Bytes in the file, all of them whole frames. */
  size = SEGMENT_HEADER_SIZE;
  /** Size covered by the last fsync. */
  syncedSize = 0;
  /** Frames appended. */
  frames = 0;
  #fh: FileHandle;

  private constructor(dir: string, name: string, firstSeq: number, fh: FileHandle) {
    this.name = name;
    this.path = `${dir}/${name}`;
    this.firstSeq = firstSeq;
    this.#fh = fh;
  }

  /**
   * Creates `dir/<name>` with its header. With `sync`, the file and the directory entry are
   * fsynced before this resolves. A file that cannot be completed is removed.
   */
  static async create(
    fs: FileSystem,
    dir: string,
    firstSeq: number,
    sync: boolean,
    now = Date.now(),
  ): Promise<SegmentFile> {
    let name = segmentFileName(firstSeq, now);
    let fh: FileHandle;
    for (let bump = 1;; bump++) {
      try {
        fh = await fs.open(`${dir}/${name}`, "create");
        break;
      } catch (e) {
        if ((e as { code?: string }).code !== "EEXIST" || bump > 1000) throw e;
        name = segmentFileName(firstSeq, now + bump);
      }
    }
    const seg = new SegmentFile(dir, name, firstSeq, fh);
    try {
      await fh.append(encodeSegmentHeader(firstSeq));
      if (sync) {
        await fh.sync();
        seg.syncedSize = SEGMENT_HEADER_SIZE;
        await fs.syncDir(dir);
      }
    } catch (e) {
      await fh.close().catch(() => {});
      await fs.remove(seg.path).catch(() => {});
      throw e;
    }
    return seg;
  }

  /**
   * Appends one frame, and with `sync` fsyncs it. On failure the frame is truncated away
   * and the error is rethrown, so records reported as failed are never delivered. After a
   * failed fsync, or a truncation that failed too, `broken` is set: the caller must stop
   * appending to this file (seal it and start another), since the kernel may have dropped
   * the pages that did not reach the disk.
   */
  async append(frame: Uint8Array, sync = false): Promise<void> {
    await this.#append(frame, sync);
    this.frames++;
  }

  /**
   * Appends the footer that ends a sealed segment (see `format.ts`); the caller fsyncs. On
   * failure it is cut off again, as a frame would be, and the error is rethrown.
   */
  appendFooter(footer: Uint8Array): Promise<void> {
    return this.#append(footer, false);
  }

  async #append(frame: Uint8Array, sync: boolean): Promise<void> {
    const before = this.size;
    try {
      await this.#fh.append(frame);
      this.size = before + frame.length;
      if (sync) await this.sync();
    } catch (e) {
      try {
        await this.#fh.truncate(before);
        this.size = before;
      } catch {
        this.broken = true;
      }
      throw e;
    }
  }

  /**
   * Set after a failed fsync or a failed truncation: append no more to this file. After a
   * failed fsync the kernel may have dropped the pages that did not reach the disk, so what
   * the file holds past `syncedSize` is no longer known to be durable.
   */
  broken = false;

  /** fsyncs what was appended; a failure marks the file `broken` and is rethrown. */
  async sync(): Promise<void> {
    if (this.syncedSize === this.size) return;
    const size = this.size;
    try {
      await this.#fh.sync();
    } catch (e) {
      this.broken = true;
      throw e;
    }
    // (An fsync that ran beside this one may have covered more.)
    this.syncedSize = Math.max(this.syncedSize, size);
  }

  close(): Promise<void> {
    return this.#fh.close();
  }
}

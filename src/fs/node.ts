/**
 * {@link FileSystem} on `node:fs/promises`, which Deno, Bun and Node all implement.
 *
 * Everything it creates is owner-only whatever the umask: directories 0700 ({@link DIR_MODE}),
 * files 0600 ({@link FILE_MODE}). Records are the users' data, and the lock and checkpoints
 * decide what is sent: no other user needs to read them, and none may change them. What
 * exists already keeps its mode.
 *
 * @module
 */

import { constants, promises as fsp } from "node:fs";
import { dirname, resolve } from "node:path";
import process from "node:process";
import { LockedError } from "../errors.ts";
import { type LockContent, lockHolderRuns, lockLine, parseLock } from "../process.ts";
import type { DirLock, FileHandle, FileSystem } from "./types.ts";
import { LOCK_FILE } from "../layout.ts";

/** Mode of the directories the adapter creates: the owner's alone. */
export const DIR_MODE = 0o700;

/** Mode of the files the adapter creates: the owner may read and write them, no one else. */
export const FILE_MODE = 0o600;

class NodeFileHandle implements FileHandle {
  #fh: fsp.FileHandle;
  #size: number;
  constructor(fh: fsp.FileHandle, size: number) {
    this.#fh = fh;
    this.#size = size;
  }
  async append(data: Uint8Array): Promise<void> {
    await this.writeAt(data, this.#size);
  }
  async writeAt(data: Uint8Array, position: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.#fh.write(
        data,
        done,
        data.length - done,
        position + done,
      );
      if (bytesWritten <= 0) {
        throw Object.assign(new Error("write returned 0 bytes"), { code: "EIO" });
      }
      done += bytesWritten;
    }
    this.#size = Math.max(this.#size, position + done);
  }
  async read(into: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    const { bytesRead } = await this.#fh.read(into, offset, length, position);
    return bytesRead;
  }
  sync(): Promise<void> {
    return this.#fh.datasync();
  }
  async truncate(size: number): Promise<void> {
    await this.#fh.truncate(size);
    this.#size = size;
  }
  async size(): Promise<number> {
    return (await this.#fh.stat()).size;
  }
  close(): Promise<void> {
    return this.#fh.close();
  }
}

/** Directories this process holds the lock of (a pid in LOCK equal to ours is otherwise stale). */
const heldLocks = new Set<string>();

/**
 * The real filesystem.
 *
 * @example Pass it explicitly
 * ```ts
 * import { NodeFileSystem } from "./mod.ts";
 * const fs = new NodeFileSystem();
 * console.log(await fs.list("."));
 * ```
 */
export class NodeFileSystem implements FileSystem {
  async mkdirp(path: string): Promise<void> {
    // The umask only takes bits away, but a strict one could take the owner's: set the mode
    // of each directory made here (the first one mkdir names, down to `path`) exactly.
    const made = await fsp.mkdir(path, { recursive: true, mode: DIR_MODE });
    if (made === undefined) return;
    const first = resolve(made); // Deno answers with an absolute path, Bun as given
    for (let dir = resolve(path); dir.length >= first.length; dir = dirname(dir)) {
      await fsp.chmod(dir, DIR_MODE);
      if (dir === first) break;
    }
  }
  list(dir: string): Promise<string[]> {
    return fsp.readdir(dir);
  }
  async open(path: string, mode: "create" | "append" | "read"): Promise<FileHandle> {
    const flags = mode === "create"
      ? constants.O_CREAT | constants.O_EXCL | constants.O_RDWR
      : mode === "append"
      ? constants.O_RDWR
      : constants.O_RDONLY;
    const fh = await fsp.open(path, flags, FILE_MODE);
    if (mode !== "create") return new NodeFileHandle(fh, (await fh.stat()).size);
    try {
      await fh.chmod(FILE_MODE); // exactly, whatever the umask; the file is new (O_EXCL)
    } catch (e) {
      await fh.close();
      throw e;
    }
    return new NodeFileHandle(fh, 0);
  }
  async readFile(path: string): Promise<Uint8Array | null> {
    try {
      return new Uint8Array(await fsp.readFile(path));
    } catch (e) {
      if ((e as { code?: string }).code === "ENOENT") return null;
      throw e;
    }
  }
  async stat(path: string): Promise<{ size: number } | null> {
    try {
      return { size: (await fsp.stat(path)).size };
    } catch (e) {
      if ((e as { code?: string }).code === "ENOENT") return null;
      throw e;
    }
  }
  rename(from: string, to: string): Promise<void> {
    return fsp.rename(from, to);
  }
  async remove(path: string): Promise<void> {
    await fsp.rm(path, { force: true });
  }
  async syncDir(dir: string): Promise<void> {
    const fh = await fsp.open(dir, constants.O_RDONLY);
    try {
      await fh.sync();
    } catch (e) {
      // Some filesystems refuse fsync on a directory; the rename is still atomic there.
      const code = (e as { code?: string }).code;
      if (code !== "EINVAL" && code !== "EISDIR" && code !== "EBADF") throw e;
    } finally {
      await fh.close();
    }
  }
  async lock(dir: string): Promise<DirLock> {
    const path = `${dir}/${LOCK_FILE}`;
    for (let attempt = 0; attempt < 5; attempt++) {
      const fh = await fsp.open(path, "wx", FILE_MODE).catch((e) => {
        if ((e as { code?: string }).code !== "EEXIST") throw e;
        return null;
      });
      if (fh) {
        let mine = false;
        try {
          await fh.chmod(FILE_MODE);
          await fh.writeFile(lockLine());
          // Another process may have found this file empty, judged it stale and replaced it
          // while it was being written: it is ours only if the path still names it.
          mine = (await fsp.stat(path).catch(() => null))?.ino === (await fh.stat()).ino;
        } finally {
          await fh.close();
        }
        if (!mine) continue;
        heldLocks.add(path);
        return {
          release: async () => {
            heldLocks.delete(path);
            const holder = await readLock(path);
            if (holder?.complete && holder.pid === process.pid) await fsp.rm(path, { force: true });
          },
        };
      }
      let holder = await readLock(path);
      if (holder !== null && !holder.complete) {
        // Part of a line: a holder writing it right now, or what a power cut left of it.
        // A live holder completes its line at once; one that stays cut short is stale.
        await new Promise((r) => setTimeout(r, LOCK_SETTLE_MS));
        holder = await readLock(path);
      }
      if (holder === null) continue; // removed meanwhile: try to create it again
      if (holder.complete) {
        const ours = holder.pid === process.pid;
        if (ours && heldLocks.has(path)) throw new LockedError(dir, holder.pid);
        if (!ours && lockHolderRuns(holder)) throw new LockedError(dir, holder.pid);
      }
      // Stale: the holder is gone, ran in an earlier boot, the line was cut short, or it
      // names our own pid from an earlier life (pid reuse, e.g. pid 1 in a container).
      // Remove and try again; of two processes racing here, the exclusive create and the
      // check above let only one win.
      await fsp.rm(path, { force: true });
    }
    const last = await readLock(path);
    throw new LockedError(dir, last?.complete ? last.pid : -1);
  }
}

/** How long a `LOCK` cut short may stay so before it is taken for stale. */
const LOCK_SETTLE_MS = 200;

/** A `LOCK` file's content, or null when there is none. */
async function readLock(path: string): Promise<LockContent | null> {
  try {
    return parseLock(await fsp.readFile(path, "utf8"));
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") return null;
    return { complete: false };
  }
}

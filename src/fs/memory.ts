/**
 * An in-memory {@link FileSystem} for tests, which models what a real disk keeps after a
 * crash and injects the failures a real disk produces on demand:
 *
 * - `crash()` returns the filesystem as a machine would find it after power loss: file data
 *   not covered by an fsync is gone (or, with `torn`, a random part of it survives), and
 *   creates, renames and removes not covered by a directory fsync are undone.
 *   `processCrash()` returns it as a SIGKILL leaves it: everything written survives.
 * - `crashAfter(n)`: the n-th mutating operation from now and every later one throw, as if
 *   the process died there.
 * - `capacity`: appends past it write what fits (a short write) and then fail with ENOSPC.
 * - `failNext(op, code)`: the next `op` fails with that errno code (EIO, ENOSPC, ...).
 *
 * @module
 */

import { LockedError } from "../errors.ts";
import type { DirLock, FileHandle, FileSystem } from "./types.ts";

/** The operations a fault can be attached to. */
export type MemoryOp =
  | "append"
  | "sync"
  | "truncate"
  | "open"
  | "rename"
  | "remove"
  | "syncDir"
  | "read";

class MemFile {
  data = new Uint8Array(256);
  length = 0;
  synced: Uint8Array = new Uint8Array(0);
  ensure(n: number): void {
    if (n <= this.data.length) return;
    let cap = this.data.length * 2;
    while (cap < n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.data.subarray(0, this.length));
    this.data = next;
  }
  bytes(): Uint8Array {
    return this.data.slice(0, this.length);
  }
}

function errno(code: string, op: string, path: string): Error {
  return Object.assign(new Error(`${code}: ${op} "${path}"`), { code });
}

/** Runs `fn` and hands back its result, or its exception, as a promise. */
function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (e) {
    return Promise.reject(e);
  }
}

/** Thrown by every operation after `crashAfter` fires: the "process" is dead. */
export class SimulatedCrash extends Error {
  constructor() {
    super("simulated crash");
    this.name = "SimulatedCrash";
  }
}

/** See the module doc. */
export class MemoryFileSystem implements FileSystem {
  /** Current namespace: path → file. */
  #files = new Map<string, MemFile>();
  /** Namespace as of the last directory fsync of each path's directory. */
  #durable = new Map<string, MemFile>();
  #dirs = new Set<string>(["", "/"]);
  #faults: Array<{ op: MemoryOp; code: string; path?: string }> = [];
  #crashIn = -1;
  #crashed = false;
  #locks = new Set<string>();
  /** Total bytes of file data allowed; appends past it fail with ENOSPC after a short write. */
  capacity = Infinity;
  /** Mutating operations performed so far (useful to pick crash points). */
  ops = 0;
  /** Extra time some operations take, in ms (a slow disk): `{ syncDir: 5 }`. */
  latencyMs: Partial<Record<MemoryOp, number>> = {};

  /**
   * `fn` as a promise, after the latency set for `op`, if any. (`path`, the file or
   * directory it acts on, is for tests that replace this to hold some operations.)
   */
  _slow<T>(op: MemoryOp, fn: () => T, _path?: string): Promise<T> {
    const ms = this.latencyMs[op];
    if (!ms) return settle(fn);
    return new Promise((r) => setTimeout(r, ms)).then(() => settle(fn));
  }

  /** The next operation `op` (on a path containing `path`, when given) fails with `code`. */
  failNext(op: MemoryOp, code: string, path?: string): void {
    this.#faults.push({ op, code, path });
  }

  /** The n-th mutating operation from now (1 = the next) and all after it throw SimulatedCrash. */
  crashAfter(n: number): void {
    this.#crashIn = n;
  }

  /** True once a `crashAfter` point was reached. */
  get crashed(): boolean {
    return this.#crashed;
  }

  /** Total bytes stored in all files. */
  usedBytes(): number {
    let n = 0;
    for (const f of new Set(this.#files.values())) n += f.length;
    return n;
  }

  /**
   * A new filesystem holding what survives a power loss now. With `torn`, each file keeps a
   * random prefix of its unsynced tail (`random` returns [0, 1)), as a disk may. With
   * `holes`, it keeps a random part of that tail with a run of zeros inside it: the pages of
   * the last writes reached the disk out of order, and the file's size got there too.
   */
  crash(
    options: { torn?: boolean; holes?: boolean; random?: () => number } = {},
  ): MemoryFileSystem {
    const random = options.random ?? Math.random;
    const next = new MemoryFileSystem();
    next.#dirs = new Set(this.#dirs);
    const copies = new Map<MemFile, MemFile>();
    for (const [path, file] of this.#durable) {
      let copy = copies.get(file);
      if (!copy) {
        copy = new MemFile();
        let keep = file.synced;
        const from = file.synced.length;
        if ((options.torn || options.holes) && file.length > from) {
          const current = file.bytes();
          const prefixOk = current.subarray(0, from).every((b, i) => b === file.synced[i]);
          if (prefixOk) {
            const extra = Math.floor(random() * (file.length - from + 1));
            keep = current.slice(0, from + extra);
            if (options.holes && extra > 0) {
              const start = from + Math.floor(random() * extra);
              keep.fill(0, start, start + 1 + Math.floor(random() * (from + extra - start)));
            }
          }
        }
        copy.ensure(keep.length);
        copy.data.set(keep);
        copy.length = keep.length;
        copy.synced = keep.slice();
        copies.set(file, copy);
      }
      next.#files.set(path, copy);
      next.#durable.set(path, copy);
    }
    return next;
  }

  /**
   * A new filesystem holding what survives a crash of the process alone (SIGKILL): every
   * completed write, synced or not, since the kernel still has it.
   */
  processCrash(): MemoryFileSystem {
    const next = new MemoryFileSystem();
    next.#dirs = new Set(this.#dirs);
    for (const [path, file] of this.#files) {
      const copy = new MemFile();
      const bytes = file.bytes();
      copy.ensure(bytes.length);
      copy.data.set(bytes);
      copy.length = bytes.length;
      copy.synced = bytes.slice();
      next.#files.set(path, copy);
      next.#durable.set(path, copy);
    }
    return next;
  }

  /** A copy of a file's current bytes, or null (for assertions in tests). */
  peek(path: string): Uint8Array | null {
    return this.#files.get(path)?.bytes() ?? null;
  }

  /** Overwrites bytes of a file in place and marks them durable (bit rot, for tests). */
  corrupt(path: string, at: number, bytes: Uint8Array): void {
    const f = this.#files.get(path);
    if (!f) throw new Error(`no file ${path}`);
    f.data.set(bytes, at);
    f.synced = f.bytes();
  }

  #step(op: MemoryOp, path: string, mutating: boolean): void {
    if (this.#crashed) throw new SimulatedCrash();
    if (mutating) {
      this.ops++;
      if (this.#crashIn > 0 && --this.#crashIn === 0) {
        this.#crashed = true;
        throw new SimulatedCrash();
      }
    }
    const i = this.#faults.findIndex((f) =>
      f.op === op && (f.path === undefined || path.includes(f.path))
    );
    if (i >= 0) {
      const [f] = this.#faults.splice(i, 1);
      throw errno(f.code, op, path);
    }
  }

  #file(path: string, op: string): MemFile {
    const f = this.#files.get(path);
    if (!f) throw errno("ENOENT", op, path);
    return f;
  }

  #dirOf(path: string): string {
    const i = path.lastIndexOf("/");
    return i <= 0 ? "/" : path.slice(0, i);
  }

  mkdirp(path: string): Promise<void> {
    return settle(() => {
      this.#step("open", path, false);
      const parts = path.split("/");
      for (let i = 1; i <= parts.length; i++) this.#dirs.add(parts.slice(0, i).join("/") || "/");
    });
  }

  list(dir: string): Promise<string[]> {
    return settle(() => this.#list(dir));
  }

  #list(dir: string): string[] {
    this.#step("read", dir, false);
    if (!this.#dirs.has(dir)) throw errno("ENOENT", "list", dir);
    const prefix = dir.endsWith("/") ? dir : dir + "/";
    const names = new Set<string>();
    for (const p of this.#files.keys()) {
      if (p.startsWith(prefix) && !p.slice(prefix.length).includes("/")) {
        names.add(p.slice(prefix.length));
      }
    }
    for (const d of this.#dirs) {
      if (
        d.startsWith(prefix) && d.length > prefix.length && !d.slice(prefix.length).includes("/")
      ) {
        names.add(d.slice(prefix.length));
      }
    }
    return [...names].sort();
  }

  open(path: string, mode: "create" | "append" | "read"): Promise<FileHandle> {
    return settle(() => {
      this.#step("open", path, mode === "create");
      if (!this.#dirs.has(this.#dirOf(path))) throw errno("ENOENT", "open", path);
      let f = this.#files.get(path);
      if (mode === "create") {
        if (f) throw errno("EEXIST", "open", path);
        f = new MemFile();
        this.#files.set(path, f);
      } else if (!f) {
        throw errno("ENOENT", "open", path);
      }
      return new MemHandle(this, path, f);
    });
  }

  readFile(path: string): Promise<Uint8Array | null> {
    return settle(() => {
      this.#step("read", path, false);
      return this.#files.get(path)?.bytes() ?? null;
    });
  }

  stat(path: string): Promise<{ size: number } | null> {
    const f = this.#files.get(path);
    return Promise.resolve(f ? { size: f.length } : null);
  }

  rename(from: string, to: string): Promise<void> {
    return this._slow("rename", () => {
      this.#step("rename", from, true);
      const f = this.#file(from, "rename");
      this.#files.delete(from);
      this.#files.set(to, f);
    });
  }

  remove(path: string): Promise<void> {
    return settle(() => {
      this.#step("remove", path, true);
      this.#files.delete(path);
    });
  }

  syncDir(dir: string): Promise<void> {
    return this._slow("syncDir", () => {
      this.#step("syncDir", dir, true);
      const prefix = dir.endsWith("/") ? dir : dir + "/";
      const inDir = (p: string) => p.startsWith(prefix) && !p.slice(prefix.length).includes("/");
      for (const p of [...this.#durable.keys()]) {
        if (inDir(p) && !this.#files.has(p)) this.#durable.delete(p);
      }
      for (const [p, f] of this.#files) if (inDir(p)) this.#durable.set(p, f);
    }, dir);
  }

  lock(dir: string): Promise<DirLock> {
    if (this.#locks.has(dir)) return Promise.reject(new LockedError(dir, 0));
    this.#locks.add(dir);
    return Promise.resolve({
      release: () => {
        this.#locks.delete(dir);
        return Promise.resolve();
      },
    });
  }

  /** @internal used by MemHandle */
  _step(op: MemoryOp, path: string, mutating: boolean): void {
    this.#step(op, path, mutating);
  }
}

class MemHandle implements FileHandle {
  #fs: MemoryFileSystem;
  #path: string;
  #f: MemFile;
  #closed = false;
  constructor(fs: MemoryFileSystem, path: string, f: MemFile) {
    this.#fs = fs;
    this.#path = path;
    this.#f = f;
  }
  #check(): void {
    if (this.#closed) throw errno("EBADF", "use", this.#path);
  }
  append(data: Uint8Array): Promise<void> {
    return settle(() => {
      this.#check();
      this.#fs._step("append", this.#path, true);
      const room = this.#fs.capacity - this.#fs.usedBytes();
      const n = Math.max(0, Math.min(data.length, room));
      this.#f.ensure(this.#f.length + n);
      this.#f.data.set(data.subarray(0, n), this.#f.length);
      this.#f.length += n;
      if (n < data.length) throw errno("ENOSPC", "append", this.#path);
    });
  }
  writeAt(data: Uint8Array, position: number): Promise<void> {
    return settle(() => {
      this.#check();
      this.#fs._step("append", this.#path, true);
      const end = position + data.length;
      const grow = Math.max(0, end - this.#f.length);
      if (grow > this.#fs.capacity - this.#fs.usedBytes()) {
        throw errno("ENOSPC", "write", this.#path);
      }
      this.#f.ensure(end);
      this.#f.data.set(data, position);
      this.#f.length = Math.max(this.#f.length, end);
    });
  }
  read(into: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return settle(() => {
      this.#check();
      this.#fs._step("read", this.#path, false);
      const n = Math.max(0, Math.min(length, this.#f.length - position));
      into.set(this.#f.data.subarray(position, position + n), offset);
      return n;
    });
  }
  sync(): Promise<void> {
    return this.#fs._slow("sync", () => {
      this.#check();
      this.#fs._step("sync", this.#path, true);
      this.#f.synced = this.#f.bytes();
    }, this.#path);
  }
  truncate(size: number): Promise<void> {
    return settle(() => {
      this.#check();
      this.#fs._step("truncate", this.#path, true);
      this.#f.length = Math.min(this.#f.length, size);
    });
  }
  size(): Promise<number> {
    return Promise.resolve(this.#f.length);
  }
  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }
}

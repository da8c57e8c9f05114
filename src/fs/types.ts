/**
 * The filesystem interface the engine talks to. The engine never imports `node:fs`: it gets
 * a {@link FileSystem} (the real one in `node.ts`, a fault-injecting one in `memory.ts`).
 * Paths are plain strings joined with "/".
 *
 * @module
 */

/**
 * An open file. Writes go to the end (append) unless a position is given.
 *
 * @example Append and make it durable
 * ```ts
 * const fh = await fs.open("/tmp/x", "create");
 * await fh.append(new TextEncoder().encode("hello\\n"));
 * await fh.sync();
 * await fh.close();
 * ```
 */
export interface FileHandle {
  /** Writes all of `data` at the end of the file; may perform several system writes. */
  append(data: Uint8Array): Promise<void>;
  /** Writes all of `data` at `position`, over what is there (S files are updated in place). */
  writeAt(data: Uint8Array, position: number): Promise<void>;
  /** Reads up to `length` bytes at `position` into `into[offset..]`; returns bytes read. */
  read(into: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /** Flushes file data to stable storage (fdatasync). */
  sync(): Promise<void>;
  /** Cuts the file to `size` bytes. */
  truncate(size: number): Promise<void>;
  /** Current size in bytes. */
  size(): Promise<number>;
  /** Closes the file. */
  close(): Promise<void>;
}

/**
 * What a held lock lets its owner do.
 *
 * @example Hold a directory
 * ```ts
 * const lock = await fs.lock("/var/lib/myapp/buffer");
 * try {
 *   // ... the directory is this process's
 * } finally {
 *   await lock.release();
 * }
 * ```
 */
export interface DirLock {
  /** Releases the lock (removes the lock file). */
  release(): Promise<void>;
}

/**
 * The operations the buffer needs, and nothing more. What an adapter creates on a real disk
 * should be the owner's alone (directories 0700, files 0600), as those of `NodeFileSystem` are.
 *
 * @example The engine on the default filesystem, explicitly
 * ```ts
 * import { MessageBufferCore, NodeFileSystem, silentLogger } from "./mod.ts";
 * const buffer = await MessageBufferCore.open({
 *   dir: "./buffer",
 *   provider,
 *   fs: new NodeFileSystem(),
 *   logger: silentLogger,
 * });
 * ```
 */
export interface FileSystem {
  /** Creates a directory and its parents (owner-only); fine if it exists, whose mode stays. */
  mkdirp(path: string): Promise<void>;
  /** Names (not paths) of the entries in a directory. */
  list(dir: string): Promise<string[]>;
  /**
   * Opens a file for appending, creating it owner-only when `create` (exclusive: fails if it
   * exists).
   */
  open(path: string, mode: "create" | "append" | "read"): Promise<FileHandle>;
  /** Whole-file read (small files: checkpoints, the lock). Null when it does not exist. */
  readFile(path: string): Promise<Uint8Array | null>;
  /** Size of a file, or null when it does not exist. */
  stat(path: string): Promise<{ size: number } | null>;
  /** Atomically replaces `to` with `from`. */
  rename(from: string, to: string): Promise<void>;
  /** Deletes a file; fine if it does not exist. */
  remove(path: string): Promise<void>;
  /** Makes creates, renames and removes in `dir` durable (fsync of the directory). */
  syncDir(dir: string): Promise<void>;
  /**
   * Takes the directory's lock, or throws LockedError naming the live holder's pid.
   * A lock left by a dead process is taken over.
   */
  lock(dir: string): Promise<DirLock>;
}

// Test helpers: a provider that records what it was sent and fails on demand, temp dirs.
// A fake provider is for engine unit tests only; delivery to Kafka is proven against a real
// broker in tests/provider/.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import v8 from "node:v8";
import vm from "node:vm";
import type { DirLock, FileHandle, FileSystem } from "../src/fs/types.ts";
import { MemoryFileSystem } from "../src/fs/memory.ts";
import { type LogLevel, MessageBuffer, type MessageBufferOptions, silentLogger } from "../mod.ts";
import type { Provider, ProviderRecord, SendResult } from "../src/provider/types.ts";

/** A copy of a delivered record. */
export interface Received {
  topic: string;
  key: string | null;
  value: Uint8Array;
  headers: Array<[string, Uint8Array]>;
  timestamp: number;
}

const dec = new TextDecoder();

/** Records every batch; can be made to fail, hang or reject records. */
export class RecordingProvider implements Provider {
  readonly name = "recording";
  readonly retryWaitMs = 1;
  received: Received[] = [];
  /** Records that `rejectIf` refused, in order (they go to dead letters). */
  rejected: Received[] = [];
  sends = 0;
  opens = 0;
  /** While true, open() and send() throw (a broker outage). */
  down = false;
  /** Per-record permanent rejection: return a reason to reject. */
  rejectIf: ((r: ProviderRecord) => string | null) | null = null;
  /** When set, send() waits for it before acknowledging. */
  gate: Promise<void> | null = null;
  /** Sends after this many never resolve (a broker that stops answering mid-stream). */
  hangAfterSends = Infinity;
  closed = false;

  open(): Promise<void> {
    this.opens++;
    if (this.down) return Promise.reject(new Error("provider down"));
    return Promise.resolve();
  }

  async send(records: readonly ProviderRecord[]): Promise<SendResult | void> {
    this.sends++;
    if (this.sends > this.hangAfterSends) await new Promise(() => {});
    if (this.gate) await this.gate;
    if (this.down) throw new Error("provider down");
    const rejected: { index: number; reason: string }[] = [];
    records.forEach((r, index) => {
      const reason = this.rejectIf?.(r) ?? null;
      if (reason) rejected.push({ index, reason });
      (reason ? this.rejected : this.received).push({
        topic: r.topic,
        key: r.key === null ? null : dec.decode(r.key),
        value: r.value.slice(),
        headers: (r.headers ?? []).map(([k, v]) => [k, v.slice()]),
        timestamp: r.timestamp,
      });
    });
    return { rejected };
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  /** Delivered values as text. */
  values(): string[] {
    return this.received.map((r) => dec.decode(r.value));
  }

  /** Rejected values as text. */
  rejectedValues(): string[] {
    return this.rejected.map((r) => dec.decode(r.value));
  }
}

/** One call the engine made on a {@link RecordingFileSystem}, and how it ended. */
export interface FsCall {
  /** `mkdirp`, `list`, `open`, `readFile`, `rename`, `remove`, `syncDir`, or a handle's `append`, `sync`, `truncate`, `read`. */
  op: string;
  /** The path (for `rename`, the source; `to` holds the target). */
  path: string;
  to?: string;
  /** Bytes handed to `append`. */
  bytes?: number;
  /** The error's code (or message) when the call failed, else null. */
  error: string | null;
}

/**
 * A {@link FileSystem} that passes every call through to another one and records it with
 * its outcome, so that a test can see which operations the engine made and whether an
 * injected fault (`MemoryFileSystem.failNext`) actually fired, not merely stayed queued.
 * Successful reads are not recorded (there are many of them).
 */
export class RecordingFileSystem implements FileSystem {
  readonly inner: FileSystem;
  calls: FsCall[] = [];

  constructor(inner: FileSystem) {
    this.inner = inner;
  }

  /** Failed calls, optionally only of `op` on a path containing `pathPart`. */
  failures(op?: string, pathPart?: string): FsCall[] {
    return this.calls.filter((c) =>
      c.error !== null && (op === undefined || c.op === op) &&
      (pathPart === undefined || c.path.includes(pathPart))
    );
  }

  /** Successful calls of `op` on a path (or rename target) containing `pathPart`. */
  successes(op: string, pathPart = ""): FsCall[] {
    return this.calls.filter((c) =>
      c.error === null && c.op === op &&
      (c.path.includes(pathPart) || (c.to ?? "").includes(pathPart))
    );
  }

  /** @internal runs one call and records it. */
  async _track<T>(call: Omit<FsCall, "error">, fn: () => Promise<T>, quiet = false): Promise<T> {
    try {
      const out = await fn();
      if (!quiet) this.calls.push({ ...call, error: null });
      return out;
    } catch (e) {
      const code = (e as { code?: unknown })?.code;
      this.calls.push({
        ...call,
        error: typeof code === "string" ? code : e instanceof Error ? e.message : String(e),
      });
      throw e;
    }
  }

  mkdirp(path: string): Promise<void> {
    return this._track({ op: "mkdirp", path }, () => this.inner.mkdirp(path));
  }
  list(dir: string): Promise<string[]> {
    return this._track({ op: "list", path: dir }, () => this.inner.list(dir), true);
  }
  async open(path: string, mode: "create" | "append" | "read"): Promise<FileHandle> {
    const fh = await this._track(
      { op: "open", path },
      () => this.inner.open(path, mode),
      mode === "read",
    );
    return new RecordingHandle(this, path, fh);
  }
  readFile(path: string): Promise<Uint8Array | null> {
    return this._track({ op: "readFile", path }, () => this.inner.readFile(path), true);
  }
  stat(path: string): Promise<{ size: number } | null> {
    return this.inner.stat(path);
  }
  rename(from: string, to: string): Promise<void> {
    return this._track({ op: "rename", path: from, to }, () => this.inner.rename(from, to));
  }
  remove(path: string): Promise<void> {
    return this._track({ op: "remove", path }, () => this.inner.remove(path));
  }
  syncDir(dir: string): Promise<void> {
    return this._track({ op: "syncDir", path: dir }, () => this.inner.syncDir(dir));
  }
  lock(dir: string): Promise<DirLock> {
    return this.inner.lock(dir);
  }
}

class RecordingHandle implements FileHandle {
  #fs: RecordingFileSystem;
  #path: string;
  #fh: FileHandle;
  constructor(fs: RecordingFileSystem, path: string, fh: FileHandle) {
    this.#fs = fs;
    this.#path = path;
    this.#fh = fh;
  }
  append(data: Uint8Array): Promise<void> {
    return this.#fs._track(
      { op: "append", path: this.#path, bytes: data.length },
      () => this.#fh.append(data),
    );
  }
  writeAt(data: Uint8Array, position: number): Promise<void> {
    return this.#fs._track(
      { op: "writeAt", path: this.#path, bytes: data.length },
      () => this.#fh.writeAt(data, position),
    );
  }
  read(into: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return this.#fs._track(
      { op: "read", path: this.#path },
      () => this.#fh.read(into, offset, length, position),
      true,
    );
  }
  sync(): Promise<void> {
    return this.#fs._track({ op: "sync", path: this.#path }, () => this.#fh.sync());
  }
  truncate(size: number): Promise<void> {
    return this.#fs._track({ op: "truncate", path: this.#path }, () => this.#fh.truncate(size));
  }
  size(): Promise<number> {
    return this.#fh.size();
  }
  close(): Promise<void> {
    return this.#fh.close();
  }
}

/** A logger that keeps every line (`LEVEL message {fields as JSON}`), to check what was reported. */
export function recordingLogger(): { logger: MessageBufferOptions["logger"]; lines: string[] } {
  const lines: string[] = [];
  const at = (level: LogLevel) => (m: string, f?: Record<string, unknown>) =>
    lines.push(`${level.toUpperCase()} ${m} ${JSON.stringify(f ?? {})}`);
  return {
    lines,
    logger: { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") },
  };
}

/** A fresh temp directory, removed by the returned cleanup. */
export async function tempDir(
  prefix = "mb-test-",
): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Waits until `cond()` is true, polling; throws after `ms`. */
export async function waitFor(cond: () => boolean, ms = 10_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Options for a buffer on the in-memory filesystem at "/buf", as the crash and error-path
 * tests use it: fsync "always", small segments, small batches, fast retries.
 */
export function memoryBufferOptions(
  fs: FileSystem,
  provider: Provider,
  extra: Partial<MessageBufferOptions> = {},
): MessageBufferOptions {
  return {
    dir: "/buf",
    provider,
    fs,
    logger: silentLogger,
    fsync: "always",
    segmentMaxBytes: 2048,
    maxBufferBytes: 1 << 20,
    batchMaxRecords: 4,
    retryInitialMs: 1,
    retryMaxMs: 5,
    closeTimeoutMs: 50,
    ...extra,
  };
}

/**
 * The buffers a test file has open. `closeAll()` in `afterEach` closes what a test left open,
 * so that a failing test does not leave its directory locked.
 */
export class OpenBuffers {
  #open: MessageBuffer[] = [];

  /** Opens a buffer, to be closed by `closeAll()` unless closed first with `close()`. */
  async open(options: MessageBufferOptions): Promise<MessageBuffer> {
    return this.keep(await MessageBuffer.open(options));
  }

  /** Takes a buffer opened elsewhere into the set `closeAll()` closes. */
  keep(b: MessageBuffer): MessageBuffer {
    this.#open.push(b);
    return b;
  }

  /** Closes `b` now. */
  async close(b: MessageBuffer): Promise<void> {
    this.#open = this.#open.filter((x) => x !== b);
    await b.close();
  }

  /** Closes every buffer still open. */
  async closeAll(): Promise<void> {
    for (const b of this.#open.splice(0)) await b.close();
  }
}

/** A full garbage collection (Bun.gc, or V8's gc, exposed for it), for heap measurements. */
export function fullGc(): void {
  const bun = (globalThis as { Bun?: { gc(sync: boolean): void } }).Bun;
  if (bun) return bun.gc(true);
  v8.setFlagsFromString("--expose-gc");
  (vm.runInNewContext("gc") as () => void)();
}

/**
 * A small seeded PRNG (mulberry32): a run that draws from it is replayed from its seed
 * (the ingest fuzz test, scripts/crash_loop.ts).
 */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A memory file system whose writes to segment files wait while `holding` (a disk that has
 * fallen behind): `held` counts the writes waiting, `release()` lets them go and stops holding.
 */
export function heldSegmentWrites(
  { only = () => true, holding: holdAtFirst = true }: {
    /** Which segment files' writes are held (by path); all of them by default. */
    only?: (path: string) => boolean;
    /** Held from the start; else from `hold()`. */
    holding?: boolean;
  } = {},
): { fs: FileSystem; held: () => number; hold: () => void; release: () => void } {
  let holding = holdAtFirst;
  const waiting: Array<() => void> = [];
  const bound = <T extends object>(t: T, k: string | symbol) => {
    const v = Reflect.get(t, k, t);
    return typeof v === "function" ? v.bind(t) : v;
  };
  const holds = (h: FileHandle): FileHandle =>
    new Proxy(h, {
      get: (t, k) =>
        k === "append" || k === "writeAt"
          ? async (...a: unknown[]) => {
            if (holding) await new Promise<void>((go) => waiting.push(go));
            return (bound(t, k) as (...a: unknown[]) => Promise<void>)(...a);
          }
          : bound(t, k),
    });
  const fs: FileSystem = new Proxy(new MemoryFileSystem(), {
    get: (t, k) =>
      k === "open"
        ? async (path: string, mode: "create" | "append" | "read") => {
          const h = await t.open(path, mode);
          return path.endsWith(".seg") && only(path) ? holds(h) : h;
        }
        : bound(t, k),
  });
  return {
    fs,
    held: () => waiting.length,
    hold: () => {
      holding = true;
    },
    release: () => {
      holding = false;
      for (const go of waiting.splice(0)) go();
    },
  };
}

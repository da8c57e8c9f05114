/**
 * The in-flight file (`INFLIGHT` in each lane's directory): the batch the sender is sending
 * and the identity it goes out under, written before any of it leaves. After a crash, the
 * sender finds there which records were in flight (a segment, from one delivery position
 * to the next, the record-age limit the batch was read with) and hands the provider the same
 * identity: for Kafka the idempotent producer's id and epoch, the partition of each record
 * and each partition batch's sequence numbers, so that the broker drops what it already has.
 * One write per batch (not per record), fdatasynced before the send under `fsync: always`,
 * and one more each time the provider changes the batch's identity (a record refused for
 * good, a producer the broker forgot).
 *
 * Written like the sync mark: two slots in place, in turn, each with a write count, so that
 * a torn write spoils only the slot it went to, and the reader takes the valid slot with the
 * higher count. A slot holds a JSON entry of any length: the file is two slots of `capacity`
 * bytes (16 KiB, doubled through a new file renamed over the old when an entry outgrows it),
 * so a write overwrites bytes in place and never changes the file's size.
 *
 * ```
 * File: slot 0 at 0, slot 1 at capacity; size 2 × capacity
 * Slot: 0 magic "MBIF" | 4 version (1) | 5 reserved (3) | 8 write count (u64 BE) |
 *       16 entry length (u32 BE) | 20 CRC32C of bytes [0, 20) and the entry | 24 entry (JSON)
 * ```
 *
 * @module
 */

import { crc32c } from "../binary/crc32c.ts";
import { readU64, writeU64 } from "../binary/u64.ts";
import type { FileHandle, FileSystem } from "../fs/types.ts";
import { OverlappingSyncs } from "../fs/syncs.ts";

const MAGIC = 0x4d424946;
const VERSION = 1;
const HEADER = 24;
/** A slot's first size (an entry is usually well under 1 KiB). */
export const INFLIGHT_FIRST_CAPACITY = 16 * 1024;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A delivery position in a segment (as an S file holds it). */
export interface Position {
  offset: number;
  skip: number;
}

/** What the sender was sending: see the module doc. */
export interface InflightEntry {
  /** The segment's file name. */
  segment: string;
  /** Where the batch starts (the segment's checkpoint when it was read). */
  from: Position;
  /** Where it ends (the checkpoint once it is acknowledged). */
  next: Position;
  /** Records older than this (ms since the epoch) were skipped as expired; null: none. */
  ttlLimit: number | null;
  /** Records sent (expired ones left out). */
  records: number;
  /** When the entry was written, ms since the epoch. */
  at: number;
  /** The provider's name and its identity of the send, or null when it keeps none. */
  provider: string;
  identity: string | null;
}

function checksum(slot: Uint8Array, entryLength: number): number {
  return (crc32c(slot, 0, 20) ^ crc32c(slot, HEADER, HEADER + entryLength)) >>> 0;
}

function encodeSlot(e: InflightEntry, count: number): Uint8Array {
  const json = encoder.encode(JSON.stringify(e));
  const b = new Uint8Array(HEADER + json.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, MAGIC);
  b[4] = VERSION;
  writeU64(v, 8, count);
  v.setUint32(16, json.length);
  b.set(json, HEADER);
  v.setUint32(20, checksum(b, json.length));
  return b;
}

function isPosition(p: unknown): p is Position {
  const q = p as Position;
  return typeof q === "object" && q !== null && Number.isSafeInteger(q.offset) &&
    Number.isSafeInteger(q.skip);
}

function decodeSlot(b: Uint8Array): { entry: InflightEntry; count: number } | null {
  if (b.length < HEADER) return null;
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  if (v.getUint32(0) !== MAGIC || b[4] !== VERSION) return null;
  const length = v.getUint32(16);
  if (HEADER + length > b.length || checksum(b, length) !== v.getUint32(20)) return null;
  let e: InflightEntry;
  try {
    e = JSON.parse(decoder.decode(b.subarray(HEADER, HEADER + length)));
  } catch {
    return null;
  }
  const ok = typeof e === "object" && e !== null && typeof e.segment === "string" &&
    isPosition(e.from) && isPosition(e.next) && Number.isSafeInteger(e.records) &&
    typeof e.provider === "string" && (e.identity === null || typeof e.identity === "string") &&
    (e.ttlLimit === null || typeof e.ttlLimit === "number") && typeof e.at === "number";
  return ok ? { entry: e, count: readU64(v, 8) } : null;
}

/** The valid slot written last in the file's bytes `b`, with its index and count. */
function decodeFile(
  b: Uint8Array,
): { entry: InflightEntry; slot: number; count: number; capacity: number } | null {
  const capacity = Math.floor(b.length / 2);
  if (capacity < HEADER) return null;
  let best: { entry: InflightEntry; slot: number; count: number; capacity: number } | null = null;
  for (let slot = 0; slot < 2; slot++) {
    const d = decodeSlot(b.subarray(slot * capacity, (slot + 1) * capacity));
    if (d && (!best || d.count > best.count)) best = { ...d, slot, capacity };
  }
  return best;
}

/** Reads the in-flight file at `path`: its newest valid entry, or null (none, or unreadable). */
export async function loadInflight(fs: FileSystem, path: string): Promise<InflightEntry | null> {
  const b = await fs.readFile(path);
  return b === null ? null : decodeFile(b)?.entry ?? null;
}

/** The open in-flight file, written slot after slot (see the module doc). */
export class InflightFile {
  readonly #fs: FileSystem;
  readonly #path: string;
  #fh: FileHandle;
  #slot: number;
  #count: number;
  #capacity: number;

  private constructor(
    fs: FileSystem,
    path: string,
    fh: FileHandle,
    s: { slot: number; count: number; capacity: number },
  ) {
    this.#fs = fs;
    this.#path = path;
    this.#fh = fh;
    this.#slot = s.slot;
    this.#count = s.count;
    this.#capacity = s.capacity;
  }

  /**
   * Opens the in-flight file at `path`, creating it when missing or of no use (`created`
   * then says that its directory entry is new).
   */
  static async open(
    fs: FileSystem,
    path: string,
  ): Promise<{ file: InflightFile; created: boolean }> {
    const found = await fs.readFile(path);
    const d = found === null ? null : decodeFile(found);
    if (found !== null && found.length >= 2 * INFLIGHT_FIRST_CAPACITY && found.length % 2 === 0) {
      const fh = await fs.open(path, "append");
      const capacity = found.length / 2;
      return {
        file: new InflightFile(fs, path, fh, {
          slot: d === null ? 0 : 1 - d.slot,
          count: (d?.count ?? 0) + 1,
          capacity,
        }),
        created: false,
      };
    }
    const fh = await InflightFile.#fresh(fs, path, INFLIGHT_FIRST_CAPACITY);
    return {
      file: new InflightFile(fs, path, fh, {
        slot: 0,
        count: (d?.count ?? 0) + 1,
        capacity: INFLIGHT_FIRST_CAPACITY,
      }),
      created: true,
    };
  }

  /** A new file of two empty slots of `capacity` at `path` (replacing any file there). */
  static async #fresh(fs: FileSystem, path: string, capacity: number): Promise<FileHandle> {
    await fs.remove(path);
    const fh = await fs.open(path, "create");
    try {
      await fh.writeAt(new Uint8Array(2 * capacity), 0);
      return fh;
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
  }

  /**
   * Writes `e` to the next slot, fdatasynced when `sync`. An entry larger than a slot makes
   * a new file of larger slots, written and synced aside and renamed over this one (`sync`
   * also fsyncs the directory); true when that happened.
   */
  async write(e: InflightEntry, sync: boolean, dir: string): Promise<boolean> {
    const slot = encodeSlot(e, this.#count);
    if (slot.length <= this.#capacity) {
      await this.#fh.writeAt(slot, this.#slot * this.#capacity);
      if (sync) await this.#fh.sync();
      this.#slot = 1 - this.#slot;
      this.#count++;
      return false;
    }
    let capacity = this.#capacity * 2;
    while (capacity < slot.length) capacity *= 2;
    const aside = `${this.#path}.new`;
    const fh = await InflightFile.#fresh(this.#fs, aside, capacity);
    try {
      await fh.writeAt(slot, 0);
      await fh.sync();
      await this.#fs.rename(aside, this.#path);
      if (sync) await this.#fs.syncDir(dir);
    } catch (err) {
      await fh.close().catch(() => {});
      throw err;
    }
    await this.#syncs.ended(this.#fh, false); // (the new file holds the newest entry, synced)
    await this.#fh.close().catch(() => {});
    this.#fh = fh;
    this.#capacity = capacity;
    this.#slot = 1;
    this.#count++;
    return true;
  }

  readonly #syncs = new OverlappingSyncs();

  /**
   * fdatasyncs what was written (under `interval`, on the sync timer and at close). It may
   * run beside later writes (the ledger's periodic sync does); each is then synced by this
   * call or the next.
   */
  sync(): Promise<void> {
    return this.#syncs.sync(this.#fh);
  }

  /** Closes the file once every sync has ended (syncing again if one failed). */
  async close(): Promise<void> {
    await this.#syncs.ended(this.#fh, true);
    return this.#fh.close();
  }
}

/**
 * Process helpers for the agent and the lock: whether a pid names a live process, and what
 * the directory's `LOCK` file says.
 *
 * `LOCK` holds one line, `<pid> <boot id>\n`: the holder's pid and the Linux boot id
 * (`/proc/sys/kernel/random/boot_id`; empty elsewhere) of the boot it ran in. After a power
 * cut the file may survive whole, naming a pid that a process of the new boot now has: the
 * boot id tells it is stale. It may also survive cut short (empty, or part of the line),
 * since its write may not have reached the disk; a line without its newline is that, or a
 * holder between creating the file and writing it, which {@link parseLock} reports as
 * `complete: false` for the lock to wait on once. A line of an older version (`<pid>\n`) has
 * no boot id: its pid alone decides.
 *
 * @module
 */

import { readFileSync } from "node:fs";
import process from "node:process";

/** True when a process with this pid exists (EPERM: it exists but is not ours). */
export function pidIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === "EPERM";
  }
}

let bootId: string | undefined;

/** This boot's id (Linux), or "" where there is none. */
export function currentBootId(): string {
  if (bootId === undefined) {
    try {
      bootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    } catch {
      bootId = "";
    }
  }
  return bootId;
}

/** The line this process writes to a `LOCK` it takes. */
export function lockLine(): string {
  const boot = currentBootId();
  return boot ? `${process.pid} ${boot}\n` : `${process.pid}\n`;
}

/** What a `LOCK` file holds: its pid and boot id, or `complete: false` for part of a line. */
export type LockContent =
  | { complete: true; pid: number; boot: string | null }
  | { complete: false };

/** Reads a `LOCK` file's text (see the module doc). */
export function parseLock(text: string): LockContent {
  const m = /^(\d+)(?: ([0-9a-f-]+))?\n$/.exec(text);
  const pid = m ? Number(m[1]) : NaN;
  if (!m || !Number.isSafeInteger(pid) || pid <= 0) return { complete: false };
  return { complete: true, pid, boot: m[2] ?? null };
}

/** True when the holder a complete `LOCK` names runs now: this boot, a live pid. */
export function lockHolderRuns(
  lock: { pid: number; boot: string | null },
  pidAlive: (pid: number) => boolean = pidIsAlive,
): boolean {
  const boot = currentBootId();
  if (lock.boot !== null && boot !== "" && lock.boot !== boot) return false;
  return pidAlive(lock.pid);
}

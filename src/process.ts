/**
 * Process helpers for the agent and the lock: whether a pid names a live process.
 *
 * @module
 */

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

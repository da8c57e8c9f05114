/**
 * Whether the agent may use a buffer directory: the agent (`run`, `replay`) refuses one that
 * another user owns, or that its group or others may write to. Such a user could delete or
 * replace segments and checkpoints (records lost, or records sent that no app wrote), or plant
 * a symlink where the agent creates a file. `--allow-unsafe-buffer-dir` overrides the check;
 * the library (`MessageBuffer.open`) does not make it, as its caller chose the directory.
 *
 * @module
 */

import { stat } from "node:fs/promises";
import process from "node:process";

/** The flag that lets the agent use a directory {@link bufferDirProblem} refuses. */
export const ALLOW_UNSAFE_FLAG = "--allow-unsafe-buffer-dir";

/** What the check reads of a directory: its owner and mode (`st_uid`, `st_mode`). */
export interface DirOwnership {
  uid: number;
  mode: number;
}

/** `0o40755` as `0755`. */
export function octalMode(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

/**
 * Why the directory `dir` with `info` is unsafe for a process running as `uid`, or null when
 * it is the process's own and no one else may write to it.
 *
 * @example The Debian package's directory, as its agent sees it
 * ```ts
 * bufferDirProblem("/var/lib/messagebuffer", { uid: 998, mode: 0o40700 }, 998); // null
 * ```
 */
export function bufferDirProblem(
  dir: string,
  info: DirOwnership,
  uid: number,
  who = "the agent",
): string | null {
  const mode = octalMode(info.mode);
  if (info.uid !== uid) {
    return `buffer directory "${dir}" is owned by uid ${info.uid} (mode ${mode}), not by the ` +
      `user ${who} runs as (uid ${uid}): that user could delete or replace buffered ` +
      `records; run ${who} as its owner (e.g. setpriv --reuid=${info.uid} --regid=${info.uid} ` +
      `--init-groups, or sudo -u with the owner's name), or chown the directory to uid ${uid}, ` +
      `or pass ${ALLOW_UNSAFE_FLAG} to use it anyway`;
  }
  const writers = [(info.mode & 0o020) && "its group", (info.mode & 0o002) && "others"]
    .filter(Boolean);
  if (writers.length > 0) {
    return `buffer directory "${dir}" (owner uid ${info.uid}, mode ${mode}) is writable by ` +
      `${writers.join(" and ")}, who could delete or replace buffered records; ` +
      `chmod go-w "${dir}" (the agent creates it 0700), or pass ${ALLOW_UNSAFE_FLAG} to use ` +
      `it anyway`;
  }
  return null;
}

/**
 * Whether the directory at `dir` exists, and {@link bufferDirProblem} of it for this process:
 * null when it is safe, does not exist yet (the agent creates it, 0700), or the platform has
 * no user ids.
 */
export async function checkBufferDir(
  dir: string,
  who = "the agent",
): Promise<{ exists: boolean; problem: string | null }> {
  let info;
  try {
    info = await stat(dir);
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") return { exists: false, problem: null };
    throw e;
  }
  const uid = process.getuid?.();
  if (uid === undefined) return { exists: true, problem: null };
  return {
    exists: true,
    problem: bufferDirProblem(dir, { uid: info.uid, mode: info.mode }, uid, who),
  };
}

/**
 * The buffer directory's layout: the name of every file and folder messagebuffer keeps in it,
 * and where the agent's socket is when none is given. Every part takes these names from here.
 *
 * ```text
 * <dir>/LOCK                      the live process holding the directory (its pid)
 * <dir>/SYNCED                    how far the segment being written was known fsynced
 * <dir>/INFLIGHT                  the batch being sent and its identity (INFLIGHT.new: while
 *                                 it grows)
 * <dir>/<20-digit seq>-<id>.seg   segments; <segment>.s their checkpoints (S files)
 * <dir>/dead/                     records Kafka refused for good; dead/replay.log the replay
 *                                 journal; dead/LOCK a replay in progress
 * <dir>/quarantine/               corrupt data moved out of segments
 * <dir>/lanes/topics              the lane of each topic; lanes/<i>/ lane i's own directory
 * <dir>/messagebuffer.sock        the agent's socket, by default
 * ```
 *
 * @module
 */

/** The lock file of a directory (the buffer's, or `dead/` during a replay). */
export const LOCK_FILE = "LOCK";
/** Records Kafka refused for good. */
export const DEAD_DIR = "dead";
/** Corrupt data moved out of segments. */
export const QUARANTINE_DIR = "quarantine";
/** Lanes 1 and up, each a buffer directory of its own, and the topic assignments. */
export const LANES_DIR = "lanes";
/** The topic assignments, one JSON object per line: `{"topic": "t", "lane": 2}`. */
export const TOPICS_FILE = `${LANES_DIR}/topics`;
/** The journal of what was replayed, in the dead-letter folder. */
export const REPLAY_JOURNAL = `${DEAD_DIR}/replay.log`;
/** How far the engine knew its segments to be fsynced (`src/checkpoint/sync_mark.ts`). */
export const SYNC_MARK_FILE = "SYNCED";
/** The batch being sent and the identity it goes under (`src/checkpoint/inflight.ts`). */
export const INFLIGHT_FILE = "INFLIGHT";
/** The agent's socket in the buffer directory, when no `socket` is given. */
export const SOCKET_FILE = "messagebuffer.sock";

/** The directory of lane `i` (lane 0 is the buffer directory itself). */
export function laneDir(dir: string, i: number): string {
  return i === 0 ? dir : `${dir}/${LANES_DIR}/${i}`;
}

/** The agent's socket for buffer directory `dir`, when none is given. */
export function defaultSocketPath(dir: string): string {
  return `${dir}/${SOCKET_FILE}`;
}

/**
 * The replay journal, `dead/replay.log`: one JSON line per dead-letter (or quarantined) file a
 * replay sent, with the indexes of its records the agent accepted and those it refused.
 * `replay` appends to it (fsynced) and skips what it holds; `status` and `dead-letters` count
 * from it; `dead-letters purge` rewrites it without the files it removed.
 *
 * @module
 */

import type { FileSystem } from "../fs/types.ts";
import { DEAD_DIR, REPLAY_JOURNAL } from "../layout.ts";

/** Journal entries by file: the indexes already replayed. */
export async function readJournal(fs: FileSystem, dir: string): Promise<Map<string, Set<number>>> {
  const text = await fs.readFile(`${dir}/${REPLAY_JOURNAL}`);
  const out = new Map<string, Set<number>>();
  if (text === null) return out;
  for (const line of new TextDecoder().decode(text).split("\n")) {
    if (!line.trim()) continue;
    let e: { file?: unknown; accepted?: unknown };
    try {
      e = JSON.parse(line);
    } catch {
      continue; // a line torn by a crash while it was appended
    }
    if (typeof e.file !== "string" || !Array.isArray(e.accepted)) continue;
    const set = out.get(e.file) ?? new Set<number>();
    for (const range of e.accepted) {
      if (!Array.isArray(range) || range.length !== 2) continue;
      for (let i = Number(range[0]); i <= Number(range[1]); i++) set.add(i);
    }
    out.set(e.file, set);
  }
  return out;
}

/** Appends one entry, fsynced (and the folder, when this creates the journal). */
export async function appendJournal(fs: FileSystem, dir: string, entry: unknown): Promise<void> {
  const path = `${dir}/${REPLAY_JOURNAL}`;
  const exists = (await fs.stat(path)) !== null;
  const fh = await fs.open(path, exists ? "append" : "create");
  try {
    await fh.append(new TextEncoder().encode(JSON.stringify(entry) + "\n"));
    await fh.sync();
  } finally {
    await fh.close();
  }
  if (!exists) await fs.syncDir(`${dir}/${DEAD_DIR}`);
}

/** Rewrites the journal without the lines of the files in `gone` (temp, fsync, rename). */
export async function rewriteJournal(
  fs: FileSystem,
  dir: string,
  gone: ReadonlySet<string>,
): Promise<void> {
  const path = `${dir}/${REPLAY_JOURNAL}`;
  const text = await fs.readFile(path);
  if (text === null) return;
  const kept = new TextDecoder().decode(text).split("\n").filter((line) => {
    if (!line.trim()) return false;
    try {
      return !gone.has(JSON.parse(line).file);
    } catch {
      return false; // a line torn by a crash while it was appended
    }
  });
  const tmp = `${path}.tmp`;
  await fs.remove(tmp);
  const fh = await fs.open(tmp, "create");
  try {
    if (kept.length > 0) await fh.append(new TextEncoder().encode(kept.join("\n") + "\n"));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, path);
  await fs.syncDir(`${dir}/${DEAD_DIR}`);
}

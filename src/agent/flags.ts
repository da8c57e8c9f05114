/**
 * Command-line flags of the agent's commands: `--name value`, `--name=value` and boolean
 * `--name`. A flag that takes a value takes the next argument whatever it looks like, so
 * `--file-max-time -1` hands "-1" to the setting's validator, which says what is wrong with
 * it (node:util's parseArgs would refuse it as "ambiguous").
 *
 * @module
 */

/** Flags a command takes, by name without `--`: whether each takes a value. */
export type FlagSpec = Readonly<Record<string, "value" | "boolean">>;

/** The arguments do not fit the command's flags; the message names the flag. */
export class FlagError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FlagError";
  }
}

/** Flags given, by name (a string, or true for a boolean), and the other arguments in order. */
export interface ParsedFlags<S extends FlagSpec> {
  values: { [K in keyof S]?: S[K] extends "boolean" ? true : string };
  positionals: string[];
}

/**
 * Parses `args` against `spec`. A repeated flag keeps its last value. `--` ends the flags.
 * Throws {@link FlagError} for an unknown flag, a missing value, a value given to a boolean
 * flag, or a positional argument when `allowPositionals` is false.
 *
 * @example Parse a command line
 * ```ts
 * import { parseFlags } from "./flags.ts";
 * const { values } = parseFlags(["--fsync", "always", "--tls"], { fsync: "value", tls: "boolean" });
 * // values: { fsync: "always", tls: true }
 * ```
 */
export function parseFlags<S extends FlagSpec>(
  args: readonly string[],
  spec: S,
  allowPositionals = false,
): ParsedFlags<S> {
  const values: Record<string, string | true> = {};
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.startsWith("--") ? arg.slice(2, eq === -1 ? undefined : eq) : "";
    const kind = Object.hasOwn(spec, name) ? spec[name] : undefined;
    if (kind === undefined) {
      const near = closest(name || arg.replace(/^-+/, ""), Object.keys(spec));
      throw new FlagError(
        `unknown flag ${eq === -1 ? arg : arg.slice(0, eq)}${
          near ? ` (did you mean --${near}?)` : ""
        }`,
      );
    }
    if (kind === "boolean") {
      if (eq !== -1) throw new FlagError(`--${name} takes no value`);
      values[name] = true;
    } else if (eq !== -1) {
      values[name] = arg.slice(eq + 1);
    } else if (i + 1 < args.length) {
      values[name] = args[++i];
    } else {
      throw new FlagError(`--${name} needs a value`);
    }
  }
  if (!allowPositionals && positionals.length > 0) {
    throw new FlagError(`unexpected argument "${positionals[0]}"`);
  }
  // Each value was stored under a name of `spec`, as a string or, for a boolean, true.
  return { values: values as ParsedFlags<S>["values"], positionals };
}

/**
 * The candidate closest to `name` (edit distance, `-` and `_` alike, case ignored), if it is
 * close enough to be a likely typo: at most 2 edits, and fewer than half the name's length.
 */
export function closest(name: string, candidates: readonly string[]): string | undefined {
  const norm = (x: string) => x.toLowerCase().replace(/_/g, "-");
  const a = norm(name);
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(a, norm(c));
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return bestDistance <= 2 && bestDistance * 2 < a.length ? best : undefined;
}

/** Levenshtein distance (insertions, deletions, substitutions). */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

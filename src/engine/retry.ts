/**
 * Retrying a provider: the backoff, the probe interval, the log of a failing send (said once,
 * then only when the reason changes), and closing a provider within a time limit. The
 * sender's retries and the direct path's share them.
 *
 * @module
 */

import type { Logger } from "../log.ts";
import type { Provider } from "../provider/types.ts";

/**
 * The wait after the `failures`-th failure in a row: `initialMs`, doubling up to `maxMs`,
 * drawn from [wait/2, wait] (the sender's and the direct path's retries).
 */
export function backoffMs(failures: number, initialMs: number, maxMs: number): number {
  const wait = Math.min(maxMs, initialMs * 2 ** Math.min(failures - 1, 30));
  return Math.round(wait / 2 + Math.random() * wait / 2);
}

/** How often the provider is probed while a failed send waits out its backoff. */
export const PROBE_INTERVAL_MS = 500;

/**
 * The log of an operation that keeps failing: the first failure at `warn`, a later one at
 * `info` only when its reason changed (else `debug`), and the success that ends the run at
 * `info` with how long it failed. An outage of an hour is a few lines, not one a retry.
 */
export class FailureLog {
  readonly #log: Logger;
  readonly #what: string;
  #since = 0;
  #said = "";
  #failures = 0;

  /** `what` names the operation: "send", "open", "direct send". */
  constructor(log: Logger, what: string) {
    this.#log = log;
    this.#what = what;
  }

  /** One more failure, `error` its reason in words; `fields` go on the line. */
  failed(error: string, fields: Record<string, unknown>): void {
    const first = this.#failures++ === 0;
    if (first) this.#since = Date.now();
    const changed = error !== this.#said;
    this.#said = error;
    const log = first ? this.#log.warn : changed ? this.#log.info : this.#log.debug;
    log(
      first
        ? `${this.#what} failed; retrying`
        : changed
        ? `${this.#what} still failing, now for another reason; retrying`
        : `${this.#what} failed again; retrying`,
      { ...fields, attempt: this.#failures, error },
    );
  }

  /** It worked: ends the run of failures (saying so, if there was one). */
  succeeded(fields: Record<string, unknown> = {}): void {
    if (this.#failures > 0) {
      this.#log.info(`${this.#what} succeeded after ${this.#failures} retries`, {
        ...fields,
        failingForMs: Date.now() - this.#since,
      });
    }
    this.#failures = 0;
    this.#said = "";
  }
}

/**
 * Closes `provider`, waiting at most `timeoutMs` (a send hung on a dead connection must not
 * hold up a shutdown); a failure is logged. Resolves when it closed or the time is up.
 */
export async function closeWithin(
  provider: Pick<Provider, "name" | "close">,
  timeoutMs: number,
  log: Logger,
): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const closed = provider.close().catch((e) => {
    log.warn("provider close failed", { provider: provider.name, error: e });
  });
  await Promise.race([closed, new Promise((r) => (timer = setTimeout(r, timeoutMs)))]);
  clearTimeout(timer);
}

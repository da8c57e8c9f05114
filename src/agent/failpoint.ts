/**
 * A crash point for the crash loop (`scripts/crash_loop.ts`), set through the environment:
 * `MB_FAILPOINT=kill-after-send:N` makes the agent SIGKILL itself once the provider has
 * acknowledged its N-th send, before the engine moves the checkpoint past it: the moment
 * after the broker appended a batch that only the batch's identity keeps from being appended
 * twice. Unset (always, outside tests), the provider is used as it is.
 *
 * @module
 */

import process from "node:process";
import { delegating } from "../provider/delegate.ts";
import type { Provider } from "../provider/types.ts";

/** `provider`, or, when `spec` names a crash point, a provider that crashes there. */
export function withFailpoint(provider: Provider, spec: string | undefined): Provider {
  if (spec === undefined || spec === "") return provider;
  const m = /^kill-after-send:([1-9]\d*)$/.exec(spec);
  if (!m) {
    throw new Error(
      `MB_FAILPOINT="${spec}" is not a crash point; the one known is kill-after-send:N`,
    );
  }
  const at = Number(m[1]);
  let sends = 0;
  return delegating(provider, {
    send: async (records, context) => {
      const out = await provider.send(records, context);
      if (++sends === at) process.kill(process.pid, "SIGKILL");
      return out;
    },
  });
}

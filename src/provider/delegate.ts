/**
 * A {@link Provider} that passes every call to another, with some members replaced: how the
 * agent wraps its Kafka provider (a crash point after a send, a client library loaded after
 * the socket listens) without touching the provider itself.
 *
 * @module
 */

import type { Provider } from "./types.ts";

/** `provider`'s members, bound to it, with `overrides` in place of some (undefined removes one). */
export function delegating(provider: Provider, overrides: Partial<Provider>): Provider {
  const own: Provider = {
    name: provider.name,
    retryWaitMs: provider.retryWaitMs,
    keepsIdentity: provider.keepsIdentity,
    releasesRecords: provider.releasesRecords,
    sendMaxRecords: provider.sendMaxRecords,
    prepare: provider.prepare && (() => provider.prepare!()),
    open: () => provider.open(),
    close: () => provider.close(),
    counters: provider.counters && (() => provider.counters!()),
    probe: provider.probe && ((topics) => provider.probe!(topics)),
    send: (records, context) => provider.send(records, context),
  };
  return { ...own, ...overrides };
}

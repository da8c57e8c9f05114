/**
 * An HTTP(S) listener from the runtime itself: `Deno.serve` under Deno, `Bun.serve` under Bun
 * (and so inside the compiled executable), behind one web-standard handler,
 * `(Request) => Promise<Response>`. This is the one file of the HTTP input that looks at
 * `globalThis.Deno` and `Bun`.
 *
 * @module
 */

/** Options of {@link serveHttp}. */
export interface ServeOptions {
  hostname: string;
  /** 0 = any free port. */
  port: number;
  /** PEM certificate chain and key: HTTPS. */
  tls?: { cert: string; key: string } | null;
  /**
   * Under Bun, a connection that sends nothing for this long is closed (at most 255 s); a
   * request whose answer is awaited is exempt (see `exempt`). Deno keeps its own limits.
   */
  idleTimeoutS: number;
}

/** A running listener. */
export interface HttpListener {
  /** `host:port`, the port resolved. */
  readonly address: string;
  /** Stops listening; resolves once the requests in progress are answered. */
  close(): Promise<void>;
}

/** The handler: the request, and a function that exempts it from the idle timeout. */
export type Handler = (req: Request, exempt: () => void) => Promise<Response>;

type DenoServe = (
  o: {
    hostname: string;
    port: number;
    cert?: string;
    key?: string;
    onListen?: (a: { hostname: string; port: number }) => void;
    onError?: (e: unknown) => Response;
  },
  h: (req: Request) => Promise<Response>,
) => { addr: { hostname: string; port: number }; shutdown(): Promise<void> };

type BunServer = {
  port: number;
  hostname: string;
  stop(closeActive?: boolean): Promise<void> | void;
  timeout(req: Request, seconds: number): void;
};
type BunServe = (o: {
  hostname: string;
  port: number;
  tls?: { cert: string; key: string };
  idleTimeout: number;
  maxRequestBodySize: number;
  fetch: (req: Request, server: BunServer) => Promise<Response>;
  error?: (e: unknown) => Response;
}) => BunServer;

function internalError(): Response {
  return new Response(JSON.stringify({ error_code: 500, message: "internal error" }), {
    status: 500,
    headers: { "content-type": "application/json" },
  });
}

/** Serves `handler`; resolves once listening. Throws when the address cannot be bound. */
export function serveHttp(o: ServeOptions, handler: Handler): Promise<HttpListener> {
  const g = globalThis as { Deno?: { serve: DenoServe }; Bun?: { serve: BunServe } };
  if (g.Deno) {
    return new Promise((resolve, reject) => {
      try {
        const server = g.Deno!.serve({
          hostname: o.hostname,
          port: o.port,
          ...(o.tls ? { cert: o.tls.cert, key: o.tls.key } : {}),
          onListen: () => {},
          onError: internalError,
        }, (req) => handler(req, () => {}));
        const a = server.addr;
        resolve({
          address: `${a.hostname.includes(":") ? `[${a.hostname}]` : a.hostname}:${a.port}`,
          close: () => server.shutdown(),
        });
      } catch (e) {
        reject(e);
      }
    });
  }
  if (g.Bun) {
    const server = g.Bun.serve({
      hostname: o.hostname,
      port: o.port,
      ...(o.tls ? { tls: { cert: o.tls.cert, key: o.tls.key } } : {}),
      idleTimeout: Math.max(1, Math.min(255, o.idleTimeoutS)),
      // The handler enforces the limit, and says which it is; Bun's own would answer first
      // with an empty 413.
      maxRequestBodySize: Number.MAX_SAFE_INTEGER,
      fetch: (req, s) => handler(req, () => s.timeout(req, 0)),
      error: internalError,
    });
    const host = server.hostname.includes(":") ? `[${server.hostname}]` : server.hostname;
    return Promise.resolve({
      address: `${host}:${server.port}`,
      close: async () => {
        // Requests in progress finish; connections idle after them get a grace period, then
        // are closed (Bun's graceful stop would wait for idle keep-alive connections too).
        let t: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          Promise.resolve(server.stop(false)),
          new Promise((r) => (t = setTimeout(r, 2000))),
        ]);
        clearTimeout(t);
        await server.stop(true);
      },
    });
  }
  return Promise.reject(new Error("the HTTP input needs Deno or Bun"));
}

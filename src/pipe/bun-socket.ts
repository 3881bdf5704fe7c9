/**
 * The Bun socket workarounds every TCP user in this package needs, in one place: half-open listeners and
 * connections, a connect failure reported once, and the errno code of a socket error. Used by TcpPipe
 * (src/pipe/tcp.ts) and by the link's forwarder (src/link/forwarder.ts). The facts behind each are in
 * docs/bun-sockets.md.
 */

import type { SocketHandler, TCPSocketListener } from "bun";

/**
 * Bun.listen with `allowHalfOpen`: without it Bun closes a socket when the peer's FIN arrives, and the
 * other direction could not finish (docs/bun-sockets.md, "Closing").
 */
export function listenHalfOpen<T>(host: string, port: number, socket: SocketHandler<T>, reusePort = false): TCPSocketListener<T> {
  // reusePort (SO_REUSEPORT) lets the worker processes of one server share the port; bun-types lack it.
  return Bun.listen<T>({ hostname: host, port, allowHalfOpen: true, socket, ...(reusePort ? { reusePort: true } : {}) });
}

/**
 * Bun.connect with `allowHalfOpen`. Bun reports a failed connect both to `connectError` and as a rejected
 * promise (docs/bun-sockets.md, "Timers, options, errors"); `onFail` is called once for both.
 */
export function connectHalfOpen<T>(host: string, port: number, data: T, socket: SocketHandler<T>, onFail: (err: unknown) => void): void {
  let failed = false;
  const fail = (err: unknown): void => {
    if (failed) return;
    failed = true;
    onFail(err);
  };
  Bun.connect<T>({
    hostname: host,
    port,
    data,
    allowHalfOpen: true,
    socket: { ...socket, connectError: (_s, err) => fail(err) },
  }).catch(fail);
}

/** The errno-style code of a socket error ("ECONNRESET", "ECONNREFUSED"), or undefined when it has none. */
export function socketErrorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

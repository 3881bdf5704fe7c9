/**
 * A front: where the client proxy gets its app connections from, each with where it wants to go. Today
 * there is one kind, a plain listener whose connections go to the server's default target. A SOCKS5 /
 * HTTP CONNECT listener (issue 13) is another: it reads the app's request with the same handshake reader
 * (proxy/handshake.ts), answers it, and then yields the connection with the destination it asked for.
 */

import type { Pipe } from "../pipe/pipe.ts";
import { formatAddress, listenTcp, type Address } from "../pipe/tcp.ts";

/**
 * Where an app connection goes. v1 carries no destination on the wire: the server proxy connects every
 * session to its own target. Issue 13 adds `{ kind: "address"; host; port }`, carried in the HELLO.
 */
export type Destination = { readonly kind: "server-default" };

/** The server's own target. */
export const SERVER_DEFAULT: Destination = { kind: "server-default" };

/** An app connection the front accepted, ready to be bridged. */
export interface AppConnection {
  /** The app's side. Its handler must be installed before the call to `onApp` returns. */
  readonly pipe: Pipe;
  /** The app's address, for logs. */
  readonly remote: string;
  readonly destination: Destination;
}

/** A front that is accepting. */
export interface FrontListener {
  readonly port: number;
  /** Where it listens, for the start line: "127.0.0.1:2222". */
  readonly address: string;
  /** Stops accepting; connections already handed over are not touched. */
  stop(): void;
}

/** A source of app connections. */
export interface Front {
  /** Starts accepting and hands each connection to `onApp`, which takes it over synchronously. */
  listen(onApp: (app: AppConnection) => void): FrontListener;
}

/** A plain TCP listener on `at`: every connection goes to the server's default target. */
export function plainFront(at: Address): Front {
  return {
    listen(onApp) {
      const listener = listenTcp(at, (pipe) => onApp({ pipe, remote: pipe.remote, destination: SERVER_DEFAULT }));
      return {
        port: listener.port,
        address: formatAddress({ host: at.host, port: listener.port }),
        stop: () => listener.stop(),
      };
    },
  };
}

/**
 * A front: where the client proxy gets its app connections from, each with where it wants to go.
 *
 * - `plainFront`: a plain listener (a port forward, ssh -L style) whose connections all go to one
 *   destination: the client's `--target`, or without it the server's own target.
 * - `socksFront` (src/proxy/socks.ts): SOCKS5 and HTTP CONNECT on one port. It reads each app's request
 *   with the handshake reader, and then yields the connection with the destination it asked for and an
 *   `answer` through which the client tells it what became of the connect (the app's reply).
 */

import type { Pipe } from "../pipe/pipe.ts";
import { formatAddress, listenTcp, type Address } from "../pipe/tcp.ts";
import { SERVER_DEFAULT, type Destination, type Outcome } from "./destination.ts";

export { SERVER_DEFAULT, type Destination } from "./destination.ts";

/**
 * How a front answers its app once the server has said what became of the connect (SOCKS reply, HTTP
 * status). Fronts whose apps expect no answer (a plain listener) give none.
 */
export interface AppAnswer {
  /**
   * true: the client waits for the server's verdict (OPENED, or a RESET with the reason) before the app's
   * bytes flow, then calls `connected` or `failed`. false: the front has already answered success (the
   * app's first bytes leave at once; a failure shows as a reset connection) and neither is called.
   */
  readonly waits: boolean;
  /** The target is connected: write the success reply. The client bridges the app right after. */
  connected(): void;
  /** The connect failed: write the error reply in the app's protocol and close the app connection. */
  failed(outcome: Exclude<Outcome, "connected">): void;
}

/** An app connection the front accepted, ready to be bridged. */
export interface AppConnection {
  /** The app's side. Its handler must be installed before the call to `onApp` returns. */
  readonly pipe: Pipe;
  /** The app's address, for logs. */
  readonly remote: string;
  readonly destination: Destination;
  /** Bytes the app sent after its request (SOCKS "optimistic data"): the session sends them first. */
  readonly leftover?: Uint8Array;
  /** How to answer the app, for fronts that must. */
  readonly answer?: AppAnswer;
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

/** A plain TCP listener on `at`: every connection goes to `destination` (default: the server's target). */
export function plainFront(at: Address, destination: Destination = SERVER_DEFAULT): Front {
  return {
    listen(onApp) {
      const listener = listenTcp(at, (pipe) => onApp({ pipe, remote: pipe.remote, destination }));
      return {
        port: listener.port,
        address: formatAddress({ host: at.host, port: listener.port }),
        stop: () => listener.stop(),
      };
    },
  };
}

/** Several fronts as one (a client with both `--listen` and `--socks`); `port` is the first one's. */
export function combinedFront(fronts: readonly Front[]): Front {
  return {
    listen(onApp) {
      const started: FrontListener[] = [];
      try {
        for (const f of fronts) started.push(f.listen(onApp));
      } catch (err) {
        for (const l of started) l.stop();
        throw err;
      }
      return {
        port: started[0]!.port,
        address: started.map((l) => l.address).join(", "),
        stop: () => {
          for (const l of started) l.stop();
        },
      };
    },
  };
}

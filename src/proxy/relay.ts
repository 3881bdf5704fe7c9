/** Plain relay: each accepted connection is bridged to a new connection to the target. */

import { BrokenError, type StriperError } from "../errors.ts";
import { Bridge } from "../pipe/bridge.ts";
import { connectTcp, formatAddress, listenTcp, type Address, type TcpPipe } from "../pipe/tcp.ts";
import { formatBytes, stderrLog, type LogSink } from "./log.ts";

/** Options of the relay. */
export interface RelayOptions {
  listen: Address;
  target: Address;
  log?: LogSink;
}

/** A running relay. */
export interface Relay {
  readonly port: number;
  /** Connections being relayed. */
  readonly active: Set<Bridge>;
  /** Connections live now. */
  readonly liveSessions: number;
  /** Stops accepting (the listener closes); resolves when the last live connection has ended. */
  drain(): Promise<void>;
  /** Stops accepting and resets every connection left with `reason` (default E_SHUTDOWN). */
  stop(reason?: StriperError): void;
}

/** Starts a relay. */
export function startRelay(opts: RelayOptions): Relay {
  const log = opts.log ?? stderrLog;
  const active = new Set<Bridge>();
  let idle: (() => void)[] = [];
  let seq = 0;
  const listener = listenTcp(opts.listen, (app: TcpPipe) => {
    const id = ++seq;
    const target = connectTcp(opts.target);
    log(`relay ${id} start ${app.remote} -> ${formatAddress(opts.target)}`);
    const bridge = new Bridge(app, target, (r) => {
      active.delete(bridge);
      if (active.size === 0) {
        const waiters = idle;
        idle = [];
        for (const w of waiters) w();
      }
      const reason = r.error ? `${r.error.code} ${r.error.message}` : "ok";
      log(
        `relay ${id} end up ${formatBytes(r.aToB.bytes)} down ${formatBytes(r.bToA.bytes)} ` +
          `${(r.durationMs / 1000).toFixed(2)} s reason ${reason}`,
      );
    });
    active.add(bridge);
  });
  log(`relay listening on ${formatAddress({ host: opts.listen.host, port: listener.port })} target ${formatAddress(opts.target)}`);
  return {
    port: listener.port,
    active,
    get liveSessions() {
      return active.size;
    },
    drain() {
      listener.stop();
      return active.size === 0 ? Promise.resolve() : new Promise((resolve) => idle.push(resolve));
    },
    stop(err = new BrokenError("E_SHUTDOWN", "relay stopped")) {
      listener.stop();
      // A connection cut by shutdown must look like a reset to both peers, never like a clean EOF.
      for (const b of [...active]) {
        b.a.close(err);
        b.b.close(err);
      }
    },
  };
}

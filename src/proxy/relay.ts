/** Plain relay: each accepted connection is bridged to a new connection to the target. */

import { BrokenError } from "../errors.ts";
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
  /** Stops accepting and closes every connection. */
  stop(): void;
}

/** Starts a relay. */
export function startRelay(opts: RelayOptions): Relay {
  const log = opts.log ?? stderrLog;
  const active = new Set<Bridge>();
  let seq = 0;
  const listener = listenTcp(opts.listen, (app: TcpPipe) => {
    const id = ++seq;
    const target = connectTcp(opts.target);
    log(`relay ${id} start ${app.remote} -> ${formatAddress(opts.target)}`);
    const bridge = new Bridge(app, target, (r) => {
      active.delete(bridge);
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
    stop() {
      listener.stop();
      // A connection cut by shutdown must look like a reset to both peers, never like a clean EOF.
      const err = new BrokenError("E_SHUTDOWN", "relay stopped");
      for (const b of active) {
        b.a.close(err);
        b.b.close(err);
      }
    },
  };
}

/**
 * A fault-injecting TCP proxy for tests and benchmarks (our toxiproxy): latency, a rate cap, a slicer
 * that forwards in tiny writes, resets after N bytes or on demand, and blackholes. Same engine as the
 * capped link (forwarder.ts).
 */

import { startForwarder } from "./forwarder.ts";

/** Where the proxy listens, where it forwards, and which faults it injects into every connection. */
export interface FaultProxyOptions {
  /** Default 127.0.0.1. */
  listenHost?: string;
  /** Default 0 (any free port). */
  listenPort?: number;
  targetHost: string;
  targetPort: number;
  /** One-way delay in each direction, ms. */
  latencyMs?: number;
  /** Bytes/s per connection and direction (array: assigned in turn); 0 = no cap. */
  rate?: number | number[];
  /** Forward in writes of at most this many bytes (1 = a 1-byte slicer); 0 = no slicing. */
  sliceBytes?: number;
  /** RST both sides of a connection once this many bytes (both directions together) were forwarded. */
  resetAfterBytes?: number;
  /**
   * Sees every chunk read on connection `index` (`up`: client → target) before it is forwarded, and may
   * change its bytes in place (flip a bit in flight) or copy them (record a stripe's first message).
   */
  tap?(index: number, up: boolean, chunk: Uint8Array): void;
}

/** One connection through the fault proxy. */
export interface FaultConn {
  /** Accept order, from 0. */
  readonly index: number;
  /** Bytes delivered client → target. */
  readonly bytesUp: number;
  /** Bytes delivered target → client. */
  readonly bytesDown: number;
  readonly open: boolean;
  /** RST both sides now. */
  reset(): void;
  /** Silent path: pause both sockets and write nothing queued; nothing closes. `false` restores it. */
  blackhole(on?: boolean): void;
}

/** A running fault proxy. */
export interface FaultProxy {
  readonly hostname: string;
  readonly port: number;
  /** All accepted connections, in accept order. */
  connections(): FaultConn[];
  /** The connections still open. */
  live(): FaultConn[];
  /** Every `ms`, resets one live connection chosen by `pick` (default: a random one). Returns a stop function. */
  resetEvery(ms: number, pick?: (live: FaultConn[]) => FaultConn | undefined): () => void;
  /** Bytes held inside the proxy now, all connections. */
  queuedBytes(): number;
  /** Stops every resetEvery, closes the listener and resets all connections. */
  stop(): Promise<void>;
}

const randomPick = (live: FaultConn[]): FaultConn | undefined => live[Math.floor(Math.random() * live.length)];

/** Starts a fault proxy; resolves once it listens. */
export async function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  const rates = Array.isArray(opts.rate) ? (opts.rate.length ? opts.rate : [0]) : [opts.rate ?? 0];
  const forwarder = await startForwarder({
    listenHost: opts.listenHost,
    listenPort: opts.listenPort,
    targetHost: opts.targetHost,
    targetPort: opts.targetPort,
    lane: (i) => ({ rate: rates[i % rates.length] || 0, delayMs: opts.latencyMs ?? 0, sliceBytes: opts.sliceBytes ?? 0 }),
    resetAfterBytes: opts.resetAfterBytes,
    tap: opts.tap,
  });
  const intervals = new Set<ReturnType<typeof setInterval>>();
  const live = (): FaultConn[] => forwarder.conns.filter((c) => c.open);
  return {
    hostname: forwarder.hostname,
    port: forwarder.port,
    connections: () => forwarder.conns.slice(),
    live,
    resetEvery(ms, pick = randomPick) {
      const t = setInterval(() => {
        const l = live();
        if (l.length) pick(l)?.reset();
      }, ms);
      intervals.add(t);
      return () => {
        clearInterval(t);
        intervals.delete(t);
      };
    },
    queuedBytes: () => forwarder.queuedBytes(),
    async stop() {
      for (const t of intervals) clearInterval(t);
      intervals.clear();
      await forwarder.stop();
    },
  };
}

/**
 * The capped link: a TCP relay that simulates a route capping each TCP stream (a token bucket per
 * connection and direction) with an added one-way delay. Benchmarks put it between the striping proxies
 * to show what N streams gain over one.
 *
 * Not the bottleneck: uncapped, 1 connection, 1 GiB one way, median of 3 runs, it relays 1.4 GB/s (runs
 * 1.3–1.6) where the same sender and sink connected directly reach 2.2 GB/s (loopback, 2 shared cores,
 * Bun 1.4.5). Capped at 4 MB/s with 10 ms delay, 16 MB take 3.99 s: 4.007 MB/s, the 80 KB initial burst
 * included. Measured with the link as `bun run src/cli/link.ts --target 127.0.0.1:$SINK --rate 0` (or
 * `--rate 4 --delay 10`) and, in a second process, a Bun sender (256 KiB writes, drain-driven) and sink,
 * timed from the first write to the last byte at the sink.
 */

import { type Conn, startForwarder } from "./forwarder.ts";

/** Where the link listens, where it forwards, and how it shapes each connection. */
export interface CappedLinkOptions {
  /** Default 127.0.0.1. */
  listenHost?: string;
  /** Default 0 (any free port). */
  listenPort?: number;
  targetHost: string;
  targetPort: number;
  /** Bytes/s; connection i gets rates[i % rates.length] in each direction; 0 or missing = uncapped. */
  rates?: number[];
  /** Token bucket depth in bytes; default max(16 KiB, rate * 0.02). */
  burst?: number;
  /** Added one-way delay in each direction, ms; default 0. */
  delayMs?: number;
  /** Hold each new connection this long before forwarding, ms (a TCP handshake's round trip); default 0. */
  connectDelayMs?: number;
  /** Called once per connection when it ends (the CLI prints its counters). */
  onConnectionClosed?(stats: LinkConnStats): void;
}

/** Counters of one connection through the link. */
export interface LinkConnStats {
  /** Accept order, from 0. */
  index: number;
  /** Cap in bytes/s (0 = uncapped). */
  rate: number;
  /** Bytes delivered client → target. */
  bytesUp: number;
  /** Bytes delivered target → client. */
  bytesDown: number;
  open: boolean;
  /** Why it ended abnormally (e.g. "ECONNRESET", "ECONNREFUSED", "stopped"); absent after a clean close. */
  error?: string;
}

/** A running capped link. */
export interface CappedLink {
  readonly hostname: string;
  readonly port: number;
  /** Every connection accepted so far, in accept order. */
  connections(): LinkConnStats[];
  /** Bytes held inside the link now (waiting for tokens, the delay line or a congested destination). */
  queuedBytes(): number;
  /** Per open connection: bytes in each direction's delay line and queued behind its token bucket. */
  held(): { index: number; up: { wire: number; queue: number }; down: { wire: number; queue: number } }[];
  /** Closes the listener and all connections. */
  stop(): Promise<void>;
}

function stats(c: Conn): LinkConnStats {
  const s: LinkConnStats = { index: c.index, rate: c.lane.rate, bytesUp: c.bytesUp, bytesDown: c.bytesDown, open: c.open };
  if (c.error !== undefined) s.error = c.error;
  return s;
}

/** Starts a capped link; resolves once it listens. */
export async function startCappedLink(opts: CappedLinkOptions): Promise<CappedLink> {
  const rates = opts.rates?.length ? opts.rates : [0];
  const forwarder = await startForwarder({
    listenHost: opts.listenHost,
    listenPort: opts.listenPort,
    targetHost: opts.targetHost,
    targetPort: opts.targetPort,
    lane: (i) => ({ rate: rates[i % rates.length] || 0, burst: opts.burst, delayMs: opts.delayMs ?? 0, sliceBytes: 0 }),
    connectDelayMs: opts.connectDelayMs,
    onClose: opts.onConnectionClosed && ((c) => opts.onConnectionClosed!(stats(c))),
  });
  return {
    hostname: forwarder.hostname,
    port: forwarder.port,
    connections: () => forwarder.conns.map(stats),
    queuedBytes: () => forwarder.queuedBytes(),
    held: () => forwarder.conns.filter((c) => c.open).map((c) => ({ index: c.index, ...c.held() })),
    stop: () => forwarder.stop(),
  };
}

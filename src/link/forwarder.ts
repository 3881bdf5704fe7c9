/**
 * The forwarding engine under the capped link and the fault proxy: accept a TCP connection, dial the
 * target, and forward each direction through a Lane (token bucket, delay line, slicer, bounded queue,
 * write backpressure, half-close). Internal to src/link; the public faces are capped.ts and fault.ts.
 * (Named Forwarder, not Relay: the proxy's plain relay, src/proxy/relay.ts, has that name.)
 *
 * It works on raw Bun sockets rather than TcpPipe, because shaping needs partial writes at an offset
 * (`write(buf, off, n)`) and per-socket pause; the socket workarounds are shared (../pipe/bun-socket.ts).
 */

import type { Socket, SocketHandler, TCPSocketListener } from "bun";
import { connectHalfOpen, listenHalfOpen, socketErrorCode } from "../pipe/bun-socket.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** Queue bound of an uncapped lane (bytes held in one direction before its source is paused). */
export const UNCAPPED_QUEUE_LIMIT = 4 * MiB;
/** Headroom above rate*delay + burst in a capped lane's bound, so a steady sender is not paused while tokens remain. */
const CAPPED_QUEUE_SLACK = 256 * KiB;
/** Writes in one turn when slicing, before yielding to the event loop (a 1-byte slicer must not hog it). */
const SLICE_WRITES_PER_TURN = 256;

/** Shaping of one direction of one connection. */
export interface LaneOptions {
  /** Bytes/s; 0 = uncapped. */
  rate: number;
  /** Token bucket depth in bytes; default `defaultBurst(rate)`. */
  burst?: number;
  /** Added one-way delay, ms. */
  delayMs: number;
  /** Largest single write, bytes; 0 = no slicing. */
  sliceBytes: number;
}

/** Default token bucket depth: 20 ms of the rate, at least 16 KiB. */
export function defaultBurst(rate: number): number {
  return Math.max(16 * KiB, rate * 0.02);
}

/** Most bytes a lane holds before pausing its source; it may exceed this by less than one read (512 KiB in Bun). */
export function queueLimit(o: LaneOptions): number {
  if (o.rate <= 0) return UNCAPPED_QUEUE_LIMIT;
  return Math.ceil((o.rate * o.delayMs) / 1000 + (o.burst ?? defaultBurst(o.rate)) + CAPPED_QUEUE_SLACK);
}

type Sock = Socket<Side>;
/** socket.data: which connection a socket belongs to and which end it is. */
interface Side {
  conn: Conn;
  client: boolean;
}

interface Held {
  buf: Uint8Array;
  /** performance.now() at which the delay line releases it (0 without delay). */
  at: number;
}

/** One direction of a connection: reads from `src`, shapes, writes to `dst`. */
class Lane {
  queued = 0;
  /** The source sent FIN. */
  eof = false;
  /** FIN forwarded to the destination (after every queued byte). */
  finSent = false;
  readonly limit: number;
  private readonly q: Held[] = [];
  /** Bytes of q[0] already written. */
  private off = 0;
  private blackholed = false;
  private congested = false;
  private paused = false;
  private stopped = false;
  private readonly burst: number;
  /** Smallest piece worth a timer wake-up: ~2 ms of tokens, so pieces are small and the rate smooth. */
  private readonly piece: number;
  private tokens: number;
  private last = performance.now();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private immediate: ReturnType<typeof setImmediate> | undefined;
  private busy = false;
  private again = false;

  constructor(
    private readonly conn: Conn,
    private readonly src: Sock,
    private readonly dst: Sock,
    private readonly o: LaneOptions,
  ) {
    this.burst = o.burst ?? defaultBurst(o.rate);
    this.piece = Math.max(1, Math.min(this.burst, o.rate * 0.002));
    this.tokens = this.burst;
    this.limit = queueLimit(o);
  }

  /**
   * Bytes held now, split into those still in the delay line ("on the wire") and those released by it
   * but waiting for tokens or a congested destination (the bottleneck's queue).
   */
  held(now: number): { wire: number; queue: number } {
    let wire = 0;
    let queue = -this.off;
    for (const h of this.q) {
      if (h.at > now) wire += h.buf.length;
      else queue += h.buf.length;
    }
    if (queue < 0) {
      wire += queue;
      queue = 0;
    }
    return { wire, queue };
  }

  push(buf: Uint8Array): void {
    if (this.stopped) return;
    this.q.push({ buf, at: this.o.delayMs > 0 ? performance.now() + this.o.delayMs : 0 });
    this.queued += buf.length;
    this.pump();
  }

  end(): void {
    if (this.eof) return;
    this.eof = true;
    this.pump();
  }

  drained(): void {
    // Bun also fires drain on pause()/resume() of a socket that never wrote (docs/bun-sockets.md):
    // only act when congested.
    if (!this.congested) return;
    this.congested = false;
    this.pump();
  }

  blackhole(on: boolean): void {
    this.blackholed = on;
    this.pump();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearImmediate(this.immediate);
    this.q.length = 0;
    this.queued = 0;
  }

  private pump(): void {
    // pause()/resume() may fire drain handlers synchronously and so re-enter here.
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    do {
      this.again = false;
      this.step();
    } while (this.again && !this.stopped);
    this.busy = false;
    this.flow();
  }

  /** Writes what the delay line, the tokens and the destination allow; arms a timer for the rest. */
  private step(): void {
    const { rate, sliceBytes } = this.o;
    let writes = 0;
    while (!this.stopped && !this.congested && !this.blackholed) {
      const head = this.q[0];
      if (head === undefined) {
        if (this.eof && !this.finSent) {
          this.finSent = true;
          this.dst.shutdown();
          this.conn.finSent();
        }
        return;
      }
      const now = rate > 0 || head.at > 0 ? performance.now() : 0;
      if (head.at > now) return this.schedule(head.at - now);
      let n = Math.min(head.buf.length - this.off, this.conn.allowance());
      if (sliceBytes > 0) n = Math.min(n, sliceBytes);
      if (n <= 0) return;
      if (rate > 0) {
        this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * rate) / 1000);
        this.last = now;
        const need = Math.min(n, this.piece);
        if (this.tokens < need) return this.schedule(((need - this.tokens) * 1000) / rate);
        n = Math.min(n, Math.floor(this.tokens));
      }
      const w = this.dst.write(head.buf, this.off, n);
      if (w < 0) return this.conn.abort("EPIPE");
      if (w > 0) {
        this.tokens -= w;
        this.queued -= w;
        this.off += w;
        if (this.off === head.buf.length) {
          this.q.shift();
          this.off = 0;
        }
        this.conn.forwarded(this, w);
      }
      // Bun drops what write() did not take (docs/bun-sockets.md); the rest stays queued at `off` until drain.
      if (w < n) {
        this.congested = true;
        return;
      }
      if (sliceBytes > 0 && ++writes >= SLICE_WRITES_PER_TURN) return this.schedule(0);
    }
  }

  /** One timer per lane: the earliest time anything can move again. */
  private schedule(ms: number): void {
    if (this.timer !== undefined || this.immediate !== undefined) return;
    if (ms <= 0) {
      this.immediate = setImmediate(() => {
        this.immediate = undefined;
        this.pump();
      });
    } else {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.pump();
      }, Math.max(1, Math.ceil(ms)));
    }
  }

  /**
   * Pauses the source while blackholed, congested or over the queue bound; resumes otherwise. Pausing as
   * soon as the destination is congested, rather than reading on up to the bound, measured faster
   * uncapped (1.4 vs 1.1 GB/s).
   */
  private flow(): void {
    if (this.stopped || this.eof) return;
    const want = this.blackholed || this.congested || this.queued >= this.limit;
    if (want === this.paused) return;
    this.paused = want;
    if (want) this.src.pause();
    else this.src.resume();
  }
}

/** Forwarder settings; `lane(i)` gives the shaping of connection i (both directions). */
export interface ForwarderOptions {
  listenHost?: string;
  listenPort?: number;
  targetHost: string;
  targetPort: number;
  lane(index: number): LaneOptions;
  /** Reset both sides after this many bytes forwarded (both directions together). */
  resetAfterBytes?: number;
  /** Called once when a connection ends, cleanly or not. */
  onClose?(conn: Conn): void;
  /**
   * Sees every chunk read on connection `index` (`up`: from the client side) before it is forwarded, and
   * may change its bytes in place (tests: flip a bit in flight) or keep a copy (record a first message).
   */
  tap?(index: number, up: boolean, chunk: Uint8Array): void;
  /**
   * Hold each accepted connection this long (ms) before dialling the target and forwarding its bytes:
   * what TCP's opening handshake costs on a real path (one round trip). Loopback connects in
   * microseconds, so without it a fresh connection through the link is a round trip cheaper than on the
   * route the link stands for, and short-connection benchmarks favour whatever opens more connections.
   */
  connectDelayMs?: number;
}

/** One forwarded connection: the accepted client socket, the dialled target socket and two lanes. */
export class Conn {
  bytesUp = 0;
  bytesDown = 0;
  open = true;
  /** Why it ended abnormally (an errno code, "reset", "stopped", ...); undefined after a clean close. */
  error: string | undefined;
  private up: Lane | undefined;
  private down: Lane | undefined;
  private target: Sock | undefined;
  private clientClosed = false;
  private targetClosed = false;
  private blackholed = false;

  constructor(
    private readonly forwarder: Forwarder,
    readonly index: number,
    readonly lane: LaneOptions,
    private readonly client: Sock,
  ) {}

  get queuedBytes(): number {
    return (this.up?.queued ?? 0) + (this.down?.queued ?? 0);
  }

  /** Per direction: bytes in the delay line and bytes queued behind the token bucket (statistics). */
  held(now = performance.now()): { up: { wire: number; queue: number }; down: { wire: number; queue: number } } {
    const none = { wire: 0, queue: 0 };
    return { up: this.up?.held(now) ?? none, down: this.down?.held(now) ?? none };
  }

  targetOpen(target: Sock): void {
    if (!this.open) return target.terminate();
    this.target = target;
    this.up = new Lane(this, this.client, target, this.lane);
    this.down = new Lane(this, target, this.client, this.lane);
    if (this.allowance() <= 0) return this.reset();
    if (this.blackholed) this.blackhole(true);
    this.client.resume(); // paused while dialling, so nothing arrived before there was a lane
  }

  data(client: boolean, chunk: Uint8Array): void {
    this.forwarder.opts.tap?.(this.index, client, chunk);
    (client ? this.up : this.down)?.push(chunk);
  }

  drain(client: boolean): void {
    (client ? this.down : this.up)?.drained();
  }

  end(client: boolean): void {
    (client ? this.up : this.down)?.end();
  }

  closed(client: boolean, err?: Error): void {
    if (client) this.clientClosed = true;
    else this.targetClosed = true;
    this.forwarder.socketClosed();
    if (!this.open) return;
    const from = client ? this.up : this.down;
    const to = client ? this.down : this.up;
    // After our own shutdown() of this socket, Bun reports the peer's FIN as a close without `end`
    // (docs/bun-sockets.md, "Closing").
    if (!err && from && to?.finSent) return from.end();
    this.abort(errCode(err) ?? "ECONNRESET");
  }

  /** RST both sides now. */
  reset(): void {
    this.abort("reset");
  }

  /** Silent path: pause both sockets and write nothing; nothing closes. */
  blackhole(on = true): void {
    this.blackholed = on;
    this.up?.blackhole(on);
    this.down?.blackhole(on);
  }

  /** Bytes that may still be forwarded before resetAfterBytes fires. */
  allowance(): number {
    const max = this.forwarder.opts.resetAfterBytes;
    return max === undefined ? Infinity : max - this.bytesUp - this.bytesDown;
  }

  forwarded(lane: Lane, n: number): void {
    if (lane === this.up) this.bytesUp += n;
    else this.bytesDown += n;
    if (this.allowance() <= 0) this.reset();
  }

  finSent(): void {
    if (!this.up?.finSent || !this.down?.finSent) return;
    // Both FINs received and forwarded: nothing is left to read, so a full close cannot cause a RST.
    this.finish(undefined);
    if (!this.clientClosed) this.client.end();
    if (this.target && !this.targetClosed) this.target.end();
  }

  /** Tears down with RST on both sides; `code` says why. */
  abort(code: string): void {
    if (!this.open) return;
    this.finish(code);
    if (!this.clientClosed) this.client.terminate();
    if (this.target && !this.targetClosed) this.target.terminate();
  }

  private finish(code: string | undefined): void {
    this.open = false;
    this.error = code;
    this.up?.stop();
    this.down?.stop();
    this.forwarder.opts.onClose?.(this);
  }
}

/** Why a socket failed, for the connection's `error`: its errno code, else its message. */
function errCode(err: unknown): string | undefined {
  return socketErrorCode(err) ?? (err instanceof Error ? err.message : undefined);
}

/** Event handlers shared by both ends of every connection; `socket.data` says which. */
const handlers: SocketHandler<Side> = {
  data: (s, chunk) => s.data.conn.data(s.data.client, chunk),
  drain: (s) => s.data.conn.drain(s.data.client),
  end: (s) => s.data.conn.end(s.data.client),
  close: (s, err) => s.data.conn.closed(s.data.client, err),
  error: (s, err) => s.data.conn.abort(errCode(err) ?? "error"),
};

/** A listening forwarder. */
export class Forwarder {
  readonly conns: Conn[] = [];
  private listener!: TCPSocketListener<Side>;
  private sockets = 0;
  private idle: (() => void) | undefined;

  constructor(readonly opts: ForwarderOptions) {}

  get hostname(): string {
    return this.listener.hostname;
  }
  get port(): number {
    return this.listener.port;
  }

  listen(): void {
    this.listener = listenHalfOpen<Side>(this.opts.listenHost ?? "127.0.0.1", this.opts.listenPort ?? 0, {
      ...handlers,
      open: (s) => this.accept(s),
    });
  }

  private accept(client: Sock): void {
    this.sockets++;
    const index = this.conns.length;
    const conn = new Conn(this, index, this.opts.lane(index), client);
    this.conns.push(conn);
    client.data = { conn, client: true };
    client.pause();
    const target = { conn, client: false };
    const open = (t: Sock): void => {
      this.sockets++;
      conn.targetOpen(t);
    };
    const dial = (): void => {
      if (!conn.open) return; // the client went away while the handshake was being "made"
      connectHalfOpen<Side>(this.opts.targetHost, this.opts.targetPort, target, { ...handlers, open }, (err) =>
        conn.abort(errCode(err) ?? "ECONNREFUSED"),
      );
    };
    const wait = this.opts.connectDelayMs ?? 0;
    if (wait > 0) setTimeout(dial, wait);
    else dial();
  }

  socketClosed(): void {
    if (--this.sockets === 0) this.idle?.();
  }

  queuedBytes(): number {
    let n = 0;
    for (const c of this.conns) if (c.open) n += c.queuedBytes;
    return n;
  }

  /** Closes the listener, resets every connection and waits (up to 1 s) for their sockets to close. */
  async stop(): Promise<void> {
    this.listener.stop(false);
    for (const c of this.conns) c.abort("stopped");
    if (this.sockets === 0) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 1000);
      this.idle = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
}

/** Starts a forwarder listening on opts.listenHost:listenPort (default 127.0.0.1:0). */
export async function startForwarder(opts: ForwarderOptions): Promise<Forwarder> {
  const forwarder = new Forwarder(opts);
  forwarder.listen();
  return forwarder;
}

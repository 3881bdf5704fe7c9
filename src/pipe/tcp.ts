/**
 * TcpPipe: the pipe contract over one Bun TCP socket.
 *
 * Bun facts this relies on (docs/bun-sockets.md): write() takes what the kernel accepts and
 * drops the rest, so the remainder is queued here and flushed from `drain`; end() is a full close, so FIN
 * is sent with shutdown() and both ends use allowHalfOpen; terminate() sends RST, which is how a broken
 * pipe is made visible to a peer as an error rather than a clean EOF. A reset decided while the listener's
 * `open` handler runs is sent on the next timer tick: a Bun client whose first write meets an RST sent
 * from inside `open` reports a clean EOF (an RST on the wire: other clients see ECONNRESET).
 *
 * Every connection, accepted or dialled, is counted against the process's ConnectionGate
 * (src/util/fdlimit.ts) until its socket closes: beyond the accept limit a new connection is reset at
 * once, beyond the total a dial fails with E_FD_LIMIT, so the process never runs out of descriptors.
 * Socket handlers are contained: a throw closes that pipe (E_HANDLER) and is reported, never more.
 */

import type { Socket, SocketHandler, TCPSocketListener } from "bun";
import { BrokenError, ConnectError, StriperError, asStriperError } from "../errors.ts";
import { connectionGate, type ConnectionGate } from "../util/fdlimit.ts";
import { guardedTimeout, reportContained } from "../util/guard.ts";
import { connectHalfOpen, listenHalfOpen } from "./bun-socket.ts";
import { NOOP_HANDLER, newStats, type Pipe, type PipeHandler, type PipeState, type PipeStats } from "./pipe.ts";

/** A pipe over a Bun TCP socket. Create with `connectTcp` or receive from `listenTcp`. */
export class TcpPipe implements Pipe {
  state: PipeState = "opening";
  readable = true;
  writable = true;
  error: StriperError | undefined;
  readonly stats: PipeStats = newStats();
  /** The kernel copies what write() accepts; the queue is empty again at `drain`. */
  readonly copiesOnSend = true;
  /** Human-readable remote address, for logs. */
  remote = "";
  /** The remote host alone (an accepted connection's source address), for per-source limits. */
  remoteHost = "";

  private socket: Socket<TcpPipe> | undefined;
  private handler: PipeHandler = NOOP_HANDLER;
  // Unsent bytes: chunks waiting for `drain`. Bounded by the callers, who stop on send() === false.
  private queue: Uint8Array[] = [];
  private queueHead = 0;
  private queuedBytes = 0;
  private finPending = false; // shutdown() called while data was still queued
  private finSent = false;
  private paused = false;
  /** The gate this pipe's descriptor is counted in, and as what, until its socket closes. */
  private gate: ConnectionGate | undefined;
  private gateKind: "accepted" | "dialled" = "accepted";
  /** @internal Inside the listener's `open` handler: a reset now waits for the next tick (module comment). */
  opening = false;
  private closeHooks: (() => void)[] | undefined;

  /** Calls `fn` once when this pipe closes (at once if it has): for counts kept beside its handler. */
  whenClosed(fn: () => void): void {
    if (this.state === "closed") return fn();
    (this.closeHooks ??= []).push(fn);
  }

  setHandler(handler: PipeHandler): void {
    this.handler = handler;
  }

  /** Bytes accepted by send() that the kernel has not taken yet. */
  get pendingBytes(): number {
    return this.queuedBytes;
  }

  send(chunk: Uint8Array): boolean {
    if (!this.writable) throw new BrokenError("E_NOT_WRITABLE", "send() after shutdown or close");
    this.stats.bytesOut += chunk.byteLength;
    const socket = this.socket;
    if (this.queuedBytes === 0 && socket !== undefined && this.state === "open") {
      const n = socket.write(chunk);
      if (n === chunk.byteLength) return true;
      if (n < 0) {
        // The socket is dead; `close` follows and reports it.
        this.stats.congestions++;
        return false;
      }
      chunk = chunk.subarray(n);
    }
    this.queue.push(chunk);
    this.queuedBytes += chunk.byteLength;
    this.stats.congestions++;
    return false;
  }

  shutdown(): void {
    if (!this.writable) return;
    this.writable = false;
    if (this.queuedBytes > 0 || this.state !== "open") {
      this.finPending = true;
      return;
    }
    this.sendFin();
  }

  pause(): void {
    this.paused = true;
    this.socket?.pause();
  }

  resume(): void {
    this.paused = false;
    this.socket?.resume();
  }

  close(err?: StriperError): void {
    if (this.state === "closed") return;
    const socket = this.socket;
    this.finish(err);
    if (socket === undefined) return;
    if (err === undefined) socket.end();
    else if (this.opening) resetSoon(socket);
    else socket.terminate();
  }

  /** @internal Counts this pipe's descriptor in `gate` until its socket closes (or its dial fails). */
  countIn(gate: ConnectionGate, kind: "accepted" | "dialled"): void {
    this.gate = gate;
    this.gateKind = kind;
  }

  /** @internal The descriptor is gone: the gate forgets it (once). */
  uncount(): void {
    const gate = this.gate;
    this.gate = undefined;
    gate?.onClose(this.gateKind);
  }

  // --- socket events (called from tcpHandlers) ---

  /** @internal `accepted`: called from the listener's `open` handler. */
  onOpen(socket: Socket<TcpPipe>, accepted = false): void {
    if (this.state === "closed") {
      if (accepted) resetSoon(socket);
      else socket.terminate();
      return;
    }
    this.socket = socket;
    this.remote = this.remote || remoteOf(socket);
    this.state = "open";
    if (this.paused) socket.pause();
    this.handler.ready?.();
    if (this.state !== "open") return;
    if (this.queuedBytes > 0) this.flush();
    else if (this.finPending) {
      this.finPending = false;
      this.sendFin();
    }
  }

  /** @internal */
  onData(chunk: Uint8Array): void {
    if (this.state !== "open") return;
    this.stats.bytesIn += chunk.byteLength;
    this.handler.data(chunk);
  }

  /** @internal */
  onDrain(): void {
    // Bun also fires drain on pause()/resume() of a socket that never wrote (docs/bun-sockets.md): harmless here.
    if (this.state !== "open" || this.queuedBytes === 0) return;
    this.flush();
  }

  /** @internal Peer sent FIN. */
  onEnd(): void {
    if (this.state !== "open" || !this.readable) return;
    this.readable = false;
    this.handler.end();
    this.maybeDone();
  }

  /** @internal */
  onClose(err?: Error): void {
    if (this.state === "closed") return;
    if (err === undefined && this.error === undefined && this.finSent && this.queuedBytes === 0) {
      // After our own shutdown() Bun reports the peer's FIN as a plain close with no `end` event
      // (docs/bun-sockets.md, "Closing").
      if (this.readable) {
        this.readable = false;
        this.handler.end();
      }
      this.finish(undefined);
      return;
    }
    if (err === undefined && this.error === undefined && !this.readable && !this.writable && this.queuedBytes === 0) {
      this.finish(undefined);
      return;
    }
    this.finish(
      this.error ??
        (err ? asStriperError(err, "E_SOCKET") : new BrokenError("ECONNRESET", `connection to ${this.remote} lost`)),
    );
  }

  /** @internal */
  onError(err: Error): void {
    this.error ??= asStriperError(err, "E_SOCKET");
  }

  /** @internal Bun.connect failed before open (reported once by connectHalfOpen). */
  onConnectError(err: unknown, where: string): void {
    if (this.state === "closed") return;
    const cause = asStriperError(err, "E_CONNECT");
    this.finish(new ConnectError(cause.code, `cannot connect to ${where}: ${cause.message}`, { cause: err }));
  }

  private flush(): void {
    const socket = this.socket!;
    while (this.queueHead < this.queue.length) {
      const chunk = this.queue[this.queueHead]!;
      const n = socket.write(chunk);
      if (n < 0) return; // dead; close follows
      this.queuedBytes -= n;
      if (n < chunk.byteLength) {
        this.queue[this.queueHead] = chunk.subarray(n);
        return;
      }
      this.queue[this.queueHead++] = undefined as unknown as Uint8Array;
    }
    this.queue = [];
    this.queueHead = 0;
    if (this.finPending) {
      this.finPending = false;
      this.sendFin();
      if (this.state !== "open") return;
    }
    this.handler.drain();
  }

  private sendFin(): void {
    this.finSent = true;
    this.socket!.shutdown();
    this.maybeDone();
  }

  /** Both directions finished: close the descriptor and report a clean close. */
  private maybeDone(): void {
    if (this.readable || this.writable || !this.finSent || this.queuedBytes > 0) return;
    const socket = this.socket;
    this.finish(undefined);
    socket?.end();
  }

  private finish(err: StriperError | undefined): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.error = err;
    this.readable = false;
    this.writable = false;
    this.queue = [];
    this.queueHead = 0;
    this.queuedBytes = 0;
    const handler = this.handler;
    this.handler = NOOP_HANDLER;
    const hooks = this.closeHooks;
    this.closeHooks = undefined;
    for (const h of hooks ?? []) h();
    handler.close(err);
  }
}

/** Sends RST on the next timer tick (see the module comment), unless the socket has closed by then. */
function resetSoon(socket: Socket<TcpPipe> | Socket<undefined>): void {
  guardedTimeout("tcp reset", () => socket.terminate(), 0);
}

/**
 * A socket handler whose throw is contained: reported, and the pipe closed with E_HANDLER, instead of
 * going to Bun's `error` handler with the socket left open and the pipe half-updated.
 */
function contained<A extends unknown[]>(name: string, fn: (socket: Socket<TcpPipe>, ...args: A) => void) {
  return (socket: Socket<TcpPipe>, ...args: A): void => {
    try {
      fn(socket, ...args);
    } catch (err) {
      reportContained(`socket ${name} handler`, err);
      socket.data?.close(asStriperError(err, "E_HANDLER"));
    }
  };
}

/** Bun socket handlers shared by every TcpPipe; `socket.data` is the pipe. */
const tcpHandlers: SocketHandler<TcpPipe> = {
  open: contained("open", (socket) => socket.data.onOpen(socket)),
  data: contained("data", (socket, chunk: Uint8Array) => socket.data.onData(chunk)),
  drain: contained("drain", (socket) => socket.data.onDrain()),
  end: contained("end", (socket) => socket.data.onEnd()),
  close: contained("close", (socket, err?: Error) => {
    const pipe = socket.data as TcpPipe | undefined; // undefined: reset by the gate before it had a pipe
    pipe?.uncount();
    pipe?.onClose(err ?? undefined);
  }),
  error(socket, err) {
    socket.data?.onError(err);
  },
};

/** Parsed HOST:PORT. IPv6 hosts are kept without brackets. */
export interface Address {
  host: string;
  port: number;
}

/**
 * A socket's peer for logs: "203.0.113.7:443", "[2001:db8::1]:443" (brackets, so the port is not read as
 * part of the address), IPv4-mapped IPv6 as plain IPv4, "unknown" when the socket could not say.
 */
export function remoteOf(socket: { remoteAddress?: string; remotePort?: number }): string {
  const raw = socket.remoteAddress || "unknown";
  const host = raw.toLowerCase().startsWith("::ffff:") && raw.includes(".") ? raw.slice(7) : raw;
  return `${host.includes(":") ? `[${host}]` : host}:${socket.remotePort ?? ""}`;
}

/** Formats an address for logs, bracketing IPv6 hosts. */
export function formatAddress(a: Address): string {
  return a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/**
 * Opens a TCP connection; returns at once with a pipe in state "opening". Failure closes it with
 * ConnectError (after the caller has installed its handler): E_FD_LIMIT when the process is at its
 * descriptor limit, else the system's code.
 */
export function connectTcp(to: Address, handler?: PipeHandler): TcpPipe {
  const pipe = new TcpPipe();
  if (handler) pipe.setHandler(handler);
  pipe.remote = formatAddress(to);
  const gate = connectionGate();
  if (!gate.onDial()) {
    const err = new ConnectError("E_FD_LIMIT", `descriptor limit: ${gate.accepted + gate.dialled} connections open, ${gate.limits.total} at most`);
    guardedTimeout("tcp dial refused", () => pipe.onConnectError(err, pipe.remote), 0);
    return pipe;
  }
  pipe.countIn(gate, "dialled");
  connectHalfOpen(to.host, to.port, pipe, tcpHandlers, (err) => {
    pipe.uncount();
    pipe.onConnectError(err, pipe.remote);
  });
  return pipe;
}

/** A TCP listener that hands each accepted connection to `onAccept` as an open TcpPipe. */
export interface TcpListener {
  readonly host: string;
  readonly port: number;
  /** Stops accepting. Existing connections stay open. */
  stop(): void;
}

/** Options of listenTcp. */
export interface ListenOptions {
  /** SO_REUSEPORT: other processes may listen on the same address (the kernel spreads connections). */
  reusePort?: boolean;
}

/**
 * Listens on `at`; `onAccept` must install a handler synchronously. The pipe is still "opening" inside
 * `onAccept`; it opens (and `ready` fires) right after. Beyond the process's accept limit a connection
 * is reset at once and never reaches `onAccept` (the gate logs that once per episode).
 */
export function listenTcp(at: Address, onAccept: (pipe: TcpPipe) => void, options: ListenOptions = {}): TcpListener {
  const listener: TCPSocketListener<TcpPipe> = listenHalfOpen<TcpPipe>(at.host, at.port, {
    ...tcpHandlers,
    open(socket) {
      const gate = connectionGate();
      if (gate.onAccept() === "close") {
        resetSoon(socket);
        return;
      }
      const pipe = new TcpPipe();
      socket.data = pipe;
      pipe.countIn(gate, "accepted");
      pipe.remoteHost = socket.remoteAddress ?? "";
      // The peer may be gone already (no address): "unknown", never "undefined:".
      pipe.remote = remoteOf(socket);
      pipe.opening = true;
      try {
        onAccept(pipe);
        pipe.onOpen(socket, true);
      } catch (err) {
        reportContained("accept handler", err);
        pipe.close(asStriperError(err, "E_HANDLER"));
      } finally {
        pipe.opening = false;
      }
    },
  }, options.reusePort === true);
  return {
    host: at.host,
    port: listener.port,
    stop() {
      listener.stop(false);
    },
  };
}

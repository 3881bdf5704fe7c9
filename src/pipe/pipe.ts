/**
 * The pipe contract (the original design's io_pipe.h, in TypeScript idiom).
 *
 * A pipe is a duplex, reliable, ordered byte channel with TCP semantics. Implementations: TcpPipe (a Bun
 * socket), DatagramPipe (length-prefixed messages over another pipe) and StripedPipe (one pipe over 1..N
 * carrier pipes). A Bridge joins two pipes.
 *
 * States:
 *   "opening" – created, not yet connected (or handshake pending). send() queues; no data arrives yet.
 *   "open"    – ready: data flows. `handler.ready()` fired on entry.
 *   "closed"  – finished. `handler.close(err)` fired exactly once on entry; `err` is set when the pipe
 *               broke (reset, protocol error, peer unreachable) and undefined after a clean shutdown of
 *               both directions. Nothing fires after close.
 *
 * Directions are independent (half-close):
 *   - shutdown() sends FIN after every byte already passed to send(); send() after shutdown() throws.
 *     `writable` turns false at once.
 *   - handler.end() fires when the peer's FIN arrives, after all its data; `readable` turns false.
 *   - When both FINs have happened and all data is flushed, the pipe closes cleanly by itself.
 *
 * Backpressure, sending: send() always takes the whole chunk (ownership passes to the pipe; the caller
 * must not modify it afterwards) and returns false when the pipe is congested, i.e. it holds unsent
 * bytes. The caller then stops sending until handler.drain(). A caller that ignores false can make the
 * pipe's queue grow; every caller in this package respects it, so each pipe queue holds at most one
 * chunk beyond its limit.
 *
 * Backpressure, receiving: pause() stops `data` events (the peer then sees its own congestion);
 * resume() restarts them. EOF is held back while paused.
 *
 * Ownership on receipt: a chunk passed to `data` belongs to the receiver, which may keep it without
 * copying.
 */

import type { StriperError } from "../errors.ts";

/** Lifecycle of a pipe; see the module comment. */
export type PipeState = "opening" | "open" | "closed";

/** Callbacks a pipe delivers its events to. Set once with `setHandler` before data can arrive. */
export interface PipeHandler {
  /** The pipe is ready (connected, handshake done). */
  ready?(): void;
  /** Bytes arrived, in order. The receiver owns the chunk. */
  data(chunk: Uint8Array): void;
  /** The pipe can take more after send() returned false. May also fire when nothing was pending. */
  drain(): void;
  /** The peer half-closed: no more data will arrive. */
  end(): void;
  /** The pipe closed; `err` is set when it broke. Fires exactly once. */
  close(err?: StriperError): void;
}

/** Byte and congestion counters, per direction. */
export interface PipeStats {
  /** Bytes received from the peer and delivered to the handler. */
  bytesIn: number;
  /** Bytes handed to send(). */
  bytesOut: number;
  /** Times send() returned false (the pipe became congested). */
  congestions: number;
}

/** A duplex, reliable, ordered channel with TCP semantics. */
export interface Pipe {
  readonly state: PipeState;
  /** False once the peer's FIN has been delivered (or the pipe closed). */
  readonly readable: boolean;
  /** False once shutdown() was called (or the pipe closed). */
  readonly writable: boolean;
  /** The reason the pipe broke, once it has. */
  readonly error: StriperError | undefined;
  readonly stats: PipeStats;
  /**
   * True when send() returning true means the bytes were copied out (a socket: the kernel took them),
   * and when `drain` means every queued chunk was; the caller may then reuse its buffers. Pipes that
   * keep chunks by reference leave it unset, and callers must hand them buffers they never touch again.
   */
  readonly copiesOnSend?: boolean;
  /** Installs the event handler. Must be called before the pipe opens. */
  setHandler(handler: PipeHandler): void;
  /** Sends a chunk (ownership passes to the pipe). Returns false when congested: wait for drain(). */
  send(chunk: Uint8Array): boolean;
  /**
   * Optional: sends the concatenation of `pieces` (`length` bytes in all) as send() would, but takes
   * what it needs of them before it returns, so the caller may reuse them at once. Offered by pipes that
   * transform what they send anyway (SealedPipe encrypts straight from the pieces), so that a sender
   * need not copy its pieces together first. `cuts` (ascending offsets) are where the pipe's own units
   * should end (SealedPipe: records), so the peer can release what arrived before a cut without waiting
   * for what follows it.
   */
  sendv?(pieces: readonly Uint8Array[], length: number, cuts?: readonly number[]): boolean;
  /** Half-close: FIN after all data passed to send(). */
  shutdown(): void;
  /** Stop delivering `data` (receive backpressure). */
  pause(): void;
  /** Deliver `data` again. */
  resume(): void;
  /**
   * Tear down now. With `err` the peer must see an abnormal end (a TCP reset, a session reset), never a
   * clean EOF; without it, pending data is dropped and the connection closed.
   */
  close(err?: StriperError): void;
}

/** A handler that ignores everything: installed on pipes whose owner has let go of them. */
export const NOOP_HANDLER: PipeHandler = { data() {}, drain() {}, end() {}, close() {} };

/** Fresh zeroed counters. */
export function newStats(): PipeStats {
  return { bytesIn: 0, bytesOut: 0, congestions: 0 };
}

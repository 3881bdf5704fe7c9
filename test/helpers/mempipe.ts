/**
 * An in-memory Pipe pair for tests that must control the network: nothing moves until the test says so.
 *
 * Each direction has a FIFO of sent chunks (and, after shutdown(), a FIN marker). `deliver(dir, max)`
 * releases the next chunk — or its first `max` bytes, leaving the rest at the head — to the other end's
 * handler, so a test decides how frames from several carriers interleave and where they are split.
 * Everything else follows the pipe contract (src/pipe/pipe.ts):
 *
 *   - states opening → open → closed; `ready()` on open; `close(err)` exactly once, nothing after it;
 *   - send() takes the whole chunk by reference (ownership passes) unless `copyOnSend`, which copies it
 *     like a kernel socket and sets `copiesOnSend`; it returns false while more than `highWaterMark`
 *     bytes are queued (0: whenever anything is queued, TcpPipe's behaviour); `drain()` fires when a
 *     congested queue empties;
 *   - half-close per direction: shutdown() queues a FIN behind the data; the peer's `end()` fires when it
 *     is delivered; an end whose FIN was delivered and whose peer's FIN arrived closes cleanly;
 *   - pause() holds delivery into that end (the chunks stay queued at the sender, so the sender stays
 *     congested, as with a full TCP receive window); the FIN is held back too;
 *   - close(err) is a reset: both queues are dropped and the peer closes with ECONNRESET at once.
 *     close() without err drops what this end had queued and sends a FIN.
 *   - `kill()` resets the connection from the middle: both ends close with ECONNRESET.
 */

import { BrokenError, type StriperError } from "../../src/errors.ts";
import { NOOP_HANDLER, newStats, type Pipe, type PipeHandler, type PipeState, type PipeStats } from "../../src/pipe/pipe.ts";

/** Options of a memory pipe pair. */
export interface MemPipeOptions {
  /** send() returns false while more than this many bytes are queued (default 0, like TcpPipe). */
  highWaterMark?: number;
  /** Copy each chunk on send(), like a kernel socket buffer; default false (the contract's ownership). */
  copyOnSend?: boolean;
  /**
   * Start open (default true: ready() fires before any handler is set, like a carrier whose handshake is
   * done). With false, set the handlers and call `open()` to see ready().
   */
  open?: boolean;
  /** For messages. */
  name?: string;
}

const FIN = Symbol("FIN");
type Item = Uint8Array | typeof FIN;


/** One end of a memory pipe pair. */
export class MemPipeEnd implements Pipe {
  state: PipeState = "opening";
  readable = true;
  writable = true;
  error: StriperError | undefined;
  readonly stats: PipeStats = newStats();
  /** Times close(err?) was fired to the handler (must end at most 1). */
  closeEvents = 0;
  /** True once pause() was called and not yet resumed. */
  paused = false;

  peer!: MemPipeEnd;
  /** What this end sent and the test has not delivered yet. */
  readonly queue: Item[] = [];
  queuedBytes = 0;
  private congested = false;
  /** This end's FIN reached the peer. */
  finDelivered = false;
  private handler: PipeHandler = NOOP_HANDLER;

  constructor(
    readonly name: string,
    private readonly highWaterMark: number,
    private readonly copyOnSend: boolean,
  ) {
    this.copiesOnSend = copyOnSend ? true : undefined;
  }

  /** pipe.ts: true when send() copies (the caller may reuse its buffer); unset when chunks are kept by reference. */
  readonly copiesOnSend: boolean | undefined;

  setHandler(handler: PipeHandler): void {
    this.handler = handler;
  }

  send(chunk: Uint8Array): boolean {
    if (!this.writable) throw new BrokenError("E_NOT_WRITABLE", `${this.name}: send() after shutdown or close`);
    this.stats.bytesOut += chunk.byteLength;
    if (chunk.byteLength > 0) {
      this.queue.push(this.copyOnSend ? chunk.slice() : chunk);
      this.queuedBytes += chunk.byteLength;
    }
    if (this.queuedBytes > this.highWaterMark) {
      this.congested = true;
      this.stats.congestions++;
      return false;
    }
    return true;
  }

  shutdown(): void {
    if (!this.writable) return;
    this.writable = false;
    this.queue.push(FIN);
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
  }

  close(err?: StriperError): void {
    if (this.state === "closed") return;
    if (err !== undefined) {
      this.finish(err);
      this.peer.finish(new BrokenError("ECONNRESET", `${this.peer.name}: connection reset by peer`));
      return;
    }
    // Pending data dropped; the peer still sees a FIN (after what was already delivered).
    this.queue.length = 0;
    this.queuedBytes = 0;
    if (!this.finDelivered) this.queue.push(FIN);
    this.finish(undefined);
  }

  /** Bytes (not counting a FIN) this end has queued towards its peer. */
  get pending(): number {
    return this.queuedBytes;
  }

  /** True when something (data or FIN) waits in this end's outbound queue. */
  get hasQueued(): boolean {
    return this.queue.length > 0;
  }

  /** @internal Opens this end. */
  open(): void {
    if (this.state !== "opening") return;
    this.state = "open";
    this.handler.ready?.();
  }

  /**
   * @internal Moves the next item of this end's queue to the peer: up to `maxBytes` of the head chunk,
   * or the FIN. Returns the bytes moved (0 for a FIN), or -1 when nothing could move.
   */
  deliverNext(maxBytes: number): number {
    const rx = this.peer;
    if (this.queue.length === 0) return -1;
    if (this.state === "opening" || rx.state === "opening") return -1;
    if (rx.state !== "closed" && rx.paused) return -1;
    const head = this.queue[0]!;
    if (head === FIN) {
      this.queue.shift();
      this.finDelivered = true;
      if (rx.state !== "closed" && rx.readable) {
        rx.readable = false;
        rx.handler.end();
        rx.maybeDone();
      }
      this.maybeDone();
      return 0;
    }
    const n = Math.max(1, Math.min(maxBytes, head.byteLength));
    let piece: Uint8Array;
    if (n >= head.byteLength) {
      piece = head;
      this.queue.shift();
    } else {
      piece = head.subarray(0, n);
      this.queue[0] = head.subarray(n);
    }
    this.queuedBytes -= n;
    if (rx.state !== "closed" && rx.readable) {
      rx.stats.bytesIn += n;
      rx.handler.data(piece);
    }
    if (this.queuedBytes === 0 && this.congested && this.state !== "closed") {
      this.congested = false;
      this.handler.drain();
    }
    return n;
  }

  /** Closes cleanly once both FINs went through. */
  private maybeDone(): void {
    if (this.state === "closed") return;
    if (this.readable || this.writable || !this.finDelivered) return;
    this.finish(undefined);
  }

  /** @internal */
  finish(err: StriperError | undefined): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.error = err;
    this.readable = false;
    this.writable = false;
    if (err !== undefined) {
      this.queue.length = 0;
      this.queuedBytes = 0;
    }
    const handler = this.handler;
    this.handler = NOOP_HANDLER;
    this.closeEvents++;
    handler.close(err);
  }
}

/** Direction of a memory pipe pair: "ab" moves what `a` sent to `b`. */
export type Direction = "ab" | "ba";

/** A connected pair of memory pipes and the controls that move bytes between them. */
export class MemPipePair {
  readonly a: MemPipeEnd;
  readonly b: MemPipeEnd;

  constructor(opts: MemPipeOptions = {}) {
    const name = opts.name ?? "mem";
    const hwm = opts.highWaterMark ?? 0;
    const copy = opts.copyOnSend ?? false;
    this.a = new MemPipeEnd(`${name}.a`, hwm, copy);
    this.b = new MemPipeEnd(`${name}.b`, hwm, copy);
    this.a.peer = this.b;
    this.b.peer = this.a;
    if (opts.open ?? true) this.open();
  }

  /** Both ends become open (ready() fires on each). */
  open(): void {
    this.a.open();
    this.b.open();
  }

  /** The sending end of a direction. */
  from(dir: Direction): MemPipeEnd {
    return dir === "ab" ? this.a : this.b;
  }

  /** Bytes queued in a direction (the FIN not counted). */
  queued(dir: Direction): number {
    return this.from(dir).queuedBytes;
  }

  /** True when neither direction has anything (data or FIN) left to deliver. */
  get idle(): boolean {
    return !this.a.hasQueued && !this.b.hasQueued;
  }

  /** True once both ends are closed. */
  get closed(): boolean {
    return this.a.state === "closed" && this.b.state === "closed";
  }

  /**
   * Releases the next chunk of `dir` (or its first `maxBytes`) to the receiving end. Returns the bytes
   * released (0 for a FIN), or -1 when nothing could move (empty, receiver paused, not open).
   */
  deliver(dir: Direction, maxBytes = Infinity): number {
    return this.from(dir).deliverNext(maxBytes);
  }

  /**
   * Delivers `dir` in pieces of at most `maxBytes` until it is empty or blocked. Returns the number of
   * deliveries made (chunks, pieces and the FIN).
   */
  deliverAll(dir: Direction, maxBytes = Infinity, maxSteps = 10_000_000): number {
    for (let i = 0; i < maxSteps; i++) if (this.deliver(dir, maxBytes) < 0) return i;
    throw new Error(`${this.a.name}: deliverAll(${dir}) did not settle within ${maxSteps} steps`);
  }

  /**
   * Delivers both directions, alternating whole chunks, until neither can move (replies the handlers
   * send while receiving are delivered too). Returns the number of deliveries made.
   */
  flushAll(maxSteps = 1_000_000): number {
    return flushAll([this], maxSteps);
  }

  /** A reset in the middle of the path: both ends close with ECONNRESET and queued bytes are lost. */
  kill(reason = "killed by test"): void {
    const aErr = new BrokenError("ECONNRESET", `${this.a.name}: ${reason}`);
    const bErr = new BrokenError("ECONNRESET", `${this.b.name}: ${reason}`);
    this.a.queue.length = 0;
    this.a.queuedBytes = 0;
    this.b.queue.length = 0;
    this.b.queuedBytes = 0;
    this.a.finish(aErr);
    this.b.finish(bErr);
  }
}

/** Creates a connected memory pipe pair (open unless `open: false`). */
export function memPipePair(opts: MemPipeOptions = {}): MemPipePair {
  return new MemPipePair(opts);
}

/**
 * Delivers on every pair, round-robin over pairs and directions one whole chunk at a time, until nothing
 * can move. Returns the number of deliveries made (0: everything was already idle or blocked).
 */
export function flushAll(pairs: Iterable<MemPipePair>, maxRounds = 1_000_000): number {
  const list = [...pairs];
  let steps = 0;
  for (let r = 0; r < maxRounds; r++) {
    let moved = false;
    for (const p of list) {
      for (const dir of ["ab", "ba"] as const) {
        if (p.deliver(dir) >= 0) {
          moved = true;
          steps++;
        }
      }
    }
    if (!moved) return steps;
  }
  throw new Error(`flushAll did not settle within ${maxRounds} rounds: the handlers keep producing data`);
}

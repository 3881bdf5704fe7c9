/**
 * StripedPipe: one pipe over 1..N carrier pipes ("stripes"), the session state of both proxies.
 *
 * Sending: bytes given to send() are kept in a SendBuffer (zero-copy) until the far side acknowledges
 * them, cut into DATA frames that carry their stream offset, and spread over the stripes by the
 * Scheduler. Receiving: each stripe has its own FrameDecoder; DATA fragments go into a ReorderBuffer and
 * leave in order. Flow control is a window: a sender never has more than `window` bytes unacknowledged,
 * so the receiver's reorder buffer and its pending writes are bounded by it, and the sender stops
 * reading its local socket when its store is full.
 *
 * Lossless: a stripe that closes, resets or goes silent is dropped; whatever it carried that its ACKed
 * per-stripe byte count does not cover is re-sent on the others. The client re-dials it. The session
 * survives with no stripe for `graceMs`; after that it is reset (never passed on as a clean EOF).
 *
 * Ends: the data-level FIN (FRAME_FIN) is acknowledged like data (ACK_FLAG_FIN). When both FINs are
 * acknowledged, the stripes are shut down; stripes do not carry session semantics of their own.
 */

import { BrokenError, ConnectError, ProtocolError, StriperError, asStriperError } from "../errors.ts";
import { FrameDecoder, encodeFrame, type FrameSink } from "../wire/codec.ts";
import {
  ACK_FLAG_FIN,
  FRAME_ACK,
  FRAME_DATA,
  FRAME_FIN,
  FRAME_HEADER_SIZE,
  FRAME_PING,
  FRAME_PONG,
  FRAME_RESET,
  RESET_GRACE_EXPIRED,
  RESET_PEER_FAILED,
  RESET_PROTOCOL,
  RESET_SHUTDOWN,
  RESET_TARGET_UNREACHABLE,
} from "../wire/constants.ts";
import { BufferPool, FrameBatch } from "../wire/batch.ts";
import { ReorderBuffer } from "../stripe/reorder.ts";
import { SendBuffer } from "../stripe/sendbuf.ts";
import type { BufferBudget } from "../stripe/budget.ts";
import { Scheduler, type SchedulerMode, type StripeView } from "../stripe/scheduler.ts";
import { NOOP_HANDLER, newStats, type Pipe, type PipeHandler, type PipeState, type PipeStats } from "./pipe.ts";

/** Tunables of a striped session. */
export interface SessionOptions {
  /** "client" re-dials dead stripes; "server" waits for them to re-join. */
  role: "client" | "server";
  /** Receive window offered to the peer and the limit of the local send store, in bytes. */
  window: number;
  /** Largest DATA payload per frame. */
  frameSize: number;
  /** Largest single write to a stripe (frames are coalesced up to this). */
  batchSize: number;
  scheduler: SchedulerMode;
  /** A stripe that received nothing for this long is pinged. */
  keepaliveMs: number;
  /** A stripe that received nothing for this long is declared dead. */
  deadMs: number;
  /** How long the session outlives having no stripe at all. */
  graceMs: number;
}

/** Defaults; the CLI exposes most of them. */
export const DEFAULT_SESSION_OPTIONS: Omit<SessionOptions, "role"> = {
  window: 16 * 1024 * 1024,
  frameSize: 256 * 1024,
  batchSize: 512 * 1024,
  scheduler: "rate",
  keepaliveMs: 1000,
  deadMs: 5000,
  graceMs: 10_000,
};

/** Default limit on the bytes all sessions of one proxy hold in their send stores. */
export const DEFAULT_MAX_BUFFER = 32 * 1024 * 1024;

/** Bytes a batch buffer has beyond batchSize. */
export const BATCH_SLACK = 32 * 1024;
/** A chunk tail shorter than this rides along in the current batch rather than leaving alone later. */
const SHORT_TAIL = 16 * 1024;

const ACK_DELAY_MS = 2;
/** An ACK goes out at once after this much (or window/8 if smaller); otherwise after ACK_DELAY_MS. */
const ACK_EVERY_BYTES = 1024 * 1024;
const TICK_MS = 250;
const LINGER_MS = 3000;
const MIN_RATE_INTERVAL_MS = 50;
/** Least time without ack progress before head-of-line frames are re-sent on other stripes. */
const HOL_MIN_MS = 400;

/** Below this, a batch is copied out rather than lending a whole pooled buffer to a congested socket. */
const LEND_MIN = 64 * 1024;

const pools = new Map<number, BufferPool>();
const batches = new Map<BufferPool, FrameBatch>();
/** One FrameBatch per pool, shared by all sessions (it holds a buffer only inside writeBatch). */
function batchFor(pool: BufferPool): FrameBatch {
  let b = batches.get(pool);
  if (!b) batches.set(pool, (b = new FrameBatch(new Uint8Array(0))));
  return b;
}
function poolFor(size: number): BufferPool {
  let pool = pools.get(size);
  if (!pool) pools.set(size, (pool = new BufferPool(size)));
  return pool;
}

/** Frames sent on one stripe and not yet known to be received there, as parallel FIFO arrays. */
class Stripe implements StripeView {
  usable = true;
  congested = false;
  inflight = 0;
  rate = 0;
  /** Minimum RTT this stripe has measured (ms). */
  minRtt = 0;
  /**
   * The RTT the scheduler sizes this stripe by: its own minimum, but at most twice the session's
   * smallest. A slow stripe's early samples include its own queue (its first frames wait behind
   * each other), and a minimum taken from them never comes down: its cap, and queue, would stay
   * inflated for the whole session (measured: 464 ms on a 20 ms path).
   */
  rtt = 0;
  /** Smoothed RTT (ms), for statistics. */
  srtt = 0;
  /** Bytes written to this stripe connection (after the handshake). */
  sentPos = 0;
  /** Bytes received from it (after the handshake). */
  recvPos = 0;
  lastRecvAt: number;
  pingSentAt = 0;
  pendingPong = -1;
  /** The peer's stripe-level FIN arrived (only expected once the session is ending). */
  peerEnded = false;
  /** Times this stripe held up in-order delivery and had its frames re-sent elsewhere. */
  stalls = 0;
  /** A pooled buffer the carrier still holds (congested write); returned on drain. */
  lent: Uint8Array | undefined;
  decoder!: FrameDecoder;
  // In-flight DATA and FIN frames: stream offset, length, stripe position after the frame, send time.
  fOff: number[] = [];
  fLen: number[] = [];
  fEnd: number[] = [];
  fTime: number[] = [];
  fHead = 0;
  // Delivery-rate sampling.
  sampleStart = 0;
  sampleBytes = 0;

  constructor(
    readonly index: number,
    readonly generation: number,
    readonly pipe: Pipe,
    now: number,
  ) {
    this.lastRecvAt = now;
    this.sampleStart = now;
  }

  /** Notes a frame whose last byte sits at stripe position `endPos`. */
  record(offset: number, len: number, endPos: number, now: number): void {
    this.fOff.push(offset);
    this.fLen.push(len);
    this.fEnd.push(endPos);
    this.fTime.push(now);
    this.inflight += len;
  }

  /** Applies the peer's received-byte count; returns bytes newly known delivered on this stripe. */
  delivered(recv32: number, now: number): number {
    let bytes = 0;
    let lastTime = -1;
    while (this.fHead < this.fOff.length && ((recv32 - this.fEnd[this.fHead]!) | 0) >= 0) {
      bytes += this.fLen[this.fHead]!;
      lastTime = this.fTime[this.fHead]!;
      this.fHead++;
    }
    if (this.fHead > 256 && this.fHead * 2 > this.fOff.length) {
      this.fOff = this.fOff.slice(this.fHead);
      this.fLen = this.fLen.slice(this.fHead);
      this.fEnd = this.fEnd.slice(this.fHead);
      this.fTime = this.fTime.slice(this.fHead);
      this.fHead = 0;
    }
    if (lastTime >= 0) {
      const sample = Math.max(now - lastTime, 0.05);
      this.srtt = this.srtt === 0 ? sample : this.srtt * 0.875 + sample * 0.125;
      this.minRtt = this.minRtt === 0 ? sample : Math.min(this.minRtt, sample);
    }
    this.inflight -= bytes;
    this.sampleBytes += bytes;
    const elapsed = now - this.sampleStart;
    if (elapsed >= Math.max(MIN_RATE_INTERVAL_MS, this.minRtt * 2)) {
      const sample = (this.sampleBytes * 1000) / elapsed;
      // Only let the estimate fall while the stripe had work queued: an idle stripe is not a slow one.
      if (sample > this.rate || this.inflight > 0) this.rate = this.rate === 0 ? sample : this.rate * 0.6 + sample * 0.4;
      if (sample > this.rate) this.rate = sample;
      this.sampleStart = now;
      this.sampleBytes = 0;
    }
    return bytes;
  }
}

/** Counters and peaks a session exposes for logs, statistics and tests. */
export interface SessionMetrics {
  stripes: number;
  usableStripes: number;
  stripeDeaths: number;
  resentBytes: number;
  /** Bytes of ACK frames sent: the cost of lossless striping on the wire. */
  ackBytes: number;
  sendBufferBytes: number;
  peakSendBufferBytes: number;
  reorderBytes: number;
  peakReorderBytes: number;
  perStripe: { index: number; inflight: number; rate: number; rtt: number; sent: number; received: number; stalls: number }[];
}

/** One pipe over several carriers; see the module comment. */
export class StripedPipe implements Pipe {
  state: PipeState = "opening";
  readable = true;
  writable = true;
  error: StriperError | undefined;
  readonly stats: PipeStats = newStats();
  /** Called (client role) to open a replacement for stripe `index`. Set by the client proxy. */
  redial: ((index: number) => void) | undefined;
  /** Short id for logs (set by the proxy). */
  id = "";

  readonly opts: SessionOptions;
  private handler: PipeHandler = NOOP_HANDLER;
  private readonly stripes: (Stripe | undefined)[] = [];
  private readonly scheduler: Scheduler;
  private readonly pool: BufferPool;
  private readonly batch: FrameBatch; // shared by all sessions: writeBatch is synchronous
  private peerWindow: number;

  // Send side.
  private readonly sendBuf = new SendBuffer();
  private nextOffset = 0; // first byte never framed yet
  private resendOff: number[] = [];
  private resendLen: number[] = [];
  private finPending = false; // shutdown() called: FIN goes after the last byte
  private finOnStripe: Stripe | undefined; // where the FIN travels, until acknowledged
  private finAcked = false;
  private finSent = false; // a FIN went out at least once (its stripe may have died since)
  private sendBlocked = false; // send() returned false; drain() owed
  private peakSendBuffer = 0;
  private resentBytes = 0;
  private stripeDeaths = 0;
  private ackBytes = 0;

  // Receive side.
  private readonly reorder: ReorderBuffer;
  private paused = false;
  private peerFin = -1; // final offset of the peer's stream once its FIN arrived
  private endDelivered = false;
  private ackTimer: Timer | undefined;
  private ackDue = false;
  private lastAckValue = -1;
  private bytesSinceAck = 0;
  private ackable = 0; // DATA bytes (and FINs) in the chunk being decoded

  private tickTimer: Timer | undefined;
  private lastAckProgress = performance.now();
  private graceTimer: Timer | undefined;
  private pumping = false;
  private delivering = false;
  private readonly sink: (s: Stripe) => FrameSink;

  /**
   * `budget`, when given, is shared by all sessions of a proxy and caps their send stores together.
   */
  constructor(
    opts: SessionOptions,
    peerWindow = opts.window,
    private readonly budget?: BufferBudget,
  ) {
    this.opts = opts;
    this.peerWindow = peerWindow;
    if (budget) budget.holders++;
    this.scheduler = new Scheduler(opts.scheduler);
    // Slack beyond batchSize for frame headers, padding and a chunk's short tail (see writeBatch).
    this.pool = poolFor(opts.batchSize + BATCH_SLACK);
    this.batch = batchFor(this.pool);
    this.reorder = new ReorderBuffer(opts.window);
    this.sink = (s) => ({
      data: (offset, bytes) => this.onDataFragment(offset, bytes),
      control: (type, flags, value, payload) => this.onControl(s, type, flags, value, payload),
    });
  }

  setHandler(handler: PipeHandler): void {
    this.handler = handler;
  }

  /** The peer's advertised receive window (from its HELLO or WELCOME). */
  setPeerWindow(window: number): void {
    this.peerWindow = window;
  }

  /** Number of stripes currently carrying traffic. */
  get usableStripes(): number {
    let n = 0;
    for (const s of this.stripes) if (s?.usable) n++;
    return n;
  }

  /** Counters and peaks, for statistics and tests. */
  metrics(): SessionMetrics {
    const perStripe = [];
    for (const s of this.stripes) {
      if (s) perStripe.push({ index: s.index, inflight: s.inflight, rate: s.rate, rtt: s.srtt, sent: s.sentPos, received: s.recvPos, stalls: s.stalls });
    }
    return {
      stripes: perStripe.length,
      usableStripes: this.usableStripes,
      stripeDeaths: this.stripeDeaths,
      resentBytes: this.resentBytes,
      ackBytes: this.ackBytes,
      sendBufferBytes: this.sendBuf.bytes,
      peakSendBufferBytes: this.peakSendBuffer,
      reorderBytes: this.reorder.bufferedBytes,
      peakReorderBytes: this.reorder.peakBufferedBytes,
      perStripe,
    };
  }

  /**
   * Adds a carrier whose handshake is done. `leftover` holds bytes that arrived with the handshake.
   * A stripe with the same index replaces the old one (which is treated as dead).
   */
  attach(index: number, generation: number, pipe: Pipe, leftover?: Uint8Array): void {
    if (this.state === "closed") {
      pipe.close();
      return;
    }
    const old = this.stripes[index];
    // A late re-dial must not replace a newer stripe (generations are 16-bit and wrap).
    if (old && ((generation - old.generation) & 0xffff) >= 0x8000) {
      pipe.close(new BrokenError("E_STALE_STRIPE", `stripe ${index} generation ${generation} is older than ${old.generation}`));
      return;
    }
    if (old) this.killStripe(old, new BrokenError("E_STRIPE_REPLACED", `stripe ${index} replaced`));
    const stripe = new Stripe(index, generation, pipe, performance.now());
    stripe.decoder = new FrameDecoder(this.sink(stripe));
    this.stripes[index] = stripe;
    pipe.setHandler({
      data: (chunk) => this.guard(() => this.onStripeData(stripe, chunk)),
      drain: () => this.guard(() => this.onStripeDrain(stripe)),
      end: () => this.guard(() => this.onStripeEnd(stripe)),
      close: (err) => this.guard(() => this.onStripeClose(stripe, err)),
    });
    if (this.graceTimer) {
      clearTimeout(this.graceTimer);
      this.graceTimer = undefined;
    }
    if (this.state === "opening") {
      this.state = "open";
      this.tickTimer = setInterval(() => this.guard(() => this.tick()), TICK_MS);
      this.handler.ready?.();
    }
    // Tell the peer where we are at once: it may hold data to resend to us.
    this.ackDue = true;
    this.lastAckValue = -1;
    if (leftover && leftover.byteLength > 0) this.onStripeData(stripe, leftover);
    this.pump();
  }

  /**
   * Runs an event handler; anything it throws ends this session with a reset (E_INTERNAL) instead of
   * escaping into the socket layer, where the session would be left half-updated and could hang.
   */
  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      if (this.state !== "closed") this.finish(asStriperError(err, "E_INTERNAL"), RESET_PEER_FAILED);
    }
  }

  /** True once the session ended or is ending. */
  get closed(): boolean {
    return this.state === "closed";
  }

  send(chunk: Uint8Array): boolean {
    if (!this.writable) throw new BrokenError("E_NOT_WRITABLE", "send() after shutdown or close");
    this.stats.bytesOut += chunk.byteLength;
    this.sendBuf.append(chunk);
    this.budget?.take(chunk.byteLength);
    if (this.sendBuf.bytes > this.peakSendBuffer) this.peakSendBuffer = this.sendBuf.bytes;
    this.pump();
    if (this.sendBuf.bytes >= this.opts.window || (this.budget !== undefined && !this.budget.admits(this.sendBuf.bytes))) {
      this.sendBlocked = true;
      this.stats.congestions++;
      if (this.sendBuf.bytes < this.opts.window) this.budget!.wait(this.wakeFromBudget);
      return false;
    }
    return true;
  }

  /**
   * Lets the local socket be read again (drain) once the send store is under the window and, when
   * `checkBudget`, the shared budget admits this session; otherwise it waits for the budget.
   */
  private unblockSend(checkBudget: boolean): void {
    if (this.state === "closed" || !this.sendBlocked) return;
    if (this.sendBuf.bytes >= this.opts.window) return; // the next ack comes back here
    if (checkBudget && this.budget !== undefined && !this.budget.admits(this.sendBuf.bytes)) {
      this.budget.wait(this.wakeFromBudget);
      return;
    }
    this.sendBlocked = false;
    this.handler.drain();
  }

  /** The shared budget woke us because it has room again. */
  private readonly wakeFromBudget = (): void => this.unblockSend(false);

  shutdown(): void {
    if (!this.writable) return;
    this.writable = false;
    this.finPending = true;
    this.pump();
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.deliver();
  }

  close(err?: StriperError): void {
    if (this.state === "closed") return;
    const reason = err ?? new BrokenError("E_ABORTED", "session aborted");
    const code =
      reason instanceof ConnectError ? RESET_TARGET_UNREACHABLE : reason.code === "E_SHUTDOWN" ? RESET_SHUTDOWN : RESET_PEER_FAILED;
    this.finish(reason, code);
  }

  // --- receiving ----------------------------------------------------------------------------------

  private onStripeData(stripe: Stripe, chunk: Uint8Array): void {
    if (this.state === "closed" || this.stripes[stripe.index] !== stripe) return;
    stripe.recvPos += chunk.byteLength;
    stripe.lastRecvAt = performance.now();
    stripe.pingSentAt = 0;
    try {
      stripe.decoder.push(chunk);
    } catch (err) {
      const e = asStriperError(err, "E_PROTOCOL");
      this.finish(e, RESET_PROTOCOL);
      return;
    }
    if (this.closed) return; // a RESET frame in the chunk ended the session
    this.deliver();
    // Only DATA and FIN need acknowledging: acking ACK-only chunks would make idle sessions trade ACKs forever.
    if (this.ackable > 0) {
      this.scheduleAck(this.ackable);
      this.ackable = 0;
    }
    if (this.ackDue || stripe.pendingPong >= 0) this.pump();
  }

  private onDataFragment(offset: number, bytes: Uint8Array): void {
    this.ackable += bytes.byteLength;
    if (this.peerFin >= 0 && offset + bytes.byteLength > this.peerFin) {
      throw new ProtocolError("E_DATA_AFTER_FIN", `data at ${offset} beyond the peer's FIN at ${this.peerFin}`);
    }
    this.reorder.insert(offset, bytes);
  }

  private onControl(stripe: Stripe, type: number, flags: number, value: number, payload: Uint8Array): void {
    switch (type) {
      case FRAME_ACK:
        this.onAck(flags, value, payload);
        return;
      case FRAME_PING:
        stripe.pendingPong = value;
        return;
      case FRAME_PONG:
        return; // receipt alone refreshed lastRecvAt
      case FRAME_FIN:
        if (this.peerFin >= 0 && this.peerFin !== value) {
          throw new ProtocolError("E_FIN_MISMATCH", `FIN at ${value} after FIN at ${this.peerFin}`);
        }
        if (value < this.reorder.contiguous) throw new ProtocolError("E_FIN_MISMATCH", `FIN at ${value} below received data`);
        this.peerFin = value;
        this.ackable++;
        return;
      case FRAME_RESET: {
        const reason = new TextDecoder().decode(payload.subarray(0, 200)) || "no reason given";
        this.finish(new BrokenError("E_PEER_RESET", `peer reset the session (code ${value}): ${reason}`), -1);
        return;
      }
      case FRAME_DATA:
        return; // DATA never reaches here
      default:
        throw new ProtocolError("E_UNKNOWN_FRAME", `unexpected frame type ${type}`);
    }
  }

  private onAck(flags: number, value: number, payload: Uint8Array): void {
    if (value > this.nextOffset || value < 0) {
      throw new ProtocolError("E_BAD_ACK", `ack ${value} beyond data sent (${this.nextOffset})`);
    }
    const now = performance.now();
    const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    for (let pos = 0; pos + 8 <= payload.byteLength; pos += 8) {
      const s = this.stripes[view.getUint16(pos)];
      if (s && s.usable && s.generation === view.getUint16(pos + 2)) s.delivered(view.getUint32(pos + 4), now);
    }
    let base = Infinity;
    for (const s of this.stripes) if (s?.usable && s.minRtt > 0 && s.minRtt < base) base = s.minRtt;
    for (const s of this.stripes) if (s?.usable && s.minRtt > 0) s.rtt = Math.min(s.minRtt, 2 * base);
    if (value > this.sendBuf.acked) {
      const released = this.sendBuf.ack(value); // not inside `budget?.give(...)`: that skips the call without a budget
      this.budget?.give(released);
      this.lastAckProgress = now;
    }
    if (flags & ACK_FLAG_FIN) {
      if (!this.finSent) throw new ProtocolError("E_BAD_ACK", "FIN acknowledged before it was sent");
      this.finAcked = true;
      this.finOnStripe = undefined;
    }
    this.unblockSend(true);
    this.pump();
    this.maybeDone();
  }

  /** Hands in-order data to the handler until it pauses us; then passes the FIN on. */
  private deliver(): void {
    if (this.delivering) return;
    this.delivering = true;
    try {
      let handed = 0;
      while (!this.paused && this.state !== "closed") {
        const chunk = this.reorder.shift();
        if (chunk === undefined) break;
        this.stats.bytesIn += chunk.byteLength;
        handed += chunk.byteLength;
        this.handler.data(chunk);
      }
      // Delivered bytes open the peer's window: acknowledge them (soon, or now when it is a lot).
      if (handed > 0 && this.state !== "closed") {
        this.scheduleAck(0);
        if (this.ackDue) this.pump();
      }
      // EOF is held back while paused (the pipe contract), like data.
      if (!this.paused && !this.endDelivered && this.peerFin >= 0 && this.reorder.delivered === this.peerFin && this.state !== "closed") {
        this.endDelivered = true;
        this.readable = false;
        this.ackDue = true;
        this.handler.end();
        this.pump();
        this.checkPeerFinished();
        this.maybeDone();
      }
    } finally {
      this.delivering = false;
    }
  }

  private scheduleAck(received: number): void {
    this.bytesSinceAck += received;
    const every = Math.min(ACK_EVERY_BYTES, this.opts.window / 8);
    if (this.bytesSinceAck >= every || this.reorder.delivered - this.lastAckValue >= every) {
      this.ackDue = true;
      return; // the caller pumps
    }
    this.ackTimer ??= setTimeout(() => {
      this.ackTimer = undefined;
      this.ackDue = true;
      this.guard(() => this.pump());
    }, ACK_DELAY_MS);
  }

  // --- sending ------------------------------------------------------------------------------------

  /** Moves frames from the send store, resend queue and control state onto stripes. */
  private pump(): void {
    if (this.pumping || this.state === "closed") return;
    this.pumping = true;
    try {
      this.flushControl();
      const stripes: readonly (StripeView | undefined)[] = this.stripes;
      const mode = this.opts.scheduler;
      for (;;) {
        if (!this.hasDataToSend()) break;
        const i = this.scheduler.pick(stripes, this.opts.frameSize);
        if (i < 0) break;
        const stripe = this.stripes[i]!;
        const frameSize = mode === "rate" ? this.frameFor(stripe) : this.opts.frameSize;
        // Budgets are in bytes, not frames: a frame is cut short at a chunk boundary, and counting
        // such stubs as frames made many tiny writes.
        const budget = mode === "round-robin" ? frameSize : mode === "rate" ? this.stripeBudget(stripe, frameSize) : Infinity;
        if (!this.writeBatch(stripe, budget, frameSize)) break;
      }
      this.maybeDone();
    } finally {
      this.pumping = false;
    }
  }

  private hasDataToSend(): boolean {
    const acked = this.sendBuf.acked;
    while (this.resendOff.length > 0 && this.resendOff[0]! + this.resendLen[0]! <= acked) {
      this.resendOff.shift();
      this.resendLen.shift();
    }
    if (this.resendOff.length > 0) return true;
    if (this.nextOffset < this.sendBuf.end && this.nextOffset < this.sendBuf.acked + this.peerWindow) return true;
    return this.finPending && !this.finAcked && this.finOnStripe === undefined && this.nextOffset === this.sendBuf.end;
  }

  /**
   * DATA payload size for a stripe in rate mode: about 25 ms of its measured rate, so a frame on a slow
   * stripe does not hold up in-order delivery for long (between 4 KiB and frameSize).
   */
  private frameFor(s: Stripe): number {
    // Unmeasured: moderate frames, so a slow stripe's first frames do not queue for long.
    if (s.rate <= 0) return Math.min(this.opts.frameSize, 64 * 1024);
    return Math.max(4096, Math.min(this.opts.frameSize, Math.floor(s.rate * 0.025)));
  }

  /** Payload bytes the rate scheduler lets this stripe take in one batch (at least one frame). */
  private stripeBudget(s: Stripe, frameSize: number): number {
    // Whole bytes: a fractional remainder (the cap comes from a rate) once made empty frames.
    return Math.max(frameSize, Math.floor(Scheduler.inflightCap(s) - s.inflight));
  }

  /** Sends control frames that are owed: PONGs on their own stripe, an ACK on any writable one. */
  private flushControl(): void {
    for (const s of this.stripes) {
      if (s && s.usable && s.pendingPong >= 0 && !s.congested) this.writeBatch(s, 0);
    }
    if (this.ackDue) {
      for (const s of this.stripes) {
        if (s && s.usable && !s.congested) {
          this.writeBatch(s, 0);
          break;
        }
      }
    }
  }

  /** Appends the ACK frame (with per-stripe received counts) to the batch. */
  private appendAck(): void {
    let n = 0;
    for (const s of this.stripes) if (s?.usable) n++;
    const payload = new Uint8Array(n * 8);
    const v = new DataView(payload.buffer);
    let pos = 0;
    for (const s of this.stripes) {
      if (!s?.usable) continue;
      v.setUint16(pos, s.index);
      v.setUint16(pos + 2, s.generation);
      v.setUint32(pos + 4, s.recvPos >>> 0);
      pos += 8;
    }
    const finFlag = this.endDelivered ? ACK_FLAG_FIN : 0;
    this.batch.appendControl(FRAME_ACK, finFlag, this.reorder.delivered, payload);
    this.ackBytes += FRAME_HEADER_SIZE + payload.byteLength;
    this.lastAckValue = this.reorder.delivered;
    this.bytesSinceAck = 0;
    this.ackDue = false;
    if (this.ackTimer) {
      clearTimeout(this.ackTimer);
      this.ackTimer = undefined;
    }
  }

  /**
   * Fills one batch for `stripe`: owed control frames, then up to `maxBytes` of DATA frames (resends
   * first), then the FIN when everything before it has been framed. Returns false when nothing was
   * written or the stripe became congested.
   */
  private writeBatch(stripe: Stripe, maxBytes: number, frameSize = this.opts.frameSize): boolean {
    const batch = this.batch;
    const now = performance.now();
    batch.reset(this.pool.get());
    if (stripe.pendingPong >= 0) {
      batch.appendControl(FRAME_PONG, 0, stripe.pendingPong);
      stripe.pendingPong = -1;
    }
    if (stripe.pingSentAt === -1) {
      batch.appendControl(FRAME_PING, 0, Math.floor(now));
      stripe.pingSentAt = now;
    }
    if (this.ackDue) this.appendAck();
    let frames = 0;
    let budget = maxBytes;
    let payloadBytes = 0;
    const batchSize = this.opts.batchSize;
    while (budget >= 1 && payloadBytes < batchSize && batch.dataRoom >= 1024) {
      let offset: number;
      let max: number;
      let resend = false;
      if (this.resendOff.length > 0) {
        offset = this.resendOff[0]!;
        let len = this.resendLen[0]!;
        const acked = this.sendBuf.acked;
        if (offset + len <= acked) {
          this.resendOff.shift();
          this.resendLen.shift();
          continue;
        }
        if (offset < acked) {
          len -= acked - offset;
          offset = acked;
        }
        max = len;
        resend = true;
      } else if (this.nextOffset < this.sendBuf.end && this.nextOffset < this.sendBuf.acked + this.peerWindow) {
        offset = this.nextOffset;
        max = Math.min(this.sendBuf.end, this.sendBuf.acked + this.peerWindow) - offset;
      } else break;
      let payload = this.sendBuf.read(offset, Math.min(max, frameSize, budget, batch.dataRoom));
      // Cut at the batch size, unless what would be left of this chunk is a short tail: that would
      // go out later as a write of its own (measured: one 79-byte write per 512 KiB otherwise).
      const left = batchSize - payloadBytes;
      if (payload.byteLength > left && payload.byteLength - left >= SHORT_TAIL) payload = payload.subarray(0, left);
      const len = payload.byteLength;
      if (len === 0) break; // never an empty DATA frame
      payloadBytes += len;
      batch.appendData(offset, payload);
      frames++;
      budget -= len;
      if (resend) {
        this.resentBytes += len;
        if (len === this.resendLen[0]! - (offset - this.resendOff[0]!)) {
          this.resendOff.shift();
          this.resendLen.shift();
        } else {
          const end = this.resendOff[0]! + this.resendLen[0]!;
          this.resendOff[0] = offset + len;
          this.resendLen[0] = end - (offset + len);
        }
      } else {
        this.nextOffset = offset + len;
      }
      stripe.record(offset, len, stripe.sentPos + batch.length, now);
    }
    let finHere = false;
    if (
      this.finPending &&
      !this.finAcked &&
      this.finOnStripe === undefined &&
      this.resendOff.length === 0 &&
      this.nextOffset === this.sendBuf.end &&
      batch.room >= FRAME_HEADER_SIZE
    ) {
      batch.appendControl(FRAME_FIN, 0, this.sendBuf.end);
      this.finOnStripe = stripe;
      this.finSent = true;
      finHere = true;
    }
    if (batch.length === 0) {
      this.pool.put(batch.buf);
      return false;
    }
    let bytes = batch.bytes();
    stripe.sentPos += bytes.byteLength;
    // A carrier that keeps chunks by reference gets its own copy, and so does a small batch: a congested
    // socket would otherwise pin a whole pooled buffer for a few bytes (hundreds of stripes add up).
    const copies = stripe.pipe.copiesOnSend === true && bytes.byteLength >= LEND_MIN;
    if (!copies) bytes = bytes.slice();
    const ok = stripe.pipe.send(bytes);
    if (ok || !copies) this.pool.put(batch.buf);
    if (ok) return frames > 0 || finHere;
    // A copying carrier keeps a reference to the unwritten rest: lend it the buffer until drain.
    if (copies) stripe.lent = batch.buf;
    stripe.congested = true;
    return false;
  }

  private onStripeDrain(stripe: Stripe): void {
    if (this.stripes[stripe.index] !== stripe) return;
    if (stripe.lent) {
      this.pool.put(stripe.lent);
      stripe.lent = undefined;
    }
    stripe.congested = false;
    this.pump();
  }

  // --- stripe death, keepalive, grace --------------------------------------------------------------

  private onStripeEnd(stripe: Stripe): void {
    // A stripe's FIN is not the session's: unless the session is ending, treat it as a lost stripe.
    if (this.isDone()) return;
    if (!(this.peerFin >= 0 && this.finSent)) {
      this.killStripe(stripe, new BrokenError("E_STRIPE_EOF", `stripe ${stripe.index} closed by peer`));
      return;
    }
    // Both data-level FINs are out. The peer shuts its stripes only once it is done, and it is done
    // only after it received all our data and our FIN. So when every stripe has ended cleanly and we
    // have delivered its FIN, our FIN was received even if the ACK saying so died with a stripe.
    stripe.peerEnded = true;
    this.checkPeerFinished();
  }

  /** See onStripeEnd: every stripe ended cleanly after both FINs means the peer has finished. */
  private checkPeerFinished(): void {
    if (!this.endDelivered || !this.finSent || this.finAcked || this.state === "closed") return;
    let any = false;
    for (const s of this.stripes) {
      if (!s?.usable) continue;
      if (!s.peerEnded) return;
      any = true;
    }
    if (!any) return;
    this.finAcked = true;
    this.finOnStripe = undefined;
    this.pump();
    this.maybeDone();
  }

  private onStripeClose(stripe: Stripe, err: StriperError | undefined): void {
    if (this.stripes[stripe.index] !== stripe) return;
    this.killStripe(stripe, err ?? new BrokenError("E_STRIPE_CLOSED", `stripe ${stripe.index} closed`));
  }

  /** Drops a stripe: its unconfirmed frames go to the resend queue; the client re-dials it. */
  private killStripe(stripe: Stripe, reason: StriperError): void {
    if (this.stripes[stripe.index] !== stripe) return;
    this.stripes[stripe.index] = undefined;
    stripe.usable = false;
    if (stripe.lent) {
      stripe.lent = undefined; // the carrier may still reference it: let it go to the GC, not the pool
    }
    if (this.state === "closed") return;
    this.stripeDeaths++;
    // The last ACK may have died with this stripe: repeat it on the others, or the peer may wait for
    // window space (or for the ACK of its FIN) forever.
    this.ackDue = true;
    this.requeueInFlight(stripe);
    if (this.finOnStripe === stripe) this.finOnStripe = undefined;
    stripe.pipe.close(reason);
    if (this.usableStripes === 0 && !this.isDone()) this.startGrace();
    if (this.opts.role === "client" && !this.isDone()) this.redial?.(stripe.index);
    this.pump();
  }

  /**
   * Queues for resending, in offset order, every frame the peer has not confirmed receiving on this
   * stripe and that the cumulative ack does not cover yet (frames are recorded only when non-empty).
   */
  private requeueInFlight(s: Stripe): void {
    const acked = this.sendBuf.acked;
    const all: [number, number][] = [];
    for (let k = s.fHead; k < s.fOff.length; k++) {
      if (s.fOff[k]! + s.fLen[k]! > acked) all.push([s.fOff[k]!, s.fLen[k]!]);
    }
    if (all.length === 0) return;
    for (let k = 0; k < this.resendOff.length; k++) all.push([this.resendOff[k]!, this.resendLen[k]!]);
    all.sort((a, b) => a[0] - b[0]);
    this.resendOff = all.map((a) => a[0]);
    this.resendLen = all.map((a) => a[1]);
  }

  private startGrace(): void {
    if (this.graceTimer || this.state === "closed") return;
    this.graceTimer = setTimeout(() => {
      this.graceTimer = undefined;
      if (this.usableStripes === 0 && this.state !== "closed") {
        this.finish(
          new BrokenError("E_GRACE_EXPIRED", `no stripe for ${this.opts.graceMs} ms; session reset`),
          RESET_GRACE_EXPIRED,
        );
      }
    }, this.opts.graceMs);
  }

  /** Periodic: keepalive pings and dead-stripe detection. */
  private tick(): void {
    const now = performance.now();
    this.rescueHeadOfLine(now);
    // Safety net: delivered bytes that no ACK has reported yet.
    if (this.reorder.delivered !== this.lastAckValue) {
      this.ackDue = true;
      this.pump();
    }
    let ping = false;
    for (const s of this.stripes) {
      if (!s || !s.usable) continue;
      const silent = now - s.lastRecvAt;
      if (silent >= this.opts.deadMs) {
        this.killStripe(s, new BrokenError("E_STRIPE_SILENT", `stripe ${s.index} silent for ${Math.round(silent)} ms`));
        continue;
      }
      if (silent >= this.opts.keepaliveMs && s.pingSentAt === 0) {
        s.pingSentAt = -1; // owed; sent by the next batch on this stripe
        ping = true;
      }
    }
    if (ping) {
      // A congested stripe gets its PING with its next batch.
      for (const s of this.stripes) if (s && s.usable && !s.congested && s.pingSentAt === -1) this.writeBatch(s, 0);
    }
  }

  /**
   * When the cumulative ack has not moved for a while and the first unacknowledged frame is still in
   * flight on some stripe (the peer has not reported receiving it there), that stripe is stalling
   * in-order delivery: re-send what it holds on the others and halve its rate estimate (MPTCP's
   * opportunistic retransmission and penalisation). A blackholed stripe is bypassed this way long
   * before the dead-stripe timer drops it.
   */
  private rescueHeadOfLine(now: number): void {
    const acked = this.sendBuf.acked;
    if (acked >= this.nextOffset || this.state !== "open") {
      this.lastAckProgress = now;
      return;
    }
    // Relative to the fastest stripe: a stalling stripe's own (inflated) RTT must not delay its rescue.
    let minRtt = Infinity;
    for (const s of this.stripes) if (s?.usable && s.srtt > 0 && s.srtt < minRtt) minRtt = s.srtt;
    if (now - this.lastAckProgress < Math.max(HOL_MIN_MS, 4 * (minRtt === Infinity ? 0 : minRtt))) return;
    if (this.usableStripes < 2) return;
    for (const s of this.stripes) {
      if (!s?.usable) continue;
      let holds = false;
      for (let k = s.fHead; k < s.fOff.length; k++) {
        if (s.fOff[k]! <= acked && acked < s.fOff[k]! + s.fLen[k]!) {
          holds = true;
          break;
        }
      }
      if (!holds) continue;
      this.requeueInFlight(s);
      s.rate *= 0.5;
      s.stalls++;
      this.lastAckProgress = now;
      this.pump();
      return;
    }
  }

  // --- ending -------------------------------------------------------------------------------------

  private isDone(): boolean {
    return this.finAcked && this.endDelivered && this.lastAckValue === this.peerFin && !this.ackDue;
  }

  private maybeDone(): void {
    if (this.state !== "closed" && this.isDone()) this.finish(undefined, -1);
  }

  /**
   * Ends the session. With an error and a reset code ≥ 0, a RESET frame tells the peer why. Stripes
   * are shut down (FIN after what is queued) and terminated if they linger.
   */
  private finish(err: StriperError | undefined, resetCode: number): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.error = err;
    this.readable = false;
    this.writable = false;
    clearInterval(this.tickTimer);
    clearTimeout(this.graceTimer);
    clearTimeout(this.ackTimer);
    const reset =
      err && resetCode >= 0 ? encodeFrame(FRAME_RESET, 0, resetCode, new TextEncoder().encode(err.message.slice(0, 200))) : undefined;
    const live: Pipe[] = [];
    for (const s of this.stripes) {
      if (!s) continue;
      if (reset && s.usable) {
        try {
          s.pipe.send(reset); // carriers may keep it by reference: it is never touched again
        } catch {
          // the carrier is already closed: nothing to tell
        }
      }
      s.usable = false;
      s.pipe.setHandler(NOOP_HANDLER);
      s.pipe.shutdown();
      live.push(s.pipe);
    }
    if (live.length > 0) {
      setTimeout(() => {
        for (const p of live) if (p.state !== "closed") p.close(err);
      }, LINGER_MS).unref();
    }
    this.budget?.give(this.sendBuf.bytes);
    this.budget?.cancel(this.wakeFromBudget);
    if (this.budget) this.budget.holders--;
    this.sendBuf.clear();
    this.reorder.clear();
    this.resendOff = [];
    this.resendLen = [];
    const handler = this.handler;
    this.handler = NOOP_HANDLER;
    handler.close(err);
  }
}

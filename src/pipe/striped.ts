/**
 * StripedPipe: one pipe over 1..N carrier pipes ("stripes"), the session of both proxies. This file is
 * the driver: it owns the carriers, their decoders, the batches written to them, the timers and the
 * session's ending. Every decision is made by a pure part in src/stripe/ (see docs/design.md, "Who
 * decides what"):
 *
 *   Sender      what to frame next: resends first, new data within the peer's window, then the FIN
 *   Receiver    DATA and FIN from every stripe, back in order; E_DATA_AFTER_FIN, E_FIN_MISMATCH
 *   AckPolicy   when an ACK is due and what it carries
 *   Scheduler   which stripe, how large its frames and batches, planned or not (one object per mode)
 *   StripeLedger per stripe: frames sent, confirmations, RTT and rate, what to resend if it dies
 *   SessionEnd  how far each direction has got towards its FIN
 *   liveness    keepalive, dead stripes, head-of-line rescue
 *
 * Lossless: a stripe that closes, resets or goes silent is dropped; whatever it carried that its ACKed
 * per-stripe byte count does not cover is re-sent on the others. The client re-dials it. The session
 * survives with no stripe for `graceMs`; after that it is reset (never passed on as a clean EOF).
 */

import { REAL_CLOCK, type Clock, type ClockTimer } from "../clock.ts";
import { validateSessionOptions, type SessionOptions } from "../config.ts";
import { BrokenError, PeerResetError, ProtocolError, asStriperError, type StriperError } from "../errors.ts";
import { AckPolicy, ACK_DELAY_MS } from "../stripe/ack.ts";
import type { SendBudget } from "../stripe/budget.ts";
import { RecvEnd, SessionEnd } from "../stripe/ending.ts";
import { SendGate } from "../stripe/gate.ts";
import { ControlFloodError, StripeGuard } from "../stripe/guard.ts";
import { HeadOfLineWatch, Health, Ping, stripeHealth } from "../stripe/liveness.ts";
import { SessionCounters, type SessionMetrics } from "../stripe/metrics.ts";
import { Receiver } from "../stripe/receiver.ts";
import { createScheduler, type Scheduler } from "../stripe/scheduler.ts";
import { Sender } from "../stripe/sender.ts";
import { Stripe } from "../stripe/stripe.ts";
import { BATCH_SLACK, sharedBatch, type Batch, type BufferPool, type FrameBatch, type PieceBatch } from "../wire/batch.ts";
import { FrameDecoder, decodeAckEntries, decodeResetReason, encodeFrame, encodeResetReason, type ControlFrameType } from "../wire/codec.ts";
import { ACK_FLAG_FIN, FRAME_FIN, FRAME_HEADER_SIZE, FRAME_OPENED, FRAME_PING, FRAME_PONG, FRAME_RESET, FrameType } from "../wire/constants.ts";
import { NOOP_HANDLER, newStats, type Pipe, type PipeHandler, type PipeState, type PipeStats } from "./pipe.ts";

export { DEFAULT_MAX_BUFFER, DEFAULT_SESSION_OPTIONS, type SessionOptions } from "../config.ts";
export { BATCH_SLACK } from "../wire/batch.ts";
export type { SessionMetrics } from "../stripe/metrics.ts";

/** Below this, a batch is copied out rather than lending a whole pooled buffer to a congested socket. */
const LEND_MIN = 64 * 1024;
/** Period of keepalive, dead-stripe, ACK safety-net and head-of-line checks (ms). */
const TICK_MS = 250;
/** How long shut-down stripes may linger before they are closed (ms). */
const LINGER_MS = 3000;

/** One pipe over several carriers; see the module comment. */
export class StripedPipe implements Pipe {
  state: PipeState = "opening";
  readable = true;
  writable = true;
  error: StriperError | undefined;
  readonly stats: PipeStats = newStats();
  /** Called (client role) to open a replacement for stripe `index`. Set by the client proxy. */
  redial: ((index: number) => void) | undefined;
  /**
   * Called when a stripe is dropped, with why (a record that failed authentication, a reset, silence...),
   * before the client re-dials it: the proxies log damaged stripes here, and the client learns that a
   * stripe failed before its handshake completed. It may close the session.
   */
  stripeDied: ((index: number, reason: StriperError) => void) | undefined;
  /** Short id for logs (set by the proxy). */
  id = "";
  /**
   * Client role: called once when the server's OPENED frame arrives (its connection to the target is up;
   * issue 13). The SOCKS / HTTP CONNECT front answers the app from here.
   */
  opened: (() => void) | undefined;

  readonly opts: SessionOptions;
  private handler: PipeHandler = NOOP_HANDLER;
  private readonly stripes: (Stripe | undefined)[] = [];
  private readonly clock: Clock;
  private readonly scheduler: Scheduler;
  private readonly pool: BufferPool;
  private readonly batch: FrameBatch; // shared by all sessions: writeBatch is synchronous
  private readonly pieces: PieceBatch; // the same, for carriers with sendv (sealed stripes)
  private readonly end = new SessionEnd();
  private readonly sender: Sender;
  private readonly receiver: Receiver;
  private readonly acks: AckPolicy;
  private readonly hol: HeadOfLineWatch;
  private readonly gate: SendGate;

  private paused = false;
  /** Server role: an OPENED frame is owed (signalOpened), written ahead of any DATA. */
  private openedDue = false;
  private openedSeen = false;
  private pumping = false;
  /** Stripes with frames planned in the current pump (sendPlanned). */
  private readonly planned: Stripe[] = [];
  private delivering = false;
  private ackTimer: ClockTimer | undefined;
  private tickTimer: ClockTimer | undefined;
  private graceTimer: ClockTimer | undefined;
  private readonly counters = new SessionCounters();

  /**
   * Throws ConfigError when an option is out of range (src/config.ts). `budget`, when given, is shared
   * by all sessions of a proxy and caps their send stores together (each with a guaranteed minimum).
   */
  constructor(opts: SessionOptions, peerWindow = opts.window, budget?: SendBudget) {
    this.opts = validateSessionOptions(opts);
    this.clock = opts.clock ?? REAL_CLOCK;
    this.scheduler = createScheduler(opts.scheduler, opts.frameSize);
    ({ pool: this.pool, batch: this.batch, pieces: this.pieces } = sharedBatch(opts.batchSize + BATCH_SLACK));
    this.sender = new Sender(peerWindow, this.end);
    this.receiver = new Receiver(opts.window, this.end);
    this.acks = new AckPolicy(opts.window);
    this.hol = new HeadOfLineWatch(this.clock.now());
    this.gate = new SendGate(opts.window, budget, () => this.sender.buf.bytes, () => this.handler.drain());
  }

  setHandler(handler: PipeHandler): void {
    this.handler = handler;
  }

  /**
   * The peer's advertised receive window (from its first message or reply). A client sends 0-RTT data
   * under a small initial window and learns the real one later: a larger window lets queued data go.
   */
  setPeerWindow(window: number): void {
    this.sender.peerWindow = window;
    this.pump();
  }

  /**
   * Server role: tells the client that the target is connected (an OPENED frame, once, in the next batch
   * and ahead of any DATA in it; the target's bytes can only follow it).
   */
  signalOpened(): void {
    if (this.openedSeen || this.state === "closed") return;
    this.openedSeen = true;
    this.openedDue = true;
    this.pump();
  }

  /** Number of stripes currently carrying traffic. */
  get usableStripes(): number {
    let n = 0;
    for (const s of this.stripes) if (s?.usable) n++;
    return n;
  }

  /** True once the session ended or is ending. */
  get closed(): boolean {
    return this.state === "closed";
  }

  /**
   * Whether anything has got through: bytes of the peer's stream delivered here, or bytes of ours that
   * the peer acknowledged. A server session that lost every stripe before this is given up at once
   * rather than held for the grace period (its slot is released: issue 10).
   */
  get progressed(): boolean {
    return this.receiver.delivered > 0 || this.sender.buf.acked > 0;
  }

  /** Counters and peaks, for statistics and tests. */
  metrics(): SessionMetrics {
    return this.counters.snapshot(this.stripes, this.sender, this.receiver);
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
    const stripe = new Stripe(index, generation, pipe, this.clock.now());
    stripe.decoder = new FrameDecoder({
      data: (offset, bytes) => this.receiver.data(offset, bytes),
      control: (type, flags, value, payload) => this.onControl(stripe, type, flags, value, payload),
      empty: () => stripe.guard.other(this.clock.now()),
    });
    stripe.guard = new StripeGuard(this.clock.now(), { peerWindow: this.sender.peerWindow, sent: this.dataSent });
    this.stripes[index] = stripe;
    pipe.setHandler({
      data: (chunk) => this.guard(() => this.onStripeData(stripe, chunk)),
      drain: () => this.guard(() => this.onStripeDrain(stripe)),
      end: () => this.guard(() => this.onStripeEnd(stripe)),
      close: (err) => this.guard(() => this.onStripeClose(stripe, err)),
    });
    this.clock.clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
    if (this.state === "opening") {
      this.state = "open";
      this.tickTimer = this.clock.setInterval(() => this.guard(this.tick), TICK_MS);
      this.handler.ready?.();
    }
    this.acks.stripeAttached();
    this.scheduler.measured(this.stripes, this.clock.now());
    if (leftover && leftover.byteLength > 0) this.onStripeData(stripe, leftover);
    this.pump();
  }

  /**
   * Runs an event handler; anything it throws ends this session with a reset instead of escaping into
   * the socket layer, where the session would be left half-updated and could hang.
   */
  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.finish(asStriperError(err, "E_INTERNAL"));
    }
  }

  // --- the Pipe face ------------------------------------------------------------------------------

  send(chunk: Uint8Array): boolean {
    if (!this.writable) throw new BrokenError("E_NOT_WRITABLE", "send() after shutdown or close");
    this.stats.bytesOut += chunk.byteLength;
    this.sender.append(chunk);
    this.gate.took(chunk.byteLength);
    this.counters.held(this.sender.buf.bytes);
    this.pump();
    if (this.gate.admit()) return true;
    this.stats.congestions++;
    return false;
  }

  shutdown(): void {
    if (!this.writable) return;
    this.writable = false;
    this.end.shutdown();
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

  /** Ends the session now; the peer gets a RESET with the error's `resetCode` (RESET_PEER_FAILED by default). */
  close(err?: StriperError): void {
    this.finish(err ?? new BrokenError("E_ABORTED", "session aborted"));
  }

  // --- receiving ----------------------------------------------------------------------------------

  private onStripeData(stripe: Stripe, chunk: Uint8Array): void {
    if (this.state === "closed" || this.stripes[stripe.index] !== stripe) return;
    stripe.received += chunk.byteLength;
    stripe.lastRecvAt = this.clock.now();
    stripe.ping = Ping.Idle;
    try {
      stripe.decoder.push(chunk);
    } catch (err) {
      if (!(err instanceof ControlFloodError)) {
        this.finish(asStriperError(err, "E_PROTOCOL")); // a ProtocolError sends RESET_PROTOCOL
        return;
      }
      // Too many control frames: this stripe goes (its data is re-sent elsewhere), not the session.
      // What its chunk carried before the flood was checked and stored: deliver and acknowledge it.
      this.killStripe(stripe, err);
    }
    if (this.closed) return; // a RESET frame in the chunk ended the session
    this.deliver();
    const ackable = this.receiver.takeAckable();
    if (ackable > 0 && !this.acks.received(ackable, this.receiver.delivered)) this.armAckTimer();
    if (this.acks.due || stripe.pendingPong >= 0) this.pump();
  }

  /** DATA bytes this session has framed so far, resends included: what earns the peer ACK credit. */
  private get dataSent(): number {
    return this.sender.nextOffset + this.sender.resentBytes;
  }

  /**
   * A control frame: first its stripe's guard (ControlFloodError beyond the rates, E_BAD_ACK for an ACK
   * with more entries than a session has stripes; src/stripe/guard.ts), then what it means.
   */
  private onControl(stripe: Stripe, type: ControlFrameType, flags: number, value: number, payload: Uint8Array): void {
    const now = this.clock.now();
    switch (type) {
      case FrameType.Ack:
        stripe.guard.ack(now, payload.byteLength, this.dataSent);
        this.onAck(flags, value, payload);
        return;
      case FrameType.Ping:
        stripe.guard.ping(now);
        stripe.pendingPong = value;
        return;
      case FrameType.Pong:
        stripe.guard.other(now);
        return; // receipt alone refreshed lastRecvAt
      case FrameType.Fin:
        stripe.guard.other(now);
        this.receiver.fin(value);
        return;
      case FrameType.Reset:
        this.finish(new PeerResetError(value, decodeResetReason(payload)));
        return;
      case FrameType.Opened:
        // Only a server connects targets; a second OPENED changes nothing.
        if (this.opts.role === "server") throw new ProtocolError("E_UNEXPECTED_FRAME", "OPENED frame from a client");
        if (this.openedSeen) return;
        this.openedSeen = true;
        this.opened?.();
        return;
      case FrameType.Target:
        // Only the first frame of a standby stripe, read by the server before the stripe joins a session.
        throw new ProtocolError("E_UNEXPECTED_FRAME", "TARGET frame inside a session");
      default: {
        const unreachable: never = type;
        throw new Error(`control frame of type ${String(unreachable)}`);
      }
    }
  }

  private onAck(flags: number, value: number, payload: Uint8Array): void {
    const now = this.clock.now();
    for (const e of decodeAckEntries(payload)) {
      const s = this.stripes[e.index];
      if (s && s.usable && s.generation === e.generation) s.confirm(e.received, now);
    }
    this.scheduler.measured(this.stripes, now);
    const released = this.sender.ack(value); // E_BAD_ACK beyond what was sent
    if (released > 0) {
      this.gate.released(released);
      this.hol.progressed(now);
    }
    if (flags & ACK_FLAG_FIN) this.end.finAcked();
    this.gate.reopen(true);
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
        const chunk = this.receiver.shift();
        if (chunk === undefined) break;
        this.stats.bytesIn += chunk.byteLength;
        handed += chunk.byteLength;
        this.handler.data(chunk);
      }
      // Delivered bytes open the peer's window: acknowledge them (soon, or now when it is a lot).
      if (handed > 0 && this.state !== "closed") {
        if (!this.acks.received(0, this.receiver.delivered)) this.armAckTimer();
        if (this.acks.due) this.pump();
      }
      // EOF is held back while paused (the pipe contract), like data.
      if (!this.paused && this.state !== "closed" && this.receiver.endDue) {
        this.end.endDelivered();
        this.readable = false;
        this.acks.markDue();
        this.handler.end();
        this.pump();
        this.checkPeerFinished();
        this.maybeDone();
      }
    } finally {
      this.delivering = false;
    }
  }

  private armAckTimer(): void {
    this.ackTimer ??= this.clock.setTimeout(this.ackDelayOver, ACK_DELAY_MS);
  }

  private readonly ackDelayOver = (): void => {
    this.ackTimer = undefined;
    this.acks.markDue();
    this.guard(this.pump);
  };

  // --- sending ------------------------------------------------------------------------------------

  /** Moves owed control frames, resends, new data and the FIN onto the stripes the scheduler picks. */
  private readonly pump = (): void => {
    if (this.pumping || this.state === "closed") return;
    this.pumping = true;
    try {
      this.flushControl();
      const scheduler = this.scheduler;
      if (scheduler.plans) this.sendPlanned();
      else {
        while (this.sender.hasWork()) {
          const i = scheduler.pick(this.stripes);
          if (i < 0) break;
          const stripe = this.stripes[i]!;
          const frameSize = scheduler.frameSize(stripe);
          if (!this.writeBatch(stripe, scheduler.allowance(stripe, frameSize), frameSize)) break;
        }
      }
      // Stopped with data left: no stripe would take it. Without: what the stripes deliver next says how
      // much the app offered, not what their paths carry.
      scheduler.stopped(this.stripes, this.sender.hasWork());
      this.maybeDone();
    } finally {
      this.pumping = false;
    }
  };

  /**
   * Planned sending (Scheduler.plans): the scheduler assigns frames one pick at a time, so consecutive
   * frames of the stream go to different stripes; each stripe's frames then leave in one batch. Frame
   * size (in-order delay) and write size (CPU) are independent this way. A stripe whose batch is full
   * is written at once.
   */
  private sendPlanned(): void {
    const { scheduler, sender, planned } = this;
    const space = this.opts.batchSize;
    while (sender.hasWork()) {
      const i = scheduler.pick(this.stripes);
      if (i < 0) break;
      const stripe = this.stripes[i]!;
      const frameSize = scheduler.frameSize(stripe);
      if (stripe.planned === 0) planned.push(stripe);
      if (sender.plan(stripe, scheduler.allowance(stripe, frameSize), frameSize, space) === 0) {
        if (stripe.planned === 0) break; // nothing to frame after all
        this.writeBatch(stripe, 0, frameSize); // its batch is full: send it and plan on
      }
    }
    for (const stripe of planned) if (stripe.planned > 0) this.writeBatch(stripe, 0, scheduler.frameSize(stripe));
    planned.length = 0;
    // The FIN rides with the last data (writeBatch adds it when due); with no data to go, on any stripe.
    if (sender.finDue()) {
      for (const s of this.stripes) {
        if (s?.usable && !s.congested) {
          this.writeBatch(s, 0);
          break;
        }
      }
    }
  }

  /** Sends control frames that are owed: PONGs on their own stripe, an ACK on any writable one. */
  private flushControl(): void {
    for (const s of this.stripes) {
      if (s && s.usable && s.pendingPong >= 0 && !s.congested) this.writeBatch(s, 0);
    }
    if (!this.acks.due && !this.openedDue) return;
    for (const s of this.stripes) {
      if (s && s.usable && !s.congested) {
        this.writeBatch(s, 0);
        return;
      }
    }
  }

  /**
   * Fills one batch for `stripe`: owed control frames, then up to `allowance` payload bytes of DATA
   * frames (resends first), then the FIN when it is due. Returns false when nothing was written or the
   * stripe became congested.
   */
  private writeBatch(stripe: Stripe, allowance: number, frameSize = this.opts.frameSize): boolean {
    const { sender } = this;
    // A carrier that encrypts what it sends takes the frames as pieces: the encryption is the one copy.
    const vector = stripe.pipe.sendv !== undefined;
    const batch: Batch = vector ? this.pieces : this.batch;
    const now = this.clock.now();
    // Sealed: a record about every frame size, cut at frame ends, so that the receiver of a slow stripe
    // gets each frame released as soon as it has arrived (a record is held until its tag verifies).
    batch.reset(this.pool.get(), frameSize);
    if (stripe.pendingPong >= 0) {
      batch.appendControl(FRAME_PONG, 0, stripe.pendingPong);
      stripe.pendingPong = -1;
    }
    if (stripe.ping === Ping.Owed) {
      batch.appendControl(FRAME_PING, 0, Math.floor(now));
      stripe.ping = Ping.Outstanding;
    }
    if (this.openedDue) {
      batch.appendControl(FRAME_OPENED, 0, 0);
      this.openedDue = false;
    }
    if (this.acks.due) {
      this.counters.ackBytes += this.acks.write(batch, this.receiver.delivered, this.end.recv === RecvEnd.Delivered, this.stripes);
      this.clock.clearTimeout(this.ackTimer);
      this.ackTimer = undefined;
    }
    const frames = stripe.planned > 0 ? sender.framePlanned(batch, stripe, now) : sender.fill(batch, stripe, allowance, frameSize, this.opts.batchSize, now);
    let finHere = false;
    if (batch.room >= FRAME_HEADER_SIZE && sender.finDue()) {
      batch.appendControl(FRAME_FIN, 0, sender.finalOffset);
      this.end.finPlaced(stripe.index);
      finHere = true;
    }
    if (batch.length === 0) {
      this.pool.put(this.batchBuffer(vector));
      return false;
    }
    stripe.sent += batch.length;
    if (vector) {
      // sendv has taken what it needs of the pieces when it returns: the buffer goes back at once.
      const ok = stripe.pipe.sendv!(this.pieces.finish(), batch.length, this.pieces.cuts);
      this.pool.put(this.batchBuffer(true));
      if (ok) return frames > 0 || finHere;
      stripe.congested = true;
      return false;
    }
    let bytes = this.batch.bytes();
    // A carrier that keeps chunks by reference gets its own copy, and so does a small batch: a congested
    // socket would otherwise pin a whole pooled buffer for a few bytes (hundreds of stripes add up).
    const copies = stripe.pipe.copiesOnSend === true && bytes.byteLength >= LEND_MIN;
    if (!copies) bytes = bytes.slice();
    const ok = stripe.pipe.send(bytes);
    if (ok || !copies) this.pool.put(this.batch.buf);
    if (ok) return frames > 0 || finHere;
    // A copying carrier keeps a reference to the unwritten rest: lend it the buffer until drain.
    if (copies) stripe.lent = this.batch.buf;
    stripe.congested = true;
    return false;
  }

  /** The pooled buffer the batch of this kind is using. */
  private batchBuffer(vector: boolean): Uint8Array {
    return vector ? this.pieces.buffer : this.batch.buf;
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

  // --- stripes dying, the tick, grace -------------------------------------------------------------

  private onStripeEnd(stripe: Stripe): void {
    // A stripe's FIN is not the session's: unless the session is ending, treat it as a lost stripe.
    if (this.isDone()) return;
    if (!this.end.finsCrossed) {
      this.killStripe(stripe, new BrokenError("E_STRIPE_EOF", `stripe ${stripe.index} closed by peer`));
      return;
    }
    stripe.peerEnded = true;
    this.checkPeerFinished();
  }

  /** Every usable stripe ended cleanly after both FINs: the peer has finished (see SessionEnd.peerFinished). */
  private checkPeerFinished(): void {
    if (this.state === "closed") return;
    let any = false;
    for (const s of this.stripes) {
      if (!s?.usable) continue;
      if (!s.peerEnded) return;
      any = true;
    }
    if (!any || !this.end.peerFinished()) return;
    this.pump();
    this.maybeDone();
  }

  private onStripeClose(stripe: Stripe, err: StriperError | undefined): void {
    this.killStripe(stripe, err ?? new BrokenError("E_STRIPE_CLOSED", `stripe ${stripe.index} closed`));
  }

  /** Drops a stripe: its unconfirmed frames go to the resend queue; the client re-dials it. */
  private killStripe(stripe: Stripe, reason: StriperError): void {
    if (this.stripes[stripe.index] !== stripe) return;
    this.stripes[stripe.index] = undefined;
    stripe.usable = false;
    stripe.lent = undefined; // the carrier may still reference it: let it go to the GC, not the pool
    if (this.state === "closed") return;
    this.counters.stripeDied(reason.code);
    // The last ACK may have died with this stripe: repeat it on the others, or the peer may wait for
    // window space (or for the ACK of its FIN) forever.
    this.acks.markDue();
    this.sender.requeue(stripe);
    this.end.stripeLost(stripe.index);
    stripe.pipe.close(reason);
    this.stripeDied?.(stripe.index, reason);
    if ((this.state as PipeState) === "closed") return; // stripeDied ended the session
    if (this.usableStripes === 0 && !this.isDone()) this.startGrace();
    if (this.opts.role === "client" && !this.isDone()) this.redial?.(stripe.index);
    this.pump();
  }

  private startGrace(): void {
    if (this.graceTimer || this.state === "closed") return;
    this.graceTimer = this.clock.setTimeout(() => this.guard(this.graceOver), this.opts.graceMs);
  }

  private readonly graceOver = (): void => {
    this.graceTimer = undefined;
    if (this.usableStripes > 0) return;
    this.finish(new BrokenError("E_GRACE_EXPIRED", `no stripe for ${this.opts.graceMs} ms; session reset`));
  };

  /** Periodic: head-of-line rescue, the ACK safety net, keepalive pings and dead stripes. */
  private readonly tick = (): void => {
    const now = this.clock.now();
    const stalled = this.hol.check(now, this.sender.buf.acked, this.sender.nextOffset, this.stripes);
    if (stalled >= 0) {
      // Re-send what the stalling stripe holds on the others; the stripe itself stays up.
      const s = this.stripes[stalled]!;
      s.resent += this.sender.requeue(s);
      this.scheduler.penalize(s, now);
      s.stalls++;
      this.hol.progressed(now);
      this.pump();
    }
    if (this.acks.tick(this.receiver.delivered)) this.pump();
    let ping = false;
    for (const s of this.stripes) {
      if (!s?.usable) continue;
      const silent = now - s.lastRecvAt;
      const health = stripeHealth(silent, s.ping, this.opts.keepaliveMs, this.opts.deadMs);
      switch (health) {
        case Health.Fine:
          break;
        case Health.PingDue:
          s.ping = Ping.Owed; // sent by the next batch on this stripe
          ping = true;
          break;
        case Health.Dead:
          this.killStripe(s, new BrokenError("E_STRIPE_SILENT", `stripe ${s.index} silent for ${Math.round(silent)} ms`));
          break;
        default: {
          const unreachable: never = health;
          throw new Error(`unknown stripe health ${String(unreachable)}`);
        }
      }
    }
    if (!ping) return;
    // A congested stripe gets its PING with its next batch.
    for (const s of this.stripes) if (s?.usable && !s.congested && s.ping === Ping.Owed) this.writeBatch(s, 0);
  };

  // --- ending -------------------------------------------------------------------------------------

  private isDone(): boolean {
    return this.end.done(this.acks.settled(this.end.peerFin));
  }

  private maybeDone(): void {
    if (this.state !== "closed" && this.isDone()) this.finish(undefined);
  }

  /**
   * Ends the session. With an error, a RESET frame carrying its `resetCode` tells the peer why (not
   * when the peer's own RESET ended it). Stripes are shut down (FIN after what is queued) and closed
   * if they linger.
   */
  private finish(err: StriperError | undefined): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.error = err;
    this.readable = false;
    this.writable = false;
    this.clock.clearInterval(this.tickTimer);
    this.clock.clearTimeout(this.graceTimer);
    this.clock.clearTimeout(this.ackTimer);
    const reset =
      err && !(err instanceof PeerResetError) ? encodeFrame(FRAME_RESET, 0, err.resetCode, encodeResetReason(err.message)) : undefined;
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
      const linger = this.clock.setTimeout(() => {
        for (const p of live) if (p.state !== "closed") p.close(err);
      }, LINGER_MS);
      linger.unref?.();
    }
    this.gate.close();
    this.sender.clear();
    this.receiver.clear();
    const handler = this.handler;
    this.handler = NOOP_HANDLER;
    handler.close(err);
  }
}

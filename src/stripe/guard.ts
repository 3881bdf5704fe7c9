/**
 * StripeGuard: limits what a peer's control frames can make us do on one stripe. Pure; the clock
 * (milliseconds, e.g. performance.now()) is passed in.
 *
 * Each kind of control frame draws from its own token bucket. A stripe that overdraws one is closed
 * with ControlFloodError (E_CONTROL_FLOOD): the session re-sends what it carried and, on the client,
 * re-dials it, as for any dead stripe. An ACK listing more stripes than a session can have is a
 * protocol error (E_BAD_ACK): the session ends with RESET code 3.
 *
 * The limits sit far above what a v1 peer does (docs/protocol.md §4.3, §4.4, §7.3):
 * - PING: a peer pings a stripe only after hearing nothing on it for its keepalive interval (at least
 *   50 ms on the command line, 1 s by default, checked every 250 ms), so at most 20 per second.
 *   Allowed: 50 per second, bursts of 50.
 * - ACK: a peer acknowledges after ACK_DELAY (2 ms) at most, so its timer sends at most 500 per second,
 *   plus one per min(1 MiB, its window / 8) of our data it receives or delivers (at most two per that
 *   many bytes), plus one per stripe attach or death. Allowed: 5,000 per second, bursts of 5,000, plus 8
 *   per min(1 MiB, window / 8) bytes we send (4× the data-driven rate): a fast transfer earns its acks.
 *   Each ACK carries at most maxStripes entries (one per stripe), so the work per ACK is bounded too.
 * - Anything else that makes us work and carries no data — PONG (one per PING we send), FIN (once, or
 *   again after a stripe death): 100 per second, bursts of 100.
 * A flood is cut off within one burst: at most a few thousand frames, instead of a core kept busy
 * (measured before: PINGs at 349 MB/s, or ACKs with 8,191 entries at 1.8 GB/s, held a core at 100 %).
 */

import { BrokenError, ProtocolError } from "../errors.ts";

/** Rates (per second) and bursts of the guard's token buckets. */
export interface FloodLimits {
  pingRate: number;
  pingBurst: number;
  ackRate: number;
  ackBurst: number;
  otherRate: number;
  otherBurst: number;
  /** Most entries an ACK may carry: the highest number of stripes a session may have. */
  maxAckEntries: number;
}

/** The defaults; see the module comment for why each is far above a legitimate peer. */
export const DEFAULT_FLOOD_LIMITS: FloodLimits = {
  pingRate: 50,
  pingBurst: 50,
  ackRate: 5000,
  ackBurst: 5000,
  otherRate: 100,
  otherBurst: 100,
  maxAckEntries: 64,
};

/** Bytes per ACK entry: stripe index u16, generation u16, received count u32. */
const ACK_ENTRY_SIZE = 8;

/**
 * ACK credit earned per byte sent to a peer whose receive window is `peerWindow`: it acknowledges
 * after every min(1 MiB, window / 8) bytes received or delivered; four times that rate is allowed.
 */
export function ackBytesPerToken(peerWindow: number): number {
  return Math.max(1, Math.floor(Math.min(1024 * 1024, peerWindow / 8) / 8));
}

/** A stripe sent control frames faster than its guard allows; the stripe is closed, not the session. */
export class ControlFloodError extends BrokenError {
  constructor(what: string, rate: number, burst: number) {
    super("E_CONTROL_FLOOD", `${what} beyond ${rate} per second (burst ${burst}): stripe closed`);
    this.name = "ControlFloodError";
  }
}

/** A token bucket: `rate` tokens per second up to `burst`; starts full. Pure; `now` in ms. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    readonly rate: number,
    readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.last = now;
  }

  /** Takes `n` tokens if there are that many; false (and nothing taken) otherwise. */
  take(now: number, n = 1): boolean {
    if (now > this.last) {
      // Time refills up to the burst; credit saved beyond it (see credit()) is kept, not cut back.
      if (this.tokens < this.burst) this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
      this.last = now;
    }
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  /** Adds earned tokens (never beyond twice the burst, so saved-up credit stays bounded). */
  credit(n: number): void {
    this.tokens = Math.min(2 * this.burst, this.tokens + n);
  }
}

/** Options of a StripeGuard. */
export interface StripeGuardOptions {
  limits?: FloodLimits;
  /** The peer's receive window, which sets how often it acknowledges (default 16 MiB). */
  peerWindow?: number;
  /** DATA bytes the session had sent when the stripe attached (credit starts from there). */
  sent?: number;
}

/** One per stripe; see the module comment. */
export class StripeGuard {
  private readonly limits: FloodLimits;
  private readonly pings: TokenBucket;
  private readonly acks: TokenBucket;
  private readonly others: TokenBucket;
  private readonly bytesPerAck: number;
  private sentSeen: number;

  constructor(now: number, opts: StripeGuardOptions = {}) {
    const limits = (this.limits = opts.limits ?? DEFAULT_FLOOD_LIMITS);
    this.bytesPerAck = ackBytesPerToken(opts.peerWindow ?? 16 * 1024 * 1024);
    this.sentSeen = opts.sent ?? 0;
    this.pings = new TokenBucket(limits.pingRate, limits.pingBurst, now);
    this.acks = new TokenBucket(limits.ackRate, limits.ackBurst, now);
    this.others = new TokenBucket(limits.otherRate, limits.otherBurst, now);
  }

  /** A PING arrived (it will be answered). Throws ControlFloodError beyond the limit. */
  ping(now: number): void {
    if (!this.pings.take(now)) throw new ControlFloodError("PINGs", this.limits.pingRate, this.limits.pingBurst);
  }

  /**
   * An ACK with a `payloadBytes` payload arrived; `sent` is the DATA bytes the session has sent so far
   * (on any stripe, resends included), which earn ACK credit. Throws ProtocolError E_BAD_ACK for more
   * entries than maxAckEntries, ControlFloodError beyond the rate.
   */
  ack(now: number, payloadBytes: number, sent: number): void {
    const entries = Math.floor(payloadBytes / ACK_ENTRY_SIZE);
    if (entries > this.limits.maxAckEntries) {
      throw new ProtocolError("E_BAD_ACK", `ACK with ${entries} entries; a session has at most ${this.limits.maxAckEntries} stripes`);
    }
    if (sent > this.sentSeen) {
      this.acks.credit((sent - this.sentSeen) / this.bytesPerAck);
      this.sentSeen = sent;
    }
    if (!this.acks.take(now)) throw new ControlFloodError("ACKs", this.limits.ackRate, this.limits.ackBurst);
  }

  /** Any other frame that makes us work without carrying data (PONG, FIN, an empty DATA frame). */
  other(now: number): void {
    if (!this.others.take(now)) {
      throw new ControlFloodError("control frames", this.limits.otherRate, this.limits.otherBurst);
    }
  }
}

/**
 * Scheduler: the whole sending policy of a session, one object per mode. Pure. It decides which stripe
 * carries the next batch (pick), how large that stripe's DATA frames are (frameSize), how many payload
 * bytes the batch may take (allowance, which is where the in-flight cap bites), what it derives from
 * new measurements (measured), and how a stripe that held up delivery is penalised (penalize). The
 * session only asks; it never computes any of these itself.
 *
 * Modes:
 * - "rate" (default): among stripes that are writable and hold less in flight than their measured
 *   delivery rate × (RTT + margin), pick the one where the frame would be delivered soonest:
 *   (inflight + frame) / rate. This is MPTCP's "least queued bytes per unit of rate" with a cap per
 *   stripe, which also keeps a frame off a slow stripe when a fast one would deliver it first (the
 *   BLEST concern) — see docs/design.md.
 * - "until-congested": keep sending on one stripe until its socket reports congestion, then move on
 *   (the original design's mode).
 * - "round-robin": strictly in turn; when the stripe whose turn it is is congested, wait for it.
 */

/** Scheduler mode names, as given to `--scheduler`. */
export type SchedulerMode = "rate" | "until-congested" | "round-robin";

/** All modes, for argument checking. */
export const SCHEDULER_MODES: readonly SchedulerMode[] = ["rate", "until-congested", "round-robin"];

/** What the scheduler knows of one stripe (the session's stripes are these, plus their ledger). */
export interface StripeView {
  /** Up, handshake done, not dying. Unusable stripes are always skipped. */
  usable: boolean;
  /** The socket holds unwritten bytes: a write now would only queue. */
  congested: boolean;
  /** Bytes sent on this stripe and not yet confirmed received. */
  inflight: number;
  /** Measured delivery rate in bytes/s (0 = not measured yet). The rescue penalty lowers it. */
  rate: number;
  /** The RTT the policy sizes this stripe by, in ms (0 = not yet): set by `measured`. */
  rtt: number;
  /** Smallest RTT measured, in ms (0 = not yet): free of the stripe's own queueing. */
  minRtt: number;
  /** Smoothed RTT, in ms (0 = not yet); srtt − minRtt is the queue the stripe has built. */
  srtt: number;
}

/** The sending policy of one session; see the module comment. One object per session (it may keep position). */
export interface Scheduler {
  readonly mode: SchedulerMode;
  /**
   * Index of the stripe to send the next batch on, or -1 to wait for a drain or an ack. `frameBytes`
   * is the frame size the choice is judged by. Holes (undefined) are dead stripes.
   */
  pick(stripes: readonly (StripeView | undefined)[], frameBytes: number): number;
  /** Largest DATA payload per frame on this stripe. */
  frameSize(s: StripeView): number;
  /** Payload bytes one batch on this stripe may carry (at least one frame, always a whole number). */
  allowance(s: StripeView, frameSize: number): number;
  /** ACK entries have just updated the stripes' RTT and rate: refresh what the policy derives from them. */
  measured(stripes: readonly (StripeView | undefined)[]): void;
  /** `s` held up in-order delivery and its frames went to the others (head-of-line rescue). */
  penalize(s: StripeView): void;
}

/** Bytes any stripe may always have in flight, measured or not: enough to start and to probe. */
export const MIN_INFLIGHT = 64 * 1024;
/** Added to the RTT when sizing a stripe's in-flight cap (ms): absorbs ack delay and jitter. */
export const RTT_MARGIN_MS = 30;
/** The rate mode cuts frames to this much of a stripe's rate (s), so one frame holds up little. */
export const FRAME_TIME_S = 0.025;
/** Smallest frame the rate mode cuts for a measured stripe. */
export const MIN_RATE_FRAME = 4096;
/** Frame size for a stripe not measured yet, so a slow stripe's first frames do not queue for long. */
export const UNMEASURED_FRAME = 64 * 1024;

/** Largest in-flight amount the rate mode allows on a stripe: 2 × rate × (RTT + margin), at least MIN_INFLIGHT. */
export function inflightCap(s: StripeView): number {
  if (s.rate <= 0) return MIN_INFLIGHT * 4;
  const cap = (s.rate * ((s.rtt || 0) + RTT_MARGIN_MS)) / 1000;
  return Math.max(MIN_INFLIGHT, cap * 2);
}

/** The rescue penalty: halve the rate estimate. Applied in every mode so statistics agree across modes. */
function halveRate(s: StripeView): void {
  s.rate *= 0.5;
}

/** "rate": earliest expected delivery among stripes below their in-flight cap. */
export class RateScheduler implements Scheduler {
  readonly mode = "rate";

  constructor(private readonly maxFrame: number) {}

  pick(stripes: readonly (StripeView | undefined)[], frameBytes: number): number {
    let best = -1;
    let bestTime = Infinity;
    for (let i = 0; i < stripes.length; i++) {
      const s = stripes[i];
      if (!s?.usable || s.congested) continue;
      // Below its cap a stripe may take more (allowance sizes the batch to the room left); testing
      // inflight + frame against the cap starved slow stripes whose cap is near one frame.
      if (s.inflight >= inflightCap(s)) continue;
      // Unmeasured stripes count as fast so they get measured.
      const time = s.rate > 0 ? (s.inflight + frameBytes) / s.rate : (s.inflight + frameBytes) / 1e12;
      if (time < bestTime) {
        bestTime = time;
        best = i;
      }
    }
    return best;
  }

  /** About FRAME_TIME_S of the stripe's rate, between MIN_RATE_FRAME and the session's frame size. */
  frameSize(s: StripeView): number {
    if (s.rate <= 0) return Math.min(this.maxFrame, UNMEASURED_FRAME);
    return Math.max(MIN_RATE_FRAME, Math.min(this.maxFrame, Math.floor(s.rate * FRAME_TIME_S)));
  }

  /** The room left below the in-flight cap, at least one frame. */
  allowance(s: StripeView, frameSize: number): number {
    // Whole bytes: a fractional remainder (the cap comes from a rate) once made empty frames.
    return Math.max(frameSize, Math.floor(inflightCap(s) - s.inflight));
  }

  /**
   * Each stripe is sized by its own minimum RTT, but at most twice the session's smallest. A slow
   * stripe's early samples include its own queue (its first frames wait behind each other), and a
   * minimum taken from them never comes down: its cap, and queue, would stay inflated for the whole
   * session (measured: 464 ms on a 20 ms path).
   */
  measured(stripes: readonly (StripeView | undefined)[]): void {
    let base = Infinity;
    for (const s of stripes) if (s?.usable && s.minRtt > 0 && s.minRtt < base) base = s.minRtt;
    for (const s of stripes) if (s?.usable && s.minRtt > 0) s.rtt = Math.min(s.minRtt, 2 * base);
  }

  penalize(s: StripeView): void {
    halveRate(s);
  }
}

/** "until-congested": stay on one stripe until its socket is congested, then move to the next. */
export class UntilCongestedScheduler implements Scheduler {
  readonly mode = "until-congested";
  private last = -1;

  constructor(private readonly maxFrame: number) {}

  pick(stripes: readonly (StripeView | undefined)[]): number {
    const n = stripes.length;
    const start = this.last >= 0 && this.last < n ? this.last : 0;
    for (let k = 0; k < n; k++) {
      const i = (start + k) % n;
      const s = stripes[i];
      if (s?.usable && !s.congested) return (this.last = i);
    }
    return -1;
  }

  frameSize(): number {
    return this.maxFrame;
  }

  /** Unlimited: the batch fills up to the batch size, and the socket's congestion moves us on. */
  allowance(): number {
    return Infinity;
  }

  measured(): void {}

  penalize(s: StripeView): void {
    halveRate(s);
  }
}

/** "round-robin": strictly in turn, one frame per turn; waits for the stripe whose turn it is. */
export class RoundRobinScheduler implements Scheduler {
  readonly mode = "round-robin";
  private last = -1;

  constructor(private readonly maxFrame: number) {}

  pick(stripes: readonly (StripeView | undefined)[]): number {
    const n = stripes.length;
    for (let k = 1; k <= n; k++) {
      const i = (this.last + k) % n;
      const s = stripes[i];
      if (!s?.usable) continue; // dead or joining stripes lose their turn
      if (s.congested) return -1; // strict: wait for the stripe whose turn it is
      return (this.last = i);
    }
    return -1;
  }

  frameSize(): number {
    return this.maxFrame;
  }

  /**
   * One frame's worth of bytes per turn. In bytes, not frames: frames cut short at a chunk boundary
   * share the turn (counting such stubs as frames made many tiny writes).
   */
  allowance(_s: StripeView, frameSize: number): number {
    return frameSize;
  }

  measured(): void {}

  penalize(s: StripeView): void {
    halveRate(s);
  }
}

/** The policy object for `mode`; `maxFrame` is the session's frameSize option. */
export function createScheduler(mode: SchedulerMode, maxFrame = 256 * 1024): Scheduler {
  switch (mode) {
    case "rate":
      return new RateScheduler(maxFrame);
    case "until-congested":
      return new UntilCongestedScheduler(maxFrame);
    case "round-robin":
      return new RoundRobinScheduler(maxFrame);
    default: {
      const unreachable: never = mode;
      throw new Error(`unknown scheduler mode ${String(unreachable)}`);
    }
  }
}

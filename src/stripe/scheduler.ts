/**
 * Scheduler: the whole sending policy of a session, one object per mode. Pure. It decides which stripe
 * carries the next batch (pick), how large that stripe's DATA frames are (frameSize), how many payload
 * bytes the batch may take (allowance, which is where the in-flight cap bites), what it derives from
 * new measurements (measured), what the end of a pump says about each stripe (stopped), and how a
 * stripe that held up delivery is penalised (penalize). The session only asks; it never computes any of
 * these itself.
 *
 * Every mode measures the same way: each stripe has a StripeControl (src/stripe/control.ts) fed by its
 * ledger's delivery samples, which gives the stripe's rate and minimum RTT for statistics. Only "rate"
 * uses its in-flight cap.
 *
 * Modes:
 * - "rate" (default): keeps the queue short on every stripe (docs/design.md, "How the scheduler keeps
 *   queues short"). Each stripe may have in flight what its controller allows, about its
 *   bandwidth-delay product plus 15 ms of its rate. Among stripes below their cap, the batch goes where
 *   the next frame would be delivered soonest, (inflight + frame) / rate — MPTCP's "least queued bytes
 *   per unit of rate", which also keeps a frame off a slow stripe when a fast one would deliver it first
 *   (BLEST) — and takes frames only until another stripe would deliver the next one sooner
 *   (water-filling). Frames are 2 ms of the stripe's rate, so a frame holds up in-order delivery little.
 * - "until-congested": keep sending on one stripe until its socket reports congestion, then move on
 *   (the original design's mode).
 * - "round-robin": strictly in turn; when the stripe whose turn it is is congested, wait for it.
 */

import { StripeControl } from "./control.ts";
import type { DeliverySample } from "./ledger.ts";

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
  /** Index in the session: seeds the stagger of its controller's probing. */
  readonly index: number;
  /** Smallest RTT measured, in ms (0 = not yet); the ledger's. */
  minRtt: number;
  /** Smoothed RTT, in ms (0 = not yet); srtt − minRtt is the queue the stripe has built. */
  srtt: number;
  /** Confirmations that made a delivery sample, and the newest sample (the ledger's). */
  readonly samples: number;
  readonly sample: DeliverySample;
  /** The session has nothing more for this stripe: mark what it sends next app-limited (the ledger's). */
  markAppLimited(): void;
  // Set by the scheduler (measured), read by the session's statistics:
  /** Delivery rate the policy compares this stripe by, bytes/s (0 = not yet). */
  rate: number;
  /** Minimum RTT the policy sizes this stripe by, ms (0 = not yet). */
  rtt: number;
  /** In-flight cap in bytes (0 = the mode has none). */
  cap: number;
  /** DATA payload per frame on this stripe (0 = not set yet). */
  frame: number;
}

/** The sending policy of one session; see the module comment. One object per session (it may keep position). */
export interface Scheduler {
  readonly mode: SchedulerMode;
  /** Index of the stripe to send the next batch on, or -1 to wait for a drain or an ack. Holes (undefined) are dead stripes. */
  pick(stripes: readonly (StripeView | undefined)[]): number;
  /** Largest DATA payload per frame on this stripe. */
  frameSize(s: StripeView): number;
  /** Payload bytes one batch on the stripe pick() just chose may carry (at least one frame, a whole number). */
  allowance(s: StripeView, frameSize: number): number;
  /** ACK entries have just confirmed frames (or a stripe attached): refresh what the policy derives. */
  measured(stripes: readonly (StripeView | undefined)[], now: number): void;
  /**
   * The session stopped sending for now: with `dataLeft` because no stripe would take more (those at
   * their cap are using it), otherwise because it had nothing more to send (an app-limited stretch).
   */
  stopped(stripes: readonly (StripeView | undefined)[], dataLeft: boolean): void;
  /** `s` held up in-order delivery and its frames went to the others (head-of-line rescue). */
  penalize(s: StripeView, now: number): void;
}

/** Frames on a "rate" stripe carry this much time at its rate (ms): in-order delivery waits little for one. */
export const FRAME_MS = 2;
/** Smallest frame the rate mode cuts. */
export const MIN_RATE_FRAME = 4096;
/**
 * A stripe whose 2 ms frame reaches this is fast (32 MB/s and up): it gets the session's full frames
 * and batches as large as its cap allows. There a frame holds up little anyway, and the cost per write
 * is what limits (uncapped, 80 KB frames in one-frame batches lost a third of the rate).
 */
export const FAST_FRAME = 64 * 1024;
/** Rate a stripe is compared by while no stripe of the session has been measured (bytes/s). */
const UNMEASURED_RATE = 1e6;
/** A stripe this close to its cap when sending stops counts as using it. */
const FULL_FRACTION = 0.9;

/**
 * What every mode shares: a controller per stripe, fed from its ledger, giving the rate and minimum
 * RTT; app-limited marks when the session runs dry; the rescue penalty.
 */
abstract class Measuring {
  /** Each stripe object's controller (a replaced stripe is a new object, with a new controller). */
  private readonly controls = new WeakMap<StripeView, { ctl: StripeControl; seen: number }>();

  /** The controller of `s`, made on first use. */
  protected control(s: StripeView, now: number): StripeControl {
    let c = this.controls.get(s);
    if (!c) {
      c = { ctl: new StripeControl(now, s.index), seen: 0 };
      this.controls.set(s, c);
    }
    if (c.seen !== s.samples) {
      c.seen = s.samples;
      c.ctl.onSample(now, s.sample);
    }
    return c.ctl;
  }

  measured(stripes: readonly (StripeView | undefined)[], now: number): void {
    for (const s of stripes) {
      if (!s?.usable) continue;
      const ctl = this.control(s, now);
      s.rate = ctl.bw;
      s.rtt = ctl.minRtt;
    }
  }

  stopped(stripes: readonly (StripeView | undefined)[], dataLeft: boolean): void {
    for (const s of stripes) {
      if (!s?.usable) continue;
      if (s.cap > 0 && s.inflight >= s.cap * FULL_FRACTION) this.controls.get(s)?.ctl.full();
      else if (!dataLeft) s.markAppLimited();
    }
  }

  penalize(s: StripeView, now: number): void {
    this.controls.get(s)?.ctl.penalize(now);
  }
}

/** "rate": earliest expected delivery among stripes below their cap, water-filling; see the module comment. */
export class RateScheduler extends Measuring implements Scheduler {
  readonly mode = "rate";
  /** Expected delivery time (s) of the next frame on the second-best stripe of the last pick. */
  private runnerUp = Infinity;
  private readonly known: number[] = [];

  constructor(private readonly maxFrame: number) {
    super();
  }

  /**
   * Caps and frames from each stripe's controller. A stripe that has not yet had more to send than its
   * cap allowed (a window-limited app may never fill 16 stripes) has not shown its rate: it is compared
   * at the median of those that have, so that app data is spread over every stripe instead of queueing
   * on the few that were measured.
   */
  override measured(stripes: readonly (StripeView | undefined)[], now: number): void {
    const known = this.known;
    known.length = 0;
    let best = 0;
    for (const s of stripes) {
      if (!s?.usable) continue;
      const ctl = this.control(s, now);
      if (ctl.validated && ctl.bw > 0) known.push(ctl.bw);
      if (ctl.bw > best) best = ctl.bw;
    }
    known.sort((a, b) => a - b);
    const ref = known.length > 0 ? known[known.length >> 1]! : best > 0 ? best : UNMEASURED_RATE;
    for (const s of stripes) {
      if (!s?.usable) continue;
      const ctl = this.control(s, now);
      s.rtt = ctl.minRtt;
      s.cap = ctl.cap;
      s.rate = ctl.validated ? ctl.bw : Math.max(ctl.bw, ref);
      s.frame = frameFor(s.rate, this.maxFrame);
    }
  }

  pick(stripes: readonly (StripeView | undefined)[]): number {
    let best = -1;
    let bestTime = Infinity;
    let second = Infinity;
    for (let i = 0; i < stripes.length; i++) {
      const s = stripes[i];
      if (!s?.usable || s.congested) continue;
      // Below its cap a stripe may take a frame (allowance sizes the batch); testing inflight + frame
      // against the cap starved slow stripes whose cap is near one frame.
      if (s.inflight >= s.cap || s.rate <= 0) continue;
      const time = (s.inflight + s.frame) / s.rate;
      if (time < bestTime) {
        second = bestTime;
        bestTime = time;
        best = i;
      } else if (time < second) second = time;
    }
    this.runnerUp = second;
    return best;
  }

  frameSize(s: StripeView): number {
    return s.frame || frameFor(s.rate, this.maxFrame);
  }

  /**
   * The room below the cap — but on a slow stripe only as far as it stays the stripe where the next
   * frame would be delivered soonest (water-filling): a batch of many frames on one stripe while others
   * idle makes in-order delivery wait for that stripe. Always at least one frame; whole bytes.
   */
  allowance(s: StripeView, frameSize: number): number {
    let room = Math.floor(s.cap - s.inflight);
    if (frameSize < FAST_FRAME && this.runnerUp !== Infinity) room = Math.min(room, Math.floor(this.runnerUp * s.rate - s.inflight));
    return Math.max(frameSize, room);
  }
}

/** A rate stripe's frame: FRAME_MS of `rate`, from MIN_RATE_FRAME; the session's frame size from FAST_FRAME on. */
export function frameFor(rate: number, maxFrame: number): number {
  const timed = Math.floor((rate * FRAME_MS) / 1000);
  if (timed >= FAST_FRAME) return maxFrame;
  return Math.max(Math.min(MIN_RATE_FRAME, maxFrame), Math.min(maxFrame, timed));
}

/** "until-congested": stay on one stripe until its socket is congested, then move to the next. */
export class UntilCongestedScheduler extends Measuring implements Scheduler {
  readonly mode = "until-congested";
  private last = -1;

  constructor(private readonly maxFrame: number) {
    super();
  }

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
}

/** "round-robin": strictly in turn, one frame per turn; waits for the stripe whose turn it is. */
export class RoundRobinScheduler extends Measuring implements Scheduler {
  readonly mode = "round-robin";
  private last = -1;

  constructor(private readonly maxFrame: number) {
    super();
  }

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

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
 *   (water-filling). Frames are 4 ms of the stripe's rate, so a frame holds up in-order delivery little.
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
  /** Bytes the current pump has planned for this stripe and not written yet (0 outside a pump). */
  readonly planned: number;
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
  /** Of the cap, the allowance for confirmations that come in bursts (StripeControl.aggregation), bytes. */
  aggregation: number;
  /** DATA payload per frame on this stripe (0 = not set yet). */
  frame: number;
}

/** The sending policy of one session; see the module comment. One object per session (it may keep position). */
export interface Scheduler {
  readonly mode: SchedulerMode;
  /**
   * How the session sends: false — one batch per pick, written at once; true — each pick plans frames
   * for a stripe (`planned`), and every stripe's planned frames leave in one batch at the end of the
   * pump, so frames are interleaved over the stripes while writes stay few.
   */
  readonly plans: boolean;
  /** Index of the stripe to send the next batch on, or -1 to wait for a drain or an ack. Holes (undefined) are dead stripes. */
  pick(stripes: readonly (StripeView | undefined)[]): number;
  /** Largest DATA payload per frame on this stripe. */
  frameSize(s: StripeView): number;
  /** Payload bytes the stripe pick() just chose may take now (at least one frame, a whole number). */
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

/**
 * Frames on a "rate" stripe carry this much time at its rate (ms): in-order delivery waits little for
 * one (16 KiB at 4 MB/s). A frame's whole time is added to the round trip a window-limited app sees
 * (the receiver delivers a frame once all of it has crossed the bottleneck), and at 16 stripes a 2 MiB
 * window leaves ~11 ms above the base round trip for everything the pair adds. Shorter frames cost CPU
 * at both ends (per frame, and the receiver copies out-of-order pieces under 16 KiB): with 2 ms frames
 * the in-process 64 MiB tests ran 2-3x slower under load. 8 ms frames were tried: the windowed app at
 * N = 16 was no faster under load, and the in-process tests showed no consistent gain.
 */
export const FRAME_MS = 4;
/**
 * Smallest frame the rate mode cuts (4 ms at 2 MB/s; longer below). Every frame costs a batch, a record
 * and a socket write when a stripe sends one at a time: with 100 sessions sharing two cores each stripe
 * runs below 1 MB/s. Measured (quiet, medians of 3; 100 × 4 MiB echo, and uneven caps 4,4,4,0.4 ×2):
 * 4 KiB 15.2 s, client peak RSS 213 MB, uneven 0.97; 8 KiB 13.3 s, 198 MB, 0.97; 16 KiB 10.8 s,
 * 190 MB, 0.96 (a 0.4 MB/s stripe's frame then takes 41 ms).
 */
export const MIN_RATE_FRAME = 8192;
/**
 * A stripe whose frame reaches this is fast (16 MB/s and up): it gets the session's full frames and
 * takes the room below its cap at once. There a frame holds up little anyway, and the cost per frame
 * is what limits (uncapped, 80 KB frames in one-frame batches lost a third of the rate).
 */
export const FAST_FRAME = 64 * 1024;
/** Rate a stripe is compared by while no stripe of the session has been measured (bytes/s). */
const UNMEASURED_RATE = 1e6;

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
    if (dataLeft) return;
    for (const s of stripes) if (s?.usable) s.markAppLimited();
  }

  /** `s` is using its cap (the session had more to send than it allowed). */
  protected full(s: StripeView): void {
    this.controls.get(s)?.ctl.full();
  }

  penalize(s: StripeView, now: number): void {
    this.controls.get(s)?.ctl.penalize(now);
  }
}

/**
 * A stripe with data in flight is given more once it has room for this many of its frames (at most a
 * quarter of its cap): two 16 KiB frames at 4 MB/s, a write per 8 ms instead of one per ACK.
 */
export const QUANTUM_FRAMES = 2;

/** "rate": earliest expected delivery among stripes below their cap, one frame at a time; see the module comment. */
export class RateScheduler extends Measuring implements Scheduler {
  readonly mode = "rate";
  readonly plans = true;
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
      s.aggregation = ctl.aggregation;
      s.rate = ctl.validated ? ctl.bw : Math.max(ctl.bw, ref);
      s.frame = frameFor(s.rate, this.maxFrame);
    }
  }

  /**
   * The stripe where its next frame would be delivered soonest, counting what it has in flight and what
   * this pump has planned for it. Below its cap a stripe may take a frame (testing inflight + frame
   * against the cap starved slow stripes whose cap is near one frame); one with data in flight and
   * nothing planned yet waits until it has room for a quantum.
   */
  pick(stripes: readonly (StripeView | undefined)[]): number {
    let best = -1;
    let bestTime = Infinity;
    for (let i = 0; i < stripes.length; i++) {
      const s = stripes[i];
      if (!s?.usable || s.congested || s.rate <= 0) continue;
      const held = s.inflight + s.planned;
      if (held >= s.cap) continue;
      if (s.planned === 0 && s.inflight > 0 && s.cap - s.inflight < quantum(s)) continue;
      const time = (held + s.frame) / s.rate;
      if (time < bestTime) {
        bestTime = time;
        best = i;
      }
    }
    return best;
  }

  frameSize(s: StripeView): number {
    return s.frame || frameFor(s.rate, this.maxFrame);
  }

  /**
   * One frame: the next goes wherever it would then be delivered soonest (water-filling, frame by
   * frame), so a block of app data is spread over the stripes instead of queueing on one. A fast stripe
   * (full frames) takes the room below its cap at once: there the cost per frame is what matters.
   * Whole bytes, at least one frame.
   */
  allowance(s: StripeView, frameSize: number): number {
    if (frameSize < FAST_FRAME) return frameSize;
    return Math.max(frameSize, Math.floor(s.cap - s.inflight - s.planned));
  }

  /** As Measuring's, with "using its cap" meaning: no room for a quantum. */
  override stopped(stripes: readonly (StripeView | undefined)[], dataLeft: boolean): void {
    for (const s of stripes) {
      if (!s?.usable) continue;
      if (s.cap > 0 && s.cap - s.inflight < quantum(s)) this.full(s);
      else if (!dataLeft) s.markAppLimited();
    }
  }
}

/** Room a stripe with data in flight needs before it is given more: QUANTUM_FRAMES frames, at most a quarter of its cap. */
function quantum(s: StripeView): number {
  return Math.min(QUANTUM_FRAMES * s.frame, s.cap / 4);
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
  readonly plans = false;
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
  readonly plans = false;
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

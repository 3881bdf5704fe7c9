/**
 * StripeControl: how much one stripe may have in flight so that it runs at its path's rate without
 * building a queue (issue 11). Pure: fed the ledger's delivery samples (src/stripe/ledger.ts) with the
 * time passed in; the scheduler (src/stripe/scheduler.ts) reads its cap, rate and minimum RTT.
 *
 * BBR-like, sized for striping (docs/design.md, "How the scheduler keeps queues short"):
 *
 *   cap = gain × bw × minRtt + max(bw × headroom, aggregation)
 *
 * - bw: after startup, the largest delivery rate measured over an interval of at least `rateRounds`
 *   round trips (and `rateIntervalMinMs`) within the last `bwWindowMs`. Rates over one round trip, as
 *   BBR takes them, read 10–40 % high here: the hosts' scheduling jitter, and a shaper's token bucket
 *   that refills whenever its queue empties; a max filter keeps the highest. A moving average instead
 *   spirals down after host stalls (a low cap measures a low rate). App-limited intervals may only raise
 *   it: an idle stripe is not a slow one.
 * - minRtt: the smallest RTT. ProbeRTT once about a second after the start (a stripe that has been busy
 *   since its first burst has only seen its own queue) and after `probeRttEveryMs` without a new
 *   minimum: in flight held to half a BDP until the queue has drained and a round trip has passed,
 *   then the minimum is what that round saw (a path whose delay grew is followed; a standing queue
 *   cannot pose as the path). Staggered across a session's stripes.
 * - headroom: what the minimum leaves out — the peer's ACK delay (2 ms), a frame's serialisation, and
 *   the hosts' scheduling delays (7–10 ms under load). It is the queue the stripe may hold, `headroomMs`
 *   of its rate, unless the aggregation allowance measured more.
 * - aggregation (BBR's extra_acked, Linux tcp_bbr.c bbr_update_ack_aggregation): the most bytes
 *   confirmed beyond what bw predicts over an ACK epoch, max-filtered over `aggregationRounds` rounds
 *   (at least `bwWindowMs`), at most `aggregationMaxMs` of the rate. A host that stalls (a busy
 *   machine: 20-500 ms) confirms a stall's worth at once after it; without this allowance in flight
 *   runs dry during every stall, the rate intervals read cap ÷ inflated round trip, bw falls, the cap
 *   with it, and the stripe spirals down to its smallest cap (64 MiB tests 10x slower under load). On
 *   a quiet host confirmations come every 2 ms at about bw and the allowance stays a frame or two (a
 *   few ms of rate), under the headroom: the cap there is what it was without it. Added to the
 *   headroom instead of replacing it, those frames would be a standing queue of ~8 ms more.
 * - gain: `probeGain` for one round in `cycleRounds` (probing for more rate), else 1. No drain round:
 *   sending is ACK-clocked, so the cap alone bounds the queue and a probe's excess leaves within a round.
 * - startup: cap max(initialCap, startupGain × BDP + headroom) while bw grows by `startupGrowth` a round
 *   (per-frame samples, kept by a max filter); cruise after `startupFlatRounds` flat rounds, starting
 *   from startup's last full rate interval (the per-frame max reads high). No delay-based exit
 *   (HyStart): on a busy host the round trip above the minimum is mostly the host's, and such exits
 *   left fast stripes at a fraction of their rate. Re-entered when a stripe whose estimate was never
 *   measured at its cap is busy again after `restartIdleRounds` rounds without using it.
 * - penalty (head-of-line rescue): the cap is halved for `penaltyRounds` rounds; the rate estimate is
 *   left alone (a stripe that really slowed shows it in its next intervals).
 */

import type { DeliverySample } from "./ledger.ts";

/** Tunables of the controller. The defaults are what the issue-11 measurements chose. */
export interface ControlParams {
  /** Queue the stripe may hold beyond its BDP, as time at its rate (ms). */
  headroomMs: number;
  /** In-flight gain of the probing round. */
  probeGain: number;
  /** Rounds per gain cycle: one probing round, the rest at gain 1. */
  cycleRounds: number;
  /** Startup: the cap's BDP multiple. */
  startupGain: number;
  /** Startup goes on while bw grows by this factor a round... */
  startupGrowth: number;
  /** ...and ends after this many rounds in which it did not. */
  startupFlatRounds: number;
  /** Startup's max filter over per-frame rates: at least this long (ms) and this many rounds. */
  startupWindowMs: number;
  startupWindowRounds: number;
  /** A rate interval spans at least this many round trips and this many ms. */
  rateRounds: number;
  rateIntervalMinMs: number;
  /** Length of the max filter over interval rates (ms). */
  bwWindowMs: number;
  /** Rounds without using the cap after which being busy again restarts startup. */
  restartIdleRounds: number;
  /** ProbeRTT when the minimum RTT has not been refreshed for this long (ms)... */
  probeRttEveryMs: number;
  /**
   * ...and once early, this long after the stripe started (plus a stagger of up to 7/8 of it by the
   * seed): a stripe that has had a queue since its first burst never saw the path's own round trip.
   */
  firstProbeRttMs: number;
  /** ProbeRTT holds in flight to this fraction of the BDP. */
  probeRttGain: number;
  /** The aggregation allowance's max filter: this many rounds, at least bwWindowMs. */
  aggregationRounds: number;
  /** The aggregation allowance is at most this much of the rate (ms; Linux's bbr_extra_acked_max_us). */
  aggregationMaxMs: number;
  /** Rounds a head-of-line penalty halves the cap for. */
  penaltyRounds: number;
  /** Cap before anything is measured (bytes): enough for 4 MB/s over 30 ms. */
  initialCap: number;
  /** Smallest cap (bytes): two of the smallest frames. */
  minCap: number;
}

/** The defaults (docs/design.md says why each is what it is). */
export const CONTROL: Readonly<ControlParams> = Object.freeze({
  headroomMs: 15,
  probeGain: 1.1,
  cycleRounds: 8,
  startupGain: 2,
  startupGrowth: 1.25,
  startupFlatRounds: 3,
  startupWindowMs: 250,
  startupWindowRounds: 10,
  rateRounds: 4,
  rateIntervalMinMs: 60,
  bwWindowMs: 1000,
  restartIdleRounds: 8,
  probeRttEveryMs: 10_000,
  firstProbeRttMs: 1000,
  probeRttGain: 0.5,
  aggregationRounds: 10,
  aggregationMaxMs: 100,
  penaltyRounds: 4,
  initialCap: 128 * 1024,
  minCap: 8 * 1024,
});

/**
 * Windowed max (or min) of a time series: Kathleen Nichols' three-sample filter, as Linux's win_minmax.
 * Keeps the best, second-best and third-best values of the window with their times.
 */
export class WindowedFilter {
  private v = [0, 0, 0];
  private t = [0, 0, 0];
  private empty = true;

  /** `max` true keeps the largest value of the window, false the smallest. */
  constructor(private readonly max: boolean) {}

  /** The best value of the window (0 when nothing was seen). */
  get value(): number {
    return this.empty ? 0 : this.v[0]!;
  }

  private better(a: number, b: number): boolean {
    return this.max ? a >= b : a <= b;
  }

  /** Forgets everything and starts again from `value` at `now`. */
  reset(value: number, now: number): void {
    this.v = [value, value, value];
    this.t = [now, now, now];
    this.empty = false;
  }

  /** Adds a sample; `window` is the filter's length in the unit of `now`. */
  update(value: number, now: number, window: number): void {
    if (this.empty || this.better(value, this.v[0]!) || now - this.t[2]! > window) return this.reset(value, now);
    if (this.better(value, this.v[1]!)) {
      this.v[2] = this.v[1] = value;
      this.t[2] = this.t[1] = now;
    } else if (this.better(value, this.v[2]!)) {
      this.v[2] = value;
      this.t[2] = now;
    }
    // Age the best values out as the window slides past them (win_minmax's subwindow update).
    const dt = now - this.t[0]!;
    if (dt > window) {
      this.v = [this.v[1]!, this.v[2]!, value];
      this.t = [this.t[1]!, this.t[2]!, now];
      if (now - this.t[0]! > window) {
        this.v = [this.v[1]!, this.v[2]!, value];
        this.t = [this.t[1]!, this.t[2]!, now];
      }
    } else if (this.t[1] === this.t[0] && dt > window / 4) {
      this.v[2] = this.v[1] = value;
      this.t[2] = this.t[1] = now;
    } else if (this.t[2] === this.t[1] && dt > window / 2) {
      this.v[2] = value;
      this.t[2] = now;
    }
  }
}

/** Where a stripe's controller is. */
export enum Phase {
  /** Finding the rate: the cap is twice the BDP (at least initialCap) while bw grows. */
  Startup,
  /** At the measured rate: cap = gain × BDP + headroom. */
  Cruise,
  /** Re-measuring the minimum RTT: in flight held to half a BDP for a round. */
  ProbeRtt,
}

/** One stripe's controller; see the module comment. */
export class StripeControl {
  phase = Phase.Startup;
  private readonly startupBw = new WindowedFilter(true);
  private readonly cruiseBw = new WindowedFilter(true);
  private minRttMs = 0;
  private minRttStamp: number;
  /** When the first ProbeRTT is due (Infinity once it happened). */
  private firstProbeAt: number;
  private roundStart: number;
  /** Position in the gain cycle; 0 is the probing round. */
  private cycle: number;
  private lastRoundBw = 0;
  private flatRounds = 0;
  /** The stripe reached its cap this round / at some point in startup. */
  private roundFull = false;
  private startupFull = false;
  /** The last rate interval of startup that was not app-limited (bytes/s; 0 = none). */
  private startupInterval = 0;
  /** Rounds since the stripe last reached its cap. */
  private idleRounds = 0;
  private penaltyLeft = 0;
  private isValidated = false;
  // The current rate interval: start, delivered at its start, whether any of it was app-limited.
  private ivStart = -1;
  private ivDelivered = 0;
  private ivApp = false;
  /** Interval rates are ignored until then (after ProbeRTT the shaper's bucket has refilled). */
  private ignoreUntil = 0;
  // ProbeRTT: when it began, when in flight first fell to its cap (-1 = not yet), the least RTT it saw.
  private probeStart = 0;
  private drainedAt = -1;
  private probeMin = Infinity;
  // ACK aggregation: the current epoch's start and bytes confirmed in it, the last `delivered` seen, and
  // the max filter of the bytes beyond bw × epoch (see the module comment).
  private epochStart = -1;
  private epochAcked = 0;
  private lastDelivered = 0;
  private readonly extraAcked = new WindowedFilter(true);

  /** `seed` (the stripe index) staggers the probing rounds and ProbeRTTs of a session's stripes. */
  constructor(
    now: number,
    seed = 0,
    readonly p: Readonly<ControlParams> = CONTROL,
  ) {
    this.roundStart = now;
    this.cycle = 1 + (seed % (p.cycleRounds - 1));
    this.minRttStamp = now;
    this.firstProbeAt = now + p.firstProbeRttMs * (1 + (seed % 8) / 8);
  }

  /** The delivery-rate estimate, bytes/s (0 = not measured yet). */
  get bw(): number {
    return this.phase === Phase.Startup ? this.startupBw.value : this.cruiseBw.value;
  }

  /** The minimum RTT the cap is sized by, ms (0 = not measured yet). */
  get minRtt(): number {
    return this.minRttMs;
  }

  /** True once a rate was measured while the stripe used its whole cap (not only app-limited). */
  get validated(): boolean {
    return this.isValidated;
  }

  /**
   * The cruise cap's allowance for confirmations that come in bursts (bytes; 0 before the rate is
   * known): the filtered extra, at most aggregationMaxMs of bw.
   */
  get aggregation(): number {
    return Math.min(this.extraAcked.value, (this.bw * this.p.aggregationMaxMs) / 1000);
  }

  /** Bytes this stripe may have in flight now. */
  get cap(): number {
    const { p } = this;
    const bw = this.bw;
    const rtt = this.minRttMs;
    if (bw <= 0 || rtt <= 0) return p.initialCap;
    const bdp = (bw * rtt) / 1000;
    switch (this.phase) {
      case Phase.ProbeRtt:
        return Math.max(p.minCap, p.probeRttGain * bdp);
      case Phase.Startup:
        return Math.max(p.initialCap, p.startupGain * bdp + (bw * p.headroomMs) / 1000);
      case Phase.Cruise: {
        if (this.penaltyLeft > 0) return Math.max(p.minCap, bdp / 2);
        const gain = this.cycle === 0 ? p.probeGain : 1;
        return Math.max(p.minCap, gain * bdp + Math.max((bw * p.headroomMs) / 1000, this.aggregation));
      }
      default: {
        const unreachable: never = this.phase;
        throw new Error(`unknown phase ${String(unreachable)}`);
      }
    }
  }

  /** The session had more to send than the cap allowed: the stripe is using its cap. */
  full(): void {
    this.roundFull = true;
  }

  /** The stripe held up in-order delivery (head-of-line rescue): halve its cap for a few rounds. */
  penalize(now: number): void {
    if (this.phase === Phase.Startup) this.enterCruise(now);
    this.penaltyLeft = this.p.penaltyRounds;
  }

  /** A confirmation on this stripe produced `s` at `now` (ms). */
  onSample(now: number, s: DeliverySample): void {
    const { p } = this;
    this.sampleInterval(now, s);
    this.sampleAggregation(now, s);
    if (this.minRttMs === 0 || s.rtt <= this.minRttMs) {
      this.minRttMs = s.rtt;
      this.minRttStamp = Math.max(this.minRttStamp, now);
    }
    const round = Math.max(this.minRttMs, 1);
    if (this.phase === Phase.Startup && s.rate > 0 && (!s.appLimited || s.rate >= this.startupBw.value)) {
      this.startupBw.update(s.rate, now, Math.max(p.startupWindowMs, p.startupWindowRounds * round));
    }
    if (this.phase === Phase.ProbeRtt) {
      this.probeMin = Math.min(this.probeMin, s.rtt);
      if (this.drainedAt < 0 && s.inflight <= this.cap) this.drainedAt = now;
      // Done one round after the queue drained (what was sent then has come back), or after 8 rounds.
      const drainedLongEnough = this.drainedAt >= 0 && now - this.drainedAt >= round;
      if (drainedLongEnough || now - this.probeStart >= 8 * round) this.endProbeRtt(now);
      return;
    }
    if (now - this.roundStart >= round) this.endRound(now);
  }

  /** Delivery over intervals of several round trips; feeds the cruise estimate. */
  private sampleInterval(now: number, s: DeliverySample): void {
    const { p } = this;
    if (this.ivStart < 0) {
      this.startInterval(now, s);
      return;
    }
    if (s.appLimited) this.ivApp = true;
    const dt = now - this.ivStart;
    if (dt < Math.max(p.rateIntervalMinMs, p.rateRounds * Math.max(this.minRttMs, 1))) return;
    const rate = ((s.delivered - this.ivDelivered) * 1000) / dt;
    const app = this.ivApp;
    this.startInterval(now, s);
    if (this.phase === Phase.Startup && !app) this.startupInterval = rate;
    if (this.phase !== Phase.Cruise || now < this.ignoreUntil) return;
    if (!app) this.isValidated = true;
    if (!app || rate > this.cruiseBw.value) this.cruiseBw.update(rate, now, p.bwWindowMs);
  }

  /**
   * Bytes confirmed beyond bw × time over the current ACK epoch, as Linux's bbr_update_ack_aggregation:
   * the epoch restarts whenever confirmations have not got ahead of bw (so a steady stripe's extra stays
   * near one confirmation's worth) or it outlasts the filter's window. Clamped to the cap it was measured
   * under: the allowance can at most double the cap per window, growing while the bursts do.
   */
  private sampleAggregation(now: number, s: DeliverySample): void {
    const acked = s.delivered - this.lastDelivered;
    this.lastDelivered = s.delivered;
    const bw = this.bw;
    if (bw <= 0 || acked <= 0) return;
    const window = Math.max(this.p.bwWindowMs, this.p.aggregationRounds * Math.max(this.minRttMs, 1));
    let expected = (bw * (now - this.epochStart)) / 1000;
    if (this.epochStart < 0 || this.epochAcked <= expected || now - this.epochStart > window) {
      this.epochStart = now;
      this.epochAcked = 0;
      expected = 0;
    }
    this.epochAcked += acked;
    this.extraAcked.update(Math.min(this.epochAcked - expected, this.cap), now, window);
  }

  private startInterval(now: number, s: DeliverySample): void {
    this.ivStart = now;
    this.ivDelivered = s.delivered;
    this.ivApp = s.appLimited;
  }

  private endRound(now: number): void {
    const { p } = this;
    this.roundStart = now;
    const full = this.roundFull;
    this.roundFull = false;
    const idle = this.idleRounds;
    this.idleRounds = full ? 0 : idle + 1;
    if (this.penaltyLeft > 0) this.penaltyLeft--;
    if (this.phase === Phase.Startup) {
      if (full) this.startupFull = true;
      const bw = this.startupBw.value;
      if (bw >= this.lastRoundBw * p.startupGrowth) {
        this.lastRoundBw = bw;
        this.flatRounds = 0;
      } else if (++this.flatRounds >= p.startupFlatRounds && bw > 0) {
        // The rate stopped growing: found, or the app offers no more. A stripe that never used its cap
        // has not shown its rate (the scheduler compares it by the others').
        this.enterCruise(now);
      }
      return;
    }
    if (full && idle >= p.restartIdleRounds && !this.isValidated) {
      // Busy again after a long app-limited stretch, and the estimate never came from a stripe using its
      // cap: it may be far below the path; ramp up as at the start rather than by one probe per cycle.
      // (A validated estimate stays: app-limited intervals cannot lower it. Restarting those too kept
      // stripes that alternate between idle and busy at startup's twice-the-BDP cap half the time.)
      this.phase = Phase.Startup;
      this.startupFull = true;
      this.flatRounds = 0;
      this.lastRoundBw = this.cruiseBw.value;
      this.startupBw.reset(this.cruiseBw.value, now);
      return;
    }
    this.cycle = (this.cycle + 1) % p.cycleRounds;
    if (now >= this.firstProbeAt || now - this.minRttStamp > p.probeRttEveryMs) {
      this.firstProbeAt = Infinity;
      this.phase = Phase.ProbeRtt;
      this.probeStart = now;
      this.drainedAt = -1;
      this.probeMin = Infinity;
    }
  }

  /**
   * Leaves startup. The cruise estimate starts from startup's last full rate interval where there was
   * one (per-frame samples read high: startup's max over them is an upper bound), but not below half
   * of that max.
   */
  private enterCruise(now: number): void {
    this.phase = Phase.Cruise;
    if (this.startupFull) this.isValidated = true;
    const top = this.startupBw.value;
    const seed = this.startupInterval > 0 ? Math.min(top, Math.max(this.startupInterval, top / 2)) : top;
    this.cruiseBw.reset(seed, now);
    this.startupInterval = 0;
    this.cycle = 1;
  }

  private endProbeRtt(now: number): void {
    const round = Math.max(this.minRttMs, 1);
    // The least RTT of a drained path: lower or higher than the old minimum, it is the path's now. Only
    // lower when the probe could not go below the BDP (a very slow stripe at the smallest cap): its
    // samples still carried a queue.
    const drained = this.p.minCap < (this.bw * this.minRttMs) / 1000;
    if (this.probeMin < Infinity) this.minRttMs = drained ? this.probeMin : Math.min(this.minRttMs, this.probeMin);
    this.minRttStamp = now;
    this.phase = Phase.Cruise;
    this.roundStart = now;
    this.ivStart = -1;
    // The queue emptied and the shaper's bucket refilled: the next intervals read high for a while.
    this.ignoreUntil = now + Math.max(this.p.rateIntervalMinMs, this.p.rateRounds * round) + 2 * round;
  }
}

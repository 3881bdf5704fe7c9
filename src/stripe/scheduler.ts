/**
 * Scheduler: decides which stripe carries the next frame. Pure; the session passes a view of each
 * stripe and sends on the index returned (or waits when it is -1).
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

/** What the scheduler needs to know of one stripe. */
export interface StripeView {
  /** Up, handshake done, not dying. Unusable stripes are always skipped. */
  usable: boolean;
  /** The socket holds unwritten bytes: a write now would only queue. */
  congested: boolean;
  /** Bytes sent on this stripe and not yet acknowledged. */
  inflight: number;
  /** Measured delivery rate in bytes/s (0 = not measured yet). */
  rate: number;
  /** Minimum round-trip time seen, in ms (0 = not measured yet): free of the stripe's own queueing. */
  rtt: number;
}

/** Bytes any stripe may always have in flight, measured or not: enough to start and to probe. */
export const MIN_INFLIGHT = 64 * 1024;
/** Added to the RTT when sizing a stripe's in-flight cap (ms): absorbs ack delay and jitter. */
export const RTT_MARGIN_MS = 30;

/** Picks stripes; holds only the position for the sticky and round-robin modes. */
export class Scheduler {
  private last = -1;

  constructor(readonly mode: SchedulerMode) {}

  /** Largest in-flight amount the rate mode allows on a stripe. */
  static inflightCap(s: StripeView): number {
    if (s.rate <= 0) return MIN_INFLIGHT * 4;
    const cap = (s.rate * ((s.rtt || 0) + RTT_MARGIN_MS)) / 1000;
    return Math.max(MIN_INFLIGHT, cap * 2);
  }

  /** Index of the stripe to send `frameBytes` on, or -1 to wait for a drain or an ack. Holes are dead stripes. */
  pick(stripes: readonly (StripeView | undefined)[], frameBytes: number): number {
    const n = stripes.length;
    if (n === 0) return -1;
    switch (this.mode) {
      case "until-congested": {
        const start = this.last >= 0 && this.last < n ? this.last : 0;
        for (let k = 0; k < n; k++) {
          const i = (start + k) % n;
          const s = stripes[i];
          if (s?.usable && !s.congested) return (this.last = i);
        }
        return -1;
      }
      case "round-robin": {
        for (let k = 1; k <= n; k++) {
          const i = (this.last + k) % n;
          const s = stripes[i];
          if (!s?.usable) continue; // dead or joining stripes lose their turn
          if (s.congested) return -1; // strict: wait for the stripe whose turn it is
          return (this.last = i);
        }
        return -1;
      }
      case "rate": {
        let best = -1;
        let bestTime = Infinity;
        for (let i = 0; i < n; i++) {
          const s = stripes[i];
          if (!s?.usable || s.congested) continue;
          // Below its cap a stripe may take more (the session sizes the batch to the room left); testing
          // inflight + frame against the cap starved slow stripes whose cap is near one frame.
          if (s.inflight >= Scheduler.inflightCap(s)) continue;
          // Unmeasured stripes count as fast so they get measured.
          const time = s.rate > 0 ? (s.inflight + frameBytes) / s.rate : (s.inflight + frameBytes) / 1e12;
          if (time < bestTime) {
            bestTime = time;
            best = i;
          }
        }
        return best;
      }
      default: {
        const unreachable: never = this.mode;
        throw new Error(`unknown scheduler mode ${unreachable}`);
      }
    }
  }
}

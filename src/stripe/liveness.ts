/**
 * What the session's periodic tick decides, as pure functions of state and `now` (ms): whether a stripe
 * needs a keepalive PING or is dead (protocol §7.3), and which stripe, if any, holds up in-order
 * delivery and should have its frames re-sent elsewhere (head-of-line rescue, §7.2).
 */

/** Keepalive state of one stripe. */
export enum Ping {
  /** Nothing outstanding. */
  Idle,
  /** A PING is owed: the next batch written to the stripe carries it. */
  Owed,
  /** A PING went out; any bytes received on the stripe clear it. */
  Outstanding,
}

/** What the tick should do about one stripe. */
export enum Health {
  Fine,
  /** Silent for keepaliveMs with no PING outstanding: owe one. */
  PingDue,
  /** Silent for deadMs: drop it (E_STRIPE_SILENT). */
  Dead,
}

/** A stripe's health after `silentMs` without receiving anything. */
export function stripeHealth(silentMs: number, ping: Ping, keepaliveMs: number, deadMs: number): Health {
  if (silentMs >= deadMs) return Health.Dead;
  if (silentMs >= keepaliveMs && ping === Ping.Idle) return Health.PingDue;
  return Health.Fine;
}

/** Least time without ack progress before head-of-line frames are re-sent on other stripes (ms). */
export const HOL_MIN_MS = 400;

/** What the head-of-line check needs of a stripe. */
export interface HolView {
  readonly usable: boolean;
  /** Smoothed RTT (ms), 0 until measured. */
  readonly srtt: number;
  /** True when an unconfirmed frame on the stripe carries this stream byte. */
  holds(offset: number): boolean;
}

/**
 * Watches the cumulative ack. When it has not moved for max(HOL_MIN_MS, 4 × the smallest smoothed RTT)
 * while data is outstanding, and the first unacknowledged byte sits in a frame that some stripe has not
 * confirmed, that stripe is holding up delivery (MPTCP's opportunistic retransmission). Needs at least
 * two usable stripes: the frames must have somewhere else to go.
 */
export class HeadOfLineWatch {
  private lastProgress: number;

  constructor(now: number) {
    this.lastProgress = now;
  }

  /** The ack moved (or a rescue just happened): the wait starts again. */
  progressed(now: number): void {
    this.lastProgress = now;
  }

  /**
   * Index of the stripe holding up delivery, or -1. `acked` is the cumulative ack, `framedEnd` the first
   * byte never framed. Nothing outstanding counts as progress.
   */
  check(now: number, acked: number, framedEnd: number, stripes: readonly (HolView | undefined)[]): number {
    if (acked >= framedEnd) {
      this.lastProgress = now;
      return -1;
    }
    // Relative to the fastest stripe: a stalling stripe's own (inflated) RTT must not delay its rescue.
    let minRtt = Infinity;
    let usable = 0;
    for (const s of stripes) {
      if (!s?.usable) continue;
      usable++;
      if (s.srtt > 0 && s.srtt < minRtt) minRtt = s.srtt;
    }
    if (now - this.lastProgress < Math.max(HOL_MIN_MS, 4 * (minRtt === Infinity ? 0 : minRtt))) return -1;
    if (usable < 2) return -1;
    for (let i = 0; i < stripes.length; i++) {
      const s = stripes[i];
      if (s?.usable && s.holds(acked)) return i;
    }
    return -1;
  }
}

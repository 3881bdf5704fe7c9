/**
 * Session metrics: the counters a session keeps as it runs, and the snapshot it gives logs, statistics
 * and tests (StripedPipe.metrics()).
 */

import type { ErrorCode } from "../errors.ts";
import type { Receiver } from "./receiver.ts";
import type { Sender } from "./sender.ts";
import type { Stripe } from "./stripe.ts";

/** One stripe in a metrics snapshot. */
export interface StripeMetrics {
  index: number;
  /** DATA bytes sent on it and not yet confirmed received. */
  inflight: number;
  /** Delivery rate estimate, bytes/s. */
  rate: number;
  /** Smoothed RTT, ms. */
  rtt: number;
  /** Minimum RTT, ms: the one the scheduler sizes the stripe by (0 = not measured yet). */
  minRtt: number;
  /** The queue the stripe holds: smoothed RTT above the minimum, ms. */
  queue: number;
  /** In-flight cap, bytes (0 = the scheduler mode has none). */
  cap: number;
  /** Of the cap, the allowance for confirmations that come in bursts (host stalls), bytes. */
  aggregation: number;
  /** DATA payload per frame the scheduler cuts for it, bytes (0 = the session's frame size). */
  frame: number;
  /** Most bytes it ever had in flight beyond cap + one frame right after a send: ≤ 0 by design (-Infinity: none under a cap). */
  capExcess: number;
  /** Bytes written to it / received from it since its handshake. */
  sent: number;
  received: number;
  /** Times it held up delivery and had its frames re-sent elsewhere. */
  stalls: number;
  /** Bytes it carried that were queued to be sent again on the others at those stalls. */
  resent: number;
}

/** Counters and peaks a session exposes for logs, statistics and tests. */
export interface SessionMetrics {
  stripes: number;
  usableStripes: number;
  stripeDeaths: number;
  /** Stripe deaths by the error code that ended each one (E_STRIPE_SILENT, ECONNRESET...). */
  stripeDeathsByReason: Partial<Record<ErrorCode, number>>;
  resentBytes: number;
  /** Bytes of ACK frames sent: the cost of lossless striping on the wire. */
  ackBytes: number;
  sendBufferBytes: number;
  peakSendBufferBytes: number;
  reorderBytes: number;
  peakReorderBytes: number;
  perStripe: StripeMetrics[];
}

/** What a session counts itself (the rest of a snapshot is read from its parts). */
export class SessionCounters {
  stripeDeaths = 0;
  readonly deathsByReason: Partial<Record<ErrorCode, number>> = {};
  ackBytes = 0;
  peakSendBuffer = 0;

  /** A stripe died with `reason`. */
  stripeDied(reason: ErrorCode): void {
    this.stripeDeaths++;
    this.deathsByReason[reason] = (this.deathsByReason[reason] ?? 0) + 1;
  }

  /** The send store now holds `bytes`. */
  held(bytes: number): void {
    if (bytes > this.peakSendBuffer) this.peakSendBuffer = bytes;
  }

  /** A snapshot of the session: these counters plus its stripes, sender and receiver. */
  snapshot(stripes: readonly (Stripe | undefined)[], sender: Sender, receiver: Receiver): SessionMetrics {
    const perStripe: StripeMetrics[] = [];
    let usable = 0;
    for (const s of stripes) {
      if (!s) continue;
      if (s.usable) usable++;
      const minRtt = s.rtt || s.minRtt;
      perStripe.push({
        index: s.index,
        inflight: s.inflight,
        rate: s.rate,
        rtt: s.srtt,
        minRtt,
        queue: Math.max(0, s.srtt - minRtt),
        cap: s.cap,
        aggregation: s.aggregation,
        frame: s.frame,
        capExcess: s.capExcess,
        sent: s.sent,
        received: s.received,
        stalls: s.stalls,
        resent: s.resent,
      });
    }
    return {
      stripes: perStripe.length,
      usableStripes: usable,
      stripeDeaths: this.stripeDeaths,
      stripeDeathsByReason: { ...this.deathsByReason },
      resentBytes: sender.resentBytes,
      ackBytes: this.ackBytes,
      sendBufferBytes: sender.buf.bytes,
      peakSendBufferBytes: this.peakSendBuffer,
      reorderBytes: receiver.reorder.bufferedBytes,
      peakReorderBytes: receiver.reorder.peakBufferedBytes,
      perStripe,
    };
  }
}

/**
 * StripeLedger: what one stripe has carried and what the peer has confirmed receiving on it. Pure; the
 * clock comes in as `now` (ms).
 *
 * Every DATA frame sent on the stripe is recorded with the stripe position just past its last byte.
 * The peer's ACK entries report how many bytes arrived on the stripe (mod 2^32); TCP orders the stripe,
 * so every frame ending at or before that count has arrived (protocol §4.3, §5). Confirmations give the
 * stripe's in-flight bytes, its RTT and a delivery-rate sample (the scheduler's inputs, see
 * src/stripe/control.ts), and whatever is still unconfirmed when the stripe dies is what must be sent
 * again.
 *
 * Delivery rate, as BBR's (Linux tcp_rate.c): each frame remembers how much the stripe had delivered
 * when it was sent, when, and when the newest frame delivered by then had been sent. When the frame is
 * confirmed, the rate sample is the bytes delivered since over the longer of the ACK interval and the
 * send interval: a host that reads several ACKs at once compresses the former, and nothing is delivered
 * faster than it was sent. Frames sent while the session had nothing more to give the stripe are marked
 * app-limited (markAppLimited): their samples say how much the app offered, not what the path carries.
 */

import type { ResendQueue } from "./resend.ts";

/** What the newest confirmation taught about a stripe (the controller's input). */
export interface DeliverySample {
  /** Round trip of the newest frame confirmed, ms. */
  rtt: number;
  /** Delivery rate over that frame's flight, bytes/s (0 when the interval was empty). */
  rate: number;
  /** The frame was sent in an app-limited stretch: the rate may understate the path. */
  appLimited: boolean;
  /** Payload bytes confirmed on this stripe so far (including this confirmation). */
  delivered: number;
  /** DATA bytes still in flight after this confirmation. */
  inflight: number;
}

/** One stripe's frames in flight, RTT and delivery-rate samples. */
export class StripeLedger {
  /** DATA bytes sent on this stripe and not yet confirmed received there. */
  inflight = 0;
  /** Smallest RTT sample (ms); 0 until measured. Free of the stripe's own queueing, as far as it goes. */
  minRtt = 0;
  /** Smoothed RTT (ms): minRtt plus whatever queue the stripe has built (srtt − minRtt). */
  srtt = 0;
  /** Bytes written to this stripe connection (after the handshake): the next frame's start position. */
  sent = 0;
  /** Payload bytes confirmed on this stripe so far. */
  delivered = 0;
  /** Confirmations that produced a sample so far: a consumer compares it with the count it last saw. */
  samples = 0;
  /** The newest sample (valid once `samples` > 0; the object is reused). */
  readonly sample: DeliverySample = { rtt: 0, rate: 0, appLimited: false, delivered: 0, inflight: 0 };

  // Frames not yet confirmed, oldest first from fHead: stream offset, length, stripe position just past
  // the frame, time sent; and for the rate: delivered and its time at sending, the send time of the newest
  // frame delivered by then, whether app-limited. Parallel arrays: the per-frame path allocates nothing
  // but array growth.
  private fOff: number[] = [];
  private fLen: number[] = [];
  private fEnd: number[] = [];
  private fTime: number[] = [];
  private fDel: number[] = [];
  private fDelTime: number[] = [];
  private fFirst: number[] = [];
  private fApp: boolean[] = [];
  private fHead = 0;
  /** When `delivered` last moved (or the stripe went from idle to busy). */
  private deliveredTime: number;
  /** Send time of the newest frame confirmed so far. */
  private firstSentTime: number;
  /** Frames sent while `delivered` has not passed this are app-limited (0 = not in such a stretch). */
  private appLimitedUntil = 0;

  constructor(now: number) {
    this.deliveredTime = now;
    this.firstSentTime = now;
  }

  /** Frames recorded and not yet confirmed. */
  get unconfirmedFrames(): number {
    return this.fOff.length - this.fHead;
  }

  /** Notes a DATA frame carrying stream bytes [offset, offset + len) that ends at stripe position `endPos`. */
  record(offset: number, len: number, endPos: number, now: number): void {
    // Sending into an idle stripe restarts the delivery clock: time spent idle is not slowness.
    if (this.inflight === 0) this.deliveredTime = this.firstSentTime = now;
    this.fOff.push(offset);
    this.fLen.push(len);
    this.fEnd.push(endPos);
    this.fTime.push(now);
    this.fDel.push(this.delivered);
    this.fDelTime.push(this.deliveredTime);
    this.fFirst.push(this.firstSentTime);
    this.fApp.push(this.appLimitedUntil > 0);
    this.inflight += len;
  }

  /**
   * The session has nothing more for this stripe while it has room: what it delivers until everything
   * in flight now has arrived tells how much the app offered, not the path's rate (Linux's app_limited).
   */
  markAppLimited(): void {
    this.appLimitedUntil = Math.max(1, this.delivered + this.inflight);
  }

  /**
   * Applies the peer's count of bytes received on this stripe, mod 2^32 (an ACK entry). Frames ending
   * at or before it are confirmed: they update the RTT and make a new `sample`. Returns the DATA bytes
   * newly confirmed.
   */
  confirm(received32: number, now: number): number {
    let bytes = 0;
    let last = -1;
    // Serial arithmetic mod 2^32: the frame has arrived when (count − end) is ≥ 0 as a signed 32-bit number.
    while (this.fHead < this.fOff.length && ((received32 - this.fEnd[this.fHead]!) | 0) >= 0) {
      bytes += this.fLen[this.fHead]!;
      last = this.fHead++;
    }
    if (last < 0) return 0;
    this.inflight -= bytes;
    this.delivered += bytes;
    const sentAt = this.fTime[last]!;
    const rtt = Math.max(now - sentAt, 0.05);
    this.srtt = this.srtt === 0 ? rtt : this.srtt * 0.875 + rtt * 0.125;
    this.minRtt = this.minRtt === 0 ? rtt : Math.min(this.minRtt, rtt);
    const interval = Math.max(now - this.fDelTime[last]!, sentAt - this.fFirst[last]!);
    const s = this.sample;
    s.rtt = rtt;
    s.rate = interval > 0 ? ((this.delivered - this.fDel[last]!) * 1000) / interval : 0;
    s.appLimited = this.fApp[last]!;
    s.delivered = this.delivered;
    s.inflight = this.inflight;
    this.samples++;
    this.deliveredTime = now;
    this.firstSentTime = sentAt;
    if (this.appLimitedUntil > 0 && this.delivered > this.appLimitedUntil) this.appLimitedUntil = 0;
    if (this.fHead > 256 && this.fHead * 2 > this.fOff.length) this.compact();
    return bytes;
  }

  private compact(): void {
    const h = this.fHead;
    this.fOff = this.fOff.slice(h);
    this.fLen = this.fLen.slice(h);
    this.fEnd = this.fEnd.slice(h);
    this.fTime = this.fTime.slice(h);
    this.fDel = this.fDel.slice(h);
    this.fDelTime = this.fDelTime.slice(h);
    this.fFirst = this.fFirst.slice(h);
    this.fApp = this.fApp.slice(h);
    this.fHead = 0;
  }

  /** True when an unconfirmed frame on this stripe carries stream byte `offset`. */
  holds(offset: number): boolean {
    for (let k = this.fHead; k < this.fOff.length; k++) {
      if (this.fOff[k]! <= offset && offset < this.fOff[k]! + this.fLen[k]!) return true;
    }
    return false;
  }

  /**
   * Adds every unconfirmed frame that is not wholly below `acked` to `queue`. The frames stay recorded:
   * the stripe may still deliver them (head-of-line rescue), and a dead stripe's ledger is dropped.
   * Returns the bytes queued (above `acked`), for statistics.
   */
  requeue(acked: number, queue: ResendQueue): number {
    let bytes = 0;
    for (let k = this.fHead; k < this.fOff.length; k++) {
      const end = this.fOff[k]! + this.fLen[k]!;
      if (end > acked) {
        queue.add(this.fOff[k]!, end);
        bytes += end - Math.max(this.fOff[k]!, acked);
      }
    }
    return bytes;
  }
}

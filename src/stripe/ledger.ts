/**
 * StripeLedger: what one stripe has carried and what the peer has confirmed receiving on it. Pure; the
 * clock comes in as `now` (ms).
 *
 * Every DATA frame sent on the stripe is recorded with the stripe position just past its last byte.
 * The peer's ACK entries report how many bytes arrived on the stripe (mod 2^32); TCP orders the stripe,
 * so every frame ending at or before that count has arrived (protocol §4.3, §5). Confirmations give the
 * stripe's in-flight bytes, its RTT and its delivery rate (the scheduler's inputs), and whatever is
 * still unconfirmed when the stripe dies is what must be sent again.
 */

import type { ResendQueue } from "./resend.ts";

/** Shortest interval over which a delivery-rate sample is taken (ms); also at least 2 × min RTT. */
export const MIN_RATE_INTERVAL_MS = 50;

/** One stripe's frames in flight, RTT and rate. */
export class StripeLedger {
  /** DATA bytes sent on this stripe and not yet confirmed received there. */
  inflight = 0;
  /** Delivery rate estimate (bytes/s); 0 until measured. */
  rate = 0;
  /** Smallest RTT sample (ms); 0 until measured. Free of the stripe's own queueing, as far as it goes. */
  minRtt = 0;
  /** Smoothed RTT (ms): minRtt plus whatever queue the stripe has built (srtt − minRtt). */
  srtt = 0;
  /**
   * The RTT the scheduler sizes this stripe by (ms); set by the scheduler from minRtt (see
   * RateScheduler.measured), 0 until then.
   */
  rtt = 0;
  /** Bytes written to this stripe connection (after the handshake): the next frame's start position. */
  sent = 0;

  // Frames not yet confirmed, oldest first from fHead: stream offset, length, stripe position just past
  // the frame, time sent. Parallel arrays: the per-frame path allocates nothing but array growth.
  private fOff: number[] = [];
  private fLen: number[] = [];
  private fEnd: number[] = [];
  private fTime: number[] = [];
  private fHead = 0;
  // Delivery-rate sampling.
  private sampleStart: number;
  private sampleBytes = 0;

  constructor(now: number) {
    this.sampleStart = now;
  }

  /** Frames recorded and not yet confirmed. */
  get unconfirmedFrames(): number {
    return this.fOff.length - this.fHead;
  }

  /** Notes a DATA frame carrying stream bytes [offset, offset + len) that ends at stripe position `endPos`. */
  record(offset: number, len: number, endPos: number, now: number): void {
    this.fOff.push(offset);
    this.fLen.push(len);
    this.fEnd.push(endPos);
    this.fTime.push(now);
    this.inflight += len;
  }

  /**
   * Applies the peer's count of bytes received on this stripe, mod 2^32 (an ACK entry). Frames ending
   * at or before it are confirmed: they update the RTT and rate. Returns the DATA bytes newly confirmed.
   */
  confirm(received32: number, now: number): number {
    let bytes = 0;
    let lastTime = -1;
    // Serial arithmetic mod 2^32: the frame has arrived when (count − end) is ≥ 0 as a signed 32-bit number.
    while (this.fHead < this.fOff.length && ((received32 - this.fEnd[this.fHead]!) | 0) >= 0) {
      bytes += this.fLen[this.fHead]!;
      lastTime = this.fTime[this.fHead]!;
      this.fHead++;
    }
    if (this.fHead > 256 && this.fHead * 2 > this.fOff.length) {
      this.fOff = this.fOff.slice(this.fHead);
      this.fLen = this.fLen.slice(this.fHead);
      this.fEnd = this.fEnd.slice(this.fHead);
      this.fTime = this.fTime.slice(this.fHead);
      this.fHead = 0;
    }
    if (lastTime >= 0) {
      const sample = Math.max(now - lastTime, 0.05);
      this.srtt = this.srtt === 0 ? sample : this.srtt * 0.875 + sample * 0.125;
      this.minRtt = this.minRtt === 0 ? sample : Math.min(this.minRtt, sample);
    }
    this.inflight -= bytes;
    this.sampleBytes += bytes;
    const elapsed = now - this.sampleStart;
    if (elapsed >= Math.max(MIN_RATE_INTERVAL_MS, this.minRtt * 2)) {
      const sample = (this.sampleBytes * 1000) / elapsed;
      // Only let the estimate fall while the stripe had work queued: an idle stripe is not a slow one.
      if (sample > this.rate || this.inflight > 0) this.rate = this.rate === 0 ? sample : this.rate * 0.6 + sample * 0.4;
      if (sample > this.rate) this.rate = sample;
      this.sampleStart = now;
      this.sampleBytes = 0;
    }
    return bytes;
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

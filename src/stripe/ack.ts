/**
 * AckPolicy: when this end owes the peer an ACK and what the ACK carries (protocol §4.3). Pure; the
 * session arms the delay timer when told to and writes the ACK into whichever batch goes out next.
 *
 * An ACK is due when a stripe attaches or dies (the last ACK may have died with it), when min(1 MiB,
 * window/8) of DATA arrived or was delivered since the last one, when the peer's stream has been
 * delivered up to its FIN, from the periodic tick when delivered bytes have not been reported, and
 * ACK_DELAY_MS after any other DATA or FIN. Chunks of control frames only never make one due: two idle
 * sessions would otherwise trade ACKs forever.
 */

import { ACK_FLAG_FIN, FRAME_ACK, FRAME_HEADER_SIZE } from "../wire/constants.ts";
import { encodeAckEntries, type AckEntry } from "../wire/codec.ts";

/** Delay before an ACK for a little received data goes out (ms). */
export const ACK_DELAY_MS = 2;
/** An ACK goes out at once after this many bytes (or window/8 if smaller). */
export const ACK_EVERY_BYTES = 1024 * 1024;

/** A stripe as an ACK reports it: usable ones get an entry. */
export interface AckedStripe extends AckEntry {
  readonly usable: boolean;
}

/** Where the ACK frame is written (a FrameBatch). */
export interface ControlSink {
  appendControl(type: number, flags: number, value: number, payload?: Uint8Array): void;
}

/** The ACK state of one session. */
export class AckPolicy {
  /** An ACK should go into the next batch written to any stripe. */
  due = false;
  /** The value (delivered offset) of the last ACK written; -1 before the first, and after a stripe attaches. */
  lastValue = -1;
  /** Bytes that make an ACK due at once. */
  readonly every: number;
  private sinceAck = 0;

  constructor(window: number) {
    this.every = Math.min(ACK_EVERY_BYTES, window / 8);
  }

  /**
   * `bytes` of DATA (and FINs) arrived, or delivered bytes moved (bytes = 0); `delivered` is the
   * receiver's offset now. Returns true when that made the ACK due now; false means: arm the delay
   * timer (unless armed), even if an ACK is already due for another reason.
   */
  received(bytes: number, delivered: number): boolean {
    this.sinceAck += bytes;
    if (this.sinceAck < this.every && delivered - this.lastValue < this.every) return false;
    this.due = true;
    return true;
  }

  /** A stripe attached: tell the peer where we are at once (it may hold data to resend to us). */
  stripeAttached(): void {
    this.due = true;
    this.lastValue = -1;
  }

  /** The delay timer fired, a stripe died (its last ACK may have died with it), or the peer's stream ended. */
  markDue(): void {
    this.due = true;
  }

  /** The periodic tick: delivered bytes that no ACK has reported make one due (a safety net). True when they did. */
  tick(delivered: number): boolean {
    if (delivered === this.lastValue) return false;
    this.due = true;
    return true;
  }

  /**
   * Writes the ACK: value `delivered`, ACK_FLAG_FIN when `finDelivered`, one entry per usable stripe in
   * index order. Returns the frame's size in bytes.
   */
  write(sink: ControlSink, delivered: number, finDelivered: boolean, stripes: readonly (AckedStripe | undefined)[]): number {
    const entries: AckedStripe[] = [];
    for (const s of stripes) if (s?.usable) entries.push(s);
    const payload = encodeAckEntries(entries);
    sink.appendControl(FRAME_ACK, finDelivered ? ACK_FLAG_FIN : 0, delivered, payload);
    this.lastValue = delivered;
    this.sinceAck = 0;
    this.due = false;
    return FRAME_HEADER_SIZE + payload.byteLength;
  }

  /** True when the last ACK written reported `peerFin` and nothing newer is owed: our final ACK is out. */
  settled(peerFin: number): boolean {
    return this.lastValue === peerFin && !this.due;
  }
}

/**
 * Receiver: the peer's stream as it arrives from every stripe. Pure. DATA goes into the ReorderBuffer
 * (window check, duplicates dropped); the peer's FIN is checked against what arrived (protocol §4.2,
 * §4.5); bytes leave strictly in order, and the end is reported once everything before the FIN has left.
 */

import { ProtocolError } from "../errors.ts";
import type { SessionEnd } from "./ending.ts";
import { RecvEnd } from "./ending.ts";
import { ReorderBuffer } from "./reorder.ts";

/** The receiving half of a session. */
export class Receiver {
  readonly reorder: ReorderBuffer;
  /** DATA bytes and FINs received since takeAckable(): they make an ACK due (control-only chunks do not). */
  private ackable = 0;

  constructor(
    window: number,
    private readonly end: SessionEnd,
  ) {
    this.reorder = new ReorderBuffer(window);
  }

  /** Stream bytes handed out so far (the ACK value). */
  get delivered(): number {
    return this.reorder.delivered;
  }

  /** A piece of DATA at stream `offset`. Throws E_DATA_AFTER_FIN past the peer's FIN, E_WINDOW past the window. */
  data(offset: number, bytes: Uint8Array): void {
    this.ackable += bytes.byteLength;
    const fin = this.end.peerFin;
    if (fin >= 0 && offset + bytes.byteLength > fin) {
      throw new ProtocolError("E_DATA_AFTER_FIN", `data at ${offset} beyond the peer's FIN at ${fin}`);
    }
    this.reorder.insert(offset, bytes);
  }

  /** The peer's FIN with final length `value`. Throws E_FIN_MISMATCH if it moved or is below received data. */
  fin(value: number): void {
    const earlier = this.end.peerFin;
    if (earlier >= 0 && earlier !== value) throw new ProtocolError("E_FIN_MISMATCH", `FIN at ${value} after FIN at ${earlier}`);
    if (value < this.reorder.contiguous) throw new ProtocolError("E_FIN_MISMATCH", `FIN at ${value} below received data`);
    this.end.finReceived(value);
    this.ackable++;
  }

  /** The next in-order piece, or undefined when the next byte has not arrived. */
  shift(): Uint8Array | undefined {
    return this.reorder.shift();
  }

  /** True when the peer's FIN has arrived, every byte before it has been handed out, and end() is still owed. */
  get endDue(): boolean {
    return this.end.recv === RecvEnd.FinReceived && this.reorder.delivered === this.end.peerFin;
  }

  /** Returns the DATA bytes and FINs counted since the last call, and starts counting again. */
  takeAckable(): number {
    const n = this.ackable;
    this.ackable = 0;
    return n;
  }

  /** Drops everything held (session teardown). */
  clear(): void {
    this.reorder.clear();
  }
}

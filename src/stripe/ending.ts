/**
 * SessionEnd: how far a session has got towards its clean end (protocol §9). Pure.
 *
 * The two directions end independently, so there is one state per direction: our stream's end (the FIN
 * we send, SendEnd) and the peer's (the FIN we receive, RecvEnd). A single enum over both would be their
 * product. The session is done when our FIN is acknowledged, the peer's stream is delivered up to its
 * FIN, and our final ACK saying so has been written.
 */

import { ProtocolError } from "../errors.ts";

/** Our stream's end. */
export enum SendEnd {
  /** The app may still send. */
  Open,
  /** shutdown() was called: the FIN goes out once every byte has been framed. Not sent yet. */
  FinQueued,
  /** The FIN went out on stripe `finStripe`; not acknowledged yet. */
  FinInFlight,
  /** The FIN's stripe died before the ACK came: it must go out again (same value). */
  FinLost,
  /** The peer has acknowledged our whole stream (ACK_FLAG_FIN, or inferred: see peerFinished). */
  FinAcked,
}

/** The peer's stream's end. */
export enum RecvEnd {
  /** No FIN from the peer yet. */
  Open,
  /** The peer's FIN arrived at `peerFin`; bytes before it are still being delivered. */
  FinReceived,
  /** Everything up to the peer's FIN has been handed over and end() has fired. */
  Delivered,
}

/** Both directions' end states and the rules that combine them. */
export class SessionEnd {
  send = SendEnd.Open;
  recv = RecvEnd.Open;
  /** Final length of the peer's stream once its FIN arrived; -1 before. */
  peerFin = -1;
  /** Index of the stripe carrying our FIN while it is in flight; -1 otherwise. */
  finStripe = -1;

  /** Our app shut down: a FIN is owed after the last byte. */
  shutdown(): void {
    if (this.send === SendEnd.Open) this.send = SendEnd.FinQueued;
  }

  /** A FIN must be (re)sent: queued and never sent, or lost with its stripe. */
  get finOwed(): boolean {
    switch (this.send) {
      case SendEnd.FinQueued:
      case SendEnd.FinLost:
        return true;
      case SendEnd.Open:
      case SendEnd.FinInFlight:
      case SendEnd.FinAcked:
        return false;
      default:
        return unreachable(this.send);
    }
  }

  /** Our FIN has gone out at least once (its stripe may have died since). */
  get finSent(): boolean {
    switch (this.send) {
      case SendEnd.FinInFlight:
      case SendEnd.FinLost:
      case SendEnd.FinAcked:
        return true;
      case SendEnd.Open:
      case SendEnd.FinQueued:
        return false;
      default:
        return unreachable(this.send);
    }
  }

  /** Our FIN was written to stripe `index`. */
  finPlaced(index: number): void {
    this.send = SendEnd.FinInFlight;
    this.finStripe = index;
  }

  /** Stripe `index` died: if it carried our unacknowledged FIN, the FIN is owed again. */
  stripeLost(index: number): void {
    if (this.send === SendEnd.FinInFlight && this.finStripe === index) {
      this.send = SendEnd.FinLost;
      this.finStripe = -1;
    }
  }

  /** An ACK with ACK_FLAG_FIN arrived. Before we sent a FIN, that is E_BAD_ACK. */
  finAcked(): void {
    if (!this.finSent) throw new ProtocolError("E_BAD_ACK", "FIN acknowledged before it was sent");
    this.send = SendEnd.FinAcked;
    this.finStripe = -1;
  }

  /** The peer's FIN arrived with final length `value` (the receiver has checked it: E_FIN_MISMATCH). */
  finReceived(value: number): void {
    this.peerFin = value;
    if (this.recv === RecvEnd.Open) this.recv = RecvEnd.FinReceived;
  }

  /** Everything up to the peer's FIN was handed over (end() fired). */
  endDelivered(): void {
    this.recv = RecvEnd.Delivered;
  }

  /**
   * Both data-level FINs are out: the peer's has arrived and ours has been sent. From here on a stripe's
   * TCP FIN is expected (the peer shuts its stripes once it is done) and is not a stripe death.
   */
  get finsCrossed(): boolean {
    return this.recv !== RecvEnd.Open && this.finSent;
  }

  /**
   * Every usable stripe has been ended cleanly by the peer after the FINs crossed. The peer shuts its
   * stripes only once it is done, and it is done only after it received all our data and our FIN; so
   * once we have delivered its FIN, our FIN was received even if the ACK saying so died with a stripe.
   * Returns true when that settles our FIN as acknowledged.
   */
  peerFinished(): boolean {
    if (this.recv !== RecvEnd.Delivered) return false;
    switch (this.send) {
      case SendEnd.FinInFlight:
      case SendEnd.FinLost:
        this.send = SendEnd.FinAcked;
        this.finStripe = -1;
        return true;
      case SendEnd.Open:
      case SendEnd.FinQueued:
      case SendEnd.FinAcked:
        return false;
      default:
        return unreachable(this.send);
    }
  }

  /** The session may finish cleanly: both streams are complete and `finalAckWritten` (see AckPolicy.settled). */
  done(finalAckWritten: boolean): boolean {
    return this.send === SendEnd.FinAcked && this.recv === RecvEnd.Delivered && finalAckWritten;
  }
}

function unreachable(state: never): never {
  throw new Error(`unknown end state ${String(state)}`);
}

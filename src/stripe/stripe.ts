/**
 * Stripe: one carrier of a session as the session holds it. Its ledger (frames in flight, RTT, rate)
 * plus the carrier pipe, the decoder of what arrives on it, and its liveness. State only: the session
 * (src/pipe/striped.ts) drives it, and the scheduler sees it as a StripeView.
 */

import type { Pipe } from "../pipe/pipe.ts";
import type { FrameDecoder } from "../wire/codec.ts";
import type { StripeGuard } from "./guard.ts";
import { StripeLedger } from "./ledger.ts";
import { Ping } from "./liveness.ts";
import type { StripeView } from "./scheduler.ts";
import type { StripePlan } from "./sender.ts";

/** One stripe of a session: created by StripedPipe.attach(), dropped (usable = false) when it dies. */
export class Stripe extends StripeLedger implements StripeView, StripePlan {
  /** Up and carrying traffic; false once dropped or the session ended. */
  usable = true;
  // Set by the scheduler from the ledger's samples (Scheduler.measured); see StripeView.
  rate = 0;
  rtt = 0;
  cap = 0;
  aggregation = 0;
  frame = 0;
  /**
   * Most bytes ever in flight beyond cap + one frame, right after a DATA frame was sent (-Infinity until
   * one was sent under a cap). A batch starts only below the cap and may overshoot it by less than a
   * frame, so this stays at or below 0: a self-check that statistics and tests read.
   */
  capExcess = -Infinity;
  // DATA the current pump planned for this stripe (rate mode), framed when its batch is written.
  readonly planOff: number[] = [];
  readonly planData: Uint8Array[] = [];
  planned = 0;
  planSpace = 0;
  /** The carrier holds unwritten bytes (send() returned false); cleared on drain. */
  congested = false;
  /** Bytes received on this stripe after its handshake (ACK entries report it mod 2^32). */
  received = 0;
  /** When anything last arrived on it (ms, the session's clock). */
  lastRecvAt: number;
  ping = Ping.Idle;
  /** Token of a PING to answer on this stripe, or -1. */
  pendingPong = -1;
  /** The peer ended this stripe (TCP FIN) after the FINs crossed. */
  peerEnded = false;
  /** Times this stripe held up in-order delivery and had its frames re-sent elsewhere. */
  stalls = 0;
  /** Bytes it held unconfirmed when they were queued to be sent again on the others (at its stalls). */
  resent = 0;
  /** A pooled buffer the carrier still holds (congested write); returned on drain. */
  lent: Uint8Array | undefined;
  /** Set by the session right after construction (its sink needs the stripe). */
  decoder!: FrameDecoder;
  /** What this stripe's peer may make us do with control frames (set by the session with the decoder). */
  guard!: StripeGuard;

  constructor(
    readonly index: number,
    readonly generation: number,
    readonly pipe: Pipe,
    now: number,
  ) {
    super(now);
    this.lastRecvAt = now;
  }

  /** Records the frame (StripeLedger.record) and checks it against the cap it was sent under. */
  override record(offset: number, len: number, endPos: number, now: number): void {
    super.record(offset, len, endPos, now);
    if (this.cap > 0) {
      const excess = this.inflight - this.cap - this.frame;
      if (excess > this.capExcess) this.capExcess = excess;
    }
  }
}

/**
 * SendGate: whether the app may hand the session more bytes (send()'s backpressure, protocol §6). Pure.
 * The session stops reading its local socket once its send store holds a window's worth, or when the
 * proxy's shared SendBudget does not admit it (src/stripe/budget.ts: a guaranteed minimum per session, a
 * shared pool beyond it, stalled sessions parked); acknowledgements and the budget's wake-ups reopen it.
 */

import type { BudgetShare, SendBudget } from "./budget.ts";

/** The send side's backpressure for one session. */
export class SendGate {
  /** send() returned false and drain() is owed. */
  blocked = false;
  private closed = false;
  /** This session's account in the budget, until close(). */
  private readonly share: BudgetShare | undefined;

  /**
   * `held()` reads the bytes the send store holds; `drain()` tells the app it may send again. The
   * session holds a share of the budget (for its minimum and the fair share) until close().
   */
  constructor(
    private readonly window: number,
    budget: SendBudget | undefined,
    private readonly held: () => number,
    private readonly drain: () => void,
  ) {
    this.share = budget?.join();
  }

  /** The app handed over `bytes` (they count against the budget until acknowledged). */
  took(bytes: number): void {
    this.share?.take(bytes);
  }

  /** After send(): true when the app may go on; false means it must wait for drain(). */
  admit(): boolean {
    const held = this.held();
    if (held < this.window && (this.share === undefined || this.share.admits())) return true;
    this.blocked = true;
    if (held < this.window) this.share!.wait(this.wake); // otherwise the next ack reopens
    return false;
  }

  /** The peer acknowledged `bytes`: they leave the budget, and the session made progress. */
  released(bytes: number): void {
    this.share?.give(bytes);
  }

  /**
   * Calls drain() once the store is under the window and, when `checkBudget`, the budget admits this
   * session; otherwise waits for the budget (or the next ack: a parked session is woken only by that).
   */
  reopen(checkBudget: boolean): void {
    if (this.closed || !this.blocked) return;
    const held = this.held();
    if (held >= this.window) return; // the next ack comes back here
    if (checkBudget && this.share !== undefined && !this.share.admits()) {
      this.share.wait(this.wake);
      return;
    }
    this.blocked = false;
    this.drain();
  }

  /** The session ended: whatever it held leaves the budget, and it stops waiting and counting there. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.share?.leave();
  }

  /** The shared budget woke us because it has room again. */
  private readonly wake = (): void => this.reopen(false);
}

/**
 * SendGate: whether the app may hand the session more bytes (send()'s backpressure, protocol §6). Pure.
 * The session stops reading its local socket once its send store holds a window's worth, or when the
 * proxy's shared BufferBudget does not admit it; acknowledgements and the budget's wake-ups reopen it.
 */

import type { BufferBudget } from "./budget.ts";

/** The send side's backpressure for one session. */
export class SendGate {
  /** send() returned false and drain() is owed. */
  blocked = false;
  private closed = false;

  /**
   * `held()` reads the bytes the send store holds; `drain()` tells the app it may send again. The
   * session counts as one of the budget's holders (for the fair share) until close().
   */
  constructor(
    private readonly window: number,
    private readonly budget: BufferBudget | undefined,
    private readonly held: () => number,
    private readonly drain: () => void,
  ) {
    if (budget) budget.holders++;
  }

  /** The app handed over `bytes` (they count against the budget until acknowledged). */
  took(bytes: number): void {
    this.budget?.take(bytes);
  }

  /** After send(): true when the app may go on; false means it must wait for drain(). */
  admit(): boolean {
    const held = this.held();
    if (held < this.window && (this.budget === undefined || this.budget.admits(held))) return true;
    this.blocked = true;
    if (held < this.window) this.budget!.wait(this.wake); // otherwise the next ack reopens
    return false;
  }

  /** The peer acknowledged `bytes`: they leave the budget. */
  released(bytes: number): void {
    this.budget?.give(bytes);
  }

  /**
   * Calls drain() once the store is under the window and, when `checkBudget`, the budget admits this
   * session; otherwise waits for the budget (or the next ack).
   */
  reopen(checkBudget: boolean): void {
    if (this.closed || !this.blocked) return;
    const held = this.held();
    if (held >= this.window) return; // the next ack comes back here
    if (checkBudget && this.budget !== undefined && !this.budget.admits(held)) {
      this.budget.wait(this.wake);
      return;
    }
    this.blocked = false;
    this.drain();
  }

  /** The session ended: whatever it held leaves the budget, and it stops waiting and counting there. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const budget = this.budget;
    if (budget === undefined) return;
    budget.give(this.held());
    budget.cancel(this.wake);
    budget.holders--;
  }

  /** The shared budget woke us because it has room again. */
  private readonly wake = (): void => this.reopen(false);
}

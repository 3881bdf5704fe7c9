/**
 * SessionFactory: what every session of one proxy shares. One buffer budget for all send stores, a
 * receive window per session sized by the load when it opens, and the garbage-collection governor
 * sized from the budget. Client and server proxies each own one.
 */

import { DEFAULT_MAX_BUFFER, StripedPipe, type SessionOptions } from "../pipe/striped.ts";
import { BufferBudget, sessionWindow } from "../stripe/budget.ts";
import { startMemoryGovernor } from "./governor.ts";

/** Read buffers the collector may leave lying around beyond the budget before the governor collects. */
const GARBAGE_MARGIN = 32 * 1024 * 1024;

/** Opens the sessions of one proxy against its shared budget; owns the governor for as long as the proxy runs. */
export class SessionFactory {
  /** The memory budget all sessions share (for statistics and tests). */
  readonly budget: BufferBudget;
  private readonly stopGovernor: () => void;

  constructor(
    private readonly opts: SessionOptions,
    maxBuffer = DEFAULT_MAX_BUFFER,
  ) {
    this.budget = new BufferBudget(maxBuffer);
    // Garbage from forwarded read buffers: collect once it exceeds the budget plus a margin.
    this.stopGovernor = startMemoryGovernor(this.budget.limit + GARBAGE_MARGIN);
  }

  /**
   * A new session when `live` sessions already exist: under load it gets a smaller receive window
   * (see sessionWindow). `peerWindow` is the far side's, when already known. `window`: one promised to
   * the peer earlier (a standby stripe's reply), used as it is.
   */
  open(live: number, peerWindow = this.opts.window, window = this.window(live)): StripedPipe {
    return new StripedPipe({ ...this.opts, window }, peerWindow, this.budget);
  }

  /** The receive window a session opened now, with `live` others, would get. */
  window(live: number): number {
    return sessionWindow(this.opts.window, this.budget, live);
  }

  /** Stops the governor (the proxy is shutting down). */
  stop(): void {
    this.stopGovernor();
  }
}

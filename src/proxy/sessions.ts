/**
 * SessionFactory: what every session of one proxy shares, and the limits on it (issue 10):
 * - one SendBudget for all send stores: each session may hold a minimum whatever the others do, draws
 *   on a shared pool beyond it, and is parked when its far side stops acknowledging (a paused download),
 *   so stalled sessions do not starve the ones that deliver; swept every SWEEP_MS;
 * - one ReceiveWindows for all reorder buffers: a new session's receive window is granted against a hard
 *   memory limit as it opens (windows shrink under load; none fits → the session is refused);
 * - the garbage-collection governor, sized from the send budget.
 * Client and server proxies each own one.
 */

import { DEFAULT_MAX_BUFFER, DEFAULT_MAX_RECEIVE_BUFFER } from "../config.ts";
import { StripedPipe, type SessionOptions } from "../pipe/striped.ts";
import { ReceiveWindows, SendBudget } from "../stripe/budget.ts";
import { guardedInterval } from "../util/guard.ts";
import { startMemoryGovernor } from "./governor.ts";

/** Read buffers the collector may leave lying around beyond the budget before the governor collects. */
const GARBAGE_MARGIN = 32 * 1024 * 1024;
/** How often stalled sessions are looked for (SendBudget.sweep). */
const SWEEP_MS = 250;

/** Memory limits of one proxy's sessions. */
export interface SessionLimits {
  /** Bytes all send stores may hold beyond their minimums (default 32 MiB). */
  maxBuffer?: number;
  /** Memory all reorder buffers may use together (default 512 MiB). */
  maxReceiveBuffer?: number;
  /**
   * Sessions that may be open at once: the smallest window's cost is kept for each, so every one of
   * them can open (default 1024; the server passes its --max-sessions).
   */
  maxSessions?: number;
}

/** Opens the sessions of one proxy against its shared limits; owns the governor and the sweep while it runs. */
export class SessionFactory {
  /** The send budget all sessions share (for statistics and tests). */
  readonly budget: SendBudget;
  /** The receive memory all sessions share (for statistics and tests). */
  readonly windows: ReceiveWindows;
  private readonly granted = new WeakMap<StripedPipe, number>();
  private readonly stopGovernor: () => void;
  private readonly sweeper: Timer;

  constructor(
    private readonly opts: SessionOptions,
    limits: SessionLimits = {},
  ) {
    this.budget = new SendBudget(limits.maxBuffer ?? DEFAULT_MAX_BUFFER);
    this.windows = new ReceiveWindows(limits.maxReceiveBuffer ?? DEFAULT_MAX_RECEIVE_BUFFER, { maxSessions: limits.maxSessions ?? 1024 });
    this.sweeper = guardedInterval("send budget sweep", () => this.budget.sweep(), SWEEP_MS).unref();
    // Garbage from forwarded read buffers: collect once it exceeds the budget plus a margin.
    this.stopGovernor = startMemoryGovernor(this.budget.limit + GARBAGE_MARGIN);
  }

  /**
   * A receive window granted now against the receive memory (at most the configured one), or 0 when
   * not even the smallest fits. For a window promised before its session exists (a standby stripe's
   * reply): pass it to open() later, or give it back with ungrant() if no session comes of it.
   */
  grant(): number {
    return this.windows.open(this.opts.window);
  }

  /** A window from grant() that no session took (the standby stripe expired, went, or was refused). */
  ungrant(window: number): void {
    this.windows.close(window);
  }

  /**
   * A new session with a receive window granted against the receive memory (at most the configured
   * one), or undefined when not even the smallest window fits: refuse it. `peerWindow` is the far
   * side's, when already known. `granted`: a window from grant() (promised to the peer earlier), used
   * as it is. Give it back with release() when the session has ended.
   */
  open(peerWindow = this.opts.window, granted?: number): StripedPipe | undefined {
    const window = granted ?? this.windows.open(this.opts.window);
    if (window === 0) return undefined;
    let session: StripedPipe;
    try {
      session = new StripedPipe({ ...this.opts, window }, peerWindow, this.budget);
    } catch (err) {
      this.windows.close(window); // bad options (ConfigError): the window was never used
      throw err;
    }
    this.granted.set(session, window);
    return session;
  }

  /** The session has ended: its window's memory is free again. Once per session; later calls do nothing. */
  release(session: StripedPipe): void {
    const window = this.granted.get(session);
    if (window === undefined) return;
    this.granted.delete(session);
    this.windows.close(window);
  }

  /** Stops the governor and the sweep (the proxy is shutting down). */
  stop(): void {
    clearInterval(this.sweeper);
    this.stopGovernor();
  }
}

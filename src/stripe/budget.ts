/**
 * Shared memory limits of one proxy: pure, no sockets; the clock is passed in.
 *
 * Send side, SendBudget: every session's send
 * store (bytes read from its app or target and not yet acknowledged by the far proxy) draws on it.
 * - Every session may hold `minShare` without asking: a session that makes no progress cannot starve
 *   another below that.
 * - Beyond its minimum, a session draws on a shared pool of `limit` bytes. While the pool is under half
 *   full anyone may read; past half, only sessions under their fair share of the pool (limit / sessions
 *   drawing on it) may, so many readers do not overshoot the limit by a read chunk each.
 * - A session whose acks have not moved for `stallMs` while it holds more than its minimum (its app or
 *   target stopped reading: a paused download) is parked: what it holds beyond its minimum moves out of
 *   the pool into a parked account of at most `limit` bytes, and it may not read beyond its minimum until
 *   an ack moves again. It keeps its data (it is unacknowledged, so it cannot be dropped) but no longer
 *   blocks the sessions that are delivering. When the parked account is full, a stalled session stays
 *   in the pool (and the others still have their minimum).
 * Worst case, with N sessions and read chunks of C bytes (a session reads one more chunk before it
 * stops): send stores together hold at most 2 × limit + N × (minShare + C).
 * Measured before (one pool, no minimum): 4 paused downloads held the whole 32 MiB and a fresh 64 MiB
 * download got 128 KB in 15 s.
 *
 * Receive side, ReceiveWindows: one limit on the memory all reorder buffers of a proxy may use. A
 * session's receive window W lets its reorder buffer use at most reorderMemoryLimit(W) = 2 × W + 128 KiB
 * (stream data plus what it costs to hold it; see reorder.ts), so that is what opening it reserves. The
 * smallest window's cost is kept for every other session that may still open (so every slot can open);
 * of what is spare beyond that, a new session takes at most half (WINDOW_SPREAD), up to the configured
 * window. So windows shrink gradually under load instead of falling from full to the minimum at once:
 * with 512 MiB, 1,024 slots and 16 MiB configured, 7 sessions get 16 MiB, the next ones 8, 4, 2, 1 and
 * 0.5 MiB, the rest 64 KiB until others end. When not even MIN_WINDOW fits, the session is refused.
 * Windows are returned when sessions end.
 */

import { MEMORY_SLACK, reorderMemoryLimit } from "./reorder.ts";

/** Default per-session minimum of a SendBudget: always readable, whatever the others hold. */
export const DEFAULT_MIN_SHARE = 256 * 1024;
/** Default time without ack progress after which a session holding more than its minimum is parked. */
export const DEFAULT_STALL_MS = 1000;

/** Options of a SendBudget. */
export interface SendBudgetOptions {
  /** Bytes every session may hold whatever the others hold (default 256 KiB). */
  minShare?: number;
  /** What one woken session may read before it stops again (Bun reads up to 512 KiB). */
  chunk?: number;
  /** No ack progress for this long, while holding more than the minimum, parks a session (ms). */
  stallMs?: number;
  /** Clock in ms (default performance.now). */
  now?: () => number;
}

/** A session's account in a SendBudget. Get one with SendBudget.join(); give it back with leave(). */
export class BudgetShare {
  /** Bytes this session's send store holds. */
  held = 0;
  /** Parked: stalled, its excess held apart from the pool (see the module comment). */
  parked = false;
  /** When an ack last released bytes (or the share joined). */
  lastProgress: number;
  /** Set while the session waits for room; called once when woken. */
  waker: (() => void) | undefined;
  left = false;

  constructor(
    private readonly budget: SendBudget,
    now: number,
  ) {
    this.lastProgress = now;
  }

  /** Bytes beyond the minimum share: what this session draws from the pool (or the parked account). */
  get excess(): number {
    return Math.max(0, this.held - this.budget.minShare);
  }

  /** The session stored `bytes` more (read from its local socket). */
  take(bytes: number): void {
    this.budget.change(this, bytes, false);
  }

  /** Acks released `bytes` of this session's store: progress, which also unparks it. */
  give(bytes: number): void {
    this.budget.change(this, -bytes, true);
  }

  /** Whether this session may read more from its local socket now. */
  admits(): boolean {
    return this.budget.admits(this);
  }

  /** Calls `wake` once when the pool has room again (replaces an earlier waker). */
  wait(wake: () => void): void {
    this.budget.wait(this, wake);
  }

  /** Forgets the waker. */
  cancel(): void {
    this.budget.cancel(this);
  }

  /** The session ended: gives back everything it held. */
  leave(): void {
    this.budget.leave(this);
  }
}

/** See the module comment. */
export class SendBudget {
  /** Bytes held by all sessions. */
  used = 0;
  /** Highest `used` seen. */
  peak = 0;
  /** Excess bytes of sessions drawing on the pool (not parked). */
  pooled = 0;
  /** Excess bytes of parked sessions. */
  parkedBytes = 0;
  readonly minShare: number;
  readonly stallMs: number;
  private readonly chunk: number;
  private readonly now: () => number;
  private readonly shares = new Set<BudgetShare>();
  private readonly waiters = new Set<BudgetShare>();
  /** Shares drawing on the pool (not parked): the fair share divides the pool among them. */
  private active = 0;

  constructor(
    readonly limit: number,
    opts: SendBudgetOptions = {},
  ) {
    this.minShare = opts.minShare ?? DEFAULT_MIN_SHARE;
    this.chunk = opts.chunk ?? 512 * 1024;
    this.stallMs = opts.stallMs ?? DEFAULT_STALL_MS;
    this.now = opts.now ?? (() => performance.now());
  }

  /** Sessions holding a share. */
  get sessions(): number {
    return this.shares.size;
  }

  /** A new session's account. */
  join(): BudgetShare {
    const share = new BudgetShare(this, this.now());
    this.shares.add(share);
    this.active++;
    return share;
  }

  /**
   * Parks sessions that stopped making progress (see the module comment) and wakes waiters if that made
   * room. Call it periodically (every 250 ms is plenty); it visits every session.
   */
  sweep(): void {
    const now = this.now();
    for (const s of this.shares) {
      if (s.parked || s.excess === 0 || now - s.lastProgress < this.stallMs) continue;
      if (this.parkedBytes + s.excess > this.limit) continue; // the parked account is full: stay pooled
      s.parked = true;
      this.active--;
      this.pooled -= s.excess;
      this.parkedBytes += s.excess;
      // It reads again only after an ack moves (its session re-checks admits() then).
      this.waiters.delete(s);
      s.waker = undefined;
    }
    this.wakeWaiters();
  }

  /** @internal BudgetShare.take/give. */
  change(s: BudgetShare, delta: number, progress: boolean): void {
    if (s.left || delta === 0) return;
    const before = s.excess;
    s.held += delta;
    this.used += delta;
    if (this.used > this.peak) this.peak = this.used;
    if (progress && delta < 0) {
      s.lastProgress = this.now();
      if (s.parked) {
        s.parked = false;
        this.active++;
        this.parkedBytes -= before;
        this.pooled += before;
      }
    }
    const d = s.excess - before;
    if (s.parked) this.parkedBytes += d;
    else this.pooled += d;
    if (delta < 0) this.wakeWaiters();
  }

  /** @internal */
  admits(s: BudgetShare): boolean {
    if (s.held < this.minShare) return true;
    if (s.parked || this.pooled >= this.limit) return false;
    return this.pooled < this.limit / 2 || s.excess < this.limit / Math.max(1, this.active);
  }

  /** @internal A parked session is not woken here: the ack that unparks it lets its session re-check. */
  wait(s: BudgetShare, wake: () => void): void {
    if (s.left || s.parked) return;
    s.waker = wake;
    this.waiters.add(s);
  }

  /** @internal */
  cancel(s: BudgetShare): void {
    this.waiters.delete(s);
    s.waker = undefined;
  }

  /** @internal */
  leave(s: BudgetShare): void {
    if (s.left) return;
    this.cancel(s);
    this.shares.delete(s);
    if (!s.parked) this.active--;
    this.change(s, -s.held, false); // wakes others into the room it leaves
    s.left = true;
  }

  /**
   * Wakes waiters first come first served while the pool is below its low-water mark (75 %, so
   * sessions do not wake one chunk at a time), as many as the room takes at one read chunk each.
   */
  private wakeWaiters(): void {
    let room = this.limit * 0.75 - this.pooled;
    while (room > 0 && this.waiters.size > 0) {
      const [s] = this.waiters;
      this.waiters.delete(s!);
      const wake = s!.waker;
      s!.waker = undefined;
      room -= this.chunk;
      wake?.();
    }
  }
}

// --- receive windows ----------------------------------------------------------------------------------

/** Smallest receive window a session is given: the command line's minimum and protocol v2's initial window. */
export const MIN_WINDOW = 64 * 1024;

/** Receive memory reserved for a session advertising `window`: what its reorder buffer may use. */
export function windowCost(window: number): number {
  return reorderMemoryLimit(window);
}

/** The largest window whose cost fits in `bytes` (0 when none). */
export function windowFitting(bytes: number): number {
  return Math.max(0, Math.floor((bytes - MEMORY_SLACK) / 2));
}

/** A new session takes at most 1 / WINDOW_SPREAD of the spare receive memory (see the module comment). */
export const WINDOW_SPREAD = 2;

/**
 * The receive window for a new session, or 0 to refuse it. Pure: `free` is the receive memory not
 * yet reserved, `otherSlots` how many more sessions may open after this one (each keeps the smallest
 * window's cost), `min` the smallest window worth giving (the configured window if that is smaller).
 * Beyond its own floor, the session takes at most 1 / `spread` of what is spare after the others' floors.
 */
export function grantWindow(configured: number, free: number, otherSlots: number, min = MIN_WINDOW, spread = WINDOW_SPREAD): number {
  const floor = Math.min(configured, min);
  const floorCost = windowCost(floor);
  if (free < floorCost) return 0;
  const keep = Math.min(free - floorCost, Math.max(0, otherSlots) * floorCost);
  const spare = free - keep - floorCost;
  return Math.max(floor, Math.min(configured, windowFitting(floorCost + spare / spread)));
}

/** Options of ReceiveWindows. */
export interface ReceiveWindowsOptions {
  /** Sessions the proxy may hold at once: the smallest window's cost is kept for each (default 0). */
  maxSessions?: number;
  /** Smallest window given (default MIN_WINDOW). */
  minWindow?: number;
}

/** Hands out receive windows against one memory limit for all reorder buffers; see the module comment. */
export class ReceiveWindows {
  /** Receive memory reserved by open sessions. */
  used = 0;
  /** Open sessions. */
  sessions = 0;
  private readonly maxSessions: number;
  private readonly minWindow: number;

  constructor(
    readonly limit: number,
    opts: ReceiveWindowsOptions = {},
  ) {
    this.maxSessions = opts.maxSessions ?? 0;
    this.minWindow = opts.minWindow ?? MIN_WINDOW;
  }

  /** Reserves a window for a new session (at most `configured`); 0 means refuse the session. */
  open(configured: number): number {
    const window = grantWindow(configured, this.limit - this.used, this.maxSessions - this.sessions - 1, this.minWindow);
    if (window > 0) {
      this.used += windowCost(window);
      this.sessions++;
    }
    return window;
  }

  /** Gives back a window from open() (the session ended). */
  close(window: number): void {
    this.used -= windowCost(window);
    this.sessions--;
  }
}

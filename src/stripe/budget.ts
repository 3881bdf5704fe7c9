/**
 * BufferBudget: one limit on the bytes all sessions of a proxy hold in their send stores, so a relay
 * with many sessions keeps bounded memory even when every session's window would allow more. Pure.
 *
 * A session whose store is over budget stops reading its local socket (send() returns false) and waits
 * here. When acknowledgements bring the total below the low-water mark (75%, so sessions do not wake one
 * chunk at a time), waiters are woken first-come first-served, only as many as the free room can take
 * at one read chunk each: every woken session reads at least one more chunk before it can stop again,
 * and waking all of a hundred sessions at once overshot the limit by 50 MB.
 */

/** See module comment. */
export class BufferBudget {
  /** Bytes currently held by all sessions. */
  used = 0;
  /** Highest `used` seen. */
  peak = 0;
  private readonly waiters = new Set<() => void>();

  /** `chunk`: what one woken session may read before it stops again (Bun reads up to 512 KiB). */
  constructor(
    readonly limit: number,
    private readonly chunk = 512 * 1024,
  ) {}

  /** Sessions sharing the budget (for the fair share). */
  holders = 0;

  /** True while more may be taken. */
  get open(): boolean {
    return this.used < this.limit;
  }

  /**
   * Whether a session holding `held` bytes may read more. Past half the limit, only sessions under
   * their fair share (limit / sessions) may: every session reads one more chunk before it can stop,
   * so with many sessions the limit alone was overshot by sessions × 512 KiB.
   */
  admits(held: number): boolean {
    if (this.used >= this.limit) return false;
    return this.used < this.limit / 2 || held < this.limit / Math.max(1, this.holders);
  }

  take(bytes: number): void {
    this.used += bytes;
    if (this.used > this.peak) this.peak = this.used;
  }

  give(bytes: number): void {
    this.used -= bytes;
    let room = this.limit * 0.75 - this.used;
    while (room > 0 && this.waiters.size > 0) {
      const [w] = this.waiters;
      this.waiters.delete(w!);
      room -= this.chunk;
      w!();
    }
  }

  /** Calls `wake` once the budget has room again. */
  wait(wake: () => void): void {
    this.waiters.add(wake);
  }

  /** Forgets a waiter (its session ended). */
  cancel(wake: () => void): void {
    this.waiters.delete(wake);
  }
}

/** Smallest receive window a session is given under load. */
export const MIN_SESSION_WINDOW = 1024 * 1024;

/**
 * The receive window for a new session when `sessions` already exist: the configured window, but no
 * more than 4 × the budget shared among them (at least 1 MiB). A receiver's reorder buffers are bounded
 * only by the windows it advertised, so without this a proxy's worst case was sessions × window
 * (16 GiB at 1024 sessions of 16 MiB).
 */
export function sessionWindow(configured: number, budget: BufferBudget, sessions: number): number {
  const share = Math.floor((4 * budget.limit) / (sessions + 1));
  return Math.min(configured, Math.max(MIN_SESSION_WINDOW, share));
}

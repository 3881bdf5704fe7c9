/**
 * BufferBudget: one limit on the bytes all sessions of a proxy hold in their send stores, so a relay
 * with many sessions keeps bounded memory even when every session's window would allow more. Pure.
 *
 * A session whose store is over budget stops reading its local socket (send() returns false) and waits
 * here; when acknowledgements bring the total below the low-water mark, the waiting sessions are woken
 * (hysteresis, so they do not wake one chunk at a time).
 */

/** See module comment. */
export class BufferBudget {
  /** Bytes currently held by all sessions. */
  used = 0;
  /** Highest `used` seen. */
  peak = 0;
  private readonly waiters = new Set<() => void>();

  constructor(readonly limit: number) {}

  /** True while more may be taken. */
  get open(): boolean {
    return this.used < this.limit;
  }

  take(bytes: number): void {
    this.used += bytes;
    if (this.used > this.peak) this.peak = this.used;
  }

  give(bytes: number): void {
    this.used -= bytes;
    if (this.waiters.size > 0 && this.used < this.limit * 0.75) {
      const woken = [...this.waiters];
      this.waiters.clear();
      for (const w of woken) w();
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

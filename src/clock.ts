/**
 * Clock: the time and timers a session runs on. The real one is `performance.now()` and the global
 * timers; tests pass a manual clock (test/helpers/clock.ts) so that the session's ACK delay, tick,
 * grace and linger timers fire exactly when the test advances time.
 */

/** A pending timer, as the clock's setTimeout/setInterval returned it. */
export interface ClockTimer {
  /** Lets the process exit while this timer is pending (real timers only; a no-op elsewhere). */
  unref?(): unknown;
}

/** Milliseconds and timers. Times are milliseconds from an arbitrary origin (monotonic). */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): ClockTimer;
  clearTimeout(timer: ClockTimer | undefined): void;
  setInterval(fn: () => void, ms: number): ClockTimer;
  clearInterval(timer: ClockTimer | undefined): void;
}

/** Real time: performance.now() and the global timers. */
export const REAL_CLOCK: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(t as Timer | undefined),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (t) => clearInterval(t as Timer | undefined),
};

/**
 * ManualClock: a Clock (src/clock.ts) whose time moves only when the test says so. Timers fire inside
 * advance(), in due order (ties in the order they were set), each seeing now() equal to its due time;
 * timers set by a callback fire in the same advance() if they fall due within it. Nothing runs on the
 * event loop, so a test on this clock is deterministic and never waits for real time.
 */

import type { Clock, ClockTimer } from "../../src/clock.ts";

/** A pending timer of a ManualClock. */
interface ManualTimer extends ClockTimer {
  at: number;
  /** Interval period (ms); 0 for a one-shot timer. */
  every: number;
  seq: number;
  fn: () => void;
}

/** See module comment. */
export class ManualClock implements Clock {
  private t: number;
  private seq = 0;
  private readonly timers = new Set<ManualTimer>();

  /** `start`: the time now() returns before the first advance (ms). */
  constructor(start = 0) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): ClockTimer {
    return this.add(fn, ms, 0);
  }

  setInterval(fn: () => void, ms: number): ClockTimer {
    // Like real timers, a period below 1 ms counts as 1 ms (and advance() cannot spin forever).
    return this.add(fn, ms, Math.max(1, ms));
  }

  clearTimeout(timer: ClockTimer | undefined): void {
    this.cancel(timer);
  }

  clearInterval(timer: ClockTimer | undefined): void {
    this.cancel(timer);
  }

  /** Timers set and neither fired (one-shot) nor cleared. */
  get pending(): number {
    return this.timers.size;
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way. */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`advance(${ms}): time only moves forward`);
    const target = this.t + ms;
    for (;;) {
      const next = this.earliest();
      if (next === undefined || next.at > target) break;
      this.t = next.at;
      if (next.every > 0) {
        next.at += next.every;
        next.seq = this.seq++;
      } else {
        this.timers.delete(next);
      }
      next.fn();
    }
    this.t = target;
  }

  private add(fn: () => void, ms: number, every: number): ManualTimer {
    const timer: ManualTimer = { at: this.t + Math.max(0, ms), every, seq: this.seq++, fn, unref() {} };
    this.timers.add(timer);
    return timer;
  }

  private cancel(timer: ClockTimer | undefined): void {
    if (timer !== undefined) this.timers.delete(timer as ManualTimer);
  }

  private earliest(): ManualTimer | undefined {
    let best: ManualTimer | undefined;
    for (const t of this.timers) if (best === undefined || t.at < best.at || (t.at === best.at && t.seq < best.seq)) best = t;
    return best;
  }
}

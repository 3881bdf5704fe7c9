/**
 * A LogAggregator (src/proxy/log.ts) that flushes itself: the aggregator only summarises when it is noted
 * or flushed, so a burst followed by quiet would leave its summary unwritten. This owns the timer that
 * flushes it — started by the first note, stopped once nothing is pending or on close — for the logs that
 * aggregate what peers do (DamageLog, Rejections).
 */

import { guardedInterval } from "../util/guard.ts";
import { LogAggregator, type AggregatorOptions, type LogEvent } from "./log.ts";

/** A LogAggregator with its own flush timer (unref'd: it keeps no process alive). */
export class TimedAggregator {
  private readonly agg: LogAggregator;
  private readonly tickMs: number;
  private timer: Timer | undefined;

  /** `name` labels the timer in the guard's error line. */
  constructor(
    private readonly name: string,
    emit: (ev: LogEvent) => void,
    opts: AggregatorOptions = {},
  ) {
    this.agg = new LogAggregator(emit, opts);
    this.tickMs = Math.min(1000, opts.intervalMs ?? 10_000);
  }

  /** Kinds with something pending. */
  get size(): number {
    return this.agg.size;
  }

  /** LogAggregator.note, then makes sure the timer runs. */
  note(key: string, ev: LogEvent, summary: (n: number, seconds: number) => LogEvent): void {
    this.agg.note(key, ev, summary);
    if (this.timer !== undefined) return;
    this.timer = guardedInterval(this.name, () => this.flush(), this.tickMs);
    this.timer.unref?.();
  }

  /** Logs summaries whose interval is over; stops the timer once nothing is pending. */
  flush(): void {
    this.agg.flush();
    if (this.agg.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** Logs what is pending and stops the timer (the proxy is stopping). */
  close(): void {
    this.agg.close();
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

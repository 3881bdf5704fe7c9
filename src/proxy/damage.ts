/**
 * Log lines about stripes dropped because a record did not authenticate (docs/protocol.md §3.4.4):
 * damage in transit, or someone on the path changing bytes. An attacker on the path can make that
 * happen on every stripe of every session, again after every re-dial, so the lines are aggregated per
 * error code (LogAggregator, src/proxy/log.ts): the first of a code as it happens, then one summary per
 * interval while they continue. The session itself re-sends what the stripe carried; nothing is lost.
 */

import type { StriperError } from "../errors.ts";
import { LogAggregator, logEvent, type LogSink } from "./log.ts";

/** Aggregated lines for damaged stripes, one kind per error code. */
export class DamageLog {
  private readonly agg: LogAggregator;
  private readonly intervalMs: number;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(log: LogSink, opts: { intervalMs?: number; now?: () => number } = {}) {
    this.intervalMs = opts.intervalMs ?? 10_000;
    this.agg = new LogAggregator((ev) => logEvent(log, ev), { intervalMs: this.intervalMs, now: opts.now, maxKeys: 16 });
  }

  /** Stripe `index` of session `session` was dropped because of `err` (a RecordError). */
  note(session: string, index: number, err: StriperError): void {
    const every = Math.round(this.intervalMs / 1000);
    this.agg.note(
      err.code,
      { level: "warn", event: "stripe.damaged", session, msg: `session ${session} stripe ${index} dropped: ${err.code} ${err.message} (repeats are summarised every ${every} s)` },
      (n, seconds) => ({
        level: "warn",
        event: "stripe.damaged.summary",
        msg: `${n} stripe${n === 1 ? "" : "s"} dropped (${err.code}: a record did not authenticate) in the last ${seconds} s; their data was re-sent`,
        fields: { code: err.code, count: n, seconds },
      }),
    );
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.flush(), Math.min(1000, this.intervalMs));
      this.timer.unref?.();
    }
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

/**
 * OutageNotice: what a client session says while it has no stripe to the server proxy. Without it the
 * log is silent for the whole grace period while the dialer re-dials (a user trying it saw nothing for
 * 10 s, then a reset). Once per outage, after `noticeAfterMs` without a stripe, one line says that the
 * session is waiting, for how long at most, and how many re-dials have failed (and the last reason);
 * when a stripe comes back after that line, one more says so. Timers are injected for tests.
 */

import type { StriperError } from "../errors.ts";
import type { LogEvent } from "./log.ts";
import { guardedTimeout } from "../util/guard.ts";

/** How long a session has had no stripe before it says so (ms). */
export const OUTAGE_NOTICE_MS = 1000;

/** Timers as the notice uses them. */
export interface NoticeTimers {
  now(): number;
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const realTimers: NoticeTimers = {
  now: () => performance.now(),
  set: (fn, ms) => guardedTimeout("outage notice", fn, ms).unref(),
  clear: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** Options of an OutageNotice. */
export interface OutageOptions {
  /** Session id and server proxy, for the lines. */
  id: string;
  peer: string;
  /** The session's grace: how long it may go without a stripe before it is reset. */
  graceMs: number;
  log: (ev: LogEvent) => void;
  noticeAfterMs?: number;
  timers?: NoticeTimers;
}

/** Tracks one client session's stretches without a stripe; see the module comment. */
export class OutageNotice {
  /** When the current outage began (undefined: the session has a stripe). */
  private since: number | undefined;
  private failures = 0;
  private last: StriperError | undefined;
  private timer: unknown;
  private told = false;
  private readonly timers: NoticeTimers;

  constructor(private readonly o: OutageOptions) {
    this.timers = o.timers ?? realTimers;
  }

  /** A stripe died; `usable` stripes are left. With none left, an outage begins. */
  lost(usable: number): void {
    if (usable > 0 || this.since !== undefined) return;
    this.since = this.timers.now();
    this.failures = 0;
    this.last = undefined;
    this.told = false;
    this.timer = this.timers.set(() => this.tell(), this.o.noticeAfterMs ?? OUTAGE_NOTICE_MS);
  }

  /** A re-dial failed (refused, unreachable, no authenticated reply). Counted while in an outage. */
  failed(err: StriperError): void {
    if (this.since === undefined) return;
    this.failures++;
    this.last = err;
  }

  /** A stripe attached: the outage, if any, is over. */
  back(): void {
    if (this.since === undefined) return;
    const took = (this.timers.now() - this.since) / 1000;
    if (this.told) {
      this.o.log({
        event: "session.stripes-back",
        session: this.o.id,
        msg: `session ${this.o.id}: a stripe to ${this.o.peer} is back after ${took.toFixed(1)} s without one (${this.failures} re-dial${this.failures === 1 ? "" : "s"} failed)`,
        fields: { seconds: Math.round(took * 10) / 10, failedRedials: this.failures },
      });
    }
    this.reset();
  }

  /** The session ended. */
  stop(): void {
    this.reset();
  }

  private reset(): void {
    this.timers.clear(this.timer);
    this.timer = undefined;
    this.since = undefined;
    this.told = false;
  }

  private tell(): void {
    this.timer = undefined;
    if (this.since === undefined) return;
    this.told = true;
    const waited = (this.timers.now() - this.since) / 1000;
    const left = Math.max(0, this.o.graceMs / 1000 - waited);
    const last = this.last ? `, last: ${this.last.code} ${this.last.message}` : "";
    this.o.log({
      level: "warn",
      event: "session.waiting",
      session: this.o.id,
      msg:
        `session ${this.o.id} has had no stripe to ${this.o.peer} for ${waited.toFixed(1)} s (${this.failures} re-dial${this.failures === 1 ? "" : "s"} failed${last}); ` +
        `re-dialling, waiting up to ${left.toFixed(1)} s more (grace ${(this.o.graceMs / 1000).toFixed(1)} s) before the session is reset`,
      fields: { seconds: Math.round(waited * 10) / 10, failedRedials: this.failures, secondsLeft: Math.round(left * 10) / 10, code: this.last?.code },
    });
  }
}

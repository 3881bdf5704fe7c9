/**
 * SessionLines: the "session … start" and "session … end" lines of one proxy, with a budget per source
 * address, so that one source opening sessions by the thousand (a key holder's slot flood, a runaway app)
 * costs the log one summary line per interval instead of two lines per session. Measured before: 1,024
 * single-stripe OPENs that vanished wrote 2,109 server lines.
 *
 * Each source (as the registry counts it: an IPv4 address, an IPv6 /64) may write `perSource` session
 * lines per interval (default 50: 25 sessions opened and ended every 10 s); beyond that its lines are
 * counted, and when the interval ends one line says how many sessions it started and ended and how they
 * ended ("412 session lines from 203.0.113.7 not logged in the last 10 s: 206 started, 206 ended
 * (E_ABANDONED ×200, ok ×6)"). At most `maxSources` sources are tracked at once; lines of further ones
 * count in one shared summary. Pure apart from `log`; the clock is passed in.
 */

import { guardedInterval } from "../util/guard.ts";
import { logEvent, type LogEvent, type LogSink } from "./log.ts";

/** Options of SessionLines. */
export interface SessionLinesOptions {
  /** Length of an interval, ms (default 10 000). */
  intervalMs?: number;
  /** Lines a source may write per interval (default 50). */
  perSource?: number;
  /** Sources tracked at once (default 1024). */
  maxSources?: number;
  /** Monotonic clock, ms (default performance.now). */
  now?: () => number;
}

/** One source's interval. */
interface Budget {
  since: number;
  written: number;
  startsHeld: number;
  /** Ends not written, by code ("ok" for clean ends). */
  endsHeld: Map<string, number>;
}

const OTHERS = "other sources";

/** See the module comment. */
export class SessionLines {
  private readonly sources = new Map<string, Budget>();
  private readonly intervalMs: number;
  private readonly perSource: number;
  private readonly maxSources: number;
  private readonly now: () => number;
  private timer: Timer | undefined;

  constructor(
    private readonly log: LogSink,
    opts: SessionLinesOptions = {},
  ) {
    this.intervalMs = opts.intervalMs ?? 10_000;
    this.perSource = opts.perSource ?? 50;
    this.maxSources = opts.maxSources ?? 1024;
    this.now = opts.now ?? (() => performance.now());
  }

  /** A session from `source` started; `ev` is its start line. */
  start(source: string, ev: LogEvent): void {
    const b = this.budget(source);
    if (this.take(b)) logEvent(this.log, ev);
    else b.startsHeld++;
  }

  /** A session from `source` ended with `code` ("ok" when clean); `ev` is its end line. */
  end(source: string, code: string, ev: LogEvent): void {
    const b = this.budget(source);
    if (this.take(b)) logEvent(this.log, ev);
    else b.endsHeld.set(code, (b.endsHeld.get(code) ?? 0) + 1);
  }

  /** Writes the summaries of intervals that are over; forgets quiet sources. */
  flush(): void {
    const now = this.now();
    for (const [source, b] of this.sources) {
      if (now - b.since < this.intervalMs) continue;
      this.summarise(source, b, now);
      this.sources.delete(source);
    }
    if (this.sources.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** Writes every pending summary (the proxy is stopping). */
  close(): void {
    const now = this.now();
    for (const [source, b] of this.sources) this.summarise(source, b, now);
    this.sources.clear();
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private budget(source: string): Budget {
    const now = this.now();
    let b = this.sources.get(source);
    if (b !== undefined && now - b.since >= this.intervalMs) {
      this.summarise(source, b, now);
      b = undefined;
    }
    if (b === undefined) {
      const key = this.sources.size >= this.maxSources && !this.sources.has(source) ? OTHERS : source;
      b = this.sources.get(key);
      if (b === undefined) {
        b = { since: now, written: 0, startsHeld: 0, endsHeld: new Map() };
        this.sources.set(key, b);
      }
    }
    if (this.timer === undefined) {
      this.timer = guardedInterval("session lines flush", () => this.flush(), Math.min(1000, this.intervalMs));
      this.timer.unref?.();
    }
    return b;
  }

  private take(b: Budget): boolean {
    if (b.written >= this.perSource) return false;
    b.written++;
    return true;
  }

  private summarise(source: string, b: Budget, now: number): void {
    let ends = 0;
    for (const n of b.endsHeld.values()) ends += n;
    const held = b.startsHeld + ends;
    if (held === 0) return;
    const how = [...b.endsHeld]
      .sort((x, y) => y[1] - x[1])
      .map(([code, n]) => `${code} ×${n}`)
      .join(", ");
    const seconds = Math.max(1, Math.round((now - b.since) / 1000));
    logEvent(this.log, {
      level: "warn",
      event: "session.lines.summary",
      remote: source,
      msg:
        `${held} session line${held === 1 ? "" : "s"} from ${source} not logged in the last ${seconds} s: ` +
        `${b.startsHeld} started, ${ends} ended${how ? ` (${how})` : ""}`,
      fields: { started: b.startsHeld, ended: ends, seconds },
    });
    b.since = now;
    b.written = 0;
    b.startsHeld = 0;
    b.endsHeld = new Map();
  }
}

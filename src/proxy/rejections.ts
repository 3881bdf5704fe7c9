/**
 * The server's record of stripes it refused silently (docs/protocol.md §3.11): a counter per reason, for
 * the metrics endpoint, and log lines that an attacker cannot multiply. Every refused connection is
 * counted; lines are aggregated per reason: the first of a reason is logged as it happens, then, while
 * that reason keeps coming, one summary per interval with the count and the sources that sent most.
 * Memory is bounded: per reason at most MAX_SOURCES sources are tallied, the rest counted together.
 */

import { SILENT_REASONS, type SilentReason } from "../secure/messages.ts";
import type { LogSink } from "./log.ts";

/** Sources tallied per reason and interval; further ones are only counted. */
export const MAX_SOURCES = 64;
/** Sources named in a summary line. */
const NAMED_SOURCES = 3;

/** Options of a Rejections record. */
export interface RejectionsOptions {
  /** Where lines go. */
  log: LogSink;
  /** Aggregation interval, ms (default 10 000). */
  intervalMs?: number;
  /** Monotonic clock, ms (default performance.now); tests pass their own. */
  now?: () => number;
}

interface ReasonState {
  /** Refusals in the current interval. */
  count: number;
  /** When the current interval began. */
  since: number;
  /** The interval's first refusal was logged as it happened. */
  loggedFirst: boolean;
  /** Refusals per source this interval (bounded), and those from sources beyond the bound. */
  sources: Map<string, number>;
  otherSources: number;
}

/** Counts silent refusals per reason and logs them aggregated. */
export class Rejections {
  /** Refusals since start, per reason (never reset: the metrics issue exports them as counters). */
  readonly counts: Record<SilentReason, number>;
  private readonly state = new Map<SilentReason, ReasonState>();
  private readonly log: LogSink;
  private readonly intervalMs: number;
  private readonly now: () => number;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(opts: RejectionsOptions) {
    this.log = opts.log;
    this.intervalMs = opts.intervalMs ?? 10_000;
    this.now = opts.now ?? (() => performance.now());
    this.counts = Object.fromEntries(SILENT_REASONS.map((r) => [r, 0])) as Record<SilentReason, number>;
  }

  /** Total refusals since start, all reasons. */
  get total(): number {
    let n = 0;
    for (const r of SILENT_REASONS) n += this.counts[r];
    return n;
  }

  /** One connection from `source` (an address) refused silently for `reason`. */
  note(reason: SilentReason, source: string): void {
    this.counts[reason]++;
    const now = this.now();
    let s = this.state.get(reason);
    if (s === undefined) {
      s = { count: 0, since: now, loggedFirst: false, sources: new Map(), otherSources: 0 };
      this.state.set(reason, s);
    }
    s.count++;
    const seen = s.sources.get(source);
    if (seen !== undefined) s.sources.set(source, seen + 1);
    else if (s.sources.size < MAX_SOURCES) s.sources.set(source, 1);
    else s.otherSources++;
    if (s.count === 1) {
      // The first of its reason in a while: said at once (an operator testing a wrong key sees it).
      s.loggedFirst = true;
      this.log(`stripe handshake from ${source} refused silently: ${reason} (repeats are summarised every ${Math.round(this.intervalMs / 1000)} s)`);
    }
    this.timer ??= setInterval(() => this.flush(), Math.min(1000, this.intervalMs));
    this.timer.unref?.();
  }

  /** Logs the summary of every reason whose interval is over; forgets reasons that went quiet. */
  flush(force = false): void {
    const now = this.now();
    for (const [reason, s] of this.state) {
      if (!force && now - s.since < this.intervalMs) continue;
      const unlogged = s.count - (s.loggedFirst ? 1 : 0);
      if (unlogged > 0) this.log(summaryLine(reason, s, now));
      if (s.count === 0 || unlogged === 0) {
        this.state.delete(reason); // quiet: its next refusal is logged as it happens
        continue;
      }
      s.count = 0;
      s.since = now;
      s.loggedFirst = false;
      s.sources.clear();
      s.otherSources = 0;
    }
    if (this.state.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** Logs what is pending and stops the timer (the server is stopping). */
  close(): void {
    this.flush(true);
    this.state.clear();
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** "312 stripe handshakes refused silently (bad-auth) in the last 10 s from 203.0.113.7 ×290, … and 4 more sources". */
function summaryLine(reason: SilentReason, s: ReasonState, now: number): string {
  const top = [...s.sources].sort((a, b) => b[1] - a[1]);
  const named = top
    .slice(0, NAMED_SOURCES)
    .map(([src, n]) => `${src} ×${n}`)
    .join(", ");
  let rest = top.length > NAMED_SOURCES ? ` and ${top.length - NAMED_SOURCES} more source${top.length - NAMED_SOURCES === 1 ? "" : "s"}` : "";
  if (s.otherSources > 0) rest += ` (+${s.otherSources} from sources beyond the first ${MAX_SOURCES})`;
  const seconds = Math.max(1, Math.round((now - s.since) / 1000));
  return `${s.count} stripe handshake${s.count === 1 ? "" : "s"} refused silently (${reason}) in the last ${seconds} s from ${named}${rest}`;
}

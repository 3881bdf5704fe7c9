/**
 * The server's record of stripes it refused silently (docs/protocol.md §3.11): a counter per reason, for
 * the metrics endpoint, and log lines that an attacker cannot multiply. Every refused connection is
 * counted; lines go through the proxies' LogAggregator (src/proxy/log.ts), one kind per reason: the
 * first refusal of a reason is logged as it happens, then, while that reason keeps coming, one summary
 * per interval with the count and the sources that sent most. Memory is bounded: 12 reasons, and per
 * reason at most MAX_SOURCES sources tallied, the rest counted together.
 */

import { SILENT_REASONS, type SilentReason } from "../secure/messages.ts";
import { logEvent, type LogEvent, type LogSink } from "./log.ts";
import { TimedAggregator } from "./timed-log.ts";

/** Sources tallied per reason and interval; refusals from further ones are only counted. */
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

/** Refusals of one reason per source, since that reason's last line. */
interface Tally {
  sources: Map<string, number>;
  /** Refusals from sources beyond MAX_SOURCES. */
  other: number;
  /** When the last refusal of this reason was noted. */
  last: number;
}

/** Counts silent refusals per reason and logs them aggregated. */
export class Rejections {
  /** Refusals since start, per reason (never reset: the metrics issue exports them as counters). */
  readonly counts: Record<SilentReason, number>;
  private readonly tallies = new Map<SilentReason, Tally>();
  private readonly agg: TimedAggregator;
  private readonly intervalMs: number;
  private readonly now: () => number;
  /** Set by emit while a reason's first line (not a summary) goes out. */
  private firstLogged = false;

  constructor(opts: RejectionsOptions) {
    this.intervalMs = opts.intervalMs ?? 10_000;
    this.now = opts.now ?? (() => performance.now());
    this.counts = Object.fromEntries(SILENT_REASONS.map((r) => [r, 0])) as Record<SilentReason, number>;
    this.agg = new TimedAggregator(
      "rejections flush",
      (ev) => {
        if (ev.event === "handshake.refused") this.firstLogged = true;
        logEvent(opts.log, ev);
      },
      { intervalMs: this.intervalMs, now: this.now, maxKeys: SILENT_REASONS.length },
    );
  }

  /** Total refusals since start, all reasons. */
  get total(): number {
    let n = 0;
    for (const r of SILENT_REASONS) n += this.counts[r];
    return n;
  }

  /** One connection from `source` (an address, or an IPv6 /64) refused silently for `reason`. */
  note(reason: SilentReason, source: string): void {
    this.counts[reason]++;
    const now = this.now();
    const first: LogEvent = {
      level: "warn",
      event: "handshake.refused",
      msg: `stripe handshake from ${source} refused silently: ${reason} (repeats are summarised every ${Math.round(this.intervalMs / 1000)} s)`,
      remote: source,
      fields: { reason },
    };
    this.firstLogged = false;
    this.agg.note(reason, first, (n, seconds) => this.summary(reason, n, seconds));
    let t = this.tallies.get(reason);
    // A reason logged afresh (or quiet for a whole interval, so forgotten by the aggregator) starts over.
    if (t === undefined || this.firstLogged || now - t.last >= this.intervalMs) {
      t = { sources: new Map(), other: 0, last: now };
      this.tallies.set(reason, t);
    }
    t.last = now;
    const seen = t.sources.get(source);
    if (seen !== undefined) t.sources.set(source, seen + 1);
    else if (t.sources.size < MAX_SOURCES) t.sources.set(source, 1);
    else t.other++;
  }

  /** Logs the summary of every reason whose interval is over. */
  flush(): void {
    this.agg.flush();
  }

  /** Logs what is pending and stops the timer (the server is stopping). */
  close(): void {
    this.agg.close();
    this.tallies.clear();
  }

  /** "312 stripe handshakes refused silently (bad-auth) in the last 10 s from 203.0.113.7 ×290, …". */
  private summary(reason: SilentReason, n: number, seconds: number): LogEvent {
    const t = this.tallies.get(reason);
    const top = t ? [...t.sources].sort((a, b) => b[1] - a[1]) : [];
    const named = top
      .slice(0, NAMED_SOURCES)
      .map(([src, k]) => `${src} ×${k}`)
      .join(", ");
    let rest = top.length > NAMED_SOURCES ? ` and ${top.length - NAMED_SOURCES} more source${top.length - NAMED_SOURCES === 1 ? "" : "s"}` : "";
    if (t !== undefined && t.other > 0) rest += ` (+${t.other} from sources beyond the first ${MAX_SOURCES})`;
    this.tallies.delete(reason);
    return {
      level: "warn",
      event: "handshake.refused.summary",
      msg: `${n} stripe handshake${n === 1 ? "" : "s"} refused silently (${reason}) in the last ${seconds} s${named ? ` from ${named}` : ""}${rest}`,
      fields: { reason, count: n, seconds, sources: top.length + (t?.other ? 1 : 0) },
    };
  }
}

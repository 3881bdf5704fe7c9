/**
 * Contained callbacks: a throw inside a timer callback or an event handler is reported and swallowed,
 * never the end of the process. In Bun an exception escaping a setInterval callback is uncaught and
 * exits the process: `process.memoryUsage()` throwing under EMFILE in the memory governor's timer took
 * every session down with it.
 *
 * Wrap every setInterval/setTimeout callback and every event handler that is not already inside a
 * session's own guard: `guardedInterval("governor", tick, 50)`, `socket: { data: guarded("relay data",
 * onData) }`. Reports are rate-limited per name (one line per name and minute, with the number of
 * throws), so a callback that throws on every tick cannot flood the log either.
 */

import { asStriperError } from "../errors.ts";
import { stderrLog, type LogSink } from "../proxy/log.ts";

/** How often one name may report: once per this many ms, counting the throws in between. */
const REPORT_EVERY_MS = 60_000;
/** Names remembered for rate limiting (names are code constants, so this is never reached in practice). */
const MAX_NAMES = 256;

/** Receives a contained throw: `name` says where it happened. */
export type GuardReporter = (name: string, err: unknown) => void;

/**
 * A reporter that writes "internal error in NAME (contained): CODE message" through `log`, at most
 * once per name per `everyMs`, adding how many throws it did not report. `now` is the clock (ms).
 */
export function rateLimitedReporter(log: LogSink = stderrLog, everyMs = REPORT_EVERY_MS, now: () => number = () => performance.now()): GuardReporter {
  const seen = new Map<string, { at: number; skipped: number }>();
  return (name, err) => {
    const t = now();
    const s = seen.get(name);
    if (s && t - s.at < everyMs) {
      s.skipped++;
      return;
    }
    if (!s && seen.size >= MAX_NAMES) seen.clear();
    const e = asStriperError(err);
    const more = s && s.skipped > 0 ? ` (${s.skipped} more since the last report)` : "";
    seen.set(name, { at: t, skipped: 0 });
    log(`internal error in ${name} (contained): ${e.code} ${e.message}${more}`);
  };
}

let reporter: GuardReporter = rateLimitedReporter();

/** Replaces where contained throws are reported (tests, or a structured logger); returns the previous one. */
export function setGuardReporter(r: GuardReporter): GuardReporter {
  const previous = reporter;
  reporter = r;
  return previous;
}

/** Reports a throw that the caller contained itself (e.g. after closing what it was handling). Never throws. */
export function reportContained(name: string, err: unknown): void {
  try {
    reporter(name, err);
  } catch {
    // A reporter that throws (stderr gone) must not undo the containment.
  }
}

/** `fn` with any throw reported under `name` and contained; returns undefined when it threw. */
export function guarded<A extends unknown[], R>(name: string, fn: (...args: A) => R): (...args: A) => R | undefined {
  return (...args: A) => {
    try {
      return fn(...args);
    } catch (err) {
      reportContained(name, err);
      return undefined;
    }
  };
}

/** Reports a rejection of `p` under `name` instead of leaving it unhandled. */
export function guardPromise(name: string, p: Promise<unknown>): void {
  p.catch((err: unknown) => reportContained(name, err));
}

/** setInterval with the callback guarded. */
export function guardedInterval(name: string, fn: () => void, ms: number): Timer {
  return setInterval(guarded(name, fn), ms);
}

/** setTimeout with the callback guarded. */
export function guardedTimeout(name: string, fn: () => void, ms: number): Timer {
  return setTimeout(guarded(name, fn), ms);
}

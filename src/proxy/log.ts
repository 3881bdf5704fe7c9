/** One-line logs on stderr. Quiet mode (tests, demo) swaps the sink. */

import type { StriperError } from "../errors.ts";
import type { SessionMetrics } from "../pipe/striped.ts";

/** Where proxy log lines go. */
export type LogSink = (line: string) => void;

/** Writes "ISO-time tag message" to stderr. */
export const stderrLog: LogSink = (line) => {
  process.stderr.write(`${new Date().toISOString()} ${line}\n`);
};

/** Discards log lines. */
export const quietLog: LogSink = () => {};

/** Human-readable byte count. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

/** Short hex id for logs. */
export function hexId(id: Uint8Array, bytes = 6): string {
  return Buffer.from(id.subarray(0, bytes)).toString("hex");
}

/** The one line logged when a session ends: bytes each way, duration, stripe trouble, why it ended. */
export function sessionEndLine(id: string, up: number, down: number, ms: number, m: SessionMetrics, err?: StriperError): string {
  const reason = err ? `${err.code} ${err.message}` : "ok";
  return (
    `session ${id} end up ${formatBytes(up)} down ${formatBytes(down)} ${(ms / 1000).toFixed(2)} s ` +
    `stripe-deaths ${m.stripeDeaths} resent ${formatBytes(m.resentBytes)} acks ${formatBytes(m.ackBytes)} reason ${reason}`
  );
}

/**
 * One line of live statistics for a session: per stripe, rate, in flight (and its cap, when the
 * scheduler sets one), smoothed and minimum RTT, the queue it holds (their difference), stalls.
 */
export function sessionStatsLine(id: string, m: SessionMetrics): string {
  const stripes = m.perStripe
    .map(
      (p) =>
        `#${p.index} ${(p.rate / 1e6).toFixed(2)}MB/s inflight ${formatBytes(p.inflight)}${p.cap > 0 ? ` cap ${formatBytes(Math.round(p.cap))}` : ""} ` +
        `rtt ${p.rtt.toFixed(1)}ms min ${p.minRtt.toFixed(1)}ms queue ${p.queue.toFixed(1)}ms stalls ${p.stalls}`,
    )
    .join("; ");
  return (
    `session ${id} stats stripes ${m.usableStripes}/${m.stripes} store ${formatBytes(m.sendBufferBytes)} ` +
    `reorder ${formatBytes(m.reorderBytes)} deaths ${m.stripeDeaths} resent ${formatBytes(m.resentBytes)} | ${stripes}`
  );
}

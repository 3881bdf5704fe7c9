/**
 * Memory governor: collects garbage when array-buffer memory runs ahead of what the proxy really holds.
 *
 * Every socket read allocates a fresh buffer (up to 512 KiB) that is garbage soon after it has been
 * forwarded and acknowledged. Under many busy sessions JSC collects these too late: measured with 100
 * sessions × 4 stripes, 250 MB of array buffers while the sessions held 15 MB, and peak RSS ~310 MB.
 * A full collection when array buffers exceed a threshold keeps the peak near ~200 MB, and costs
 * nothing when the proxy is not under memory pressure (the check is one `memoryUsage()` per tick).
 *
 * `process.memoryUsage()` reads /proc and throws ("Failed to get memory usage") when the process is out
 * of descriptors; that once ended the process from this timer. A failed reading now skips the tick and
 * is logged once per episode. (bun:jsc heapStats() still works then, but takes ~150 ms with a million
 * objects: too slow for a 50 ms tick, so there is no fallback reading.)
 */

import { guardedInterval } from "../util/guard.ts";
import { stderrLog, type LogSink } from "./log.ts";

const TICK_MS = 50;

/** What a governor reads and does; injected so a tick can be tested without a real heap. */
export interface GovernorDeps {
  /** Array-buffer bytes now; may throw. */
  arrayBuffers: () => number;
  /** A full collection. */
  collect: () => void;
  log: LogSink;
  /** Clock in ms. */
  now: () => number;
}

/** The governor's state and one tick of it. */
export class MemoryGovernor {
  /** Collect when array buffers exceed this. */
  threshold = Infinity;
  /** Since when readings have failed (undefined while they work). */
  private failingSince: number | undefined;
  private failures = 0;

  constructor(private readonly deps: GovernorDeps) {}

  /** One check: a full collection when over the threshold. Never throws. */
  tick(): void {
    if (this.threshold === Infinity) return;
    let bytes: number;
    try {
      bytes = this.deps.arrayBuffers();
    } catch (err) {
      this.failures++;
      if (this.failingSince === undefined) {
        this.failingSince = this.deps.now();
        this.deps.log(`memory governor: cannot read memory usage (${(err as Error)?.message ?? String(err)}); collections paused until it can`);
      }
      return;
    }
    if (this.failingSince !== undefined) {
      const s = ((this.deps.now() - this.failingSince) / 1000).toFixed(1);
      this.deps.log(`memory governor: memory usage readable again after ${s} s (${this.failures} readings failed)`);
      this.failingSince = undefined;
      this.failures = 0;
    }
    if (bytes > this.threshold) this.deps.collect();
  }
}

const governor = new MemoryGovernor({
  arrayBuffers: () => process.memoryUsage().arrayBuffers,
  collect: () => Bun.gc(true),
  log: stderrLog,
  now: () => performance.now(),
});
let timer: Timer | undefined;
/** Thresholds of the users (proxies) running now: the governor collects at the lowest. */
const thresholds: number[] = [];

/** Starts the governor (or adds a user to it): collect when array buffers exceed `bytes`. Returns a stop function. */
export function startMemoryGovernor(bytes: number): () => void {
  thresholds.push(bytes);
  governor.threshold = Math.min(...thresholds);
  timer ??= guardedInterval("memory governor", () => governor.tick(), TICK_MS).unref();
  let stopped = false;
  return () => {
    if (stopped) return;
    stopped = true;
    thresholds.splice(thresholds.indexOf(bytes), 1);
    governor.threshold = thresholds.length > 0 ? Math.min(...thresholds) : Infinity;
    if (thresholds.length === 0) {
      clearInterval(timer);
      timer = undefined;
    }
  };
}

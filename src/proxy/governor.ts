/**
 * Memory governor: collects garbage when array-buffer memory runs ahead of what the proxy really holds.
 *
 * Every socket read allocates a fresh buffer (up to 512 KiB) that is garbage soon after it has been
 * forwarded and acknowledged. Under many busy sessions JSC collects these too late: measured with 100
 * sessions × 4 stripes, 250 MB of array buffers while the sessions held 15 MB, and peak RSS ~310 MB.
 * A full collection when array buffers exceed a threshold keeps the peak near ~200 MB, and costs
 * nothing when the proxy is not under memory pressure (the check is one `memoryUsage()` per tick).
 */

const TICK_MS = 50;

let timer: Timer | undefined;
let threshold = Infinity;
let users = 0;
/** Full collections run, for statistics. */
export let collections = 0;

/** Starts (or widens) the governor: collect when array buffers exceed `bytes`. Returns a stop function. */
export function startMemoryGovernor(bytes: number): () => void {
  users++;
  threshold = Math.min(threshold, bytes);
  timer ??= setInterval(() => {
    if (process.memoryUsage().arrayBuffers > threshold) {
      Bun.gc(true);
      collections++;
    }
  }, TICK_MS).unref();
  let stopped = false;
  return () => {
    if (stopped) return;
    stopped = true;
    if (--users === 0) {
      clearInterval(timer);
      timer = undefined;
      threshold = Infinity;
    }
  };
}

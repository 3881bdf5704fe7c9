/**
 * Receive path: ReorderBuffer insert + in-order shift, with 16 stripes delivering out of order.
 *
 * Frame k is sent on stripe k mod 16; each stripe delivers its own frames in order (TCP), and the
 * stripes interleave at random, but no frame arrives more than WINDOW_FRAMES ahead of the oldest one
 * still missing (the sender's window). The arrival order over PERIOD frames is precomputed (seeded) and
 * replayed with growing offsets. One iteration inserts one frame, then shifts out everything that
 * became contiguous. Payloads are views of a 512 KiB receive chunk, as the decoder hands them over, so
 * frames below 16 KiB take the buffer's copy path (it does not pin big chunks for small ranges).
 *
 * The flood case is the attack from issue 10: 1-byte fragments at every other offset, never filling a
 * gap, arriving in ascending, descending or random order. One iteration inserts one fragment into a
 * buffer already holding FLOOD_HELD of them (no memory limit, so the cost at that size is measured).
 *
 *   bun bench/reorder.bench.ts --flood [asc|desc|random]
 *
 * instead times 1M such fragments end to end, each order in a fresh process: with the default
 * 16 MiB window (refused at the memory limit) and with no limit (insertion cost alone), and prints
 * RSS at the start, when full, and after clear() and a full GC.
 */

import { do_not_optimize } from "mitata";
import { ReorderBuffer } from "../src/stripe/reorder.ts";
import { prng, receiveChunk, slices, type Case, type Steady, registerSummary, runStandalone } from "./micro.ts";

const STRIPES = 16;
/** At most this many frames are outstanding: 16 stripes × 4 frames each. */
const WINDOW_FRAMES = 64;
const PERIOD = 4096;

/** Arrival order of frames 0..PERIOD-1 as described in the module comment. */
function arrivalOrder(seed: number): Int32Array {
  const rnd = prng(seed);
  const next = Array.from({ length: STRIPES }, (_, s) => s); // next frame each stripe will deliver
  const arrived = new Uint8Array(PERIOD);
  const order = new Int32Array(PERIOD);
  let missing = 0; // oldest frame not yet arrived
  const eligible: number[] = [];
  for (let n = 0; n < PERIOD; n++) {
    eligible.length = 0;
    for (let s = 0; s < STRIPES; s++) if (next[s]! < PERIOD && next[s]! < missing + WINDOW_FRAMES) eligible.push(s);
    const s = eligible[Math.floor(rnd() * eligible.length)]!;
    const f = next[s]!;
    order[n] = f;
    arrived[f] = 1;
    next[s] = f + STRIPES;
    while (missing < PERIOD && arrived[missing]) missing++;
  }
  return order;
}

function reorder(size: number): Steady {
  const order = arrivalOrder(7);
  let displaced = 0;
  for (let n = 0; n < PERIOD; n++) displaced += Math.abs(order[n]! - n);
  const payloads = slices(receiveChunk(), size);
  const mask = payloads.length - 1; // a power of two for every swept size
  const rb = new ReorderBuffer(Math.max(16 * 1024 * 1024, 2 * WINDOW_FRAMES * size));
  let k = 0;
  let base = 0;
  let out = 0;
  const op = () => {
    const f = order[k]!;
    rb.insert(base + f * size, payloads[f & mask]!);
    for (let c = rb.shift(); c !== undefined; c = rb.shift()) out += c.byteLength;
    if (++k === PERIOD) {
      k = 0;
      base += PERIOD * size;
    }
    do_not_optimize(out);
  };
  for (let n = 0; n < PERIOD; n++) op();
  if (out !== PERIOD * size || rb.bufferedBytes !== 0) throw new Error("reorder bench did not deliver every byte");
  return {
    bytes: size,
    unit: "frame",
    note: `mean displacement ${(displaced / PERIOD).toFixed(1)} frames, ${rb.peakBufferedBytes / size} frames held at peak`,
    op,
  };
}

const reorderCase: Case = {
  name: "reorder 16 stripes $size",
  arg: "size",
  values: [1024, 16 * 1024, 64 * 1024],
  setup: reorder,
};
// --- the fragment flood ------------------------------------------------------------------------------

const FLOOD_HELD = 100_000;
const FLOOD_ORDERS = ["asc", "desc", "random"] as const;
type FloodOrder = (typeof FLOOD_ORDERS)[number];

/** The k-th fragment offset (odd, so no two fragments touch) of `n` in the given arrival order. */
function floodOffset(order: FloodOrder, k: number, n: number): number {
  const slot = order === "asc" ? k : order === "desc" ? n - 1 - k : (Math.imul(k, 2654435761) >>> 0) % n;
  return 1 + 2 * slot;
}

function floodSteady(order: FloodOrder): Steady {
  // Room for FLOOD_HELD fragments and 50M more iterations; "random" may hit a slot twice (a duplicate).
  const n = 50_000_000;
  const rb = new ReorderBuffer(4 * n, Number.MAX_SAFE_INTEGER);
  const chunk = new Uint8Array(17);
  let k = 0;
  for (; k < FLOOD_HELD; k++) rb.insert(floodOffset(order, k, n), chunk.subarray(16));
  const op = () => {
    do_not_optimize(rb.insert(floodOffset(order, k, n), new Uint8Array(17).subarray(16)));
    if (++k === n) throw new Error("flood bench ran out of offsets");
  };
  return { bytes: 1, unit: "fragment", note: `${rb.segments} segments held at start; no memory limit`, op };
}

const floodCase: Case<string> = {
  name: "reorder flood 1-byte fragments $order",
  arg: "order",
  values: FLOOD_ORDERS,
  setup: (order) => floodSteady(order as FloodOrder),
};

export const cases: Case<any>[] = [reorderCase, floodCase];

const MiB = 1024 * 1024;
const rssMiB = () => (process.memoryUsage().rss / MiB).toFixed(0);

/** Times `total` fragments into one buffer; stops at the first refusal. */
function floodRun(order: FloodOrder, total: number, rb: ReorderBuffer): string {
  let accepted = 0;
  let refused = "accepted all";
  const t0 = performance.now();
  for (let k = 0; k < total; k++) {
    try {
      // A fresh small receive chunk per fragment, as a socket delivers a 17-byte frame on its own.
      rb.insert(floodOffset(order, k, total), new Uint8Array(17).subarray(16));
    } catch (err) {
      refused = `refused with ${(err as { code?: string }).code}`;
      break;
    }
    accepted++;
  }
  const ms = performance.now() - t0;
  return (
    `${accepted} fragments in ${ms.toFixed(0)} ms (${((ms * 1e6) / Math.max(1, accepted)).toFixed(0)} ns each), ${refused}; ` +
    `${rb.segments} segments, charged ${(rb.memoryBytes / MiB).toFixed(1)} MiB (limit ${(rb.memoryLimit / MiB).toFixed(1)} MiB)`
  );
}

async function floodReport(order: FloodOrder): Promise<void> {
  const total = 1_000_000;
  Bun.gc(true);
  console.log(`${order}: start rss ${rssMiB()} MiB`);
  for (const [label, rb] of [
    ["16 MiB window, default limit", new ReorderBuffer(16 * MiB)],
    ["no memory limit", new ReorderBuffer(4 * total, Number.MAX_SAFE_INTEGER)],
  ] as const) {
    console.log(`${order}: ${label}: ${floodRun(order, total, rb)}; rss ${rssMiB()} MiB`);
    rb.clear();
    Bun.gc(true);
    await Bun.sleep(50);
    Bun.gc(true);
    console.log(`${order}: ${label}: after clear() and GC rss ${rssMiB()} MiB`);
  }
}

const floodAt = process.argv.indexOf("--flood");
if (import.meta.main && floodAt >= 0) {
  const order = process.argv[floodAt + 1] as FloodOrder | undefined;
  if (order !== undefined && FLOOD_ORDERS.includes(order)) await floodReport(order);
  else {
    for (const o of FLOOD_ORDERS) {
      const p = Bun.spawnSync([process.execPath, import.meta.path, "--flood", o], { stdout: "inherit", stderr: "inherit" });
      if (p.exitCode !== 0) process.exit(p.exitCode ?? 1);
    }
  }
} else {
  registerSummary(cases);
  if (import.meta.main) await runStandalone(cases);
}

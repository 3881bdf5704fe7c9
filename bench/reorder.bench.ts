/**
 * Receive path: ReorderBuffer insert + in-order shift, with 16 stripes delivering out of order.
 *
 * Frame k is sent on stripe k mod 16; each stripe delivers its own frames in order (TCP), and the
 * stripes interleave at random, but no frame arrives more than WINDOW_FRAMES ahead of the oldest one
 * still missing (the sender's window). The arrival order over PERIOD frames is precomputed (seeded) and
 * replayed with growing offsets. One iteration inserts one frame, then shifts out everything that
 * became contiguous. Payloads are views of a 512 KiB receive chunk, as the decoder hands them over, so
 * frames below 16 KiB take the buffer's copy path (it does not pin big chunks for small ranges).
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
export const cases: Case[] = [reorderCase];

registerSummary(cases);
if (import.meta.main) await runStandalone(cases);

/**
 * Receive path: FrameDecoder over a stream of DATA frames delivered in chunks split at arbitrary points,
 * and the whole framing round trip (encode into a batch + decode) for 16 KiB frames.
 *
 * - "decode": an 8 MiB stream of `size`-byte DATA frames (built by FrameBatch, so the pads are real),
 *   cut at seeded-random points into chunks of 1 B … 128 KiB (mean 64 KiB; Bun hands over 64–512 KiB at
 *   full speed). The chunk views are made in setup; one iteration pushes one chunk, cycling. GB/s counts
 *   payload bytes (stream payload / chunk count per iteration). The sink only sums fragment lengths.
 * - "encode+decode": one iteration fills a pooled batch buffer (default batchSize) with whole 16 KiB
 *   frames cut from a receive chunk (as writeBatch does), then pushes it to a decoder split at 0–3
 *   seeded-random points (one write arriving as one to four receive chunks). Target from the issue:
 *   ≥ 5 GB/s.
 */

import { bench, do_not_optimize, group } from "mitata";
import { FrameDecoder, type FrameSink } from "../src/wire/codec.ts";
import { BufferPool, FrameBatch } from "../src/wire/batch.ts";
import { FRAME_HEADER_SIZE, MAX_PAD } from "../src/wire/constants.ts";
import { BATCH_BUFFER, fmtSize, prng, receiveChunk, slices, type Case, type Steady } from "./micro.ts";
import { BATCH_SLACK } from "../src/pipe/striped.ts";

const STREAM_PAYLOAD = 8 * 1024 * 1024;
const MAX_CHUNK = 128 * 1024;

/** Counts payload bytes; control frames cannot occur in these streams. */
class CountingSink implements FrameSink {
  bytes = 0;
  data(_offset: number, bytes: Uint8Array): void {
    this.bytes += bytes.byteLength;
  }
  control(type: number): void {
    throw new Error(`unexpected control frame ${type}`);
  }
}

/** An encoded stream of DATA frames carrying `total` payload bytes in `size`-byte frames. */
function encodeStream(size: number, total: number): Uint8Array {
  const payloads = slices(receiveChunk(), size);
  const frames = Math.ceil(total / size);
  const stream = new Uint8Array(frames * (FRAME_HEADER_SIZE + MAX_PAD + size));
  const batch = new FrameBatch(stream);
  for (let f = 0; f < frames; f++) batch.appendData(f * size, payloads[f % payloads.length]!);
  return batch.bytes();
}

function decodeChunks(size: number): Steady {
  const stream = encodeStream(size, STREAM_PAYLOAD);
  const rnd = prng(size);
  const chunks: Uint8Array[] = [];
  for (let at = 0; at < stream.byteLength; ) {
    const len = Math.min(stream.byteLength - at, 1 + Math.floor(rnd() * MAX_CHUNK));
    chunks.push(stream.subarray(at, at + len));
    at += len;
  }
  const sink = new CountingSink();
  const decoder = new FrameDecoder(sink);
  // Check the stream decodes to exactly its payload before timing it.
  for (const c of chunks) decoder.push(c);
  if (sink.bytes !== STREAM_PAYLOAD || !decoder.atBoundary) throw new Error("decode bench stream is malformed");
  const last = chunks.length - 1;
  let i = 0;
  return {
    bytes: STREAM_PAYLOAD / chunks.length,
    unit: "chunk",
    note: `${chunks.length} chunks, mean ${(stream.byteLength / chunks.length / 1024).toFixed(1)} KiB`,
    op: () => {
      decoder.push(chunks[i]!);
      i = i === last ? 0 : i + 1;
      do_not_optimize(sink.bytes);
    },
  };
}

const ROUND_TRIP_FRAME = 16 * 1024;

function encodeDecode(size: number): Steady {
  const payloads = slices(receiveChunk(), size);
  const lastPayload = payloads.length - 1;
  const pool = new BufferPool(BATCH_BUFFER);
  const batch = new FrameBatch(pool.get());
  const sink = new CountingSink();
  const decoder = new FrameDecoder(sink);
  const framesPerBatch = Math.floor((batch.buf.byteLength - FRAME_HEADER_SIZE - MAX_PAD) / (FRAME_HEADER_SIZE + MAX_PAD + size));
  // Up to three cut points per batch, as fractions of its length; 64 sets, cycled.
  const rnd = prng(42);
  const SETS = 64;
  const cuts: number[][] = [];
  for (let s = 0; s < SETS; s++) {
    const n = Math.floor(rnd() * 4);
    cuts.push(Array.from({ length: n }, () => rnd()).sort((a, b) => a - b));
  }
  let p = 0;
  let set = 0;
  let offset = 0;
  const op = () => {
    batch.reset(pool.get());
    for (let f = 0; f < framesPerBatch; f++) {
      batch.appendData(offset, payloads[p]!);
      offset += size;
      p = p === lastPayload ? 0 : p + 1;
    }
    const buf = batch.buf;
    const len = batch.length;
    const at = cuts[set]!;
    set = set === SETS - 1 ? 0 : set + 1;
    let from = 0;
    for (let k = 0; k < at.length; k++) {
      const to = Math.floor(at[k]! * len);
      decoder.push(buf.subarray(from, to));
      from = to;
    }
    decoder.push(buf.subarray(from, len));
    // The write completed: the batch buffer goes back to the pool.
    pool.put(buf);
    do_not_optimize(sink.bytes);
  };
  op();
  if (sink.bytes !== framesPerBatch * size || !decoder.atBoundary) throw new Error("encode+decode bench is malformed");
  return { bytes: framesPerBatch * size, unit: "batch", note: `${framesPerBatch} frames per ${fmtSize(BATCH_BUFFER - BATCH_SLACK)} batch`, op };
}

const decodeCase: Case = { name: "decode $size frames", arg: "size", values: [16 * 1024, 64 * 1024], setup: decodeChunks };
const roundTripCase: Case = {
  name: "encode+decode $size frames",
  arg: "size",
  values: [ROUND_TRIP_FRAME],
  setup: encodeDecode,
  target: { value: ROUND_TRIP_FRAME, gbps: 5, label: "encode+decode of 16 KiB frames" },
};
export const cases: Case[] = [decodeCase, roundTripCase];

for (const c of cases) {
  group(c.name.replace(" $size", ""), () => {
    bench(c.name, function* (state: { get(name: string): any }) {
      yield c.setup(state.get(c.arg)).op; // setup runs here, outside the measured closure
    }).args(c.arg, [...c.values]);
  });
}

if (import.meta.main) await (await import("./micro.ts")).runMicro([{ cases }]);

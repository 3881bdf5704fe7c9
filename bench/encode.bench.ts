/**
 * Send path: framing one DATA payload, copy included.
 *
 * - "FrameBatch": what StripedSession.writeBatch does: appendData() into a pooled batch buffer (the
 *   default batchSize, sized as the session's pool), padding the header so the payload copy is 64-byte co-aligned with its source;
 *   the batch goes back to the pool when full, as after a completed write.
 * - "naive": a new Uint8Array per frame, header at 0, payload set at byte 16, i.e. a plain concatenation
 *   (what codec.encodeFrame does for control frames). Large fresh buffers and receive chunks are both
 *   page-aligned, so the copy lands 16 bytes past its source mod 4096: the slow case in
 *   /work/shared/notes/bun-sockets.md ("Copying"). The note column shows the offset actually obtained.
 *
 * Payloads are consecutive slices of a 512 KiB receive chunk, as SendBuffer.read cuts them.
 */

import { ptr } from "bun:ffi";
import { do_not_optimize } from "mitata";
import { writeFrameHeader } from "../src/wire/codec.ts";
import { BufferPool, FrameBatch } from "../src/wire/batch.ts";
import { FRAME_DATA, FRAME_HEADER_SIZE } from "../src/wire/constants.ts";
import { BATCH_BUFFER, receiveChunk, slices, type Case, type Steady, registerSummary, runStandalone } from "./micro.ts";

const SIZES = [1024, 16 * 1024, 64 * 1024] as const;

function deltas(list: number[]): string {
  const uniq = [...new Set(list)].sort((a, b) => a - b);
  return uniq.length <= 4 ? uniq.join(",") : `${uniq.slice(0, 3).join(",")},…(${uniq.length} values)`;
}

/** Pooled, aligned encode into a FrameBatch. */
function encodeBatch(size: number): Steady {
  const payloads = slices(receiveChunk(), size);
  const last = payloads.length - 1;
  const pool = new BufferPool(BATCH_BUFFER);
  const batch = new FrameBatch(pool.get());
  let i = 0;
  let offset = 0;
  // Copy offsets (destination − source mod 4096) over one pass of the payloads, for the note.
  const seen: number[] = [];
  for (const p of payloads) {
    if (batch.dataRoom < size) batch.reset(batch.buf);
    batch.appendData(0, p);
    seen.push((ptr(batch.buf) + batch.length - size - ptr(p)) & 4095);
  }
  batch.reset(batch.buf);
  return {
    bytes: size,
    unit: "frame",
    note: `copy dst−src mod 4096 ∈ {${deltas(seen)}}`,
    op: () => {
      if (batch.dataRoom < size) {
        // Batch full: it would be written now; the write completes and the buffer is returned.
        pool.put(batch.buf);
        batch.reset(pool.get());
      }
      batch.appendData(offset, payloads[i]!);
      offset += size;
      i = i === last ? 0 : i + 1;
      do_not_optimize(batch);
    },
  };
}

/** Naive: fresh buffer per frame, header + set, payload at +16. */
function encodeNaive(size: number): Steady {
  const payloads = slices(receiveChunk(), size);
  const last = payloads.length - 1;
  const seen: number[] = [];
  for (let k = 0; k < 16; k++) {
    const p = payloads[k % payloads.length]!;
    seen.push((ptr(new Uint8Array(FRAME_HEADER_SIZE + size)) + FRAME_HEADER_SIZE - ptr(p)) & 4095);
  }
  let i = 0;
  let offset = 0;
  return {
    bytes: size,
    unit: "frame",
    note: `copy dst−src mod 4096 ∈ {${deltas(seen)}}`,
    op: () => {
      const p = payloads[i]!;
      const frame = new Uint8Array(FRAME_HEADER_SIZE + size);
      writeFrameHeader(new DataView(frame.buffer), 0, FRAME_DATA, 0, 0, size, offset);
      frame.set(p, FRAME_HEADER_SIZE);
      offset += size;
      i = i === last ? 0 : i + 1;
      do_not_optimize(frame);
    },
  };
}

const batchCase: Case = { name: "encode FrameBatch $size", arg: "size", values: SIZES, setup: encodeBatch };
const naiveCase: Case = { name: "encode naive $size", arg: "size", values: SIZES, setup: encodeNaive };
export const cases: Case[] = [batchCase, naiveCase];

registerSummary(cases);
if (import.meta.main) await runStandalone(cases);

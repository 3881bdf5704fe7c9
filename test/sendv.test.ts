/**
 * The keyed send path without the batch copy: PieceBatch lays frames out as pieces (small parts copied
 * into its buffer, large payloads left where they are), and SealedPipe.sendv seals the pieces straight
 * into records. Frames must decode exactly as FrameBatch's; large payloads must never be copied and sit
 * at multiples of 64 in the batch; sendv must take what it needs before it returns. (The session model,
 * session-model.test.ts, runs whole sessions over carriers with sendv.)
 */

import { describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { SealedPipe } from "../src/pipe/sealed.ts";
import type { PipeHandler } from "../src/pipe/pipe.ts";
import { RecordOpener, RecordSealer, recordSize } from "../src/secure/record.ts";
import { FrameBatch, PIECE_MIN, PieceBatch } from "../src/wire/batch.ts";
import { FrameDecoder, type ControlFrameType } from "../src/wire/codec.ts";
import { FRAME_ACK, FRAME_FIN, FRAME_HEADER_SIZE } from "../src/wire/constants.ts";
import { memPipePair } from "./helpers/mempipe.ts";
import { randomData, sha256 } from "./helpers/net.ts";
import { prng, randInt } from "./helpers/util.ts";

type Frame = [kind: "data", offset: number, hex: string] | [kind: "control", type: number, value: number, payload: string];

/** Decodes a byte stream into frames (DATA fragments joined per frame). */
function decode(bytes: Uint8Array): Frame[] {
  const out: Frame[] = [];
  const dec = new FrameDecoder({
    data(offset, b) {
      const last = out.at(-1);
      // Fragments of one frame arrive in order with contiguous offsets; join them.
      if (last?.[0] === "data" && last[1] + last[2].length / 2 === offset) last[2] += Buffer.from(b).toString("hex");
      else out.push(["data", offset, Buffer.from(b).toString("hex")]);
    },
    control(type: ControlFrameType, _flags, value, payload) {
      out.push(["control", type, value, Buffer.from(payload).toString("hex")]);
    },
  });
  dec.push(bytes);
  return out;
}

const concat = (pieces: readonly Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(pieces));

describe("PieceBatch", () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    test(`frames of any sizes decode exactly as FrameBatch's; large payloads are views, 64-aligned (seed ${seed})`, () => {
      const rand = prng(seed);
      const chunk = randomData(2 << 20, seed);
      const size = 600 * 1024;
      const pieces = new PieceBatch(size);
      pieces.reset(new Uint8Array(size));
      const frames = new FrameBatch(new Uint8Array(size));
      const big: Uint8Array[] = [];
      let offset = 0;
      while (pieces.dataRoom > 100_000) {
        if (rand() < 0.2) {
          const payload = randomData(randInt(rand, 0, 200), seed + offset);
          for (const b of [pieces, frames]) b.appendControl(FRAME_ACK, 1, offset, payload);
          continue;
        }
        const len = rand() < 0.5 ? randInt(rand, 1, PIECE_MIN - 1) : randInt(rand, PIECE_MIN, 90_000);
        const at = randInt(rand, 0, chunk.byteLength - len);
        const payload = chunk.subarray(at, at + len);
        for (const b of [pieces, frames]) b.appendData(offset, payload);
        if (len >= PIECE_MIN) big.push(payload);
        offset += len;
      }
      for (const b of [pieces, frames]) b.appendControl(FRAME_FIN, 0, offset);
      const list = pieces.finish();
      const bytes = concat(list);
      expect(bytes.byteLength).toBe(pieces.length);
      expect(decode(bytes)).toEqual(decode(frames.bytes()));
      // Every large payload is in the list as the very view it was given (never copied), at a 64-multiple.
      let at = 0;
      const views: Uint8Array[] = [];
      for (const p of list) {
        if (big.includes(p)) {
          expect(at % 64).toBe(0);
          views.push(p);
        }
        at += p.byteLength;
      }
      expect(views).toEqual(big);
      expect(views.every((v, i) => v === big[i])).toBe(true);
    });
  }

  test("pad bytes are zero, whatever an earlier batch left in the shared buffer", () => {
    const size = 256 * 1024;
    const buf = new Uint8Array(size).fill(0xaa); // another session's leftovers
    const b = new PieceBatch(size);
    b.reset(buf);
    const chunk = randomData(200_000, 12);
    let offset = 0;
    for (const [at, len] of [[3, 5000], [1, 1500], [7, PIECE_MIN + 5], [0, 20_000], [9, PIECE_MIN * 2]] as const) {
      b.appendData(offset, chunk.subarray(at * 100 + 1, at * 100 + 1 + len)); // odd addresses: pads needed
      offset += len;
    }
    const bytes = concat(b.finish());
    let pads = 0;
    for (let pos = 0; pos < bytes.byteLength; ) {
      const pad = bytes[pos + 2]!;
      const len = new DataView(bytes.buffer, bytes.byteOffset + pos + 4, 4).getUint32(0);
      for (let i = 0; i < pad; i++) expect(bytes[pos + FRAME_HEADER_SIZE + i]).toBe(0);
      pads += pad;
      pos += FRAME_HEADER_SIZE + pad + len;
    }
    expect(pads).toBeGreaterThan(0); // the test did meet padding
  });

  test("a batch of only tiny frames fits its buffer (the worst case of headers)", () => {
    const size = 64 * 1024;
    const b = new PieceBatch(size);
    b.reset(new Uint8Array(size));
    let n = 0;
    while (b.dataRoom >= 1) {
      b.appendData(n, new Uint8Array([n & 0xff]));
      n++;
    }
    const list = b.finish();
    expect(list.length).toBe(1); // all copied: one piece
    expect(list[0]!.byteLength).toBe(n * (FRAME_HEADER_SIZE + 1));
    // One DATA frame per byte, offsets 0 … n−1 (the decoder's pieces join into one contiguous run).
    expect(decode(list[0]!)).toEqual([["data", 0, Buffer.from(Array.from({ length: n }, (_, i) => i & 0xff)).toString("hex")]]);
  });
});

describe("SealedPipe.sendv", () => {
  const key = () => new Uint8Array(randomBytes(32));
  function pair(maxRecord?: number) {
    const k = key();
    const mem = memPipePair({ copyOnSend: true, highWaterMark: 1 << 30 });
    const a = new SealedPipe(mem.a, { sealer: new RecordSealer(k), opener: new RecordOpener(key()), maxRecord });
    const b = new SealedPipe(mem.b, { sealer: new RecordSealer(key()), opener: new RecordOpener(k), maxRecord });
    const got: Uint8Array[] = [];
    const handler: PipeHandler = { data: (c) => got.push(c), drain() {}, end() {}, close() {} };
    a.setHandler({ ...handler, data() {} });
    b.setHandler(handler);
    return { mem, a, got };
  }

  test("seals the pieces as one record, and the pieces may be reused as soon as it returns", () => {
    const { mem, a, got } = pair();
    const pieces = [randomData(100, 1), randomData(70_000, 2), randomData(3, 3)];
    const want = sha256(concat(pieces));
    expect(a.sendv(pieces, 70_103)).toBe(true);
    for (const p of pieces) p.fill(0); // the caller reuses them
    expect(mem.a.queue.length).toBe(1);
    expect((mem.a.queue[0] as Uint8Array).byteLength).toBe(recordSize(70_103));
    mem.deliverAll("ab", 1000);
    expect(sha256(concat(got))).toBe(want);
    expect(a.stats.bytesOut).toBe(70_103);
  });

  test("more than the record maximum goes out as several records, pieces split where they must be", () => {
    const { mem, a, got } = pair(1000);
    const pieces = [randomData(250, 4), randomData(2100, 5), randomData(900, 6), randomData(250, 7)];
    expect(a.sendv(pieces, 3500)).toBe(true);
    // Small records share one carrier buffer (one socket write); delivered whole, each record's
    // plaintext is one piece.
    expect(mem.a.queue.map((c) => (c as Uint8Array).byteLength)).toEqual([3500 + 4 * 36]);
    mem.deliverAll("ab");
    expect(got.map((c) => c.byteLength)).toEqual([1000, 1000, 1000, 500]);
    expect(a.sendv(pieces, 3500)).toBe(true);
    mem.deliverAll("ab", 777);
    expect(sha256(concat(got))).toBe(sha256(concat([...pieces, ...pieces])));
  });
});

describe("record cuts", () => {
  test("a PieceBatch marks a cut at the first frame end after every `unit` bytes, and SealedPipe ends a record at each", () => {
    const size = 256 * 1024;
    const b = new PieceBatch(size);
    b.reset(new Uint8Array(size), 10_000);
    const chunk = randomData(100_000, 11);
    let offset = 0;
    const ends: number[] = [];
    for (const len of [6000, 6000, 3000, 25_000, 100, 100]) {
      b.appendData(offset, chunk.subarray(offset, offset + len));
      offset += len;
      ends.push(b.length);
    }
    const list = b.finish();
    // The second frame's end is the first at least 10 000 bytes in; the fourth's the next one after it.
    expect(ends[0]).toBeLessThan(10_000);
    expect(ends[1]).toBeGreaterThanOrEqual(10_000);
    expect(ends[2]! - ends[1]!).toBeLessThan(10_000);
    expect(b.cuts).toEqual([ends[1]!, ends[3]!]);
    const k = new Uint8Array(randomBytes(32));
    const mem = memPipePair({ copyOnSend: true, highWaterMark: 1 << 30 });
    const a = new SealedPipe(mem.a, { sealer: new RecordSealer(k), opener: new RecordOpener(new Uint8Array(randomBytes(32))) });
    a.setHandler({ data() {}, drain() {}, end() {}, close() {} });
    a.sendv(list, b.length, b.cuts);
    // The three small records share one carrier buffer: open it to see where each record ends.
    expect(mem.a.queue.length).toBe(1);
    const records: Uint8Array[] = [];
    new RecordOpener(k).push(mem.a.queue[0] as Uint8Array, records);
    expect(records.map((r) => r.byteLength)).toEqual([b.cuts[0]!, b.cuts[1]! - b.cuts[0]!, b.length - b.cuts[1]!]);
  });
});

describe("FrameBatch pad bytes", () => {
  test("are zero too (plain stripes), whatever an earlier batch left in the pooled buffer", () => {
    const buf = new Uint8Array(128 * 1024).fill(0xaa);
    const b = new FrameBatch(buf);
    const chunk = randomData(100_000, 13);
    let offset = 0;
    for (const at of [1, 2, 3, 5, 8, 13]) {
      b.appendData(offset, chunk.subarray(at * 1000 + at, at * 1000 + at + 4000));
      offset += 4000;
    }
    const bytes = b.bytes();
    let pads = 0;
    for (let pos = 0; pos < bytes.byteLength; ) {
      const pad = bytes[pos + 2]!;
      const len = new DataView(bytes.buffer, bytes.byteOffset + pos + 4, 4).getUint32(0);
      for (let i = 0; i < pad; i++) expect(bytes[pos + FRAME_HEADER_SIZE + i]).toBe(0);
      pads += pad;
      pos += FRAME_HEADER_SIZE + pad + len;
    }
    expect(pads).toBeGreaterThan(0);
  });
});

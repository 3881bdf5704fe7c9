/**
 * ReorderBuffer and SendBuffer: the pure stores either side of the stripes. No sockets.
 *
 * Property tests use fast-check; its failure message prints the seed and path to replay. Set
 * TEST_SEED=<seed> to rerun a failing seed.
 */

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { COPY_BELOW, ReorderBuffer, SEGMENT_OVERHEAD, reorderMemoryLimit } from "../src/stripe/reorder.ts";
import { SendBuffer } from "../src/stripe/sendbuf.ts";
import { ProtocolError } from "../src/errors.ts";
import { expectProtocolError, prng } from "./helpers/util.ts";

const SEED = process.env.TEST_SEED !== undefined ? Number(process.env.TEST_SEED) | 0 : (Math.random() * 2 ** 31) | 0;
/** Arrays use size "max": fast-check's default "small" size keeps them to about ten elements. */
/** fast-check parameters: seeded, and the seed printed on failure (fast-check also prints it). */
function params(numRuns: number): fc.Parameters<unknown> {
  return {
    seed: SEED,
    numRuns,
    reporter(details) {
      if (details.failed) {
        console.error(`property failed: rerun with TEST_SEED=${details.seed} (path ${details.counterexamplePath})`);
        throw new Error(fc.defaultReportMessage(details) ?? "property failed");
      }
    },
  };
}

function stream(n: number, salt = 0): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 131 + (i >>> 8) * 7 + salt) & 0xff);
}

/** Shifts everything available and returns it joined. */
function drain(rb: ReorderBuffer): Uint8Array {
  const parts: Uint8Array[] = [];
  for (let c = rb.shift(); c !== undefined; c = rb.shift()) parts.push(c);
  return Buffer.concat(parts);
}

// --- ReorderBuffer -------------------------------------------------------------------------------

describe("ReorderBuffer", () => {
  test("delivers in-order ranges as they arrive", () => {
    const s = stream(1000);
    const rb = new ReorderBuffer(1000);
    expect(rb.shift()).toBeUndefined();
    expect(rb.insert(0, s.subarray(0, 300))).toBe(true);
    expect(rb.contiguous).toBe(300);
    expect(rb.bufferedBytes).toBe(300);
    expect(drain(rb)).toEqual(s.subarray(0, 300));
    expect(rb.delivered).toBe(300);
    expect(rb.bufferedBytes).toBe(0);
    expect(rb.insert(300, s.subarray(300, 1000))).toBe(true);
    expect(drain(rb)).toEqual(s.subarray(300));
    expect(rb.delivered).toBe(1000);
    expect(rb.segments).toBe(0);
  });

  test("holds out-of-order ranges until the gap before them fills", () => {
    const s = stream(900);
    const rb = new ReorderBuffer(900);
    expect(rb.insert(600, s.subarray(600, 900))).toBe(false);
    expect(rb.insert(300, s.subarray(300, 600))).toBe(false);
    expect(rb.shift()).toBeUndefined();
    expect(rb.contiguous).toBe(0);
    expect(rb.bufferedBytes).toBe(600);
    expect(rb.insert(0, s.subarray(0, 300))).toBe(true);
    expect(rb.contiguous).toBe(900);
    expect(drain(rb)).toEqual(s);
    expect(rb.bufferedBytes).toBe(0);
  });

  test("delivers each byte once when ranges are shuffled and duplicated", () => {
    const s = stream(64 * 1024);
    const ranges: [number, number][] = [];
    for (let o = 0; o < s.byteLength; o += 1000) ranges.push([o, Math.min(o + 1000, s.byteLength)]);
    const all = [...ranges, ...ranges, ...ranges.filter((_, i) => i % 3 === 0)];
    // Deterministic shuffle (a fixed permutation is enough here; the property test randomises).
    all.sort((a, b) => ((a[0] * 2654435761) >>> 0) - ((b[0] * 2654435761) >>> 0) || a[1] - b[1]);
    const rb = new ReorderBuffer(s.byteLength);
    const out: Uint8Array[] = [];
    for (const [a, b] of all) {
      rb.insert(a, s.subarray(a, b));
      out.push(drain(rb));
    }
    expect(Buffer.concat(out)).toEqual(Buffer.from(s));
    expect(rb.bufferedBytes).toBe(0);
    expect(rb.segments).toBe(0);
  });

  test("overlapping ranges fill only the gaps between what is held", () => {
    const s = stream(100);
    const rb = new ReorderBuffer(100);
    rb.insert(10, s.subarray(10, 20));
    rb.insert(30, s.subarray(30, 40));
    rb.insert(50, s.subarray(50, 60));
    expect(rb.bufferedBytes).toBe(30);
    // Covers [5, 55): new bytes are [5,10), [20,30), [40,50).
    expect(rb.insert(5, s.subarray(5, 55))).toBe(false);
    expect(rb.bufferedBytes).toBe(30 + 5 + 10 + 10);
    expect(rb.insert(0, s.subarray(0, 8))).toBe(true);
    expect(rb.contiguous).toBe(60);
    expect(rb.bufferedBytes).toBe(60);
    // Straddles the contiguous end: only [60, 70) is new.
    expect(rb.insert(55, s.subarray(55, 70))).toBe(true);
    expect(rb.bufferedBytes).toBe(70);
    expect(drain(rb)).toEqual(s.subarray(0, 70));
    expect(rb.bufferedBytes).toBe(0);
  });

  test("ranges already delivered, or already contiguous, are dropped as duplicates", () => {
    const s = stream(100);
    const rb = new ReorderBuffer(100);
    rb.insert(0, s.subarray(0, 50));
    expect(rb.insert(10, s.subarray(10, 40))).toBe(false); // inside contiguous, not yet delivered
    expect(rb.bufferedBytes).toBe(50);
    drain(rb);
    expect(rb.insert(0, s.subarray(0, 50))).toBe(false); // below delivered
    expect(rb.insert(20, s.subarray(20, 30))).toBe(false);
    expect(rb.bufferedBytes).toBe(0);
    expect(rb.shift()).toBeUndefined();
    expect(rb.insert(40, s.subarray(40, 60))).toBe(true); // half duplicate, half new
    expect(drain(rb)).toEqual(s.subarray(50, 60));
  });

  test("an empty range is ignored", () => {
    const rb = new ReorderBuffer(10);
    expect(rb.insert(0, new Uint8Array(0))).toBe(false);
    expect(rb.insert(10 ** 9, new Uint8Array(0))).toBe(false); // even far beyond the window
    expect(rb.segments).toBe(0);
  });

  test("a range split into single bytes, in reverse order, arrives whole", () => {
    const s = stream(300);
    const rb = new ReorderBuffer(300);
    for (let i = 299; i >= 1; i--) expect(rb.insert(i, s.subarray(i, i + 1))).toBe(false);
    expect(rb.bufferedBytes).toBe(299);
    expect(rb.insert(0, s.subarray(0, 1))).toBe(true);
    expect(drain(rb)).toEqual(s);
  });

  test("data ending beyond delivered + window is E_WINDOW; up to the edge is accepted", () => {
    const s = stream(300);
    const rb = new ReorderBuffer(100);
    expectProtocolError(() => rb.insert(0, s.subarray(0, 101)), "E_WINDOW");
    expectProtocolError(() => rb.insert(100, s.subarray(100, 101)), "E_WINDOW");
    expectProtocolError(() => rb.insert(99, s.subarray(99, 101)), "E_WINDOW");
    expect(rb.insert(90, s.subarray(90, 100))).toBe(false);
    expect(rb.insert(0, s.subarray(0, 90))).toBe(true);
    // The window is counted from what the consumer took (delivered), not from what arrived (contiguous).
    expectProtocolError(() => rb.insert(100, s.subarray(100, 101)), "E_WINDOW");
    expect(rb.bufferedBytes).toBe(100);
    drain(rb);
    expect(rb.insert(100, s.subarray(100, 200))).toBe(true);
    expectProtocolError(() => rb.insert(200, s.subarray(200, 201)), "E_WINDOW");
    drain(rb);
    expect(rb.insert(150, s.subarray(150, 300))).toBe(true);
    expect(drain(rb)).toEqual(s.subarray(200, 300));
  });

  test("a rejected range leaves the buffer as it was", () => {
    const s = stream(200);
    const rb = new ReorderBuffer(100);
    rb.insert(50, s.subarray(50, 60));
    expectProtocolError(() => rb.insert(95, s.subarray(95, 105)), "E_WINDOW");
    expect(rb.bufferedBytes).toBe(10);
    expect(rb.segments).toBe(1);
    rb.insert(0, s.subarray(0, 50));
    expect(drain(rb)).toEqual(s.subarray(0, 60));
  });

  test("bufferedBytes and peakBufferedBytes count exactly what is held", () => {
    const s = stream(1000);
    const rb = new ReorderBuffer(1000);
    rb.insert(500, s.subarray(500, 700));
    rb.insert(600, s.subarray(600, 800)); // 100 new
    rb.insert(100, s.subarray(100, 200));
    expect(rb.bufferedBytes).toBe(400);
    rb.insert(0, s.subarray(0, 100));
    expect(rb.bufferedBytes).toBe(500);
    expect(rb.peakBufferedBytes).toBe(500);
    const first = rb.shift()!;
    expect(rb.bufferedBytes).toBe(500 - first.byteLength);
    drain(rb);
    expect(rb.bufferedBytes).toBe(300); // [500, 800) waits for [200, 500)
    expect(rb.peakBufferedBytes).toBe(500);
    rb.clear();
    expect(rb.bufferedBytes).toBe(0);
    expect(rb.segments).toBe(0);
  });

  test("keeps working after thousands of segments come and go (internal compaction)", () => {
    const n = 20_000;
    const s = stream(n);
    const rb = new ReorderBuffer(n);
    const out: Uint8Array[] = [];
    // Pairs in swapped order: odd byte first (out of order), then the even byte that unlocks both.
    for (let i = 0; i < n; i += 2) {
      rb.insert(i + 1, s.subarray(i + 1, i + 2));
      rb.insert(i, s.subarray(i, i + 1));
      if (i % 1000 === 0) out.push(drain(rb));
    }
    out.push(drain(rb));
    expect(Buffer.concat(out)).toEqual(Buffer.from(s));
    expect(rb.segments).toBe(0);
  });

  test("property: random ranges, duplicated, split and shuffled, with shifts interleaved, deliver exactly the stream prefix", () => {
    const scenario = fc.record({
      stream: fc.uint8Array({ minLength: 1, maxLength: 3000, size: "max" }),
      cuts: fc.array(fc.nat(), { maxLength: 40, size: "max" }),
      extraCopies: fc.array(fc.nat({ max: 2 }), { maxLength: 41, size: "max" }),
      splits: fc.array(fc.array(fc.nat(), { maxLength: 3, size: "max" }), { maxLength: 120, size: "max" }),
      overlaps: fc.array(fc.tuple(fc.nat(), fc.nat({ max: 400 })), { maxLength: 10, size: "max" }),
      order: fc.array(fc.nat(), { maxLength: 200, size: "max" }),
      shifts: fc.array(fc.nat({ max: 3 }), { maxLength: 200, size: "max" }),
      // Sometimes hand the buffer copies, sometimes views into one big array (both storage paths).
      copy: fc.boolean(),
      // Embed the stream at a large offset sometimes: offsets are not small integers in real sessions.
      base: fc.constantFrom(0, 2 ** 40 + 3),
    });
    fc.assert(
      fc.property(scenario, (sc) => {
        const s = sc.stream;
        const len = s.byteLength;
        const base = sc.base;
        // Ranges that tile the stream.
        const points = [...new Set(sc.cuts.map((c) => c % len).filter((c) => c > 0))].sort((a, b) => a - b);
        const tiles: [number, number][] = [];
        let prev = 0;
        for (const p of [...points, len]) {
          tiles.push([prev, p]);
          prev = p;
        }
        // Each tile once or more, plus some arbitrary overlapping ranges.
        let pieces: [number, number][] = [];
        tiles.forEach((t, i) => {
          for (let c = 0; c <= (sc.extraCopies[i] ?? 0); c++) pieces.push(t);
        });
        for (const [start, n] of sc.overlaps) {
          const a = start % len;
          pieces.push([a, Math.min(len, a + 1 + n)]);
        }
        // Split some pieces further.
        pieces = pieces.flatMap(([a, b], i) => {
          const at = [...new Set((sc.splits[i] ?? []).map((x) => a + (x % (b - a))).filter((x) => x > a))].sort((x, y) => x - y);
          const out: [number, number][] = [];
          let p = a;
          for (const x of [...at, b]) {
            out.push([p, x]);
            p = x;
          }
          return out;
        });
        // Shuffle by sort keys (stable for equal keys).
        const keyed = pieces.map((p, i) => ({ p, k: sc.order[i] ?? i }));
        keyed.sort((x, y) => x.k - y.k);

        const rb = new ReorderBuffer(len);
        // Start the buffer at `base` as if that much had already been delivered.
        if (base > 0) {
          rb.delivered = base;
          rb.contiguous = base;
        }
        const covered = new Uint8Array(len); // model: which stream bytes have arrived
        let coveredCount = 0;
        let modelContiguous = 0;
        const out: Uint8Array[] = [];
        let outLen = 0;
        const check = (): void => {
          expect(rb.delivered - base).toBe(outLen);
          expect(rb.contiguous - base).toBe(modelContiguous);
          // Every byte that arrived at or beyond `delivered` is held, once.
          expect(rb.bufferedBytes).toBe(coveredCount - outLen);
          expect(rb.peakBufferedBytes).toBeGreaterThanOrEqual(rb.bufferedBytes);
          // Never more than arrived in order.
          expect(outLen).toBeLessThanOrEqual(modelContiguous);
        };
        keyed.forEach(({ p: [a, b] }, i) => {
          const bytes = sc.copy ? s.slice(a, b) : s.subarray(a, b);
          const before = modelContiguous;
          for (let x = a; x < b; x++) {
            if (!covered[x]) {
              covered[x] = 1;
              coveredCount++;
            }
          }
          while (modelContiguous < len && covered[modelContiguous]) modelContiguous++;
          expect(rb.insert(base + a, bytes)).toBe(modelContiguous > before);
          check();
          for (let k = sc.shifts[i] ?? 1; k > 0; k--) {
            const c = rb.shift();
            if (c === undefined) break;
            expect(c.byteLength).toBeGreaterThan(0);
            out.push(c);
            outLen += c.byteLength;
            // What came out so far is exactly the stream prefix of that length.
            expect(Buffer.from(c)).toEqual(Buffer.from(s.subarray(outLen - c.byteLength, outLen)));
            check();
          }
        });
        out.push(drain(rb));
        const all = Buffer.concat(out);
        expect(all.byteLength).toBe(len);
        expect(all).toEqual(Buffer.from(s));
        expect(rb.bufferedBytes).toBe(0);
        expect(rb.segments).toBe(0);
      }),
      params(300),
    );
  }, 120_000);

  test("property: with a small window, a range is refused with E_WINDOW exactly when it ends beyond delivered + window", () => {
    const scenario = fc.record({
      len: fc.integer({ min: 1, max: 2000 }),
      window: fc.integer({ min: 1, max: 500 }),
      ranges: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 300 })), { minLength: 1, maxLength: 150, size: "max" }),
      shifts: fc.array(fc.nat({ max: 2 }), { maxLength: 150, size: "max" }),
    });
    fc.assert(
      fc.property(scenario, ({ len, window, ranges, shifts }) => {
        const s = stream(len, window);
        const rb = new ReorderBuffer(window);
        let delivered = 0;
        const out: Uint8Array[] = [];
        ranges.forEach(([start, n], i) => {
          const a = start % len;
          const b = Math.min(len, a + n);
          if (b > delivered + window) expectProtocolError(() => rb.insert(a, s.subarray(a, b)), "E_WINDOW");
          else rb.insert(a, s.subarray(a, b));
          // Memory stays within the window.
          expect(rb.bufferedBytes).toBeLessThanOrEqual(window);
          for (let k = shifts[i] ?? 1; k > 0; k--) {
            const c = rb.shift();
            if (!c) break;
            out.push(c);
            delivered += c.byteLength;
          }
          expect(rb.delivered).toBe(delivered);
        });
        expect(Buffer.concat(out)).toEqual(Buffer.from(s.subarray(0, delivered)));
      }),
      params(300),
    );
  }, 120_000);
});

// --- ReorderBuffer: memory and segment limits ----------------------------------------------------

/** Cost of a lone small fragment: the segment plus its smallest own copy (64 bytes). */
const FRAGMENT_COST = SEGMENT_OVERHEAD + 64;
const KiB = 1024;
const MiB = 1024 * KiB;

/** Inserts 1-byte fragments at odd offsets in `order` until one is refused; returns how many fit. */
function flood(rb: ReorderBuffer, offsets: number[]): { accepted: number; code: string | undefined } {
  let accepted = 0;
  for (const o of offsets) {
    const chunk = new Uint8Array(17); // each fragment arrives in its own small receive chunk
    try {
      rb.insert(o, chunk.subarray(16));
    } catch (err) {
      expect(err).toBeInstanceOf(ProtocolError);
      return { accepted, code: (err as ProtocolError).code };
    }
    expect(rb.memoryBytes).toBeLessThanOrEqual(rb.memoryLimit);
    accepted++;
  }
  return { accepted, code: undefined };
}

describe("ReorderBuffer limits", () => {
  test("in-order data into an empty buffer comes out as the same object, whatever its size (zero copy)", () => {
    const rb = new ReorderBuffer(MiB);
    const chunk = new Uint8Array(512 * KiB);
    for (const [a, b] of [
      [0, 1],
      [1, 100],
      [100, 300 * KiB],
    ]) {
      const piece = chunk.subarray(a, b);
      expect(rb.insert(a!, piece)).toBe(true);
      expect(rb.shift()).toBe(piece);
    }
    expect(rb.memoryBytes).toBe(0);
  });

  test("1-byte fragments at every other offset are refused with E_REORDER_MEMORY at the limit, in any order", () => {
    const window = 16 * MiB;
    const limit = reorderMemoryLimit(window);
    const fits = Math.floor(limit / FRAGMENT_COST);
    const n = fits + 1000;
    const asc = Array.from({ length: n }, (_, i) => 1 + 2 * i);
    const rand = prng(7);
    const shuffled = [...asc];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
    }
    for (const [name, offsets] of [
      ["ascending", asc],
      ["descending", [...asc].reverse()],
      ["shuffled", shuffled],
    ] as const) {
      const rb = new ReorderBuffer(window);
      const r = flood(rb, offsets);
      expect({ name, ...r }).toEqual({ name, accepted: fits, code: "E_REORDER_MEMORY" });
      // Every fragment stays its own segment (nothing is adjacent), and everything is charged.
      expect(rb.bufferedBytes).toBe(fits + 1);
      expect(rb.segments).toBe(fits + 1);
      rb.clear();
      expect([rb.memoryBytes, rb.segments, rb.bufferedBytes]).toEqual([0, 0, 0]);
    }
  });

  test("small adjacent pieces are coalesced into few segments, however stripes interleave their arrival", () => {
    // 4 KiB frames dealt to 4 stripes in turn; frame 0 is late. Each stripe's bytes arrive one at a
    // time (a 1-byte slicer), the stripes interleaved byte by byte.
    const frame = 4 * KiB;
    const frames = 16;
    const s = stream(frame * frames);
    const rb = new ReorderBuffer(s.byteLength);
    const perStripe: number[][] = [[], [], [], []];
    for (let f = 1; f < frames; f++) for (let o = f * frame; o < (f + 1) * frame; o++) perStripe[f % 4]!.push(o);
    for (let k = 0; k < Math.max(...perStripe.map((p) => p.length)); k++) {
      for (const p of perStripe) {
        const o = p[k];
        if (o !== undefined) expect(rb.insert(o, s.slice(o, o + 1))).toBe(false);
      }
    }
    expect(rb.bufferedBytes).toBe(frame * (frames - 1));
    // One segment per frame at most (each grows as its bytes arrive; neighbours merge once they meet).
    expect(rb.segments).toBeLessThanOrEqual(frames - 1);
    expect(rb.memoryBytes).toBeLessThan(2 * rb.bufferedBytes);
    expect(rb.insert(0, s.subarray(0, frame))).toBe(true);
    expect(drain(rb)).toEqual(s);
    expect([rb.memoryBytes, rb.segments]).toEqual([0, 0]);
  });

  test("in-order 1-byte pieces held for a paused consumer take one segment per 64 KiB", () => {
    const n = 200 * KiB;
    const s = stream(n);
    const rb = new ReorderBuffer(MiB);
    for (let o = 0; o < n; o++) rb.insert(o, s.slice(o, o + 1));
    // The first piece is a view (zero copy into an empty buffer); the rest coalesce behind it.
    expect(rb.segments).toBeLessThanOrEqual(Math.ceil(n / (64 * KiB)) + 1);
    expect(drain(rb)).toEqual(s);
  });

  test("a view pins its whole receive chunk, charged once however many views share it", () => {
    const rb = new ReorderBuffer(4 * MiB);
    const chunk = new Uint8Array(512 * KiB);
    rb.insert(100 * KiB, chunk.subarray(0, COPY_BELOW));
    expect(rb.memoryBytes).toBe(512 * KiB + SEGMENT_OVERHEAD);
    rb.insert(300 * KiB, chunk.subarray(COPY_BELOW + 1, 2 * COPY_BELOW + 1));
    expect(rb.memoryBytes).toBe(512 * KiB + 2 * SEGMENT_OVERHEAD);
    rb.insert(0, new Uint8Array(100 * KiB));
    drain(rb);
    expect(rb.memoryBytes).toBe(512 * KiB + SEGMENT_OVERHEAD); // the second view still pins the chunk
    rb.insert(100 * KiB + COPY_BELOW, new Uint8Array(200 * KiB - COPY_BELOW));
    drain(rb);
    expect([rb.memoryBytes, rb.segments, rb.delivered]).toEqual([0, 0, 300 * KiB + COPY_BELOW]);
  });

  test("views that would pin more than half the limit are copied, so a sender within the window is not refused", () => {
    // Each 16 KiB piece comes in a 512 KiB chunk whose other bytes are duplicates: the worst waste.
    const window = MiB;
    const rb = new ReorderBuffer(window);
    const inserted: Uint8Array[] = [];
    for (let o = COPY_BELOW; o + COPY_BELOW <= window; o += COPY_BELOW) {
      const piece = new Uint8Array(512 * KiB).subarray(0, COPY_BELOW).fill(o / COPY_BELOW);
      inserted.push(piece);
      expect(rb.insert(o, piece)).toBe(false);
      expect(rb.memoryBytes).toBeLessThanOrEqual(rb.memoryLimit);
    }
    expect(rb.insert(0, new Uint8Array(COPY_BELOW))).toBe(true);
    expect(rb.bufferedBytes).toBe(window);
    const out: Uint8Array[] = [];
    for (let c = rb.shift(); c !== undefined; c = rb.shift()) out.push(c);
    expect(out[0]).toEqual(new Uint8Array(COPY_BELOW));
    // Two chunks fit in half the limit as views; every later piece was copied.
    expect(out[1]).toBe(inserted[0]!);
    expect(out[2]).toBe(inserted[1]!);
    for (let k = 3; k < out.length; k++) {
      expect(out[k]!.buffer).not.toBe(inserted[k - 1]!.buffer);
      expect(out[k]).toEqual(inserted[k - 1]!);
    }
    expect(rb.memoryBytes).toBe(0);
  });

  test("property: against a model, with pieces from fresh buffers and from shared receive chunks, every charge is returned", () => {
    const scenario = fc.record({
      len: fc.integer({ min: 1, max: 6000 }),
      window: fc.integer({ min: 1, max: 6000 }),
      ops: fc.array(
        fc.oneof(
          fc.record({ t: fc.constant("insert" as const), at: fc.nat(), n: fc.integer({ min: 1, max: 1500 }), chunk: fc.integer({ min: -1, max: 3 }) }),
          fc.record({ t: fc.constant("shift" as const), k: fc.integer({ min: 1, max: 4 }) }),
        ),
        { maxLength: 300, size: "max" },
      ),
    });
    fc.assert(
      fc.property(scenario, ({ len, window, ops }) => {
        const s = stream(len, 3);
        // Four "receive chunks" holding the whole stream at different positions: pieces cut from the
        // same chunk share (and pin) one buffer. chunk -1: a fresh exact copy.
        const chunks = [0, 1, 100, 5000].map((pad) => {
          const c = new Uint8Array(pad + len + 7);
          c.set(s, pad);
          return c.subarray(pad, pad + len);
        });
        const rb = new ReorderBuffer(window);
        const covered = new Uint8Array(len);
        let contiguous = 0;
        let delivered = 0;
        let held = 0;
        const out: Uint8Array[] = [];
        for (const op of ops) {
          if (op.t === "shift") {
            for (let k = 0; k < op.k; k++) {
              const c = rb.shift();
              if (c === undefined) break;
              out.push(c);
              delivered += c.byteLength;
              held -= c.byteLength;
            }
          } else {
            const a = op.at % len;
            const b = Math.min(len, a + op.n);
            const piece = op.chunk < 0 ? s.slice(a, b) : chunks[op.chunk]!.subarray(a, b);
            if (b > delivered + window) {
              expectProtocolError(() => rb.insert(a, piece), "E_WINDOW");
            } else {
              const before = contiguous;
              for (let x = Math.max(a, delivered); x < b; x++) {
                if (!covered[x]) {
                  covered[x] = 1;
                  held++;
                }
              }
              while (contiguous < len && covered[contiguous]) contiguous++;
              expect(rb.insert(a, piece)).toBe(contiguous > before);
            }
          }
          expect([rb.delivered, rb.contiguous, rb.bufferedBytes]).toEqual([delivered, contiguous, held]);
          // Every segment is charged its overhead and at least its bytes; never beyond the limit.
          expect(rb.memoryBytes).toBeGreaterThanOrEqual(held + rb.segments * SEGMENT_OVERHEAD);
          expect(rb.memoryBytes).toBeLessThanOrEqual(rb.memoryLimit);
        }
        for (let c = rb.shift(); c !== undefined; c = rb.shift()) out.push(c);
        const all = Buffer.concat(out);
        expect(all).toEqual(Buffer.from(s.subarray(0, all.byteLength)));
        expect(all.byteLength).toBe(contiguous);
        if (contiguous === len || rb.segments === 0) expect(rb.memoryBytes).toBe(0);
        rb.clear();
        expect([rb.memoryBytes, rb.segments, rb.bufferedBytes]).toEqual([0, 0, 0]);
      }),
      params(300),
    );
  }, 120_000);

  test("property: a sender within the window, with frames of 4 KiB or more over several stripes, is never refused", () => {
    // A small model of a session: frames go to random stripes as the window allows; each stripe's
    // bytes arrive in receive chunks of random size (each its own buffer, frames cut at chunk
    // boundaries); the consumer takes data at random moments, sometimes pausing for a long time.
    const scenario = fc.record({
      window: fc.integer({ min: 64 * KiB, max: 256 * KiB }),
      stripes: fc.integer({ min: 1, max: 8 }),
      frameMax: fc.integer({ min: 4 * KiB, max: 128 * KiB }),
      chunkMax: fc.integer({ min: 1, max: 256 * KiB }),
      seed: fc.integer(),
    });
    fc.assert(
      fc.property(scenario, ({ window, stripes, frameMax, chunkMax, seed }) => {
        const rand = prng(seed);
        const total = 2 * window;
        const s = stream(total, 5);
        const rb = new ReorderBuffer(window);
        const queues: { off: number; len: number }[][] = Array.from({ length: stripes }, () => []);
        let sent = 0;
        let got = 0;
        let pausedFor = 0;
        // Every step either sends, receives or shifts with some probability: this ends (with 1-byte
        // chunks after ~10 steps per byte); the cap only turns a bug into a failure instead of a hang.
        for (let step = 0; rb.delivered < total; step++) {
          if (step > 20 * total + 1_000_000) throw new Error(`no progress: delivered ${rb.delivered} of ${total}`);
          // Send a frame when the window allows (acks = what the consumer took).
          if (sent < total && rand() < 0.5) {
            const len = Math.min(total - sent, 4 * KiB + Math.floor(rand() * (frameMax - 4 * KiB + 1)));
            if (sent + len <= rb.delivered + window) {
              queues[Math.floor(rand() * stripes)]!.push({ off: sent, len });
              sent += len;
            }
          }
          // One stripe receives a chunk: the next bytes of its frames, cut anywhere.
          const q = queues[Math.floor(rand() * stripes)]!;
          if (q.length > 0) {
            let room = 1 + Math.floor(rand() * chunkMax);
            const chunk = new Uint8Array(room);
            let at = 0;
            while (room > 0 && q.length > 0) {
              const f = q[0]!;
              const take = Math.min(room, f.len);
              chunk.set(s.subarray(f.off, f.off + take), at);
              rb.insert(f.off, chunk.subarray(at, at + take));
              expect(rb.memoryBytes).toBeLessThanOrEqual(rb.memoryLimit);
              at += take;
              room -= take;
              f.off += take;
              f.len -= take;
              if (f.len === 0) q.shift();
            }
          }
          if (pausedFor > 0) pausedFor--;
          else if (rand() < 0.02) pausedFor = Math.floor(rand() * 2000);
          else {
            for (let c = rb.shift(); c !== undefined; c = rb.shift()) {
              expect(Buffer.from(c)).toEqual(Buffer.from(s.subarray(got, got + c.byteLength)));
              got += c.byteLength;
            }
          }
        }
        expect(rb.delivered).toBe(total);
        expect(rb.memoryBytes).toBe(0);
      }),
      params(60),
    );
  }, 120_000);
});

// --- SendBuffer ----------------------------------------------------------------------------------

describe("SendBuffer", () => {
  function filled(sizes: number[]): { sb: SendBuffer; chunks: Uint8Array[]; all: Uint8Array } {
    const sb = new SendBuffer();
    const all = stream(sizes.reduce((a, b) => a + b, 0));
    const chunks: Uint8Array[] = [];
    let at = 0;
    for (const n of sizes) {
      const c = all.slice(at, at + n); // each chunk its own buffer, as the socket delivers them
      chunks.push(c);
      sb.append(c);
      at += n;
    }
    return { sb, chunks, all };
  }

  test("append keeps chunks as given and tracks end and bytes", () => {
    const { sb } = filled([100, 50, 200]);
    expect(sb.acked).toBe(0);
    expect(sb.end).toBe(350);
    expect(sb.bytes).toBe(350);
    sb.append(new Uint8Array(0)); // ignored
    expect(sb.end).toBe(350);
  });

  test("read returns at most max bytes from one chunk, never spanning two, without copying", () => {
    const { sb, chunks, all } = filled([100, 50, 200]);
    const r1 = sb.read(0, 1000);
    expect(r1.byteLength).toBe(100);
    expect(r1.buffer).toBe(chunks[0]!.buffer);
    expect(sb.read(90, 1000)).toEqual(all.subarray(90, 100));
    expect(sb.read(100, 10)).toEqual(all.subarray(100, 110));
    expect(sb.read(120, 1000)).toEqual(all.subarray(120, 150));
    expect(sb.read(149, 1)).toEqual(all.subarray(149, 150));
    const r2 = sb.read(150, 1000);
    expect(r2).toEqual(all.subarray(150, 350));
    expect(r2.buffer).toBe(chunks[2]!.buffer);
    expect(sb.read(349, 5)).toEqual(all.subarray(349, 350));
  });

  test("reads outside [acked, end) throw RangeError", () => {
    const { sb } = filled([100, 50]);
    expect(() => sb.read(150, 1)).toThrow(RangeError);
    expect(() => sb.read(1000, 1)).toThrow(RangeError);
    expect(() => sb.read(-1, 1)).toThrow(RangeError);
    sb.ack(120);
    expect(() => sb.read(119, 1)).toThrow(RangeError);
    expect(() => sb.read(0, 1)).toThrow(RangeError);
    expect(sb.read(120, 100).byteLength).toBe(30);
    expect(() => new SendBuffer().read(0, 1)).toThrow(RangeError);
  });

  test("ack releases bytes below it, is cumulative, and may not pass end", () => {
    const { sb, all } = filled([100, 50, 200]);
    expect(sb.ack(30)).toBe(30);
    expect(sb.acked).toBe(30);
    expect(sb.bytes).toBe(320);
    expect(sb.ack(30)).toBe(0);
    expect(sb.ack(10)).toBe(0); // an older ack changes nothing
    expect(sb.acked).toBe(30);
    expect(sb.read(30, 1000)).toEqual(all.subarray(30, 100));
    expect(sb.ack(150)).toBe(120);
    expect(sb.read(150, 1000)).toEqual(all.subarray(150, 350));
    expect(() => sb.ack(351)).toThrow(RangeError);
    expect(sb.acked).toBe(150);
    expect(sb.ack(350)).toBe(200);
    expect(sb.bytes).toBe(0);
    expect(() => sb.read(349, 1)).toThrow(RangeError);
    sb.append(new Uint8Array([1, 2, 3]));
    expect(sb.read(350, 10)).toEqual(new Uint8Array([1, 2, 3]));
  });

  test("clear drops everything and later appends continue the stream offsets", () => {
    const { sb } = filled([100, 50]);
    sb.clear();
    expect(sb.bytes).toBe(0);
    expect(sb.acked).toBe(150);
    expect(() => sb.read(149, 1)).toThrow(RangeError);
    sb.append(new Uint8Array([9]));
    expect(sb.end).toBe(151);
    expect(sb.read(150, 1)).toEqual(new Uint8Array([9]));
  });

  test("property: reads and acks over many chunks match a flat model of the stream", () => {
    const op = fc.oneof(
      fc.record({ t: fc.constant("append" as const), n: fc.integer({ min: 0, max: 300 }) }),
      fc.record({ t: fc.constant("read" as const), at: fc.integer({ min: -5, max: 5000 }), max: fc.integer({ min: 1, max: 400 }) }),
      fc.record({ t: fc.constant("ack" as const), by: fc.integer({ min: -10, max: 400 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 400, size: "max" }), (ops) => {
        const sb = new SendBuffer();
        const model: number[] = [];
        const chunkEnds: number[] = [];
        let acked = 0;
        for (const o of ops) {
          if (o.t === "append") {
            const c = Uint8Array.from({ length: o.n }, (_, i) => (model.length + i) & 0xff);
            sb.append(c);
            for (const b of c) model.push(b);
            if (o.n > 0) chunkEnds.push(model.length);
          } else if (o.t === "read") {
            const at = acked + o.at - 100;
            if (at < acked || at >= model.length) {
              expect(() => sb.read(at, o.max)).toThrow(RangeError);
              continue;
            }
            const chunkEnd = chunkEnds.find((e) => e > at)!;
            const r = sb.read(at, o.max);
            expect(r.byteLength).toBe(Math.min(o.max, chunkEnd - at));
            expect(Array.from(r)).toEqual(model.slice(at, at + r.byteLength));
          } else {
            const to = acked + o.by;
            if (to > model.length) {
              expect(() => sb.ack(to)).toThrow(RangeError);
              continue;
            }
            expect(sb.ack(to)).toBe(Math.max(0, to - acked));
            acked = Math.max(acked, to);
          }
          expect(sb.acked).toBe(acked);
          expect(sb.end).toBe(model.length);
          expect(sb.bytes).toBe(model.length - acked);
        }
      }),
      params(300),
    );
  }, 120_000);
});
